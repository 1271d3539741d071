"""Shards: planning which videos go into which TFRecord, writing them, and resuming.

A split's videos are dealt into `{split}-{i:05d}-of-{n:05d}.tfrecord` files by a fixed-seed
shuffle of the sorted list, so a re-run over the same files plans the same shards. Each shard is
written under a hidden temporary name and renamed when complete, then its sidecar
`.done/{shard}.json` is written (the videos and settings it was made from, and its result); a
re-run keeps every shard whose sidecar matches and rewrites the rest. Shards are written in this
process or in spawned worker processes.
"""

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import queue
import random
import re

import tensorflow as tf

from vdim_tf.data import decode, records

SHARD_PATTERN = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
DONE_DIR = ".done"


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to write: `entries` (`listing.VideoEntry`) decoded with `settings` into
    `split_dir/name`."""

    video_dir: str
    split_dir: str
    name: str
    entries: tuple
    settings: dict

    @property
    def fingerprint(self):
        return {"videos": [[e.path, e.label, e.label_text] for e in self.entries], "settings": self.settings}


def shard_settings(config):
    """The decoding settings of a `PrepareConfig` that a shard's content depends on."""
    return {"fps": config.fps, "short_side": config.short_side, "jpeg_quality": config.jpeg_quality}


def plan_shards(listing, config):
    """Splits one split's videos into shard tasks: a fixed-seed shuffle of the sorted entries
    (so no shard holds one class only), dealt round-robin into `ceil(n / videos_per_shard)`."""
    entries = list(listing.entries)
    random.Random(f"vdim_tf.prepare/{listing.name}").shuffle(entries)
    count = math.ceil(len(entries) / config.videos_per_shard)
    split_dir = os.path.join(config.output_dir, listing.name)
    return [
        ShardTask(config.video_dir, split_dir, f"{listing.name}-{i:05d}-of-{count:05d}.tfrecord",
                  tuple(entries[i::count]), shard_settings(config))
        for i in range(count)
    ]


def _sidecar_path(task):
    return os.path.join(task.split_dir, DONE_DIR, task.name + ".json")


def _temp_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")


def write_atomically(path, write):
    """Calls `write(temporary path)`, then renames the result to `path`: readers never see a
    half-written file."""
    temp = _temp_path(path)
    write(temp)
    os.replace(temp, path)


def load_complete_shard(task):
    """The saved result of a shard finished by an earlier run with the same inputs, else None."""
    try:
        with open(_sidecar_path(task), encoding="utf-8") as f:
            sidecar = json.load(f)
    except (OSError, ValueError):
        return None
    if sidecar.get("fingerprint") != task.fingerprint or not os.path.isfile(os.path.join(task.split_dir, task.name)):
        return None
    return sidecar["result"]


def _write_shard(task, progress):
    """Decodes the task's videos and writes its shard and sidecar; returns the shard's result."""
    result = {"written": [], "frames": 0, "skipped": [], "partial": []}

    def write_records(temp):
        with tf.io.TFRecordWriter(temp) as writer:
            for entry in task.entries:
                try:
                    video = decode.decode_video(os.path.join(task.video_dir, entry.path), **task.settings)
                except decode.VideoError as e:
                    result["skipped"].append({"path": entry.path, "reason": str(e)})
                except Exception as e:  # one bad file must not stop the run: report it, go on.
                    result["skipped"].append({"path": entry.path, "reason": f"unexpected {type(e).__name__}: {e}"})
                else:
                    example = records.make_sequence_example(
                        video.jpeg_frames, entry.label, entry.label_text, entry.path, video.fps
                    )
                    writer.write(example.SerializeToString())
                    result["written"].append(entry.path)
                    result["frames"] += len(video.jpeg_frames)
                    if video.problem:
                        result["partial"].append(
                            {"path": entry.path, "frames": len(video.jpeg_frames), "reason": video.problem}
                        )
                progress(1)

    def write_sidecar(temp):
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({"fingerprint": task.fingerprint, "result": result}, f)

    write_atomically(os.path.join(task.split_dir, task.name), write_records)
    write_atomically(_sidecar_path(task), write_sidecar)
    return result


def remove_stale_files(split_dir, split, keep):
    """Deletes temporary files and shards of this split that the current plan does not produce."""
    for name in os.listdir(split_dir):
        match = SHARD_PATTERN.match(name)
        if name.endswith(".tmp") or (match and match.group("split") == split and name not in keep):
            os.remove(os.path.join(split_dir, name))
    done_dir = os.path.join(split_dir, DONE_DIR)
    for name in os.listdir(done_dir):
        if name.endswith(".tmp") or (name.endswith(".json") and name[: -len(".json")] not in keep):
            os.remove(os.path.join(done_dir, name))


_worker_progress = None


def _init_worker(progress_queue):
    global _worker_progress
    _worker_progress = progress_queue


def _write_shard_in_worker(task):
    return _write_shard(task, _worker_progress.put)


def run_tasks(tasks, workers, bar):
    """Writes the shards, in this process or in `workers` spawned ones; yields (task, result)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task, _write_shard(task, bar.update)
        return
    # Spawned, not forked: TensorFlow is not fork-safe.
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    with concurrent.futures.ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=context, initializer=_init_worker, initargs=(progress_queue,)
    ) as pool:
        pending = {pool.submit(_write_shard_in_worker, task): task for task in tasks}
        while pending:
            done, _ = concurrent.futures.wait(pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
            try:
                while True:
                    bar.update(progress_queue.get_nowait())
            except queue.Empty:
                pass
            for future in done:
                yield pending.pop(future), future.result()
