"""Every launcher's `--help` lists all of its own flags, each with its default (or saying it is
required), and none of absl's or TensorFlow's (those stay under --helpfull)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Flags each launcher's help must show (a subset; the test below also checks the whole set).
KEY_FLAGS = {
    "pretrain": ["model_dir", "train_steps", "train_data", "batch_size", "encoder", "learning_rate",
                 "warmup_steps", "strategy", "precision"],
    "finetune": ["model_dir", "train_steps", "train_data", "test_data", "batch_size", "pretrained",
                 "num_views", "learning_rate", "decay_every", "color_mode"],
    "evaluate": ["model_dir", "test_data", "batch_size", "window_stride", "summary_json", "train_data",
                 "linear_probe"],
    "export": ["model_dir", "export_dir", "top_k", "encoder_only"],
    "predict": ["export_dir", "top_k", "json", "short_side"],
    "prepare": ["dataset", "video_dir", "output_dir", "splits_dir", "short_side", "workers"],
    "params": ["encoder", "embedding_dim"],
    "demo": ["workdir", "pretrain_steps", "finetune_steps", "quick"],
    "motion_benchmark": ["data_dir", "output_dir", "speeds", "frames", "hop", "short_side"],
    "camera_benchmark": ["data_dir", "output_dir", "frames", "hop", "examples_per_window", "size",
                         "source_short_side", "speed", "angular_speed", "seed"],
}
# absl's own flags and the TPU flags TensorFlow registers on import.
FOREIGN_FLAGS = ["logtostderr", "alsologtostderr", "verbosity", "log_dir", "only_check_args", "run_with_pdb",
                 "tpu", "tpu_zone", "gcp_project", "delete_tensor_tracer_flags"]

# Imports each launcher in turn and lists the flags that vdim_tf's modules define for it.
_OWN_FLAGS = """
import importlib, json, sys
from absl import flags
own = {}
for name in sys.argv[1:]:
    importlib.import_module("vdim_tf.launch." + name)
    defined = {f.name for module, fs in flags.FLAGS.flags_by_module_dict().items()
               if module.startswith("vdim_tf.") for f in fs}
    own[name] = sorted(defined)
    for flag in defined:
        delattr(flags.FLAGS, flag)
print(json.dumps(own))
"""


@pytest.fixture(scope="module")
def helps():
    """`{launcher: --help output}` and `{launcher: [its own flags]}`, run side by side."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = lambda args: subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, text=True,  # noqa: E731
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    processes = {name: run(["-m", f"vdim_tf.launch.{name}", "--help"]) for name in KEY_FLAGS}
    own = run(["-c", _OWN_FLAGS, *KEY_FLAGS])
    outputs = {name: p.communicate(timeout=300)[0] for name, p in processes.items()}
    own_out, _ = own.communicate(timeout=300)
    assert own.returncode == 0
    return outputs, json.loads(own_out)


def _listed(text):
    """`{flag: its help entry}` as absl prints them (`  --name: ...` or `  --[no]name: ...`)."""
    parts = re.split(r"^  --(?:\[no\])?(\w+): ", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("launcher", sorted(KEY_FLAGS))
def test_help_lists_exactly_the_launchers_own_flags(helps, launcher):
    outputs, own = helps
    text = outputs[launcher]
    listed = _listed(text)
    assert set(KEY_FLAGS[launcher]) <= set(listed), f"missing: {set(KEY_FLAGS[launcher]) - set(listed)}"
    assert sorted(listed) == own[launcher]
    for flag in FOREIGN_FLAGS:
        assert f"--{flag}" not in text
    # One section: the launcher's (absl names it by the file run).
    assert re.findall(r"^(\S.*):$", text, flags=re.M)[-1].endswith(f"vdim_tf/launch/{launcher}.py")


@pytest.mark.parametrize("launcher", sorted(KEY_FLAGS))
def test_every_flag_in_help_gives_its_default_or_says_it_is_required(helps, launcher):
    listed = _listed(helps[0][launcher])
    silent = [name for name, entry in listed.items()
              if "(default: " not in entry and not re.search(r"\bDefault\b|\bRequired\b", entry)]
    assert not silent, f"{launcher} --help: no default given for {silent}"
