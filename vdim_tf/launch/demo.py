"""The whole mission on the built-in synthetic dataset, in one command (4.5 minutes of pretraining,
then fine-tuning, evaluation and export).

    ./run demo        (or: python -m vdim_tf.launch.demo [--workdir=runs/demo] [--quick])

1. generates the synthetic motion dataset (classes differ only by motion) on first use;
2. pretrains VDIM (CPU preset) — `configs/demo_pretrain.cfg`;
3. fine-tunes the classifier from the pretrained encoder and from random initialisation —
   `configs/demo_finetune.cfg`;
4. evaluates both (video-level accuracy, retrieval R@1);
5. exports the pretrained-then-fine-tuned classifier as a SavedModel;
6. predicts the class of a generated test video with the export;
and prints a results table, where everything went, and the TensorBoard command. Each step is the
same command a user would type (shown as it runs); rerunning resumes or reuses finished steps.
"""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from vdim_tf import launch

flags.DEFINE_string("workdir", os.path.join("runs", "demo"), "Where the demo's runs and export go.")
flags.DEFINE_string("synthetic_dir", os.path.join("data", "synthetic"), "Where the synthetic dataset goes.")
flags.DEFINE_integer("pretrain_steps", None, "VDIM pretraining steps, without the flagfile's time limit. Default: "
                     "configs/demo_pretrain.cfg's (its --time_limit_minutes, capped by its --train_steps).")
flags.DEFINE_integer("finetune_steps", None, "Fine-tuning steps for each initialisation. Default: "
                     "configs/demo_finetune.cfg's.")
flags.DEFINE_bool("quick", False, "A smoke run: 20 pretraining and 20 fine-tuning steps.")

FLAGS = flags.FLAGS


# Lines TensorFlow prints at start-up whatever the log level (before absl logging is set up), and
# Grappler's harmless notice (WORKSPACE.md, "Known messages"): kept out of the demo's output.
_NOISE = (b"All log messages before absl::InitializeLog", b"oneDNN custom operations are on",
          b"remapper failed", b"cpu_feature_guard", b"To enable the following instructions")


def _forward_stderr(stream):
    """Copies a child's stderr to ours without the start-up noise, keeping progress bars live."""
    pending = b""
    while chunk := os.read(stream.fileno(), 4096):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not any(n in line for n in _NOISE):
                sys.stderr.buffer.write(line + b"\n")
        if b"\r" in pending and not any(n in pending for n in _NOISE):
            cut = pending.rindex(b"\r")
            sys.stderr.buffer.write(pending[:cut])
            pending = pending[cut:]
        sys.stderr.buffer.flush()
    if pending and not any(n in pending for n in _NOISE):
        sys.stderr.buffer.write(pending)
        sys.stderr.buffer.flush()


def _step(title, module, *args):
    cmd = [sys.executable, "-m", f"vdim_tf.launch.{module}", *args]
    print(f"\n=== {title}\n$ python -m vdim_tf.launch.{module} {' '.join(args)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    _forward_stderr(process.stderr)
    code = process.wait()
    if code != 0:
        sys.exit(f"[demo] step '{title}' failed with exit status {code}; see the output above")
    print(f"[demo] {title}: {time.perf_counter() - start:.0f} s", flush=True)


def main(argv):
    del argv
    pretrain_steps = 20 if FLAGS.quick else FLAGS.pretrain_steps
    finetune_steps = 20 if FLAGS.quick else FLAGS.finetune_steps
    # None: the flagfile's own time limit and step count; a step count given here replaces both.
    pretrain_flags = [] if pretrain_steps is None else [f"--train_steps={pretrain_steps}", "--time_limit_minutes=0"]
    finetune_flags = [] if finetune_steps is None else [f"--train_steps={finetune_steps}"]
    work, data = FLAGS.workdir, FLAGS.synthetic_dir
    pretrain_dir = os.path.join(work, "pretrain")
    runs = {"VDIM-pretrained": os.path.join(work, "finetune_pretrained"),
            "random init": os.path.join(work, "finetune_random")}
    export_dir = os.path.join(work, "export")
    cfg = lambda name: os.path.abspath(launch.find_config(os.path.join("configs", name)))  # noqa: E731
    started = time.perf_counter()

    _step("1/6 prepare the synthetic dataset", "prepare", "--dataset=synthetic", f"--output_dir={data}")
    _step("2/6 VDIM pretraining", "pretrain", f"--flagfile={cfg('demo_pretrain.cfg')}",
          f"--synthetic_dir={data}", f"--model_dir={pretrain_dir}", *pretrain_flags)
    for name, model_dir in runs.items():
        extra = [f"--pretrained={pretrain_dir}"] if name == "VDIM-pretrained" else []
        _step(f"3/6 fine-tune ({name})", "finetune", f"--flagfile={cfg('demo_finetune.cfg')}",
              f"--synthetic_dir={data}", f"--model_dir={model_dir}", *finetune_flags, *extra)
    _step("4/6 evaluate both", "evaluate", f"--model_dir={','.join(runs.values())}")
    _step("5/6 export the pretrained-then-fine-tuned classifier", "export",
          f"--model_dir={runs['VDIM-pretrained']}", f"--export_dir={export_dir}", "--overwrite")
    video_dir = os.path.join(data, "videos", "test")
    video = os.path.join(video_dir, sorted(os.listdir(video_dir))[0])
    video = os.path.join(video, sorted(os.listdir(video))[0])
    _step("6/6 predict a test video with the export", "predict", f"--export_dir={export_dir}", video)

    results = {}
    for name, model_dir in runs.items():
        with open(os.path.join(model_dir, "results.json")) as f:
            results[name] = json.load(f)
    chance = next(iter(results.values()))["chance"]
    print(f"\n=== results on held-out synthetic videos (chance top-1 = {chance:.3f})")
    print(f"{'initialisation':<18} {'video top-1':>11} {'clip top-1':>10} {'retrieval R@1':>13}")
    for name, r in results.items():
        print(f"{name:<18} {r['video_top1']:>11.3f} {r['clip_top1']:>10.3f} {r['retrieval']['R@1']:>13.3f}")
    print(f"\nrun folders: {pretrain_dir}, {', '.join(runs.values())}")
    print(f"SavedModel:  {export_dir}")
    print(f"watch:       tensorboard --logdir {work}")
    print(f"total time:  {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    launch.run(main)
