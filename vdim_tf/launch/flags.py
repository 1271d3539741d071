"""absl flags shared by the launchers, and their conversion into typed configs.

Flags are read here and only here: models and data code receive dataclasses (STYLE.md).
"""

import os
import sys

from absl import flags

from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib
from vdim_tf.models.encoder import PRESETS, get_preset
from vdim_tf import trainer

FLAGS = flags.FLAGS

DEFAULT_SYNTHETIC_DIR = os.path.join("data", "synthetic")


def define_run_flags():
    flags.DEFINE_string("model_dir", None, "Folder for checkpoints, TensorBoard logs (train/) and the "
                        "resolved config (config.json). Required.")
    flags.DEFINE_integer("train_steps", None, "Total optimisation steps of the run (not 'more steps'): "
                         "rerunning with a larger value continues the same run. Required (paper §5: 50000 "
                         "for UCF-101, 100000 for Kinetics-600).")
    flags.DEFINE_float("time_limit_minutes", 0, "Stop at --train_steps or after this many minutes of training, "
                       "whichever comes first. Default 0: no limit (ours; the paper trains for a step count; "
                       "configs/demo_pretrain.cfg sets 4.5). The time is the training loop's, summed over "
                       "resumed runs (model_dir/training_time.json); start-up comes on top. The checkpoint of "
                       "the step it stops at is saved; a larger value continues the run.")
    flags.DEFINE_integer("batch_size", 8, "Global batch in clips, split evenly across replicas "
                         "(paper: 240 on 16 GPUs for Kinetics).")
    flags.DEFINE_enum("strategy", "default", list(trainer.STRATEGIES),
                      "default: one device; mirrored: all local GPUs (or CPUs); multi_worker: "
                      "MultiWorkerMirroredStrategy over the hosts in TF_CONFIG.")
    flags.DEFINE_enum("precision", "float32", list(trainer.PRECISIONS),
                      "Compute dtype policy; the loss is always float32. mixed_bfloat16 suits recent "
                      "CPUs/TPUs/GPUs, mixed_float16 GPUs (with loss scaling).")
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA (faster on GPU, ~5x slower "
                      "on this CPU per STACK.md).")
    flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints (one is also written at the end "
                         "and on SIGTERM).")
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept (the newest K).")
    flags.DEFINE_integer("log_every", 50, "Steps between console/TensorBoard logs of averaged metrics.")
    flags.DEFINE_integer("seed", 0, "Seed of the initial weights, data sampling and augmentation; -1 draws a fresh "
                         "one.")


def define_data_flags(test_data=False):
    if test_data:
        flags.DEFINE_string("test_data", None, "Glob of the held-out split's TFRecords, recorded for "
                            "`evaluate`. Default with --train_data=synthetic: the synthetic test split; "
                            "otherwise none (then give evaluate its --test_data).")
    flags.DEFINE_string("train_data", "synthetic", "Glob of TFRecord shards (SequenceExample layout, see "
                        "vdim_tf/data/records.py), or 'synthetic' for the built-in motion dataset, "
                        "generated on first use under --synthetic_dir.")
    flags.DEFINE_string("synthetic_dir", DEFAULT_SYNTHETIC_DIR, "Where the built-in synthetic dataset is "
                        "generated and looked for.")
    flags.DEFINE_string("data_service_address", None, "Run the input pipeline on a tf.data service cluster: "
                        "the dispatcher's address, e.g. grpc://dispatcher-host:5000 (workers started with "
                        "tf.data.experimental.service.WorkerServer). Default: the pipeline runs in the trainer.")
    flags.DEFINE_enum("input_sharding", "data", ["data", "file"], "How several workers (--strategy=multi_worker) "
                      "split the input: 'data': every worker reads and decodes every clip of each global batch "
                      "and keeps its share (batches equal a one-process run's; N workers decode N times); "
                      "'file': each worker reads only its own files (needs >= as many files as workers). "
                      "Default: data.")


def define_model_flags():
    flags.DEFINE_enum("encoder", "paper", sorted(PRESETS), "Encoder preset: 'paper' is Table 1 (32x128x128 "
                      "input, 16.5M parameters); 'cpu' is a small preset (16x64x64) for laptops and tests.")
    flags.DEFINE_integer("embedding_dim", None, "|Y|, output size of the contrastive heads (paper §4: 512). "
                         "Default: 512 for 'paper', 128 for 'cpu'.")
    flags.DEFINE_list("antecedent_layers", None, "J: encoder blocks whose view-1 features are antecedents "
                      "(paper §4: 5,6,8). Default: the preset's local layers and its global layer.")
    flags.DEFINE_list("consequent_layers", None, "J': blocks whose view-2 features are consequents "
                      "(paper §4: 8). Default: the preset's global layer.")
    flags.DEFINE_bool("symmetric", True, "Also use the reverse pairs J' -> J (paper §4).")
    flags.DEFINE_bool("temporal_difference", False, "Difference variant (paper §4.2 best): view-2 consequent "
                      "features become second temporal half minus first, on every consequent layer with "
                      ">= 2 time steps (a 1x1x1 global consequent stays plain).")
    flags.DEFINE_bool("scale_scores", True, "Divide scores by sqrt(embedding_dim) (AMDIM).")
    flags.DEFINE_float("tanh_clip", 20.0, "Soft-clip scores to +-c with c*tanh(s/c) (AMDIM: 20); 0 turns it off.")
    flags.DEFINE_float("score_penalty", 0.05, "Weight of mean(score^2) added to the loss (AMDIM: 0.05).")
    flags.DEFINE_bool("gather_negatives", True, "Gather consequents across replicas so negatives span the "
                      "global batch (beyond the paper).")
    flags.DEFINE_bool("block_batch_norm", False, "Batch norm inside residual blocks (AMDIM: off).")


