"""The resumable, distributed training loop shared by pretraining and fine-tuning.

`train_loop` runs `replica_step` under `strategy.run` until the optimizer has taken `train_steps`
steps. It restores the newest checkpoint of `model_dir/checkpoints` that reads back (naming the
damaged ones it skips), writes the run's `config.json` once it knows there are steps to take,
saves every `checkpoint_every` steps, at the end and on SIGTERM (the chief's copy is kept; other
workers take part in each save, into a scratch folder deleted at the end), stops on a non-finite
loss without touching the last good checkpoint, stops on a damaged training record naming its
file (after saving a checkpoint), shows a progress bar and writes averaged metrics to TensorBoard.
A custom loop rather than `fit`: checkpoints are step-granular and the same loop runs under
MultiWorkerMirroredStrategy, where Keras 3's `fit` fails (STACK.md).
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import time

import keras
import tensorflow as tf

from vdim_tf.data import records

STRATEGIES = ("default", "mirrored", "multi_worker")

# The training loss every `replica_step` returns; metric names are TensorBoard tags, grouped by
# kind before the "/" (loss/, nce_accuracy/, accuracy/, throughput/, optimizer/).
LOSS = "loss/total"


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss, no checkpoint that restores, a damaged training
    record); the last good checkpoint is left as it was."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to log and save (the same flags in every launcher)."""

    model_dir: str
    train_steps: int
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    jit_compile: bool = False
    time_limit_minutes: float = 0.0


# Where the chief records the training time (seconds of the loop, summed over resumed runs) at each
# kept checkpoint, so a resumed run with a time limit trains only for what is left of it.
TRAINING_TIME_FILE = "training_time.json"


def read_training_time(model_dir, step):
    """Seconds of training recorded for checkpoint `step` of the run in `model_dir` (summed over its
    resumed runs), or None when none is recorded (a new run, or one from before it was recorded)."""
    try:
        with open(os.path.join(model_dir, TRAINING_TIME_FILE)) as f:
            seconds = json.load(f).get(str(step))
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def _write_training_time(model_dir, step, seconds, kept_steps):
    """Records `seconds` for checkpoint `step`, keeping the entries of the checkpoints still on disk.
    Written to a temporary file and renamed, so a crash leaves the old record whole."""
    path = os.path.join(model_dir, TRAINING_TIME_FILE)
    try:
        with open(path) as f:
            record = json.load(f)
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    record = {k: v for k, v in record.items() if k.isdigit() and int(k) in kept_steps}
    record[str(step)] = round(seconds, 3)
    with open(path + ".tmp", "w") as f:
        json.dump(dict(sorted(record.items(), key=lambda kv: int(kv[0]))), f, indent=1)
    os.replace(path + ".tmp", path)


