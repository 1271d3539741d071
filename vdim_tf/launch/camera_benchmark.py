"""Builds the camera-motion benchmark (six camera motions over real video) from the clips in ../shared/data.

    python -m vdim_tf.launch.camera_benchmark --output_dir=data/camera

Classes, construction and the train/test split of the source clips: `vdim_tf/data/camera.py`.
The output has the layout `prepare` writes, so it is used unchanged:

    ./run pretrain --flagfile=configs/demo_pretrain.cfg --train_data='data/camera/train/*'
    ./run finetune --flagfile=configs/demo_finetune.cfg --train_data='data/camera/train/*' \\
        --test_data='data/camera/test/*' --pretrained=runs/demo/pretrain --freeze_encoder
    ./run evaluate --model_dir=runs/demo/finetune

Exit status 1, with one line naming the flag, for a bad setting or a missing --data_dir.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib
import sys

from absl import app, flags

DEFAULT_DATA_DIR = str(pathlib.Path(__file__).resolve().parents[3] / "shared" / "data")

flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Folder of the source clips (../shared/data beside the checkout).")
flags.DEFINE_string("output_dir", "data/camera", "Where the records, labels.txt, manifest.json and examples.json go.")
flags.DEFINE_integer("frames", 32, "Frames per example (32: the paper's views of the CPU preset).")
flags.DEFINE_integer("hop", 8, "Source frames between window starts.")
flags.DEFINE_integer("examples_per_window", 1, "Examples per class from each window, each with its own camera.")
flags.DEFINE_integer("size", 128, "Side of the stored square frames, in pixels.")
flags.DEFINE_integer("source_short_side", 240, "Shorter side the source frames are scaled to before the camera "
                     "samples them (240: UCF-101's and HMDB-51's own).")
flags.DEFINE_list("speed", ["2", "4"], "min,max pixels per frame of the pans.")
flags.DEFINE_list("angular_speed", ["2", "4"], "min,max degrees per frame of the rotations.")
flags.DEFINE_integer("seed", 0, "Seed of every camera; the same seed writes the same benchmark.")
FLAGS = flags.FLAGS


def _range(name):
    values = getattr(FLAGS, name)
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        sys.exit(f"camera_benchmark: error: --{name}={','.join(values)}: give two numbers, min,max")
    return low, high


def main(argv):
    if len(argv) > 1:
        sys.exit(f"camera_benchmark: error: unexpected arguments {argv[1:]}")
    from vdim_tf.data import camera

    config = camera.CameraConfig(data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, frames=FLAGS.frames,
                                 hop=FLAGS.hop, examples_per_window=FLAGS.examples_per_window, size=FLAGS.size,
                                 source_short_side=FLAGS.source_short_side, speed=_range("speed"),
                                 angular_speed=_range("angular_speed"), seed=FLAGS.seed)
    print(f"camera benchmark: {FLAGS.data_dir} -> {FLAGS.output_dir}; classes {', '.join(config.class_names)}")
    try:
        manifest = camera.build_benchmark(config)
    except FileNotFoundError as e:
        sys.exit(f"camera_benchmark: error: --{e}")
    except ValueError as e:
        sys.exit(f"camera_benchmark: error: {e}")
    except OSError as e:
        sys.exit(f"camera_benchmark: error: --output_dir={FLAGS.output_dir}: cannot write there: {e}")
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['examples']} examples from {len(info['sources'])} clips "
              f"({len(info['skipped'])} skipped); per class {info['per_class']}")
    print(f"chance = {1 / len(config.class_names):.3f}; manifest.json, examples.json and labels.txt in "
          f"{FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main)
