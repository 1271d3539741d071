"""VDIM pretraining: the run's config, the model and optimizer, the input, and the TensorBoard
summaries of a run; the loop itself (strategies, checkpoints, SIGTERM, NaN stop) is `loop.py`.
"""

import dataclasses
import json
import os
import zlib

import keras
import numpy as np
import tensorflow as tf

from vdim_tf import loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import pipeline
from vdim_tf.data import records
from vdim_tf.data import views as views_lib
from vdim_tf.models import losses
from vdim_tf.models.encoder import check_global_input
from vdim_tf.loop import STRATEGIES, TrainingError, is_chief, make_strategy  # noqa: F401 (re-exported)
from vdim_tf.models.vdim import VDIM, pair_metric_names, validate_layers

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


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
    cosine_decay: bool = False


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
    time_limit_minutes: float = 0.0
    seed: int | None = 0
    data_service_address: str | None = None
    input_sharding: str = "data"
    decoded_cache_gib: float = 0.0

    def validate(self):
        """Raises ValueError naming the setting, its value and what would be valid."""
        if self.train_steps < 1:
            raise ValueError(f"train_steps={self.train_steps}: must be >= 1")
        if self.optim.cosine_decay and self.train_steps <= self.optim.warmup_steps:
            raise ValueError(f"cosine_decay decays to 0 at train_steps={self.train_steps}, which must be more "
                             f"than warmup_steps={self.optim.warmup_steps}")
        if not self.decoded_cache_gib >= 0:
            raise ValueError(f"decoded_cache_gib={self.decoded_cache_gib}: must be >= 0 (0: decode every epoch)")
        if not self.time_limit_minutes >= 0:
            raise ValueError(f"time_limit_minutes={self.time_limit_minutes}: must be >= 0 (0: no limit)")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: NCE needs >= 2 clips per batch for negatives")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: valid values are {STRATEGIES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: valid values are {PRECISIONS}")
        if self.views.num_views != 2:
            raise ValueError(f"VDIM pretraining needs exactly 2 views, the config has {self.views.num_views}")
        if self.data_service_address is not None and "://" not in self.data_service_address:
            raise ValueError(
                f"data_service_address={self.data_service_address!r}: give the dispatcher as "
                "PROTOCOL://HOST:PORT, e.g. grpc://localhost:5000"
            )
        for name in ("checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        m = self.model
        try:
            check_global_input(m.encoder_preset, self.views.final_length, self.augment.output_size)
        except ValueError as e:
            raise ValueError(f"--final_length={self.views.final_length} --image_size={self.augment.output_size}: "
                             f"{e}") from None
        validate_layers(m.encoder_preset, m.antecedent_layers, m.consequent_layers, m.symmetric,
                        m.temporal_difference, frames=self.views.final_length)

    def validate_replicas(self, num_replicas):
        """Raises ValueError when a replica would see no negatives: without `gather_negatives` each
        replica's NCE contrasts only its own clips, so it needs at least two of them."""
        per_replica = self.batch_size // num_replicas
        if not self.model.gather_negatives and per_replica < 2:
            raise ValueError(
                f"--nogather_negatives with --batch_size={self.batch_size} on {num_replicas} replicas leaves "
                f"{per_replica} clip per replica, so a replica's NCE has no negatives: use --gather_negatives "
                f"or --batch_size >= {2 * num_replicas}"
            )

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


def _view_strip(views, max_frames=8):
    """`(T, H, W, 3)` normalised frames → one `(1, H, max_frames·W, 3)` image in [0, 1]."""
    t = views.shape[0]
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    frames = (np.clip(views[idx], -1, 1) + 1) / 2
    return np.concatenate(list(frames), axis=1)[None]


def build_model(config, strategy):
    """The VDIM model, its optimizer and the optimizer's learning-rate schedule
    (`loop.WarmupStepDecay`), with every variable created, inside `strategy.scope()`."""
    with strategy.scope():
        model = VDIM(**dataclasses.asdict(config.model), name="vdim")
        model.build_for(config.views.final_length, config.augment.output_size)
        o = config.optim
        schedule = loop.WarmupStepDecay(o.learning_rate, o.warmup_steps, o.decay_every, o.decay_factor,
                                        cosine_steps=config.train_steps if o.cosine_decay else 0)
        optimizer = keras.optimizers.Adam(schedule, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
        if config.precision == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
    return model, optimizer, schedule


def pretrain(config, progress=True, strategy=None):
    """Runs (or resumes) VDIM pretraining until `config.train_steps`.

    Args:
      config: a `PretrainConfig`.
      progress: show a progress bar (chief only).
      strategy: the `tf.distribute` strategy, if the caller made it already (it must be made
        before any TensorFlow op runs under `multi_worker`); default `make_strategy(config.strategy)`.

    Returns:
      dict with the final `step`, the last logged `metrics`, `stopped` (None, or "sigterm") and the
      trained `model`.

    Raises:
      ValueError / FileNotFoundError: bad configuration, before any expensive work.
      TrainingError: a non-finite loss.
    """
    config.validate()
    loop.check_precision(config.precision)
    strategy = strategy or make_strategy(config.strategy)
    loop.check_batch(config.batch_size, strategy, config.strategy)
    config.validate_replicas(strategy.num_replicas_in_sync)
    files = pipeline.training_files(config.train_data, "train_data")
    _check_batch_fits(files, config.batch_size, config.train_data)
    loop.check_input_sharding(config.input_sharding, files, loop.num_workers(strategy))
    with loop.precision_policy(config.precision):
        return _pretrain(config, files, strategy, progress)


def _check_batch_fits(files, batch_size, train_data):
    """Refuses a batch larger than the dataset: each batch would hold some video twice, and a
    video's other copy would be scored as its own negative. Counts records from their headers
    (`records.record_offsets`), reading no record's data, so a damaged record is left for the
    training loop to name, and stops once `batch_size` are found."""
    videos = 0
    for path in files:
        videos += len(records.record_offsets(path))
        if videos >= batch_size:
            return
    if videos < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {videos} videos of train_data={train_data!r}: "
                         "every batch would hold a video twice, and NCE would score a video's copy as its own "
                         f"negative. Use --batch_size <= {videos}, or more videos")


def _size(nbytes):
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


# Memory the cache must leave free for the rest of the process (TensorFlow, the model, the input
# pipeline's buffers: the CPU recipe's pretraining peaked at 1.3 GiB besides its cache).
CACHE_HEADROOM_BYTES = 2 * 2**30


def _read_number(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):  # absent, or cgroup v2's "max" (no limit)
        return None


def _cgroup_paths(proc_cgroup):
    """This process's cgroup paths from `/proc/self/cgroup`: `(v2_path, v1_memory_path)`, each None
    where the file does not name one."""
    v2 = v1 = None
    try:
        with open(proc_cgroup) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    v2 = parts[2]
                elif "memory" in parts[1].split(","):
                    v1 = parts[2]
    except OSError:
        pass
    return v2, v1


def _cgroup_chain(base, path):
    """The cgroup folders from this process's own (`base` + `path`) up to `base`, own first. Where
    the own folder is not under `base` (a container that mounts its own cgroup at the root but
    shows the host's path), only `base`."""
    chain = []
    if path and path != "/":
        own = os.path.normpath(os.path.join(base, path.lstrip("/")))
        if os.path.isdir(own) and own.startswith(os.path.normpath(base) + os.sep):
            while own != os.path.normpath(base):
                chain.append(own)
                own = os.path.dirname(own)
    return chain + [base]


def _cgroup_level_left(directory, limit_file, usage_file, stat_file):
    """Memory left under one cgroup folder's limit, reclaimable file cache counted free; None
    where it sets no limit or cannot be read."""
    limit = _read_number(os.path.join(directory, limit_file))
    usage = _read_number(os.path.join(directory, usage_file))
    if limit is None or usage is None or limit >= 2**60:  # v1 writes ~2^63 for no limit
        return None
    inactive_file = 0
    try:
        with open(os.path.join(directory, stat_file)) as f:
            stats = dict(line.split()[:2] for line in f if len(line.split()) >= 2)
        inactive_file = int(stats.get("total_inactive_file", stats.get("inactive_file", 0)))
    except (OSError, ValueError):
        pass
    return max(0, limit - usage + inactive_file)


def _cgroup_memory_left(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup"):
    """Memory left under this process's cgroup limits, counting reclaimable file cache as free as
    `docker stats` does; None where no limit is set or readable.

    A limit can sit on this process's own cgroup or on any above it: a container's at the root of
    its cgroup mount (Docker, Kubernetes), a batch job's a few levels up from the step or task the
    process runs in (Slurm, systemd). Every level from the process's own cgroup (named in
    `/proc/self/cgroup`) up to the mount's root is read, and the least left wins. Reads cgroup v2
    (`memory.max`) or, failing that, v1 (`memory/.../memory.limit_in_bytes`)."""
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    for base, path, names in ((root, v2_path, ("memory.max", "memory.current", "memory.stat")),
                              (os.path.join(root, "memory"), v1_path,
                               ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat"))):
        lefts = [left for left in (_cgroup_level_left(d, *names) for d in _cgroup_chain(base, path))
                 if left is not None]
        if lefts:
            return min(lefts)
    return None


def available_memory_bytes():
    """Memory the system can give this process now without swapping: Linux's MemAvailable (or the
    free pages where /proc/meminfo cannot be read), and no more than what is left under a
    container's memory limit; None where none of it can be read (then only `--decoded_cache_gib`
    limits the cache)."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    left = _cgroup_memory_left()
    if left is None:
        return available
    return left if available is None else min(available, left)


def decoded_cache_plan(config, files, workers=1):
    """Whether to keep the decoded videos in memory (`--decoded_cache_gib`), and the line that says so.

    The cache is kept when the decoded frames fit in `--decoded_cache_gib` and leave
    `CACHE_HEADROOM_BYTES` of the memory available at start free, so a limit set for a large
    machine does not exhaust a small one. With several `workers` only the limit decides: every
    worker must build the same pipeline (the cache changes the order of the clips), and each one's
    free memory is its own.

    Returns:
      `(videos, message)`: the number of videos to cache and shuffle over, or 0 for no cache;
      `message` is None when caching is off.
    """
    if not config.decoded_cache_gib:
        return 0, None
    if config.data_service_address:
        return 0, "decoded cache: off (the tf.data service's workers decode the clips)"
    limit = config.decoded_cache_gib * 2**30
    size = pipeline.decoded_size(files, limit)
    if size is None:
        return 0, "decoded cache: off (a record could not be read; training will name it)"
    nbytes, videos, complete = size
    if not complete:
        return 0, (f"decoded cache: off (the decoded frames exceed --decoded_cache_gib={config.decoded_cache_gib:g}: "
                   f"{_size(nbytes)} in the first {videos} videos); decoding every epoch")
    available = available_memory_bytes() if workers == 1 else None
    if available is not None and nbytes + CACHE_HEADROOM_BYTES > available:
        return 0, (f"decoded cache: off ({_size(nbytes)} of decoded frames would leave less than "
                   f"{_size(CACHE_HEADROOM_BYTES)} of the {_size(available)} of memory available); decoding every epoch")
    return videos, (f"decoded cache: {videos} videos, {_size(nbytes)} decoded once in the first epoch "
                    "and kept in memory (--decoded_cache_gib)")


def input_dataset(config, files, strategy, seed, start, cached_videos=0):
    """The global-batch training dataset, optionally served by a tf.data service cluster.

    Under several workers, `config.input_sharding` says how they split it (`loop.shard_per_worker`):
    by default every worker builds the same seeded pipeline and keeps its part of each global batch
    (`AutoShardPolicy.DATA`), so the global batches are those of a one-process run whatever the
    number of workers or files; `file` gives each worker its own files instead. With a data service, the service workers split the
    files between them (each clip is produced once per epoch, `ShardingPolicy.DYNAMIC`) and the
    trainer workers share one job, each taking different batches.

    `cached_videos` > 0 keeps the decoded videos in memory (`decoded_cache_plan`) and shuffles
    over all of them.
    """
    if not config.data_service_address:
        files = loop.worker_files(files, config.input_sharding, strategy)
    if cached_videos:
        dataset = pipeline.pretrain_dataset(files, config.views, config.augment, config.batch_size, seed=seed,
                                            cache_decoded=True, shuffle_buffer_size=cached_videos)
    else:
        dataset = pipeline.pretrain_dataset(files, config.views, config.augment, config.batch_size, seed=seed)
    options = tf.data.Options()
    if config.data_service_address:
        # One job per run and start step: workers of one run share it; a resumed run gets a fresh
        # job with the reseeded pipeline.
        run = zlib.crc32(os.path.abspath(config.model_dir).encode())
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=config.data_service_address,
            job_name=f"vdim_pretrain_{run}_{start}",
        ))
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)
    return loop.shard_per_worker(dataset, config.input_sharding)


def _pretrain(config, files, strategy, progress):
    os.makedirs(config.model_dir, exist_ok=True)
    loop.check_resume(config.model_dir, dataclasses.asdict(config))
    if config.seed is not None:
        # The same initial weights in every process: a run is reproducible, and a multi-worker run
        # matches a one-process run on the same global batch.
        keras.utils.set_random_seed(config.seed)
    model, optimizer, schedule = build_model(config, strategy)
    cached_videos, message = decoded_cache_plan(config, files, loop.num_workers(strategy))
    for line in (message, pipeline.short_videos_note(files, config.views.window_length)):
        if line:
            print(line, flush=True)

    def make_dataset(start):
        # A resumed run reseeds the input pipeline from its step so it does not replay the same clips.
        seed = None if config.seed is None else config.seed + start
        return input_dataset(config, files, strategy, seed, start, cached_videos)

    def replica_step(batch):
        loss, results = model.apply_gradients_step(batch["view1"], batch["view2"])
        out = {loop.LOSS: loss}
        for pair, values in results.items():
            out.update(zip(pair_metric_names(*pair), values))
        return out

    loop_config = loop.LoopConfig(config.model_dir, config.train_steps, config.checkpoint_every,
                                  config.keep_checkpoints, config.log_every, config.jit_compile,
                                  config.time_limit_minutes)
    result = loop.train_loop(
        loop_config, strategy=strategy, checkpoint=tf.train.Checkpoint(model=model, optimizer=optimizer),
        optimizer=optimizer, make_dataset=make_dataset, replica_step=replica_step, batch_size=config.batch_size,
        progress=progress, on_start=lambda writer, dataset: _write_run_summaries(writer, config, dataset),
        nan_hint="Try a lower --learning_rate, keep --tanh_clip on, or --precision=float32.",
        run_config={**dataclasses.asdict(config), "color_space": augment_lib.color_space(config.augment.color_mode)},
        data_files=files, lr_schedule=schedule if config.optim.cosine_decay else None,
    )
    result["model"] = model
    return result


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
