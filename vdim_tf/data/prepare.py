"""Turns a folder of videos into sharded TFRecords in the layout of `records.py`.

Supported datasets (`PrepareConfig.dataset`):

- `ucf101`, `hmdb51`: official split lists in `splits_dir` (`classInd.txt`, `trainlist0N.txt`,
  `testlist0N.txt`). Every split found is written as `train_N` / `test_N`. Labels are 0-based in
  classInd order. List entries are matched to files case-insensitively by class folder and file
  stem, so the UCF lists' `HandStandPushups` finds `HandstandPushups/...` and a clip transcoded
  from `.avi` to `.mp4` is still found; a flat folder of videos works too. Listed files that are
  not on disk are counted as missing, not treated as errors.
- `kinetics`: annotation CSVs (`label,youtube_id,time_start,time_end,split`; one file or a folder
  of them). Videos are found anywhere under `video_dir` as `<youtube_id>_<start:06d>_<end:06d>.*`
  (as the Kinetics downloaders name them) or `<youtube_id>.*`. Labels are the sorted class names;
  rows without a label (the test split) get label -1.
- `folder`: `video_dir/<class>/<video>`; labels 0..C-1 in sorted class-name order; written as the
  one split `split_name`.

Output:

    {output_dir}/labels.txt                                 class names, one per line, index order
    {output_dir}/report.json                                per-split counts, skipped/partial files
    {output_dir}/{split}/{split}-{i:05d}-of-{n:05d}.tfrecord
    {output_dir}/{split}/.done/{shard}.json                 sidecar: the shard is complete

Bad input stops nothing: an empty, truncated or undecodable file is skipped and listed with its
reason; a file that fails part-way keeps the frames decoded before the failure (reported as
partial). Each shard is written under a hidden temporary name and renamed when complete, then its
sidecar is written; a re-run keeps every shard whose sidecar matches (same videos, same
settings), rewrites the rest and removes temporary and stale shard files. Shard assignment is a
fixed-seed shuffle of the sorted file list, so a re-run over the same files plans the same shards.

Example:

    config = PrepareConfig(dataset="ucf101", video_dir="UCF-101", output_dir="records/ucf101",
                           splits_dir="ucfTrainTestlist")
    report = prepare_dataset(config)
    print(report.summary())
"""

import concurrent.futures
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import pathlib
import queue
import random
import re
import time

import av
import av.video.reformatter
import tensorflow as tf
import tqdm

from vdim_tf.data import records

DATASETS = ("ucf101", "hmdb51", "kinetics", "folder")

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv", ".wmv"}
)

# AVI headers often declare one or two frames more than the decoder delivers (seen on the HMDB-51
# clips in ../shared/data); only a larger shortfall marks a cleanly-ending decode as partial.
_DECLARED_FRAMES_SLACK = 0.05

_SPLIT_FILE_PATTERN = re.compile(r"^(train|test)list0*(\d+)\.txt$")
_SHARD_PATTERN = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
_DONE_DIR = ".done"