def define_view_flags():
    flags.DEFINE_integer("final_length", None, "Frames per view after downsampling (paper §4: 32). "
                         "Default: the encoder preset's input length (32 paper, 16 cpu).")
    flags.DEFINE_integer("view2_offset", 0, "Frames from view 1's start to view 2's (paper §4: 0 or 32).")
    flags.DEFINE_integer("view1_factor", 1, "Temporal downsampling of view 1: keeps every n-th frame (paper §4: 1).")
    flags.DEFINE_integer("view2_factor", 2, "Temporal downsampling of view 2: keeps every n-th frame (paper §4: "
                         "1-4, best 2).")


def define_augment_flags(color_mode="jitter"):
    d = augment_lib.AugmentConfig(color_mode=color_mode)
    flags.DEFINE_integer("image_size", None, "Side of the square crops fed to the encoder, in pixels (paper §4: 128). "
                         "Default: the encoder preset's size (128 paper, 64 cpu).")
    flags.DEFINE_enum("color_mode", d.color_mode, list(augment_lib.COLOR_MODES),
                      "jitter: colour jitter + random grayscale; lab: RGB->Lab and drop a channel (paper §3.1).")
    flags.DEFINE_list("crop_scale", [str(x) for x in d.crop_scale],
                      "Random resized crop: range of its area as a fraction of the frame's (AMDIM: 0.3,1).")
    flags.DEFINE_list("crop_aspect_ratio", [str(x) for x in d.crop_aspect_ratio],
                      "Random resized crop: range of its width/height (AMDIM: 0.7,1.4).")
    flags.DEFINE_float("flip_probability", d.flip_probability, "Horizontal flip, shared by both views (AMDIM: 0.5).")
    flags.DEFINE_float("jitter_probability", d.jitter_probability, "Probability of colour jitter (AMDIM: 0.8).")
    flags.DEFINE_float("brightness", d.brightness, "Jitter brightness: factor drawn from [1-b, 1+b] (AMDIM: 0.4).")
    flags.DEFINE_float("contrast", d.contrast, "Jitter contrast: factor drawn from [1-c, 1+c] (AMDIM: 0.4).")
    flags.DEFINE_float("saturation", d.saturation, "Jitter saturation: factor drawn from [1-s, 1+s] (AMDIM: 0.4).")
    flags.DEFINE_float("hue", d.hue, "Jitter hue shift, fraction of the hue circle (SPEC §4: 0.1).")
    flags.DEFINE_float("grayscale_probability", d.grayscale_probability, "Random grayscale (AMDIM: 0.25).")
    flags.DEFINE_float("rotation_probability", d.rotation_probability, "Random rotation (paper §4 best: off, 0).")
    flags.DEFINE_float("rotation_max_degrees", d.rotation_max_degrees, "Rotation range +-degrees (our choice: 10).")


def define_optim_flags(learning_rate=2e-4):
    flags.DEFINE_float("learning_rate", learning_rate, "Adam learning rate after warm-up (paper §4: 2e-4 "
                       "pretraining, 1e-3 fine-tuning).")
    flags.DEFINE_float("beta_1", 0.8, "Adam beta_1 (AMDIM: 0.8).")
    flags.DEFINE_float("beta_2", 0.999, "Adam beta_2 (AMDIM: 0.999).")
    flags.DEFINE_float("epsilon", 1e-8, "Adam epsilon (AMDIM: 1e-8).")
    flags.DEFINE_integer("warmup_steps", 500, "Linear learning-rate warm-up steps (AMDIM: 500).")
    flags.DEFINE_integer("decay_every", 0, "Multiply the learning rate by --decay_factor every this many "
                         "steps; 0 = no decay.")
    flags.DEFINE_float("decay_factor", 0.5, "Step decay factor (paper §4.1: halve).")
    flags.DEFINE_boolean("cosine_decay", False, "After the warm-up, decay the learning rate along a half "
                         "cosine to 0 at --train_steps, or, with --time_limit_minutes, where the time limit is "
                         "expected to stop the run at the speed measured (ours; the paper keeps it constant).")


def _ints(name, values):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name}={','.join(values)}: expected comma-separated block indices") from None


def _floats(name, values, count):
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        out = ()
    if len(out) != count:
        raise ValueError(f"--{name}={','.join(values)}: expected {count} comma-separated numbers")
    return out


