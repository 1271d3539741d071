"""Builds the real-video motion benchmark (playback speed × direction) from the clips in ../shared/data.

    python -m vdim_tf.launch.motion_benchmark --output_dir=data/motion

Classes, construction and the train/test split of the source clips: `vdim_tf/data/motion.py`.
The output has the layout `prepare` writes, so it is used unchanged:

    ./run pretrain --flagfile=configs/demo_pretrain.cfg --train_data='data/motion/train/*'
    ./run finetune --flagfile=configs/demo_finetune.cfg --train_data='data/motion/train/*' \\
        --test_data='data/motion/test/*' --pretrained=runs/demo/pretrain --freeze_encoder
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
flags.DEFINE_string("output_dir", "data/motion", "Where the records, labels.txt and manifest.json go.")
flags.DEFINE_list("speeds", ["1", "2"], "Playback speeds (source frames per example frame); classes are "
                  "forward/reversed x speeds. Clips need lcm(speeds) * --frames frames.")
flags.DEFINE_integer("frames", 32, "Frames per example (32: two 16-frame views of the CPU preset).")
flags.DEFINE_integer("hop", 12, "Source frames between segment starts.")
flags.DEFINE_integer("short_side", 64, "Shorter side of the stored frames, in pixels.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        sys.exit(f"motion_benchmark: error: unexpected arguments {argv[1:]}")
    from vdim_tf.data import motion

    try:
        speeds = tuple(int(s) for s in FLAGS.speeds)
    except ValueError:
        sys.exit(f"motion_benchmark: error: --speeds={','.join(FLAGS.speeds)}: give integers, e.g. 1,2")
    config = motion.MotionConfig(data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, speeds=speeds,
                                 frames=FLAGS.frames, hop=FLAGS.hop, short_side=FLAGS.short_side)
    print(f"motion benchmark: {FLAGS.data_dir} -> {FLAGS.output_dir}; classes {', '.join(config.class_names)}")
    try:
        manifest = motion.build_benchmark(config)
    except FileNotFoundError as e:
        sys.exit(f"motion_benchmark: error: --{e}")
    except ValueError as e:
        sys.exit(f"motion_benchmark: error: {e}")
    except OSError as e:
        sys.exit(f"motion_benchmark: error: --output_dir={FLAGS.output_dir}: cannot write there: {e}")
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['examples']} examples from {len(info['sources'])} clips "
              f"({len(info['skipped'])} skipped); per class {info['per_class']}")
    print(f"chance = {1 / len(config.class_names):.3f}; manifest.json and labels.txt in {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main)