class ConfigError(ValueError):
    """A bad `PrepareConfig` value; `field` and `value` name it (the CLI flags use the same names)."""

    def __init__(self, field, value, problem):
        super().__init__(f"{field}={value!r}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What to prepare and how.

    Attributes:
      dataset: one of `DATASETS`.
      video_dir: folder holding the videos.
      output_dir: where shards, `labels.txt` and `report.json` go (created if needed).
      splits_dir: ucf101/hmdb51 only: folder with `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`.
      annotations: kinetics only: an annotation CSV or a folder of them.
      split_name: folder only: the split the videos are written as.
      split_ids: ucf101/hmdb51 only: which numbered splits to write (e.g. `(1,)`); None = all found.
      fps: frames per second to store, chosen by nearest-frame selection; None keeps the native rate.
      short_side: pixels of the shorter side after resizing (aspect ratio kept); None keeps the size.
      jpeg_quality: JPEG quality of the stored frames, 1-100.
      videos_per_shard: at most this many videos per TFRecord shard.
      workers: decoding processes; None = `os.cpu_count()`; 1 decodes in this process.
      progress: show a tqdm progress bar.
    """

    dataset: str
    video_dir: str
    output_dir: str
    splits_dir: str | None = None
    annotations: str | None = None
    split_name: str = "train"
    split_ids: tuple[int, ...] | None = None
    fps: float | None = None
    short_side: int | None = 128
    jpeg_quality: int = 90
    videos_per_shard: int = 100
    workers: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", self.dataset, f"unknown dataset; valid: {', '.join(DATASETS)}")
        if not os.path.isdir(self.video_dir):
            raise ConfigError("video_dir", self.video_dir, "no such directory")
        if not self.output_dir:
            raise ConfigError("output_dir", self.output_dir, "must be given")
        if self.dataset in ("ucf101", "hmdb51"):
            if not self.splits_dir:
                raise ConfigError("splits_dir", self.splits_dir, f"{self.dataset} needs the official split files")
            if not os.path.isfile(os.path.join(self.splits_dir, "classInd.txt")):
                raise ConfigError("splits_dir", self.splits_dir, "no classInd.txt in this directory")
            found = {int(name.rpartition("_")[2]) for name in find_split_files(self.splits_dir)}
            if not found:
                raise ConfigError("splits_dir", self.splits_dir, "no trainlist0N.txt/testlist0N.txt in this directory")
            if self.split_ids is not None and not set(self.split_ids) <= found:
                raise ConfigError("split_ids", self.split_ids, f"splits_dir has splits {sorted(found)} only")
        if self.dataset == "kinetics":
            if not self.annotations or not os.path.exists(self.annotations):
                raise ConfigError("annotations", self.annotations, "kinetics needs an annotation CSV file or folder")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", self.split_name):
            raise ConfigError("split_name", self.split_name, "use letters, digits, '_' and '.' only")
        if self.fps is not None and not self.fps > 0:
            raise ConfigError("fps", self.fps, "must be > 0, or None to keep the native rate")
        if self.short_side is not None and self.short_side < 1:
            raise ConfigError("short_side", self.short_side, "must be >= 1, or None to keep the size")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("jpeg_quality", self.jpeg_quality, "must be in 1..100")
        if self.videos_per_shard < 1:
            raise ConfigError("videos_per_shard", self.videos_per_shard, "must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("workers", self.workers, "must be >= 1, or None for os.cpu_count()")


@dataclasses.dataclass(frozen=True, order=True)
class VideoEntry:
    """One video to write: `path` relative to `video_dir`, as found on disk."""

    path: str
    label: int
    label_text: str


@dataclasses.dataclass(frozen=True)
class SplitListing:
    """A split's videos found on disk (sorted by path) and the listed ones that were not."""

    name: str
    entries: tuple[VideoEntry, ...]
    missing: tuple[str, ...]


@dataclasses.dataclass
class SplitReport:
    """What happened to one split. `skipped` and `partial` hold dicts with `path` and `reason`."""

    listed: int
    missing: int
    written: int = 0
    frames: int = 0
    skipped: list = dataclasses.field(default_factory=list)
    partial: list = dataclasses.field(default_factory=list)
    shards: list = dataclasses.field(default_factory=list)
    shards_reused: int = 0
    missing_examples: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PrepareReport:
    """The outcome of `prepare_dataset`; saved as `{output_dir}/report.json`."""

    dataset: str
    video_dir: str
    output_dir: str
    labels: list
    settings: dict
    splits: dict
    seconds: float = 0.0

    @property
    def num_written(self):
        return sum(s.written for s in self.splits.values())

    @property
    def num_skipped(self):
        return sum(len(s.skipped) for s in self.splits.values())

    @property
    def num_partial(self):
        return sum(len(s.partial) for s in self.splits.values())

    def to_dict(self):
        return dataclasses.asdict(self)

    def summary(self):
        """A human-readable table of per-split counts, then every skipped and partial file."""
        lines = [f"{self.dataset}: {self.video_dir} -> {self.output_dir} ({self.seconds:.1f} s)"]
        width = max([len("split")] + [len(name) for name in self.splits])
        header = ("listed", "missing", "written", "skipped", "partial", "frames", "shards", "reused")
        lines.append(f"  {'split':<{width}} " + " ".join(f"{h:>8}" for h in header))
        for name, s in self.splits.items():
            counts = (s.listed, s.missing, s.written, len(s.skipped), len(s.partial), s.frames,
                      len(s.shards), s.shards_reused)
            lines.append(f"  {name:<{width}} " + " ".join(f"{c:>8}" for c in counts))
        for name, s in self.splits.items():
            lines += [f"  SKIPPED {name} {item['path']}: {item['reason']}" for item in s.skipped]
            lines += [f"  partial {name} {item['path']}: {item['reason']}" for item in s.partial]
        if self.num_skipped:
            lines.append(f"{self.num_skipped} file(s) skipped: see the list above and report.json")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Listing: which videos belong to which split, with which label.


def find_split_files(splits_dir):
    """Returns `{"train_1": path, "test_1": path, ...}` for the `(train|test)list0N.txt` files."""
    found = {}
    for path in pathlib.Path(splits_dir).iterdir():
        match = _SPLIT_FILE_PATTERN.match(path.name)
        if match:
            found[(int(match.group(2)), match.group(1) == "test")] = path
    return {f"{'test' if is_test else 'train'}_{number}": found[(number, is_test)]
            for number, is_test in sorted(found)}


def _read_lines(path):
    text = pathlib.Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_class_index(path):
    """Reads a `classInd.txt` (`<1-based index> <name>` per line) into names in index order."""
    names = {}
    for number, line in _read_lines(path):
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise ValueError(f"{path}:{number}: expected '<index> <class name>', got {line!r}")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f"{path}: class indices must be 1..{len(names)}, got {sorted(names)}")
    return [names[i] for i in range(1, len(names) + 1)]