def resolve_train_data(value, synthetic_dir, split="train"):
    """`synthetic` → generate the built-in dataset if needed and return its shard glob."""
    if value != "synthetic":
        return value
    from vdim_tf.data.synthetic import generate_synthetic_dataset

    print(f"using the built-in synthetic dataset in {synthetic_dir} (generated on first use)")
    generate_synthetic_dataset(synthetic_dir)
    return os.path.join(synthetic_dir, split, "*.tfrecord")


def model_config():
    preset = get_preset(FLAGS.encoder)
    antecedent = _ints("antecedent_layers", FLAGS.antecedent_layers) if FLAGS.antecedent_layers else (
        *preset.local_layers, preset.global_layer)
    consequent = _ints("consequent_layers", FLAGS.consequent_layers) if FLAGS.consequent_layers else (
        preset.global_layer,)
    return trainer.ModelConfig(
        encoder_preset=FLAGS.encoder,
        embedding_dim=FLAGS.embedding_dim or (512 if FLAGS.encoder == "paper" else 128),
        antecedent_layers=antecedent,
        consequent_layers=consequent,
        symmetric=FLAGS.symmetric,
        temporal_difference=FLAGS.temporal_difference,
        scale_scores=FLAGS.scale_scores,
        tanh_clip=FLAGS.tanh_clip or None,
        score_penalty=FLAGS.score_penalty,
        gather_negatives=FLAGS.gather_negatives,
        block_batch_norm=FLAGS.block_batch_norm,
    )


def view_config():
    final = FLAGS.final_length or get_preset(FLAGS.encoder).frames
    try:
        return views_lib.ViewConfig.two_views(final_length=final, offset2=FLAGS.view2_offset,
                                              factor1=FLAGS.view1_factor, factor2=FLAGS.view2_factor)
    except ValueError as e:
        raise ValueError(
            f"--final_length={final} --view1_factor={FLAGS.view1_factor} --view2_factor={FLAGS.view2_factor} "
            f"--view2_offset={FLAGS.view2_offset}: {e}"
        ) from None


def augment_config(encoder=None):
    """The augmentation flags; crops default to the side of `encoder`'s preset (default: --encoder)."""
    return augment_lib.AugmentConfig(
        output_size=FLAGS.image_size or get_preset(encoder or FLAGS.encoder).size,
        crop_scale=_floats("crop_scale", FLAGS.crop_scale, 2),
        crop_aspect_ratio=_floats("crop_aspect_ratio", FLAGS.crop_aspect_ratio, 2),
        flip_probability=FLAGS.flip_probability,
        color_mode=FLAGS.color_mode,
        jitter_probability=FLAGS.jitter_probability,
        brightness=FLAGS.brightness,
        contrast=FLAGS.contrast,
        saturation=FLAGS.saturation,
        hue=FLAGS.hue,
        grayscale_probability=FLAGS.grayscale_probability,
        rotation_probability=FLAGS.rotation_probability,
        rotation_max_degrees=FLAGS.rotation_max_degrees,
    )


def optim_config():
    return trainer.OptimConfig(
        learning_rate=FLAGS.learning_rate, beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2, epsilon=FLAGS.epsilon,
        warmup_steps=FLAGS.warmup_steps, decay_every=FLAGS.decay_every, decay_factor=FLAGS.decay_factor,
        cosine_decay=FLAGS.cosine_decay,
    )


def require(*names):
    missing = [n for n in names if getattr(FLAGS, n) is None]
    if missing:
        raise ValueError("missing required flag(s): " + ", ".join(f"--{n}" for n in missing))


def check_model_dir(model_dir):
    """--model_dir must be a folder, or a path where one can be created (no file in the way)."""
    path = os.path.abspath(model_dir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(model_dir) else f"is inside {path}, which is a file"
        raise ValueError(f"--model_dir={model_dir}: {os.path.abspath(model_dir)} {where}, not a folder; give a "
                         "folder (new or a run's) for checkpoints and config.json")


def trained_for(result):
    """`" (2.93 min of training, stopped by the time limit)"` for a training result, or ""."""
    seconds = result.get("training_seconds")
    parts = [] if seconds is None else [f"{seconds / 60:.2f} min of training"]
    if result.get("stopped") == "time_limit":
        parts.append("stopped by the time limit")
    return f" ({', '.join(parts)})" if parts else ""


def run_training(command, start):
    """Runs `start()`, which returns `(config, result)` of a training run, for a launcher's `main`.

    Checks `--model_dir` first (`check_model_dir`). Bad settings (ValueError, FileNotFoundError)
    exit with status 1 and `<command>: error: ...`; a non-finite loss, checkpoints of which none
    restores or a damaged training record exit with status 1 and the loop's message; a run stopped
    by SIGTERM (its checkpoint saved) exits with 143. Otherwise returns `(config, result)`.
    """
    from vdim_tf import loop

    try:
        if FLAGS.model_dir is not None:
            check_model_dir(FLAGS.model_dir)
        config, result = start()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"{command}: error: {e}")
    except loop.TrainingError as e:
        sys.exit(f"{command}: {e}")
    if result["stopped"] == "sigterm":
        sys.exit(143)
    return config, result
