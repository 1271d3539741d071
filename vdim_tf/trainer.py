"""The pretraining loop: VDIM under a tf.distribute strategy, resumable, logged to TensorBoard.

A custom loop rather than `fit`: checkpoints are step-granular (`tf.train.CheckpointManager`, the
chief writes), SIGTERM saves before exiting, a non-finite loss stops the run without touching the
last good checkpoint, and the same loop runs under MultiWorkerMirroredStrategy, where Keras 3's
`fit` fails (STACK.md).
"""

import dataclasses
import json
import math
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from vdim_tf.data import augment as augment_lib
from vdim_tf.data import pipeline
from vdim_tf.data import views as views_lib
from vdim_tf.models import losses
from vdim_tf.models.encoder import get_preset
from vdim_tf.models.vdim import VDIM

STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss); the last good checkpoint is left as it was."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Arguments of `VDIM` (SPEC §1–3); defaults are the paper's."""

    encoder_preset: str = "paper"
    embedding_dim: int = 512
    antecedent_layers: tuple = (5, 6, 8)
    consequent_layers: tuple = (8,)
    symmetric: bool = True
    temporal_difference: bool = False
    scale_scores: bool = True
    tanh_clip: float | None = losses.DEFAULT_TANH_CLIP
    score_penalty: float = losses.DEFAULT_SCORE_PENALTY
    gather_negatives: bool = True
    block_batch_norm: bool = False


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with linear warm-up and optional step decay (paper §4, AMDIM's betas and warm-up)."""

    learning_rate: float = 2e-4
    beta_1: float = 0.8
    beta_2: float = 0.999
    epsilon: float = 1e-8
    warmup_steps: int = 500
    decay_every: int = 0
    decay_factor: float = 0.5


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run needs; written to `model_dir/config.json`."""

    train_data: str
    model_dir: str
    train_steps: int
    batch_size: int
    model: ModelConfig = ModelConfig()
    views: views_lib.ViewConfig = views_lib.ViewConfig()
    augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
    optim: OptimConfig = OptimConfig()
    strategy: str = "default"
    precision: str = "float32"
    jit_compile: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    seed: int | None = 0

    def validate(self):
        """Raises ValueError naming the setting, its value and what would be valid."""
        if self.train_steps < 1:
            raise ValueError(f"train_steps={self.train_steps}: must be >= 1")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: NCE needs >= 2 clips per batch for negatives")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: valid values are {STRATEGIES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: valid values are {PRECISIONS}")
        if self.views.num_views != 2:
            raise ValueError(f"VDIM pretraining needs exactly 2 views, the config has {self.views.num_views}")
        for name in ("checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        preset = get_preset(self.model.encoder_preset)
        from vdim_tf.models.encoder import minimum_input

        min_frames, min_size = minimum_input(preset.blocks)
        if self.views.final_length < min_frames or self.augment.output_size < min_size:
            raise ValueError(
                f"views of {self.views.final_length} frames at {self.augment.output_size} px are too small "
                f"for the {self.model.encoder_preset!r} encoder, which needs >= {min_frames} frames of "
                f">= {min_size} px (final_length / output_size)"
            )

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `× decay_factor` every `decay_every`."""

    def __init__(self, peak, warmup_steps, decay_every=0, decay_factor=0.5):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.decay_every = decay_every
        self.decay_factor = decay_factor

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.peak, tf.float32)
        if self.warmup_steps:
            lr *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        if self.decay_every:
            lr *= tf.pow(self.decay_factor, tf.floor(step / self.decay_every))
        return lr

    def get_config(self):
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, decay_every=self.decay_every,
                    decay_factor=self.decay_factor)