@keras.saving.register_keras_serializable(package="vdim_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `× decay_factor` every `decay_every`,
    and optionally a half-cosine decay to 0 at step `cosine_steps`.

    The one learning-rate schedule of pretraining (AMDIM's warm-up, optional decay) and of
    fine-tuning (paper §4.1: no warm-up, halved every N steps). At optimizer step `s` (0 for the
    first update) the rate is `peak · min(1, (s + 1) / warmup_steps) · decay_factor^⌊s /
    decay_every⌋ · cosine(s)`; `warmup_steps=0` or `decay_every=0` leaves that factor out. With
    `cosine_steps=N > 0`, `cosine(s) = (1 + cos(π·p)) / 2` with `p = clip((s - w) / (N - w), 0, 1)`,
    `w = warmup_steps`: 1 until the warm-up ends, then down to 0 at step N (SGDR / SimCLR's cosine
    decay without restarts); 0 leaves it out.

    Example:
      >>> schedule = WarmupStepDecay(1e-3, warmup_steps=0, decay_every=3000, decay_factor=0.5)
      >>> round(float(schedule(3000)), 8)  # the first step of the second period: halved
      0.0005
      >>> round(float(WarmupStepDecay(1e-3, warmup_steps=0, cosine_steps=100)(50)), 8)  # half way
      0.0005
    """

    def __init__(self, peak, warmup_steps, decay_every=0, decay_factor=0.5, cosine_steps=0):
        if cosine_steps and cosine_steps <= warmup_steps:
            raise ValueError(f"cosine decay to step {cosine_steps} must end after the warm-up's "
                             f"{warmup_steps} steps")
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.decay_every = decay_every
        self.decay_factor = decay_factor
        self.cosine_steps = cosine_steps
        # Where the cosine reaches 0: `cosine_steps`, or, in a time-limited run, the step the time
        # limit is expected to stop it at, which `train_loop` moves as it measures the speed
        # (`set_horizon`). A variable, so the compiled step reads the current value.
        self.horizon = (tf.Variable(float(cosine_steps), trainable=False, dtype=tf.float32,
                                    name="cosine_horizon") if cosine_steps else None)

    def set_horizon(self, step):
        """Moves the cosine's end to `step` (at most `cosine_steps`): a time-limited run decays to
        0 where its time runs out. Every replica and worker must be given the same value."""
        self.horizon.assign(min(float(step), float(self.cosine_steps)))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.peak, tf.float32)
        if self.warmup_steps:
            lr *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        if self.decay_every:
            lr *= tf.pow(self.decay_factor, tf.floor(step / self.decay_every))
        if self.cosine_steps:
            span = tf.maximum(tf.convert_to_tensor(self.horizon) - self.warmup_steps, 1.0)
            done = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            lr *= 0.5 * (1.0 + tf.cos(math.pi * done))
        return lr

    def get_config(self):
        config = dict(peak=self.peak, warmup_steps=self.warmup_steps, decay_every=self.decay_every,
                      decay_factor=self.decay_factor)
        if self.cosine_steps:  # configs saved before the option stay equal
            config["cosine_steps"] = self.cosine_steps
        return config


def make_strategy(name):
    """A tf.distribute strategy by name; `multi_worker` reads the cluster from `TF_CONFIG`.

    Call it before any TensorFlow op runs: `MultiWorkerMirroredStrategy` configures collectives
    at program start.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy() alone takes the GPUs or one CPU; all logical CPUs make it usable (and
        # testable) on a CPU host configured with several.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multi_worker' needs the cluster in the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy={name!r}: valid values are {STRATEGIES}")


def check_batch(batch_size, strategy, strategy_name):
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"batch_size={batch_size} does not divide across {replicas} replicas "
            f"(strategy={strategy_name!r}); use a multiple of {replicas}"
        )


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def checkpoint_dir(model_dir, strategy):
    """The chief writes to `model_dir/checkpoints`; other workers to a scratch folder they delete.

    Every worker must take part in a save (it may run collectives), but only the chief's copy is
    kept; all workers restore from the chief's folder, so `model_dir` must be shared storage.
    """
    if is_chief(strategy):
        return os.path.join(model_dir, "checkpoints")
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f".scratch_{resolver.task_type}_{resolver.task_id}", "checkpoints")


def latest_checkpoint(model_dir):
    return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))


def checkpoints_newest_first(model_dir):
    """Prefixes of the checkpoints listed in `model_dir/checkpoints`, the newest first ([] when none).

    Listed means named in the folder's `checkpoint` state file; whether each one still reads back
    is `restore_newest`'s business."""
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None:
        return []
    prefixes = [state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)]
    return list(dict.fromkeys(p for p in prefixes if p))


def _error_text(error):
    return f"{type(error).__name__}: {records.error_message(error)}"


def restore_newest(checkpoint, model_dir, report=True, partial=False):
    """Restores the newest checkpoint of `model_dir/checkpoints` that reads back.

    A damaged checkpoint (a truncated or missing file: a full disk, a copy cut short) is skipped
    for the one before it, saying which and why when `report`; the damaged one stays on disk until
    the run writes that step again. `partial`: `checkpoint` holds only part of what was saved (the
    model of a training checkpoint, for evaluation or export); the rest is not asked for.

    Returns:
      the restored checkpoint's prefix, or None when the folder lists no checkpoint.

    Raises:
      TrainingError: checkpoints are listed but none restores, naming each one's files and error.
    """
    failures = []
    for prefix in checkpoints_newest_first(model_dir):
        try:
            status = checkpoint.restore(prefix)
            if partial:
                status.expect_partial()
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as e:  # what TensorFlow raises on unreadable files
            failures.append((prefix, _error_text(e)))
            if report:
                print(f"checkpoint {prefix} does not restore ({failures[-1][1]}); trying the one before it")
            continue
        return prefix
    if failures:
        def files(prefix):
            return ", ".join(sorted(os.path.basename(f) for f in tf.io.gfile.glob(prefix + ".*"))) or "no files"

        details = "; ".join(f"{os.path.basename(prefix)} [{files(prefix)}]: {error}" for prefix, error in failures)
        folder = os.path.abspath(os.path.join(model_dir, "checkpoints"))
        raise TrainingError(f"no checkpoint in {folder} restores ({details}). Restore the folder from a copy, or "
                            "move it aside to start the run from step 0.")
    return None


