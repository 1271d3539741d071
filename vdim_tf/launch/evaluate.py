"""Evaluate fine-tuned classifiers: video-level accuracy, clip-level accuracy, retrieval.

    python -m vdim_tf.launch.evaluate --model_dir=runs/ucf_split1[,runs/ucf_split2,runs/ucf_split3]

Each run's results go to `<model_dir>/results.json` and TensorBoard (`<model_dir>/eval`: scalars,
confusion matrix, projector embeddings). With several runs (one per split), a table and the mean
over them are printed, and written to `--summary_json` when given.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch

flags.DEFINE_list("model_dir", None, "Fine-tuning run folder(s), comma-separated (e.g. one per split).")
flags.DEFINE_string("test_data", None, "Glob of test TFRecords; default: the run's recorded --test_data. "
                    "Only with a single --model_dir.")
flags.DEFINE_integer("batch_size", 8, "Windows per batch.")
flags.DEFINE_integer("window_stride", None, "Frames between test windows; default: the window length "
                     "(non-overlapping windows covering the video).")
flags.DEFINE_bool("retrieval", True, "Also compute retrieval R@1/5/10/20/50 against the training videos.")
flags.DEFINE_integer("projector_videos", 200, "Videos exported to TensorBoard's projector (0 = none).")
flags.DEFINE_string("summary_json", None, "Where to write the per-run table and the mean.")
FLAGS = flags.FLAGS

KEYS = ("video_top1", "video_top5", "clip_top1", "clip_top5")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"evaluate: error: unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from vdim_tf import evaluate

    if not FLAGS.model_dir:
        sys.exit("evaluate: error: --model_dir is required")
    if FLAGS.test_data and len(FLAGS.model_dir) > 1:
        sys.exit("evaluate: error: --test_data applies to a single --model_dir; each run records its own")
    rows = []
    try:
        for model_dir in FLAGS.model_dir:
            rows.append(evaluate.evaluate_run(model_dir, FLAGS.test_data, FLAGS.batch_size, FLAGS.window_stride,
                                              FLAGS.retrieval, FLAGS.projector_videos))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"evaluate: error: {e}")
    recall_keys = sorted({k for r in rows for k in r.get("retrieval", {})}, key=lambda k: int(k[2:]))
    header = ["run", "videos", *KEYS, *recall_keys]
    print("\t".join(header))
    for r in rows:
        print("\t".join([r["model_dir"], str(r["videos"]), *(f"{r[k]:.4f}" for k in KEYS),
                         *(f"{r['retrieval'].get(k, float('nan')):.4f}" for k in recall_keys)]))
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in KEYS}
    for k in recall_keys:
        mean[k] = sum(r["retrieval"][k] for r in rows) / len(rows)
    if len(rows) > 1:
        print("\t".join(["mean", str(sum(r["videos"] for r in rows)), *(f"{mean[k]:.4f}" for k in (*KEYS, *recall_keys))]))
    print(f"(video_* = probabilities averaged over every window of a video; clip_* = per window; chance "
          f"top-1 = {rows[0]['chance']:.4f}; results.json in each run folder)")
    if FLAGS.summary_json:
        with open(FLAGS.summary_json, "w") as f:
            json.dump({"runs": rows, "mean": mean}, f, indent=2)


if __name__ == "__main__":
    launch.run(main)
