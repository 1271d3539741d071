"""Pretrain VDIM.

    python -m vdim_tf.launch.pretrain --flagfile=configs/demo_pretrain.cfg [--flag=value ...]

Writes checkpoints to `--model_dir/checkpoints`, TensorBoard logs to `--model_dir/train` and the
resolved config to `--model_dir/config.json`. Rerunning with the same `--model_dir` resumes from
the last checkpoint; a larger `--train_steps` continues the run.

Exit status: 0 done (at --train_steps, or at --time_limit_minutes with its checkpoint saved); 1 bad
configuration or a non-finite loss; 143 stopped by SIGTERM after saving a checkpoint (rerun to
resume).
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch
from vdim_tf.launch import flags as vflags

vflags.define_run_flags()
vflags.define_data_flags()
vflags.define_model_flags()
vflags.define_view_flags()
vflags.define_augment_flags()
vflags.define_optim_flags()
flags.DEFINE_float("decoded_cache_gib", 0, "Keep the decoded frames of every training video in memory when "
                   "they fit in this many GiB (uint8 frames x H x W x 3, sized from the records' headers at "
                   "start): each frame is decoded once, in the first epoch, instead of every time a window "
                   "takes it; the videos are then shuffled all together every epoch. Larger datasets, and "
                   "frames that would leave less than 2 GiB of the memory available at start (MemAvailable or a "
                   "cgroup memory limit of a container or batch job; one worker), are "
                   "decoded every epoch, as with 0. Not with --data_service_address. Default: 0 (off; ours: the "
                   "CPU recipe, configs/demo_pretrain.cfg, sets 8).")
# --help lists the main module's key flags: make the shared ones (defined in flags.py) ours.
flags.adopt_module_key_flags(vflags)

FLAGS = vflags.FLAGS


def config_from_flags():
    from vdim_tf import trainer

    vflags.require("model_dir", "train_steps")
    return trainer.PretrainConfig(
        train_data=FLAGS.train_data,
        model_dir=FLAGS.model_dir,
        train_steps=FLAGS.train_steps,
        batch_size=FLAGS.batch_size,
        model=vflags.model_config(),
        views=vflags.view_config(),
        augment=vflags.augment_config(),
        optim=vflags.optim_config(),
        strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        jit_compile=FLAGS.jit_compile,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        log_every=FLAGS.log_every,
        time_limit_minutes=FLAGS.time_limit_minutes,
        seed=None if FLAGS.seed < 0 else FLAGS.seed,
        data_service_address=FLAGS.data_service_address,
        input_sharding=FLAGS.input_sharding,
        decoded_cache_gib=FLAGS.decoded_cache_gib,
    )


def main(argv):
    if len(argv) > 1:
        sys.exit(f"pretrain: error: unexpected arguments {argv[1:]} (flags are --name=value)")
    logging.set_verbosity(logging.WARNING)
    from vdim_tf import trainer

    def start():
        config = config_from_flags()
        config.validate()
        # MultiWorkerMirroredStrategy must exist before any TensorFlow op runs.
        strategy = trainer.make_strategy(config.strategy)
        config = dataclasses.replace(config, train_data=vflags.resolve_train_data(config.train_data, FLAGS.synthetic_dir))
        return config, trainer.pretrain(config, strategy=strategy)

    config, result = vflags.run_training("pretrain", start)
    print(f"done: step {result['step']}{vflags.trained_for(result)}; checkpoints in "
          f"{os.path.join(config.model_dir, 'checkpoints')}; "
          f"watch with: tensorboard --logdir {config.model_dir}")


if __name__ == "__main__":
    launch.run(main)