def make_strategy(name):
    """A tf.distribute strategy by name; `multi_worker` reads the cluster from `TF_CONFIG`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multi_worker' needs the cluster in the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy={name!r}: valid values are {STRATEGIES}")


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def checkpoint_dir(model_dir, strategy):
    """The chief writes to `model_dir/checkpoints`; other workers to a scratch folder they delete."""
    if is_chief(strategy):
        return os.path.join(model_dir, "checkpoints")
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "checkpoints", f".worker_{resolver.task_type}_{resolver.task_id}")


def _view_strip(views, max_frames=8):
    """`(T, H, W, 3)` normalised frames → one `(1, H, max_frames·W, 3)` image in [0, 1]."""
    t = views.shape[0]
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    frames = (np.clip(views[idx], -1, 1) + 1) / 2
    return np.concatenate(list(frames), axis=1)[None]


def build_model(config, strategy):
    """The VDIM model and its optimizer, with every variable created, inside `strategy.scope()`."""
    with strategy.scope():
        model = VDIM(**dataclasses.asdict(config.model), name="vdim")
        model.build_for(config.views.final_length, config.augment.output_size)
        o = config.optim
        schedule = WarmupStepDecay(o.learning_rate, o.warmup_steps, o.decay_every, o.decay_factor)
        optimizer = keras.optimizers.Adam(schedule, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
        if config.precision == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def pretrain(config, progress=True):
    """Runs (or resumes) VDIM pretraining until `config.train_steps`.

    Returns:
      dict with the final `step`, the last logged metrics and `stopped` (None, or "sigterm").

    Raises:
      ValueError / FileNotFoundError: bad configuration, before any expensive work.
      TrainingError: a non-finite loss.
    """
    config.validate()
    files = pipeline.list_files(config.train_data)
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"batch_size={config.batch_size} does not divide across {replicas} replicas; use a multiple of {replicas}"
        )
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _pretrain(config, files, strategy, progress)
    finally:
        if config.precision != "float32":
            keras.mixed_precision.set_global_policy("float32")


def _pretrain(config, files, strategy, progress):
    chief = is_chief(strategy)
    os.makedirs(config.model_dir, exist_ok=True)
    if chief:
        with open(os.path.join(config.model_dir, "config.json"), "w") as f:
            f.write(config.to_json())

    model, optimizer = build_model(config, strategy)
    step = optimizer.iterations
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    ckpt_dir = checkpoint_dir(config.model_dir, strategy)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=config.keep_checkpoints)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(step.numpy())
    if start >= config.train_steps:
        print(f"already at step {start} >= train_steps={config.train_steps}; nothing to do")
        return {"step": start, "metrics": {}, "stopped": None}

    # A resumed run reseeds the input pipeline from its step so it does not replay the same clips.
    seed = None if config.seed is None else config.seed + start
    per_replica_batch = config.batch_size // strategy.num_replicas_in_sync
    dataset = pipeline.pretrain_dataset(files, config.views, config.augment, config.batch_size, seed=seed)
    dist_dataset = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dist_dataset)
    del per_replica_batch

    def replica_step(batch):
        loss, results = model.apply_gradients_step(batch["view1"], batch["view2"])
        out = {"loss": loss}
        for (j, k), (l, a) in results.items():
            out[f"loss_{j}_{k}"] = l
            out[f"acc_{j}_{k}"] = a
        return out

    @tf.function(jit_compile=config.jit_compile or None)
    def train_step(it):
        per_replica = strategy.run(replica_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train")) if chief else tf.summary.create_noop_writer()
    if chief and start == 0:
        _write_run_summaries(writer, config, dataset)

    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal="sigterm"))
    bar = _progress(progress and chief, start, config.train_steps)
    metrics = {}
    sums, count, t0 = {}, 0, time.perf_counter()
    try:
        while int(step.numpy()) < config.train_steps:
            values = {k: float(v) for k, v in train_step(iterator).items()}
            current = int(step.numpy())
            if not math.isfinite(values["loss"]):
                raise TrainingError(
                    f"loss is {values['loss']} at step {current}; stopping. The last good checkpoint "
                    f"({manager.latest_checkpoint or 'none yet'}) was left untouched. Try a lower "
                    "--learning_rate, keep --tanh_clip on, or --precision=float32."
                )
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            if current % config.log_every == 0 or current == config.train_steps:
                elapsed = time.perf_counter() - t0
                metrics = {k: v / count for k, v in sums.items()}
                metrics["clips_per_second"] = count * config.batch_size / elapsed
                metrics["step_time_seconds"] = elapsed / count
                metrics["learning_rate"] = float(optimizer.learning_rate)
                with writer.as_default(step=current):
                    for k, v in metrics.items():
                        tf.summary.scalar(k, v)
                bar.write(f"step {current}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
                sums, count, t0 = {}, 0, time.perf_counter()
            if current % config.checkpoint_every == 0 or current == config.train_steps:
                manager.save(checkpoint_number=current)
            if stop["signal"]:
                manager.save(checkpoint_number=current)
                bar.write(f"received SIGTERM: checkpoint saved at step {current} in {ckpt_dir}; exiting")
                return {"step": current, "metrics": metrics, "stopped": stop["signal"]}
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        writer.flush()
    return {"step": int(step.numpy()), "metrics": metrics, "stopped": None}


def _progress(enabled, start, total):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=2.0)


def _write_run_summaries(writer, config, dataset):
    """Hyper-parameters (hparams plugin) and image strips of the two augmented views of a few clips."""
    from tensorboard.plugins.hparams import api as hp

    flat = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            for k, v in value.items():
                flat[f"{key}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    batch = next(iter(dataset.take(1)))
    with writer.as_default(step=0):
        hp.hparams(flat)
        for i in range(min(3, config.batch_size)):
            for v in ("view1", "view2"):
                tf.summary.image(f"views/clip{i}_{v}", _view_strip(batch[v][i].numpy()), step=0)