def restore_model(model, path, prefix):
    """Restores `model` (part of a saved checkpoint) for evaluation, export or fine-tuning: from the
    newest checkpoint of the run folder `path` that reads back (`restore_newest`), or from the
    checkpoint `prefix` as given when `path` is not a folder. Returns the prefix restored.

    Raises:
      AssertionError: the checkpoint does not match the model.
      TrainingError: the run folder's checkpoints of which none restores.
    """
    checkpoint = tf.train.Checkpoint(model=model)
    if os.path.isdir(path):
        return restore_newest(checkpoint, path, partial=True)
    checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
    return prefix


# Settings a resumed run may change: how long and how it runs, not what it trains.
RESUMABLE_CHANGES = ("train_steps", "time_limit_minutes", "checkpoint_every", "keep_checkpoints", "log_every",
                     "strategy", "jit_compile", "data_service_address", "precision", "input_sharding",
                     "decoded_cache_gib")
# Not compared at all: the run folder's own path, so a copied or moved run folder resumes.
_NOT_COMPARED = ("model_dir",)


def _flatten(config, prefix=""):
    """`{"model": {"embedding_dim": 32}}` → `{"model.embedding_dim": 32}`."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# Keys of config.json that record facts about the run, not settings: what wrote it, and colour
# spaces derived from settings that are compared anyway (`color_mode`, `pretrained`). Never
# compared on resume, so runs written before a key was recorded still resume.
RUN_RECORD_KEYS = ("versions", "color_space", "pretrained_color_space")


def run_versions():
    """The versions that write a run, recorded in its config.json under "versions"."""
    import vdim_tf

    return {"vdim_tf": vdim_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def write_config(model_dir, config_dict, config_file="config.json"):
    """Writes a run's settings and `run_versions()` to `model_dir/config_file`."""
    import json

    with open(os.path.join(model_dir, config_file), "w") as f:
        json.dump({**config_dict, "versions": run_versions()}, f, indent=2, default=str)


def settings_of(saved):
    """A saved config.json without `RUN_RECORD_KEYS`: what resuming compares."""
    return {k: v for k, v in saved.items() if k not in RUN_RECORD_KEYS}


def note_other_version(saved, model_dir):
    """Says so (on stderr) when another vdim_tf version wrote the run; runs from before versions
    were recorded say nothing. Returns the message, or None."""
    import sys

    import vdim_tf

    written = saved.get("versions", {}).get("vdim_tf")
    if written is None or written == vdim_tf.__version__:
        return None
    message = (f"note: {model_dir} was written by vdim_tf {written} (TensorFlow "
               f"{saved['versions'].get('tensorflow')}, Keras {saved['versions'].get('keras')}); "
               f"this is vdim_tf {vdim_tf.__version__}")
    print(message, file=sys.stderr)
    return message


def check_precision(precision):
    """Refuses mixed_float16 where no GPU is visible: TensorFlow's CPU kernels lack float16 for
    some of the encoder's ops (AvgPool3D), and the run would otherwise stop at its first step
    with a NotFoundError from deep inside TensorFlow."""
    if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        raise ValueError("precision='mixed_float16' needs a GPU (TensorFlow has no float16 AvgPool3D "
                         "kernel on CPU); use mixed_bfloat16 or float32 here")


