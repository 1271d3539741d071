"""The mean of a pretraining run's last checkpoints, as a run folder the launchers read.

Tests whether the frozen features would gain from averaging the weights along the end of a run
(what an exponential moving average of the weights, or stochastic weight averaging, would give):
the model weights of the chosen checkpoints of `--run` are averaged, one by one, and written to
`--out` as a pretraining run folder (its `config.json` and `training_time.json` copied, one
checkpoint numbered as the newest one averaged), so `finetune --pretrained=OUT`, `evaluate` and
`bench/evidence.py --pretrain_from` read it like the run itself. Only the model is written, not
the optimizer: the folder is for probing, and pretraining cannot resume from it.

    python bench/average_checkpoints.py --run=RUN --out=OUT [--checkpoints=all|STEP,STEP,...]

`--checkpoints` names steps among the run's kept checkpoints (`pretrain --keep_checkpoints`, 3 by
default) or `all` (the default); a single step writes that checkpoint alone, to probe it.
"""

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from vdim_tf import finetune, loop
from vdim_tf.models.encoder import get_preset
from vdim_tf.models.vdim import VDIM

CONFIG_FILE = "config.json"
COPIED = (CONFIG_FILE, "training_time.json")


def kept_checkpoints(run):
    """{step: prefix} of the run's listed checkpoints that exist on disk (`loop`'s own listing)."""
    return dict(sorted((int(p.rsplit("-", 1)[1]), p) for p in loop.checkpoints_newest_first(run)
                       if tf.io.gfile.exists(p + ".index")))


def average(run, out, steps=None):
    """Writes the mean of `run`'s checkpoints at `steps` (all kept ones when None) to `out`.

    Returns the prefix written. Raises ValueError (one line, naming what is wrong) for a folder
    that is not a pretraining run, a step it has no checkpoint of, or an `out` that holds
    checkpoints already.
    """
    try:  # fine-tuning's reading of a pretrained run: its config.json and a checkpoint, or one line why not
        model_config, _ = finetune.read_pretrained(run, note_version=False)
    except finetune.PretrainedError as e:
        raise ValueError(str(e).replace("--pretrained=", "--run=", 1)) from None
    kept = kept_checkpoints(run)
    steps = sorted(kept) if steps is None else sorted(set(steps))
    missing = [s for s in steps if s not in kept]
    if missing:
        raise ValueError(f"--checkpoints: the run has no checkpoint at step(s) {', '.join(map(str, missing))}; "
                         f"it keeps {', '.join(map(str, kept))}")
    if loop.latest_checkpoint(out) or os.path.exists(os.path.join(out, CONFIG_FILE)):
        raise ValueError(f"--out={out}: holds a run already; give a new folder")

    model = VDIM(**model_config)
    preset = get_preset(model_config["encoder_preset"])
    model.build_for(preset.frames, preset.size)  # as fine-tuning builds it: the weights do not depend on it
    checkpoint = tf.train.Checkpoint(model=model)
    total = None
    for step in steps:
        checkpoint.restore(kept[step]).expect_partial().assert_existing_objects_matched()
        weights = [w.astype(np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    model.set_weights([t / len(steps) for t in total])

    os.makedirs(out, exist_ok=True)
    for name in COPIED:
        if os.path.exists(os.path.join(run, name)):
            shutil.copy(os.path.join(run, name), out)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out, "checkpoints"), max_to_keep=1)
    return manager.save(checkpoint_number=steps[-1])


def _steps(text):
    if text == "all":
        return None
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give 'all' or comma-separated steps, got {text!r}") from None
    if any(s < 0 for s in steps):
        raise argparse.ArgumentTypeError(f"steps are >= 0, got {text!r}")
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a pretraining run folder (its model_dir)")
    parser.add_argument("--out", required=True, help="a new folder for the averaged run")
    parser.add_argument("--checkpoints", type=_steps, default=None,
                        help="'all' kept checkpoints (default) or comma-separated steps")
    args = parser.parse_args()
    try:
        prefix = average(args.run, args.out, args.checkpoints)
    except ValueError as e:
        parser.exit(2, f"average_checkpoints: error: {e}\n")
    print(f"wrote {prefix}")


if __name__ == "__main__":
    main()