def read_split_list(path, class_names):
    """Reads a UCF-style split list: `Class/video.avi [1-based label]` per line.

    The class folder is matched to `class_names` case-insensitively (the UCF-101 lists spell
    `HandStandPushups` where classInd says `HandstandPushups`) and rewritten to the classInd
    spelling. A label column, where present, must agree with the folder.

    Returns:
      list of `(path with canonical class folder, 0-based label)`.
    """
    by_lower = {name.lower(): index for index, name in enumerate(class_names)}
    items = []
    for number, line in _read_lines(path):
        parts = line.rsplit(maxsplit=1)
        listed_label = None
        if len(parts) == 2 and parts[1].isdigit():
            line, listed_label = parts[0], int(parts[1]) - 1
        class_dir, _, name = line.replace("\\", "/").partition("/")
        if not name:
            raise ValueError(f"{path}:{number}: expected '<class>/<video file>', got {line!r}")
        label = by_lower.get(class_dir.lower())
        if label is None:
            raise ValueError(f"{path}:{number}: class {class_dir!r} is not in classInd")
        if listed_label is not None and listed_label != label:
            raise ValueError(
                f"{path}:{number}: label {listed_label + 1} disagrees with class {class_dir!r} "
                f"(classInd index {label + 1})"
            )
        items.append((f"{class_names[label]}/{name}", label))
    return items


def read_kinetics_annotations(annotations):
    """Reads Kinetics annotation CSVs (`label,youtube_id,time_start,time_end,split`).

    Args:
      annotations: a CSV file, or a folder whose `*.csv` files are all read. A file without a
        `split` column names its rows' split by its stem (`train.csv` -> `train`).

    Returns:
      `(class_names, {split: [(candidate stems, label text or "")]})`: class names sorted; the
      stems are `<youtube_id>_<start:06d>_<end:06d>` and `<youtube_id>`, in lookup order.
    """
    path = pathlib.Path(annotations)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no *.csv annotation files in {annotations}")
    rows = {}
    for file in files:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{file}: missing column(s) {sorted(missing)}; have {reader.fieldnames}")
            for number, row in enumerate(reader, 2):
                try:
                    start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                except ValueError:
                    raise ValueError(f"{file}:{number}: bad time_start/time_end in {row}") from None
                youtube_id = row["youtube_id"].strip()
                split = (row.get("split") or file.stem).strip()
                stems = (f"{youtube_id}_{start:06d}_{end:06d}", youtube_id)
                rows.setdefault(split, []).append((stems, (row.get("label") or "").strip()))
    class_names = sorted({label for items in rows.values() for _, label in items if label})
    return class_names, rows