@contextlib.contextmanager
def precision_policy(precision):
    """Runs the block under the Keras global dtype policy `precision` and restores the previous
    policy afterwards. Layers built under a mixed policy compute in float16/bfloat16 but keep
    float32 variables, so their checkpoints load into float32 models."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def check_resume(model_dir, config_dict, config_file="config.json"):
    """Refuses to resume a run whose checkpoints were made with different settings.

    A run folder with checkpoints and a `config.json` that differs from `config_dict` in anything
    but `RESUMABLE_CHANGES` would otherwise continue silently with the new settings (or, when
    finished, report the old run as if it were the new one). `model_dir` itself is not compared:
    a run folder may be copied or moved. The precision may change except into or out of
    mixed_float16 (its optimizer checkpoint differs).

    Raises:
      ValueError: naming each differing setting as `name: old → new`.
    """
    path = os.path.join(model_dir, config_file)
    if latest_checkpoint(model_dir) is None or not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    note_other_version(saved, model_dir)
    saved = settings_of(saved)
    current = settings_of(json.loads(json.dumps(config_dict, default=str)))
    old, new = _flatten(saved), _flatten(current)
    missing = "(not set)"
    changed = sorted(k for k in set(old) | set(new) if k.split(".")[0] not in RESUMABLE_CHANGES + _NOT_COMPARED
                     and old.get(k, missing) != new.get(k, missing))
    if changed:
        def show(value):
            return value if value is missing else repr(value)

        details = "; ".join(f"{k}: {show(old.get(k, missing))} → {show(new.get(k, missing))}" for k in changed)
        raise ValueError(f"model_dir={model_dir} holds a run with other settings ({details}). Use a new "
                         "--model_dir, or the run's own settings to resume it.")
    # The precision may change, but not into or out of mixed_float16: its LossScaleOptimizer holds
    # other variables than Adam alone, and restoring the checkpoint would fail inside TensorFlow.
    precisions = (saved.get("precision", "float32"), current.get("precision", "float32"))
    if precisions[0] != precisions[1] and "mixed_float16" in precisions:
        raise ValueError(f"model_dir={model_dir} holds a run trained with precision={precisions[0]!r}; it cannot "
                         f"resume with precision={precisions[1]!r} (mixed_float16 adds loss-scaling state to the "
                         "optimizer's checkpoint). Use a new --model_dir, or the run's own precision.")


INPUT_SHARDING = ("data", "file")


def shard_per_worker(dataset, policy="data"):
    """How several workers split the input (one worker: no effect).

    `data`: every worker builds the same seeded pipeline over every file, decodes every clip of
    each global batch and keeps its part, so the global batches are those of a one-process run
    whatever the number of workers or files; the cost is that each worker reads and decodes all N
    workers' clips (N× the decoding). `file`: each worker reads only its own share of the files
    (needs at least as many files as workers, `check_input_sharding`): no wasted decoding, but the
    batches differ from a one-process run's. The caller builds a `file` worker's `dataset` from
    `worker_files` alone, and tf.distribute's own sharding is turned off: its `FILE` policy cannot
    shard the training pipelines (it walks the graph to the file reader and stops at the seed
    stream zipped beside it, failing the run at its first step).
    """
    policies = {"data": tf.data.experimental.AutoShardPolicy.DATA,
                "file": tf.data.experimental.AutoShardPolicy.OFF}
    if policy not in policies:
        raise ValueError(f"input_sharding={policy!r}: valid values are {INPUT_SHARDING}")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policies[policy]
    return dataset.with_options(options)


def worker_index(strategy):
    """This process's index among the cluster's workers (0 without a cluster): the chief first,
    then the workers by task index, as tf.distribute numbers them."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    if resolver.task_type == "chief":
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return int(resolver.task_id) + (1 if has_chief else 0)


def worker_files(files, policy, strategy):
    """The files this worker's input pipeline reads: every file under `data` sharding or with one
    worker; under `file`, files `i, i + N, i + 2N, …` of the sorted list for worker `i` of `N`."""
    workers = num_workers(strategy)
    if policy != "file" or workers == 1:
        return list(files)
    return list(files)[worker_index(strategy)::workers]


