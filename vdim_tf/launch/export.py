"""Export a run as a SavedModel that classifies (or embeds) raw video.

    python -m vdim_tf.launch.export --model_dir=runs/demo/finetune --export_dir=exports/demo/1
    python -m vdim_tf.launch.export --model_dir=runs/demo/pretrain --export_dir=exports/demo_encoder/1

A fine-tuning run gives `serving_default` (uint8 video -> class probabilities averaged over every
window, top-k labels), `serve_examples` (serialised SequenceExamples -> the same), `embed`,
`embed_examples` and `metadata`; a pretraining run, or `--encoder_only`, gives the embedding
signatures only (`serving_default` is then `embed`). See `vdim_tf/export.py` for the signatures.
TF Serving expects a numbered version folder: export to `<models>/<name>/1`.

`--export_dir` must be a new or empty folder; `--overwrite` also lets it replace a previous
export (a folder holding only a SavedModel), never a folder holding anything else, the run folder
or a folder that contains it. The export is written beside it and renamed into place.

Exit status: 0 written; 1 bad run folder, bad flags or an export_dir in the way.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch

flags.DEFINE_string("model_dir", None, "Fine-tuning or pretraining run folder (its newest checkpoint is exported). "
                    "Required.")
flags.DEFINE_string("export_dir", None, "Where the SavedModel goes (for TF Serving: <models>/<name>/<version>). "
                    "Required.")
flags.DEFINE_bool("encoder_only", False, "Export only the φ_g∘Ψ embedding of a fine-tuning run.")
flags.DEFINE_integer("top_k", 5, "Labels returned per video by the classifier signatures (capped at the class count).")
flags.DEFINE_integer("window_stride", None, "Frames between window starts. Default: the window length, as "
                     "evaluate.")
flags.DEFINE_integer("windows_per_step", 8, "Windows run through the model at once (memory vs. speed).")
flags.DEFINE_bool("overwrite", False, "Replace a previous export in --export_dir (a folder holding only a "
                  "SavedModel; any other non-empty folder is refused).")
flags.DEFINE_enum("format", "saved_model", ["saved_model", "keras"], "saved_model: the serving export described "
                  "above; keras: the classifier (or encoder) as one .keras file for keras.models.load_model, "
                  "--export_dir=NAME.keras.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        sys.exit(f"export: error: unexpected arguments {argv[1:]} (flags are --name=value)")
    logging.set_verbosity(logging.WARNING)
    for name in ("model_dir", "export_dir"):
        if not getattr(FLAGS, name):
            sys.exit(f"export: error: --{name} is required")
    from vdim_tf import export

    if FLAGS.format == "keras":
        try:
            model = export.export_keras(FLAGS.model_dir, FLAGS.export_dir, overwrite=FLAGS.overwrite,
                                        encoder_only=FLAGS.encoder_only)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"export: error: {e}")
        print(f"exported {type(model).__name__} to {FLAGS.export_dir}; load with keras.models.load_model "
              "after `import vdim_tf.api`")
        return
    try:
        config = export.export_run(FLAGS.model_dir, FLAGS.export_dir, overwrite=FLAGS.overwrite,
                                   encoder_only=FLAGS.encoder_only, top_k=FLAGS.top_k,
                                   window_stride=FLAGS.window_stride, windows_per_step=FLAGS.windows_per_step)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"export: error: {e}")
    what = (f"classifier over {len(config.label_names)} classes" if config.kind == export.CLASSIFIER
            else "encoder (embedding only)")
    print(f"exported {what} to {FLAGS.export_dir}: windows of {config.num_views} x {config.final_length} frames "
          f"(factor {config.factor}), {config.size} px, {config.color_space}; "
          f"inspect with: saved_model_cli show --dir {FLAGS.export_dir} --all")


if __name__ == "__main__":
    launch.run(main)
