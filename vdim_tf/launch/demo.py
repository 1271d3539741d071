"""The demo: VDIM pretraining of the CPU preset on the built-in synthetic motion dataset.

    ./run demo        (or: python -m vdim_tf.launch.demo [--model_dir=...] [--train_steps=...])

Generates the synthetic dataset on first use (data/synthetic), pretrains for a few hundred steps
from `configs/demo_pretrain.cfg`, and prints the loss and NCE accuracy falling and rising. A
rerun resumes (or, when finished, reports) the same run.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

flags.DEFINE_string("model_dir", os.path.join("runs", "demo", "pretrain"), "Where the demo run goes.")
flags.DEFINE_integer("train_steps", 300, "Pretraining steps of the demo.")
flags.DEFINE_string("synthetic_dir", os.path.join("data", "synthetic"), "Where the synthetic dataset goes.")

FLAGS = flags.FLAGS
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo_pretrain.cfg")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import subprocess

    cmd = [
        sys.executable, "-m", "vdim_tf.launch.pretrain", f"--flagfile={os.path.normpath(CONFIG)}",
        f"--model_dir={FLAGS.model_dir}", f"--train_steps={FLAGS.train_steps}",
        f"--synthetic_dir={FLAGS.synthetic_dir}",
    ]
    print("[demo] " + " ".join(cmd[1:]), flush=True)
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    app.run(main)
