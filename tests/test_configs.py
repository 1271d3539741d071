"""The flagfiles in configs/: the paper's experiments carry the paper's numbers, each §4.2 ablation
changes one axis of the base model, and every header says which values are the paper's.

Flagfiles are expanded (nested --flagfile included) by absl, as the launchers do, into the value
each flag ends with; the paper's values are written here, from the paper's text.
"""

import pathlib
import re

import pytest
from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"

# Paper values per experiment, with the sentence they come from.
PRETRAIN_VIEWS = dict(encoder="paper", final_length="32", image_size="128", view1_factor="1")  # §3.2, §4
FINETUNE = dict(  # §4.1: "Lab dropout ..., no downsampling, 4 views, an initial learning rate of 0.001,
    encoder="paper", final_length="32", factor="1", color_mode="lab",  # and a decay factor of 0.5";
    learning_rate="1e-3", decay_factor="0.5", hidden_units="1024", dropout="0.2",  # hidden 1024, p = 0.2
)
PAPER = {
    # §4.2: base model "down-sampling of 2, color jitter + random grayscale, difference-based
    # contrastive learning, no rotation"; "pretraining for 50000 steps"; §4: Adam at 2e-4, J, J'.
    "ucf101_pretrain.cfg": dict(
        PRETRAIN_VIEWS, train_steps="50000", decay_every="0", learning_rate="2e-4", view2_offset="0",
        view2_factor="2", color_mode="jitter", rotation_probability="0", temporal_difference=True,
        antecedent_layers="5,6,8", consequent_layers="8", symmetric=True, embedding_dim="512",
    ),
    # §4.3: "100k steps with a batch size of 240 ... no rotation, no temporal difference, down-sampling
    # of 2, and color jitter + random grayscale".
    "kinetics600_pretrain.cfg": dict(
        PRETRAIN_VIEWS, train_steps="100000", batch_size="240", decay_every="0", learning_rate="2e-4",
        view2_factor="2", color_mode="jitter", rotation_probability="0", temporal_difference=False,
        antecedent_layers="5,6,8", consequent_layers="8", symmetric=True, embedding_dim="512",
    ),
    # §4.2: "fine-tuning for 20000 steps"; §4.1: "decayed the learning rate every 30000 steps".
    "ucf101_finetune.cfg": dict(FINETUNE, train_steps="20000", decay_every="30000", num_views="4"),
    # §4.3: "30000 training steps for UCF-101"; decay schedule of 3000 steps.
    "ucf101_finetune_from_kinetics.cfg": dict(FINETUNE, train_steps="30000", decay_every="3000", num_views="4"),
    # §4.3: "4000 steps for HMDB-51"; decay "from 3000 steps to 400 steps"; "number of views to 2".
    "hmdb51_finetune_from_kinetics.cfg": dict(FINETUNE, train_steps="4000", decay_every="400", num_views="2"),
}

# The §4.2 ablation axes and the flags that set each.
AXES = {
    "antecedent_layers": "layers",
    "color_mode": "colour",
    "rotation_probability": "rotation",
    "rotation_max_degrees": "rotation",
    "view2_offset": "offset",
    "temporal_difference": "difference",
    "view2_factor": "factor",
}
ABLATIONS = {
    "ucf101_pretrain_layers_6_8.cfg": {"layers"},
    # J = {8} leaves the one pair 8 -> 8, whose consequent has a single time step: no reading of the
    # difference applies to it, so this ablation necessarily drops the difference with layers 5, 6.
    "ucf101_pretrain_layers_8.cfg": {"layers", "difference"},
    "ucf101_pretrain_lab.cfg": {"colour"},
    "ucf101_pretrain_rotation.cfg": {"rotation"},
    "ucf101_pretrain_offset32.cfg": {"offset"},
    "ucf101_pretrain_no_difference.cfg": {"difference"},
    "ucf101_pretrain_factor1.cfg": {"factor"},
    "ucf101_pretrain_factor3.cfg": {"factor"},
}


def read_flagfile(name):
    """The flags a flagfile sets, nested flagfiles expanded, later values winning: name -> str,
    or True / False for `--name` / `--noname`."""
    argv = flags.FlagValues().read_flags_from_files([f"--flagfile=configs/{name}"], force_gnu=True)
    values = {}
    for arg in argv:
        key, sep, value = arg[2:].partition("=")
        if sep:
            values[key] = value
        elif key.startswith("no"):
            values[key[2:]] = False
        else:
            values[key] = True
    return values


def header(path):
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, l in enumerate(lines) if not l.startswith("#"))])


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # nested --flagfile=configs/... paths are relative to the repo


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_experiment_configs_set_the_papers_values(name):
    values = read_flagfile(name)
    wrong = {flag: (values.get(flag), paper) for flag, paper in PAPER[name].items() if values.get(flag) != paper}
    assert not wrong, f"{name}: flag: (config, paper) {wrong}"


def test_every_ablation_is_listed():
    assert {p.name for p in CONFIGS.glob("ucf101_pretrain_*.cfg")} == set(ABLATIONS)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_changes_one_axis_of_the_base_model(name):
    base, ablation = read_flagfile("ucf101_pretrain.cfg"), read_flagfile(name)
    changed = {flag for flag in base.keys() | ablation.keys() if base.get(flag) != ablation.get(flag)}
    assert "model_dir" in changed, f"{name} would write into the base run's folder"
    outside = changed - {"model_dir"} - AXES.keys()
    assert not outside, f"{name} changes {sorted(outside)}, which belong to no ablation axis"
    assert {AXES[flag] for flag in changed - {"model_dir"}} == ABLATIONS[name]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.cfg")), ids=lambda p: p.name)
def test_every_header_says_which_values_are_the_papers_and_which_are_ours(path):
    text = header(path)
    assert re.search(r"\bours\b", text, re.IGNORECASE), f"{path.name}: the header names no value as ours"
    if not path.name.startswith("demo_"):
        assert re.search(r"[Pp]aper.*§\d", text, re.DOTALL), f"{path.name}: the header cites no paper section"
