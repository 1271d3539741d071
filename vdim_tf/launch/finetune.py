"""Fine-tune an action classifier on a pretrained (or random) encoder, paper §4.1.

    python -m vdim_tf.launch.finetune --flagfile=configs/demo_finetune.cfg --pretrained=runs/demo/pretrain

`--pretrained` is a pretraining run folder (its newest checkpoint) or a checkpoint prefix; absent,
the encoder starts at random (the baseline). `--freeze_encoder` trains only the classifier (probe).
Checkpoints, resume, SIGTERM and TensorBoard behave as in `pretrain`.

Before training, every train and test record's label is checked against the labels file, and a
note is printed when the pretrained encoder was trained on another colour space (RGB vs Lab).

Exit status: 0 done (at --train_steps or --time_limit_minutes); 1 bad configuration, bad
--pretrained, records labelled otherwise than the labels file, --test_data matching no file, or a
non-finite loss; 143 SIGTERM.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch
from vdim_tf.launch import flags as vflags

vflags.define_run_flags()
vflags.define_data_flags(test_data=True)
vflags.define_augment_flags(color_mode="lab")
flags.DEFINE_enum("encoder", None, ["paper", "cpu"], "Encoder preset; must match --pretrained's. Default: "
                  "--pretrained's, else paper.")
flags.DEFINE_integer("embedding_dim", None, "Output size of φ_g (paper: 512); must match --pretrained's. "
                     "Default: --pretrained's, else 512 paper, 128 cpu.")
flags.DEFINE_string("pretrained", None, "Pretraining run folder or checkpoint prefix. Default: none, the "
                    "encoder starts at random (the baseline).")
flags.DEFINE_bool("freeze_encoder", False, "Train only the classifier on frozen φ_g∘Ψ features (probe).")
flags.DEFINE_bool("augment_frozen", True, "With --freeze_encoder: augment the probe's training views as "
                  "fine-tuning does (the augmentation flags). --noaugment_frozen trains the probe on the "
                  "evaluation's view instead: the centre square, no colour jitter, grayscale, flip or "
                  "rotation (Lab mode keeps its channel dropout), as the linear protocol fits its features; "
                  "configs/demo_finetune.cfg gives --noaugment_frozen (ours). Ignored without --freeze_encoder. "
                  "Default: augment, as the paper's fine-tuning does (§4.1).")
flags.DEFINE_bool("block_batch_norm", None, "Batch norm inside residual blocks; must match --pretrained's "
                  "(AMDIM: off). Default: --pretrained's, else off.")
flags.DEFINE_bool("single_frame", False, "Baseline: the encoder sees each view's first frame repeated "
                  "over time, so it cannot use motion.")
flags.DEFINE_integer("num_views", 4, "K views per example at offsets 0, T, 2T, ... (paper §4.1: 1-4; "
                     "4 for UCF-101, 2 for HMDB-51).")
flags.DEFINE_integer("final_length", None, "Frames per view after downsampling (paper: 32). Default: "
                     "the preset's (32 paper, 16 cpu).")
flags.DEFINE_integer("factor", 1, "Temporal downsampling of every view: keeps every n-th frame (paper "
                     "§4.1: 1).")
flags.DEFINE_integer("hidden_units", 1024, "Units of the classifier's hidden layer (paper §4.1: 1024).")
flags.DEFINE_float("dropout", 0.2, "Dropout rate after the hidden layer (paper §4.1: 0.2).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (paper §4.1: 1e-3).")
flags.DEFINE_integer("decay_every", 3000, "Halve (x --decay_factor) the learning rate every N steps "
                     "(paper §4.1: 3000 after Kinetics, 30000 in the UCF ablations, 400 for HMDB-51); 0 = never.")
flags.DEFINE_float("decay_factor", 0.5, "Learning-rate decay factor (paper §4.1: 0.5).")
flags.DEFINE_string("labels_file", None, "Class names, one per line, in label-index order; every train and "
                    "test record's label must be among them (checked at start-up). Default: labels.txt of the "
                    "prepared dataset (two folders above --train_data).")
# --help lists the main module's key flags: make the shared ones (defined in flags.py) ours.
flags.adopt_module_key_flags(vflags)

FLAGS = flags.FLAGS


def config_from_flags():
    from vdim_tf import finetune
    from vdim_tf.models.encoder import get_preset

    vflags.require("model_dir", "train_steps")
    train_data = vflags.resolve_train_data(FLAGS.train_data, FLAGS.synthetic_dir)
    test_data = FLAGS.test_data
    if test_data is None and FLAGS.train_data == "synthetic":
        test_data = os.path.join(FLAGS.synthetic_dir, "test", "*.tfrecord")
    labels = finetune.read_labels(FLAGS.labels_file or finetune.labels_file_for(train_data))
    # Unset model flags follow this run's own record when it resumes (its pretrained run may have
    # moved), else the pretrained run's config.json; a flag given and differing from the pretrained
    # run is refused when it is loaded, naming both values.
    saved = finetune.recorded_model_settings(FLAGS.model_dir)
    if not saved and FLAGS.pretrained:
        saved = finetune.pretrained_model_settings(FLAGS.pretrained)
    encoder = FLAGS.encoder or saved.get("encoder_preset", "paper")
    preset = get_preset(encoder)
    return finetune.FinetuneConfig(
        train_data=train_data,
        test_data=test_data,
        model_dir=FLAGS.model_dir,
        train_steps=FLAGS.train_steps,
        batch_size=FLAGS.batch_size,
        label_names=labels,
        pretrained=FLAGS.pretrained,
        classifier=finetune.ClassifierConfig(
            encoder_preset=encoder,
            embedding_dim=FLAGS.embedding_dim or saved.get("embedding_dim") or (512 if encoder == "paper" else 128),
            num_views=FLAGS.num_views,
            hidden_units=FLAGS.hidden_units,
            dropout=FLAGS.dropout,
            freeze_encoder=FLAGS.freeze_encoder,
            single_frame=FLAGS.single_frame,
            block_batch_norm=(FLAGS.block_batch_norm if FLAGS.block_batch_norm is not None
                              else saved.get("block_batch_norm", False)),
        ),
        final_length=FLAGS.final_length or preset.frames,
        factor=FLAGS.factor,
        augment=finetune.probe_augment(vflags.augment_config(encoder), FLAGS.freeze_encoder, FLAGS.augment_frozen),
        learning_rate=FLAGS.learning_rate,
        decay_every=FLAGS.decay_every,
        decay_factor=FLAGS.decay_factor,
        strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        log_every=FLAGS.log_every,
        jit_compile=FLAGS.jit_compile,
        time_limit_minutes=FLAGS.time_limit_minutes,
        seed=None if FLAGS.seed < 0 else FLAGS.seed,
        input_sharding=FLAGS.input_sharding,
    )


def main(argv):
    if len(argv) > 1:
        sys.exit(f"finetune: error: unexpected arguments {argv[1:]} (flags are --name=value)")
    logging.set_verbosity(logging.WARNING)
    from vdim_tf import finetune, loop

    def start():
        # Before any other TensorFlow op: MultiWorkerMirroredStrategy configures collectives at start.
        strategy = loop.make_strategy(FLAGS.strategy)
        config = config_from_flags()
        return config, finetune.finetune(config, strategy=strategy)

    config, result = vflags.run_training("finetune", start)
    print(f"done: step {result['step']}{vflags.trained_for(result)}; checkpoints in "
          f"{os.path.join(config.model_dir, 'checkpoints')}; "
          f"evaluate with: python -m vdim_tf.launch.evaluate --model_dir={config.model_dir}")


if __name__ == "__main__":
    launch.run(main)