class _VideoIndex:
    """Every video file under a folder, for finding listed videos by class folder and stem."""

    def __init__(self, root):
        self.paths = []
        for folder, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                    self.paths.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
        self._by_class_stem = {}
        self._by_stem = {}
        self._by_lower_stem = {}
        for path in self.paths:
            parent, _, name = path.rpartition("/")
            stem = os.path.splitext(name)[0]
            self._by_class_stem.setdefault((parent.rpartition("/")[2].lower(), stem.lower()), path)
            self._by_stem.setdefault(stem, []).append(path)
            self._by_lower_stem.setdefault(stem.lower(), []).append(path)

    def find_listed(self, listed_path):
        """Finds `Class/video.ext` by class folder and stem (any case, any extension), else by a
        stem unique in the whole tree; None if absent."""
        class_dir, _, name = listed_path.rpartition("/")
        stem = os.path.splitext(name)[0].lower()
        found = self._by_class_stem.get((class_dir.rpartition("/")[2].lower(), stem))
        if found is None and len(self._by_lower_stem.get(stem, ())) == 1:
            found = self._by_lower_stem[stem][0]
        return found

    def find_stem(self, stems):
        """Finds the first of `stems` (exact case: YouTube ids are case-sensitive); None if absent."""
        for stem in stems:
            if stem in self._by_stem:
                return self._by_stem[stem][0]
        return None


def list_splits(config):
    """Lists the videos of every split `config` describes.

    Returns:
      `(class_names, {split name: SplitListing})`.
    """
    index = _VideoIndex(config.video_dir)
    listed = {}
    if config.dataset in ("ucf101", "hmdb51"):
        class_names = read_class_index(os.path.join(config.splits_dir, "classInd.txt"))
        for split, path in find_split_files(config.splits_dir).items():
            if config.split_ids is None or int(split.rpartition("_")[2]) in config.split_ids:
                items = read_split_list(path, class_names)
                listed[split] = [(p, index.find_listed(p), label, class_names[label]) for p, label in items]
    elif config.dataset == "kinetics":
        class_names, rows = read_kinetics_annotations(config.annotations)
        label_of = {name: i for i, name in enumerate(class_names)}
        for split, items in rows.items():
            listed[split] = [(stems[0], index.find_stem(stems), label_of.get(text, -1), text)
                             for stems, text in items]
    else:
        root = pathlib.Path(config.video_dir)
        class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        label_of = {name: i for i, name in enumerate(class_names)}
        listed[config.split_name] = [(p, p, label_of[p.split("/")[0]], p.split("/")[0])
                                     for p in index.paths if "/" in p and p.split("/")[0] in label_of]
    splits = {}
    for split, items in listed.items():
        entries = {found: VideoEntry(found, label, text) for _, found, label, text in items if found is not None}
        missing = tuple(p for p, found, _, _ in items if found is None)
        splits[split] = SplitListing(split, tuple(entries[p] for p in sorted(entries)), missing)
    return class_names, splits


# ---------------------------------------------------------------------------------------------
# Decoding one video.


class VideoError(Exception):
    """A video that cannot be used at all; the message is the reason given in the report."""


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """JPEG frames of one video. `problem` says why decoding stopped early, else None."""

    jpeg_frames: list
    fps: float
    problem: str | None


