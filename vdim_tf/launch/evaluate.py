"""Evaluate fine-tuned classifiers: video-level accuracy, clip-level accuracy, retrieval, linear probe.

    python -m vdim_tf.launch.evaluate --model_dir=runs/ucf_split1[,runs/ucf_split2,runs/ucf_split3]
    python -m vdim_tf.launch.evaluate --model_dir=runs/pretrain --test_data='data/motion/test/*'

The linear protocol (`vdim_tf/linear_eval.py`: logistic regression on standardised frozen φ_g∘Ψ
and Ψ features, fitted on the training videos) is reported beside the MLP (`linear_phi_top1`,
`linear_psi_top1`; `--nolinear_probe` skips it). A pretraining run folder has no classifier: for it
only the linear probe is run, on `--test_data` (required) and `--train_data` (default: the run's own
training data; it must be labelled).

Each run's results go to `<model_dir>/results.json` and TensorBoard (`<model_dir>/eval`: scalars,
confusion matrix, projector embeddings). With a `--test_data` other than the run's own, they go to
`results_<data>.json` and `eval_<data>/` instead, named after the data, so the run's own results
are never replaced. The test records' labels must be the model's (else an error naming both lists,
before anything runs). With several runs (one per split), a table and the mean over them are
printed, and written to `--summary_json` when given.

Exit status: 0 evaluated; 1 bad flags, a bad run folder, or test data that is missing or labelled
otherwise than the model.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch

flags.DEFINE_list("model_dir", None, "Fine-tuning or pretraining run folder(s), comma-separated (e.g. one per "
                  "split). Required.")
flags.DEFINE_string("test_data", None, "Glob of test TFRecords, only with a single --model_dir. "
                    "Default: the run's recorded --test_data (a pretraining run records none: required there).")
flags.DEFINE_integer("batch_size", 8, "Test windows per batch (each window is K views of the run's view length).")
flags.DEFINE_integer("window_stride", None, "Frames between test window starts. Default: the window "
                     "length (non-overlapping windows covering the video).")
flags.DEFINE_string("train_data", None, "Pretraining runs only: glob of labelled training TFRecords for the linear "
                    "probe, only with a single --model_dir. Default: the run's own --train_data.")
flags.DEFINE_bool("linear_probe", True, "Also fit and score the linear protocol (logistic regression on "
                  "standardised frozen φ_g∘Ψ and Ψ features of the training videos).")
flags.DEFINE_bool("retrieval", True, "Also compute retrieval R@1/5/10/20/50 against the training videos.")
flags.DEFINE_integer("projector_videos", 200, "Videos exported to TensorBoard's projector (0 = none).")
flags.DEFINE_string("summary_json", None, "JSON file for the per-run table and the mean. Default: none written.")
FLAGS = flags.FLAGS

KEYS = ("video_top1", "video_top5", "clip_top1", "clip_top5")
LINEAR_KEYS = ("linear_phi_top1", "linear_psi_top1")


def _with_linear_keys(result):
    """Adds the linear probe's test top-1 as flat table columns (nan where absent)."""
    probe = result.get("linear_probe", {})
    return {**result, **{f"linear_{k}_top1": probe[k]["top1"] if k in probe else float("nan") for k in ("phi", "psi")}}


def main(argv):
    if len(argv) > 1:
        sys.exit(f"evaluate: error: unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from vdim_tf import evaluate

    if not FLAGS.model_dir:
        sys.exit("evaluate: error: --model_dir is required")
    if FLAGS.test_data and len(FLAGS.model_dir) > 1:
        sys.exit("evaluate: error: --test_data applies to a single --model_dir; each run records its own")
    if FLAGS.train_data and len(FLAGS.model_dir) > 1:
        sys.exit("evaluate: error: --train_data applies to a single --model_dir")
    from vdim_tf import linear_eval, loop

    rows = []
    try:
        for model_dir in FLAGS.model_dir:
            if linear_eval.is_pretraining_run(model_dir):
                rows.append(linear_eval.evaluate_pretraining_run(model_dir, FLAGS.test_data, FLAGS.train_data,
                                                                 FLAGS.batch_size, FLAGS.window_stride))
            elif FLAGS.train_data:
                raise ValueError(f"--train_data applies to pretraining runs; {model_dir} is a fine-tuning run and "
                                 "uses its recorded training data")
            else:
                rows.append(evaluate.evaluate_run(model_dir, FLAGS.test_data, FLAGS.batch_size, FLAGS.window_stride,
                                                  FLAGS.retrieval, FLAGS.projector_videos,
                                                  linear_probe=FLAGS.linear_probe))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"evaluate: error: {e}")
    except loop.TrainingError as e:  # checkpoints of which none restores
        sys.exit(f"evaluate: {e}")
    rows = [_with_linear_keys(r) for r in rows]
    keys = KEYS + (LINEAR_KEYS if any("linear_probe" in r for r in rows) else ())
    recall_keys = sorted({k for r in rows for k in r.get("retrieval", {})}, key=lambda k: int(k[2:]))
    header = ["run", "videos", *keys, *recall_keys]
    print("\t".join(header))
    nan = float("nan")
    for r in rows:
        print("\t".join([r["model_dir"], str(r["videos"]), *(f"{r.get(k, nan):.4f}" for k in keys),
                         *(f"{r.get('retrieval', {}).get(k, nan):.4f}" for k in recall_keys)]))
    mean = {k: sum(r.get(k, nan) for r in rows) / len(rows) for k in keys}
    for k in recall_keys:
        mean[k] = sum(r.get("retrieval", {}).get(k, nan) for r in rows) / len(rows)
    if len(rows) > 1:
        print("\t".join(["mean", str(sum(r["videos"] for r in rows)), *(f"{mean[k]:.4f}" for k in (*keys, *recall_keys))]))
    print(f"(video_* = probabilities averaged over every window of a video; clip_* = per window; linear_* = "
          f"logistic regression on standardised frozen φ_g∘Ψ (phi) or Ψ (psi) features of the training videos; "
          f"chance top-1 = {rows[0]['chance']:.4f})")
    for r in rows:
        if r.get("results_file"):
            print(f"results: {r['results_file']}")
    if FLAGS.summary_json:
        with open(FLAGS.summary_json, "w") as f:
            json.dump({"runs": rows, "mean": mean}, f, indent=2)


if __name__ == "__main__":
    launch.run(main)