def num_workers(strategy):
    """Worker processes of the strategy's cluster (1 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("worker", ())) + len(cluster.get("chief", ())))


def check_input_sharding(policy, files, workers):
    """`file` sharding gives each worker whole files: refuse it with fewer files than workers (a
    worker would have none) before any data is read."""
    if policy not in INPUT_SHARDING:
        raise ValueError(f"input_sharding={policy!r}: valid values are {INPUT_SHARDING}")
    if policy == "file" and len(files) < workers:
        raise ValueError(f"--input_sharding=file needs at least as many files as workers: {len(files)} file(s) for "
                         f"{workers} workers; use --input_sharding=data, or write more shards "
                         "(prepare --videos_per_shard)")


def train_loop(config, *, strategy, checkpoint, optimizer, make_dataset, replica_step, batch_size,
               progress=True, on_start=None, nan_hint="Try a lower --learning_rate.", run_config=None,
               data_files=None, lr_schedule=None):
    """Trains until `optimizer.iterations == config.train_steps`, or until the run has trained for
    `config.time_limit_minutes` (when > 0; summed over resumed runs, `TRAINING_TIME_FILE`).

    Args:
      config: `LoopConfig`.
      strategy: the tf.distribute strategy the model and optimizer were built in.
      checkpoint: `tf.train.Checkpoint` holding model and optimizer.
      optimizer: its `iterations` is the step counter.
      make_dataset: `start_step -> tf.data.Dataset` of global batches (reseeded by the caller from
        the step, so a resumed run does not replay the same examples).
      replica_step: `batch -> dict of float32 scalars` (with `LOSS`): one optimisation step on a
        per-replica batch.
      batch_size: global batch, for clips/s.
      lr_schedule: the optimizer's `WarmupStepDecay`, when it has a cosine decay and the run a time
        limit: the cosine is then moved to end where the time limit is expected to stop the run
        (the steps left at the speed measured so far in this invocation, from its second step; on
        resuming, first at the speed the record of training time gives), a value that rides in
        each step's all-reduce so every worker decays alike.
      on_start: `on_start(writer, dataset)`, called on the chief of a fresh run (step 0).
      nan_hint: advice appended to the non-finite-loss message.
      run_config: the run's resolved config (a JSON-able dict), written by the chief to
        `model_dir/config.json` once the loop knows it has steps to take: a rerun that has nothing
        to do leaves the file as it was.
      data_files: the training files, searched for the damaged one when reading fails.

    Returns:
      dict: `step`, the last averaged `metrics`, `stopped` (None, "sigterm" or "time_limit": the
      time limit was reached before `train_steps`, its checkpoint saved), `training_seconds` (the
      run's training time so far, summed over resumed runs; None when not recorded before).

    Raises:
      TrainingError: a non-finite loss, checkpoints of which none restores, or a damaged training
        record (after saving a checkpoint of the steps taken).
    """
    chief = is_chief(strategy)
    ckpt_dir = checkpoint_dir(config.model_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
    latest = restore_newest(checkpoint, config.model_dir, report=chief)
    step = optimizer.iterations
    start = int(step.numpy())
    if latest and chief:
        print(f"resuming from {latest} at step {start}")
    # The run's training time before this invocation: 0 for a new run; unknown (None) for a run
    # whose record predates this file or was lost, in which case a time limit counts from now.
    trained = 0.0 if start == 0 else read_training_time(config.model_dir, start)
    limit = 60.0 * config.time_limit_minutes if config.time_limit_minutes > 0 else None
    if start >= config.train_steps:
        print(f"already at step {start} >= train_steps={config.train_steps}; nothing to do")
        return {"step": start, "metrics": {}, "stopped": None, "training_seconds": trained}
    if limit is not None and trained is not None and trained >= limit:
        print(f"already trained {trained / 60:.2f} min >= time_limit_minutes={config.time_limit_minutes:g} "
              f"(at step {start}); nothing to do. A larger --time_limit_minutes continues the run.")
        return {"step": start, "metrics": {}, "stopped": "time_limit", "training_seconds": trained}
    if limit is not None and chief:
        if trained is None:
            print(f"note: the training time before step {start} was not recorded; the time limit of "
                  f"{config.time_limit_minutes:g} min counts from now")
        left = limit - (trained or 0.0)
        print(f"training until step {config.train_steps} or for {left / 60:.2f} more min "
              f"(time_limit_minutes={config.time_limit_minutes:g}), whichever comes first")
    if chief and run_config is not None:
        write_config(config.model_dir, run_config)

    dataset = make_dataset(start)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    # XLA compiles the replica's step (model, loss, optimizer update); the iterator's GetNext has no
    # XLA kernel, so it stays outside the compiled function.
    compiled_step = tf.function(replica_step, jit_compile=True) if config.jit_compile else replica_step

    decay_to_limit = limit is not None and lr_schedule is not None and lr_schedule.horizon is not None

    def step_and_stop(batch, stop, out_of_time, horizon):
        out = {**compiled_step(batch), _STOP: stop, _OUT_OF_TIME: out_of_time}
        if decay_to_limit:  # otherwise no horizon to agree on: no extra all-reduce
            out[_HORIZON] = horizon
        return out

    @tf.function
    def train_step(it, stop, out_of_time, horizon):
        # `stop` (1.0 on a worker that received SIGTERM), `out_of_time` (1.0 on a worker whose
        # clock passed the time limit) and `horizon` (its estimate of the step the time limit
        # stops the run at, 0 when it has none) ride in the step's own all-reduce, so every worker
        # learns at the same step that one of them is being preempted or out of time, and sets the
        # same learning-rate horizon.
        per_replica = strategy.run(step_and_stop, args=(next(it), stop, out_of_time, horizon))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    writer = (tf.summary.create_file_writer(os.path.join(config.model_dir, "train")) if chief
              else tf.summary.create_noop_writer())

    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal="sigterm"))
    bar = _progress(progress and chief, start, config.train_steps)
    metrics, sums, count, t0 = {}, {}, 0, time.perf_counter()
    current = saved = start
    began = t0

    def training_seconds():
        return (trained or 0.0) + time.perf_counter() - began

    if decay_to_limit and start > 0 and trained:
        lr_schedule.set_horizon(start + max(0.0, limit - trained) / (trained / start))
    first = None  # (time, step) after this invocation's first step: the speed is measured from there

    def horizon_estimate():
        """This process's estimate of the step the time limit stops the run at; 0 for none yet."""
        if not decay_to_limit or first is None or current <= first[1]:
            return 0.0
        per_step = (time.perf_counter() - first[0]) / (current - first[1])
        return current + max(0.0, limit - training_seconds()) / per_step

    def save(number):
        manager.save(checkpoint_number=number)
        if chief:
            kept = {int(p.rsplit("-", 1)[-1]) for p in manager.checkpoints}
            _write_training_time(config.model_dir, number, training_seconds(), kept)

    try:
        if chief and start == 0 and on_start is not None:
            on_start(writer, dataset)
        while int(step.numpy()) < config.train_steps:
            flag = tf.constant(1.0 if stop["signal"] else 0.0)
            late = limit is not None and training_seconds() >= limit
            values = {k: float(v) for k, v in train_step(iterator, flag, tf.constant(float(late)),
                                                         tf.constant(horizon_estimate())).items()}
            current = int(step.numpy())
            horizon = values.pop(_HORIZON, 0.0)
            if horizon > 0:
                lr_schedule.set_horizon(max(horizon, current + 1))
            preempted = values.pop(_STOP) > 0
            out_of_time = values.pop(_OUT_OF_TIME) > 0 and not preempted
            stopping = preempted or out_of_time
            if first is None:
                first = (time.perf_counter(), current)
            if not math.isfinite(values[LOSS]):
                raise TrainingError(
                    f"loss is {values[LOSS]} at step {current}; stopping. The last good checkpoint "
                    f"({manager.latest_checkpoint or 'none yet'}) was left untouched. {nan_hint}"
                )
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values[LOSS]:.3f}", refresh=False)
            if current % config.log_every == 0 or current == config.train_steps or stopping:
                elapsed = time.perf_counter() - t0
                metrics = {k: v / count for k, v in sums.items()}
                metrics["throughput/clips_per_second"] = count * batch_size / elapsed
                metrics["throughput/step_time_seconds"] = elapsed / count
                metrics["optimizer/learning_rate"] = float(optimizer.learning_rate)
                with writer.as_default(step=current):
                    for k, v in metrics.items():
                        tf.summary.scalar(k, v)
                if chief:
                    bar.write(f"step {current}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
                sums, count, t0 = {}, 0, time.perf_counter()
                if limit is not None and current > start:
                    # The bar's end is the step the time limit will reach at the speed so far.
                    per_step = (time.perf_counter() - began) / (current - start)
                    left = max(0.0, limit - training_seconds())
                    bar.total = min(config.train_steps, current + 1 + int(left / per_step))
                    bar.refresh()
            if current % config.checkpoint_every == 0 or current == config.train_steps or stopping:
                save(current)
                saved = current
            if stopping:
                where = f"checkpoint saved at step {current} in {os.path.join(config.model_dir, 'checkpoints')}"
                if out_of_time:
                    whose = "time limit reached" if late else "another worker reached its time limit"
                    bar.write(f"{whose}: {training_seconds() / 60:.2f} min of training "
                              f"(time_limit_minutes={config.time_limit_minutes:g}); {where}. A larger "
                              "--time_limit_minutes continues the run.")
                    return {"step": current, "metrics": metrics, "stopped": "time_limit",
                            "training_seconds": training_seconds()}
                who = "this process" if stop["signal"] else "another worker"
                bar.write(f"{who} received SIGTERM: {where}; exiting")
                return {"step": current, "metrics": metrics, "stopped": "sigterm",
                        "training_seconds": training_seconds()}
    except tf.errors.DataLossError as e:
        # The step counter's increment does not wait for the batch, so it may have run.
        step.assign(current)
        if current > saved:
            save(current)
        if not chief:  # its own save went to a scratch folder; the chief's checkpoints are the run's
            where = (f"the other workers stop too; the chief's last checkpoint in "
                     f"{os.path.join(config.model_dir, 'checkpoints')} resumes the run")
        else:
            where = f"its checkpoint saved in {ckpt_dir}" if current > start else "before taking a step"
        raise TrainingError(f"{_damaged_data(e, data_files)}. Stopped at step {current}, {where}; replace or "
                            "remove the file (e.g. prepare it again) and rerun to resume.") from None
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as e:
        if num_workers(strategy) == 1:
            raise
        # A worker that stops (damaged data under file sharding, out of memory, killed) closes its
        # connections, and the step's collectives on every other worker fail with this. Nothing is
        # saved here: the collectives that a save may run are broken.
        latest = latest_checkpoint(config.model_dir)
        kept = f"the last checkpoint is {latest}" if latest else "no checkpoint was saved yet"
        raise TrainingError(
            f"lost contact with another worker during step {current + 1} ({_first_line(e)}); it has most "
            f"likely stopped on an error its own log names (damaged training data, out of memory, killed). "
            f"{kept[0].upper() + kept[1:]}: fix the cause and rerun every worker to resume from it.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        writer.flush()
        if not chief and tf.io.gfile.exists(os.path.dirname(ckpt_dir)):
            tf.io.gfile.rmtree(os.path.dirname(ckpt_dir))
    return {"step": int(step.numpy()), "metrics": metrics, "stopped": None, "training_seconds": training_seconds()}


def _first_line(error):
    """The line of a TensorFlow error's message that says what failed (e.g. "Collective ops is
    aborted by: Socket closed"), not its "Graph execution error:" heading or the trace after it."""
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines() if line.strip()]
    for line in lines:
        if "aborted" in line.lower() or "socket closed" in line.lower():
            return line
    said = [line for line in lines if not line.endswith(":") and not line.startswith(("File ", "Detected at"))]
    return said[0] if said else type(error).__name__


# Key of the cluster-wide stop flag in the train step's outputs (not a metric).
_STOP = "_stop"
# Key of the cluster-wide learning-rate horizon in the train step's outputs (not a metric).
_HORIZON = "_horizon"
# Key of the cluster-wide time-limit flag in the train step's outputs (not a metric).
_OUT_OF_TIME = "_out_of_time"


def _damaged_data(error, files):
    """What a DataLossError from the input pipeline means, naming the damaged file where found
    (TensorFlow's message gives only a byte offset)."""
    found = records.find_damaged(files, error) if files else []
    if found:
        return "damaged training data: " + "; ".join(f"{os.path.abspath(path)}: {reason}" for path, reason in found)
    return (f"reading the training data failed ({_error_text(error)})"
            + (f" but none of its {len(files)} files looks damaged now" if files else ""))


def _progress(enabled, start, total):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=2.0)