def output_size(width, height, short_side):
    """`(width, height)` with the shorter side scaled to `short_side` (None keeps the size)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def decode_video(path, fps=None, short_side=None, jpeg_quality=90):
    """Decodes a video into resized, JPEG-encoded RGB frames.

    Frames are chosen by index for a constant-rate stream: output frame k is source frame
    `round(k * native_fps / fps)`, so lowering the rate drops frames and raising it repeats them.

    Raises:
      VideoError: the file is empty, cannot be opened, has no video stream or yields no frame.
    """
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise VideoError(f"cannot read: {e}") from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as e:  # PyAV raises many error types for unreadable input.
        raise VideoError(f"cannot open: {type(e).__name__}: {e}") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        native_fps = float(stream.average_rate or stream.guessed_rate or 0)
        declared = stream.frames
        resample = fps is not None and native_fps > 0
        ratio = native_fps / fps if resample else 1.0
        # One reformatter per video keeps FFmpeg's scaler context: 4x faster than frame.reformat.
        reformatter = av.video.reformatter.VideoReformatter()
        jpeg_frames, decoded, next_output, repeats, problem = [], 0, 0, 0, None
        try:
            for frame in container.decode(stream):
                repeats = 1
                if resample:
                    repeats = 0
                    while math.floor(next_output * ratio + 0.5) <= decoded:
                        repeats += 1
                        next_output += 1
                decoded += 1
                if repeats:
                    width, height = output_size(frame.width, frame.height, short_side)
                    rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                               interpolation="AREA")
                    jpeg = tf.io.encode_jpeg(rgb.to_ndarray(), quality=jpeg_quality).numpy()
                    jpeg_frames += [jpeg] * repeats
        except Exception as e:  # a decode error mid-stream: keep what came before it.
            problem = f"decoding stopped after {decoded} frames: {type(e).__name__}: {e}"
    if problem is None and declared and decoded < declared * (1 - _DECLARED_FRAMES_SLACK) - 1:
        problem = f"decoded {decoded} of the {declared} frames the container declares (truncated?)"
        # The last frame of a cut file is decoded from a cut packet: seen garbled on a truncated
        # UCF-101 AVI, so it is dropped.
        if decoded > 1:
            jpeg_frames = jpeg_frames[: len(jpeg_frames) - repeats]
            problem += "; dropped the last, possibly cut, frame"
    if not jpeg_frames:
        raise VideoError(problem or "no frames decoded")
    return DecodedVideo(jpeg_frames, fps if resample else native_fps, problem)


# ---------------------------------------------------------------------------------------------
# Shards: planning, writing, resuming.


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    video_dir: str
    split_dir: str
    name: str
    entries: tuple
    settings: dict

    @property
    def fingerprint(self):
        return {"videos": [[e.path, e.label, e.label_text] for e in self.entries], "settings": self.settings}


def _settings(config):
    return {"fps": config.fps, "short_side": config.short_side, "jpeg_quality": config.jpeg_quality}


def plan_shards(listing, config):
    """Splits one split's videos into shard tasks: a fixed-seed shuffle of the sorted entries
    (so no shard holds one class only), dealt round-robin into `ceil(n / videos_per_shard)`."""
    entries = list(listing.entries)
    random.Random(f"vdim_tf.prepare/{listing.name}").shuffle(entries)
    count = math.ceil(len(entries) / config.videos_per_shard)
    split_dir = os.path.join(config.output_dir, listing.name)
    return [
        _ShardTask(config.video_dir, split_dir, f"{listing.name}-{i:05d}-of-{count:05d}.tfrecord",
                   tuple(entries[i::count]), _settings(config))
        for i in range(count)
    ]


def _sidecar_path(task):
    return os.path.join(task.split_dir, _DONE_DIR, task.name + ".json")


def _temp_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")


def _write_atomically(path, write):
    temp = _temp_path(path)
    write(temp)
    os.replace(temp, path)


def _load_complete_shard(task):
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
                    video = decode_video(os.path.join(task.video_dir, entry.path), **task.settings)
                except VideoError as e:
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

    _write_atomically(os.path.join(task.split_dir, task.name), write_records)
    _write_atomically(_sidecar_path(task), write_sidecar)
    return result


def _remove_stale_files(split_dir, split, keep):
    """Deletes temporary files and shards of this split that the current plan does not produce."""
    for name in os.listdir(split_dir):
        match = _SHARD_PATTERN.match(name)
        if name.endswith(".tmp") or (match and match.group("split") == split and name not in keep):
            os.remove(os.path.join(split_dir, name))
    done_dir = os.path.join(split_dir, _DONE_DIR)
    for name in os.listdir(done_dir):
        if name.endswith(".tmp") or (name.endswith(".json") and name[: -len(".json")] not in keep):
            os.remove(os.path.join(done_dir, name))


_worker_progress = None


def _init_worker(progress_queue):
    global _worker_progress
    _worker_progress = progress_queue


def _write_shard_in_worker(task):
    return _write_shard(task, _worker_progress.put)


def _run_tasks(tasks, workers, bar):
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


def _check_labels(output_dir, class_names):
    path = os.path.join(output_dir, "labels.txt")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = f.read().splitlines()
        if existing != class_names:
            raise ValueError(
                f"{path} lists {len(existing)} classes that differ from this dataset's {len(class_names)}; "
                "use a fresh output_dir"
            )


def _save_report(output_dir, report):
    """Writes report.json, keeping the entries of splits that earlier runs wrote to this
    output_dir (e.g. one `folder` run per split)."""
    path = os.path.join(output_dir, "report.json")
    saved = report.to_dict()
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, ValueError):
        previous = {}
    if previous.get("dataset") == report.dataset:
        saved["splits"] = {**previous.get("splits", {}), **saved["splits"]}
    _write_atomically(path, lambda temp: pathlib.Path(temp).write_text(json.dumps(saved, indent=1), encoding="utf-8"))


def prepare_dataset(config):
    """Writes `config.video_dir` as sharded TFRecords under `config.output_dir`.

    Args:
      config: a `PrepareConfig`.

    Returns:
      A `PrepareReport`, also saved as `{output_dir}/report.json`.

    Raises:
      ValueError: malformed split or annotation files, or an output_dir holding another dataset.
      concurrent.futures.process.BrokenProcessPool: a worker process died (e.g. a crash inside
        FFmpeg); finished shards are kept and a re-run resumes.
    """
    start = time.monotonic()
    class_names, listings = list_splits(config)
    _check_labels(config.output_dir, class_names)
    os.makedirs(config.output_dir, exist_ok=True)
    _write_atomically(
        os.path.join(config.output_dir, "labels.txt"),
        lambda temp: pathlib.Path(temp).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8"),
    )
    report = PrepareReport(config.dataset, config.video_dir, config.output_dir, class_names, _settings(config), {})
    todo = []
    for name, listing in listings.items():
        split = report.splits[name] = SplitReport(
            listed=len(listing.entries) + len(listing.missing),
            missing=len(listing.missing),
            missing_examples=list(listing.missing[:10]),
        )
        tasks = plan_shards(listing, config)
        split_dir = os.path.join(config.output_dir, name)
        os.makedirs(os.path.join(split_dir, _DONE_DIR), exist_ok=True)
        _remove_stale_files(split_dir, name, {task.name for task in tasks})
        split.shards = [task.name for task in tasks]
        for task in tasks:
            previous = _load_complete_shard(task)
            if previous is None:
                todo.append(task)
            else:
                split.shards_reused += 1
                _add_result(split, previous)

    workers = config.workers or os.cpu_count() or 1
    total = sum(len(task.entries) for task in todo)
    with tqdm.tqdm(total=total, unit="video", desc=f"prepare {config.dataset}", disable=not config.progress) as bar:
        for task, result in _run_tasks(todo, workers, bar):
            _add_result(report.splits[os.path.basename(task.split_dir)], result)

    for split in report.splits.values():
        split.skipped.sort(key=lambda item: item["path"])
        split.partial.sort(key=lambda item: item["path"])
    report.seconds = time.monotonic() - start
    _save_report(config.output_dir, report)
    return report


def _add_result(split, result):
    split.written += len(result["written"])
    split.frames += result["frames"]
    split.skipped += result["skipped"]
    split.partial += result["partial"]
