"""A resumable, distributed training loop shared by fine-tuning (and usable by any step function).

`train_loop` runs `replica_step` under `strategy.run` until the optimizer has taken `train_steps`
steps: it restores the newest checkpoint first, saves every `checkpoint_every` steps, at the end
and on SIGTERM (the chief writes; other workers write to a scratch folder), stops on a non-finite
loss without touching the last good checkpoint, shows a progress bar and writes averaged metrics
to TensorBoard.
"""

import dataclasses
import math
import os
import signal
import time

import tensorflow as tf


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss); the last good checkpoint is left as it was."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to log and save (shared by every launcher)."""

    model_dir: str
    train_steps: int
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    jit_compile: bool = False


STRATEGIES = ("default", "mirrored", "multi_worker")


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
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def checkpoint_dir(model_dir, strategy):
    """The chief writes to `model_dir/checkpoints`; other workers to a scratch folder inside it."""
    if is_chief(strategy):
        return os.path.join(model_dir, "checkpoints")
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "checkpoints", f".worker_{resolver.task_type}_{resolver.task_id}")


def restore(checkpoint, model_dir, strategy, keep):
    """A CheckpointManager for the run, with the newest checkpoint (if any) restored."""
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir(model_dir, strategy), max_to_keep=keep)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    return manager


def train_loop(config, *, strategy, checkpoint, optimizer, make_dataset, replica_step, batch_size,
               writer=None, progress=True, on_start=None):
    """Trains until `optimizer.iterations == config.train_steps`.

    Args:
      config: `LoopConfig`.
      strategy: the tf.distribute strategy the model and optimizer were built in.
      checkpoint: `tf.train.Checkpoint` holding model and optimizer.
      optimizer: its `iterations` is the step counter.
      make_dataset: `start_step -> tf.data.Dataset` of global batches (reseeded by the caller
        from the step, so a resumed run does not replay the same examples).
      replica_step: `batch -> dict of float32 scalars` (must include "loss"), one optimisation
        step on a per-replica batch.
      batch_size: global batch, for clips/s.
      writer: TensorBoard writer (None: `model_dir/train` on the chief).
      on_start: called as `on_start(writer, dataset)` on a fresh run (step 0), for run summaries.

    Returns:
      dict: `step`, the last averaged `metrics`, `stopped` (None or "sigterm").
    """
    chief = is_chief(strategy)
    manager = restore(checkpoint, config.model_dir, strategy, config.keep_checkpoints)
    step = optimizer.iterations
    start = int(step.numpy())
    if start >= config.train_steps:
        print(f"already at step {start} >= train_steps={config.train_steps}; nothing to do")
        return {"step": start, "metrics": {}, "stopped": None}
    if start:
        print(f"resuming from {manager.latest_checkpoint} (step {start})")

    dataset = make_dataset(start)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function(jit_compile=config.jit_compile or None)
    def train_step(it):
        per_replica = strategy.run(replica_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    if writer is None:
        writer = (tf.summary.create_file_writer(os.path.join(config.model_dir, "train")) if chief
                  else tf.summary.create_noop_writer())
    if chief and start == 0 and on_start is not None:
        on_start(writer, dataset)

    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal="sigterm"))
    bar = _progress(progress and chief, start, config.train_steps)
    metrics, sums, count, t0 = {}, {}, 0, time.perf_counter()
    try:
        while int(step.numpy()) < config.train_steps:
            values = {k: float(v) for k, v in train_step(iterator).items()}
            current = int(step.numpy())
            if not math.isfinite(values["loss"]):
                raise TrainingError(
                    f"loss is {values['loss']} at step {current}; stopping. The last good checkpoint "
                    f"({manager.latest_checkpoint or 'none yet'}) was left untouched. Try a lower "
                    "--learning_rate or --precision=float32."
                )
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
            if current % config.log_every == 0 or current == config.train_steps:
                elapsed = time.perf_counter() - t0
                metrics = {k: v / count for k, v in sums.items()}
                metrics["clips_per_second"] = count * batch_size / elapsed
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
                bar.write(f"received SIGTERM: checkpoint saved at step {current} in {manager.directory}; exiting")
                return {"step": current, "metrics": metrics, "stopped": stop["signal"]}
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        writer.flush()
    return {"step": int(step.numpy()), "metrics": metrics, "stopped": None}


def _progress(enabled, start, total):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=2.0)
