"""Prepares a video dataset as sharded TFRecords, or generates the built-in synthetic dataset.

Real data (see `vdim_tf/data/listing.py` for the layouts each dataset expects):

    python -m vdim_tf.launch.prepare --dataset=ucf101 --video_dir=UCF-101 \\
        --splits_dir=ucfTrainTestlist --output_dir=records/ucf101
    python -m vdim_tf.launch.prepare --dataset=hmdb51 --video_dir=hmdb51 \\
        --splits_dir=testTrainMulti_7030_splits --output_dir=records/hmdb51 --splits=1
    python -m vdim_tf.launch.prepare --dataset=kinetics --video_dir=kinetics600/videos \\
        --annotations=kinetics600/annotations --output_dir=records/k600 --fps=25
    python -m vdim_tf.launch.prepare --dataset=folder --video_dir=my_videos/train \\
        --split_name=train --output_dir=records/mine
    python -m vdim_tf.launch.prepare --dataset=folder --video_dir=my_unlabelled_videos \\
        --split_name=unlabelled --output_dir=records/mine

`folder` reads `video_dir/<class>/<video>`, labels from the sorted class names; a folder with no
class folders, its videos directly in it, is written without labels (label -1), for pretraining.

Synthetic data (classes that differ only by motion; see `vdim_tf/data/synthetic.py`):

    python -m vdim_tf.launch.prepare --dataset=synthetic --output_dir=data/synthetic

Output: `{output_dir}/{split}/{split}-NNNNN-of-NNNNN.tfrecord`, `{output_dir}/labels.txt` and
`{output_dir}/report.json`. A re-run resumes: complete shards are kept.

Exit status: 0 when every listed file on disk was written; 2 when some files were skipped as
unreadable (they are listed in the summary and in report.json); 1 for a bad flag value (including
an --output_dir that is a file, and a folder dataset with no video in it or in a <class>/ subfolder) or a
malformed split/annotation file.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys
import time

from absl import flags

from vdim_tf import launch
from vdim_tf.data import prepare, synthetic

EXIT_SKIPPED = 2

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(prepare.DATASETS) + ["synthetic"],
                  "Dataset layout to read; 'synthetic' generates the built-in motion dataset. Required.")
flags.DEFINE_string("video_dir", None, "Folder of input videos (not used for synthetic). Required otherwise.")
flags.DEFINE_string("output_dir", None, "Folder for the TFRecord shards, labels.txt and report.json. Required.")
flags.DEFINE_string("splits_dir", None,
                    "ucf101/hmdb51: folder with classInd.txt, trainlist0N.txt, testlist0N.txt; for hmdb51 also "
                    "the official <class>_test_split<k>.txt files (testTrainMulti_7030_splits/). Default: none.")
flags.DEFINE_string("annotations", None,
                    "kinetics: annotation CSV (label,youtube_id,time_start,time_end,split) or a folder of "
                    "them. Default: none.")
flags.DEFINE_string("split_name", "train", "folder: split name the videos are written as. Default: train.")
flags.DEFINE_list("splits", None,
                  "ucf101/hmdb51: numbered splits to write, e.g. 1 or 1,2,3. Default: every split found.")
flags.DEFINE_float("fps", None, "Frames per second to store (frames/s). Default: the video's native rate.")
flags.DEFINE_integer("short_side", 128, "Shorter side after resizing, in pixels; 0 keeps the size. Default: 128.")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of stored frames, 1-100. Default: 90.")
flags.DEFINE_integer("videos_per_shard", 100, "Videos per TFRecord shard (at most). Default: 100.")
flags.DEFINE_integer("workers", None, "Decoding processes; 1 decodes in this process. Default: os.cpu_count().")
flags.DEFINE_bool("progress", True, "Show a progress bar. Default: true.")
flags.DEFINE_integer("synthetic_classes", 6, "synthetic: number of motion classes, 2-6. Default: 6.")
flags.DEFINE_integer("synthetic_train_per_class", 32, "synthetic: training videos per class. Default: 32.")
flags.DEFINE_integer("synthetic_test_per_class", 8, "synthetic: test videos per class. Default: 8.")
flags.DEFINE_integer("synthetic_frames", 48, "synthetic: frames per video. Default: 48.")
flags.DEFINE_integer("synthetic_size", 64, "synthetic: frame height and width in pixels (even). Default: 64.")
flags.DEFINE_integer("synthetic_scene_length", 8, "synthetic: frames between scene cuts (new background "
                     "and shapes, same motion); 0 = no cuts. Default: 8 (this project's choice, not the paper's: "
                     "one scene apart is what the demo's pretraining views are).")
flags.DEFINE_integer("synthetic_seed", 0, "synthetic: random seed. Default: 0.")


class _FlagError(Exception):
    pass


def _split_ids():
    if FLAGS.splits is None:
        return None
    try:
        return tuple(int(s) for s in FLAGS.splits)
    except ValueError:
        raise _FlagError(f"--splits={','.join(FLAGS.splits)}: expected split numbers such as 1 or 1,2,3") from None


def _prepare_config():
    if FLAGS.video_dir is None:
        raise _FlagError(f"--video_dir is required for --dataset={FLAGS.dataset}")
    try:
        return prepare.PrepareConfig(
            dataset=FLAGS.dataset,
            video_dir=FLAGS.video_dir,
            output_dir=FLAGS.output_dir,
            splits_dir=FLAGS.splits_dir,
            annotations=FLAGS.annotations,
            split_name=FLAGS.split_name,
            split_ids=_split_ids(),
            fps=FLAGS.fps,
            short_side=FLAGS.short_side or None,
            jpeg_quality=FLAGS.jpeg_quality,
            videos_per_shard=FLAGS.videos_per_shard,
            workers=FLAGS.workers,
            progress=FLAGS.progress,
        )
    except prepare.ConfigError as e:
        raise _flag_error(e) from None


def _flag_error(error):
    """A `prepare.ConfigError` told in terms of the command-line flag it comes from."""
    if error.field == "split_ids":
        return _FlagError(f"--splits={','.join(FLAGS.splits)}: {error.problem}")
    shown = " is not set" if error.value is None else f"={error.value}"
    return _FlagError(f"--{error.field}{shown}: {error.problem}")


def _synthetic_config():
    try:
        return synthetic.SyntheticConfig(
            num_classes=FLAGS.synthetic_classes,
            train_videos_per_class=FLAGS.synthetic_train_per_class,
            test_videos_per_class=FLAGS.synthetic_test_per_class,
            num_frames=FLAGS.synthetic_frames,
            frame_size=FLAGS.synthetic_size,
            scene_length=FLAGS.synthetic_scene_length,
            seed=FLAGS.synthetic_seed,
            workers=FLAGS.workers or 1,
        )
    except ValueError as e:
        raise _FlagError(f"synthetic flags: {e}") from None


def run(argv):
    """Runs the command; returns the exit status."""
    if len(argv) > 1:
        raise _FlagError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if FLAGS.dataset is None:
        raise _FlagError(f"--dataset is required: one of {', '.join(list(prepare.DATASETS) + ['synthetic'])}")
    if not FLAGS.output_dir:
        raise _FlagError("--output_dir is required")
    if FLAGS.dataset == "synthetic":
        try:
            prepare.check_output_dir(FLAGS.output_dir)
        except prepare.ConfigError as e:
            raise _flag_error(e) from None
        start = time.monotonic()
        path = synthetic.generate_synthetic_dataset(FLAGS.output_dir, _synthetic_config())
        with open(os.path.join(path, "report.json"), encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        counts = ", ".join(f"{name} {split['written']} videos" for name, split in splits.items())
        print(f"synthetic dataset ready in {path}: {counts} ({time.monotonic() - start:.1f} s)")
        return 0
    try:
        report = prepare.prepare_dataset(_prepare_config())
    except prepare.ConfigError as e:
        raise _flag_error(e) from None
    except ValueError as e:
        raise _FlagError(str(e)) from None
    print(report.summary())
    if report.num_skipped:
        print(f"exit status {EXIT_SKIPPED}: some files were skipped")
        return EXIT_SKIPPED
    return 0


def main(argv):
    try:
        status = run(argv)
    except _FlagError as e:
        print(f"prepare: error: {e}", file=sys.stderr)
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    launch.run(main)
