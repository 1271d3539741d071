"""Turns a folder of videos into sharded TFRecords in the layout of `records.py`.

The work is split by role: `listing.py` finds which videos belong to which split (split files,
annotations, class folders), `decode.py` decodes one video into JPEG frames, `shards.py` writes
and resumes the shards. This module holds the settings (`PrepareConfig`), the report and
`prepare_dataset`, which runs the three.

Supported datasets (`PrepareConfig.dataset`; the layouts are described in `listing.py`):

- `hmdb51`: the official split files `<class>_test_split<k>.txt` in `splits_dir` (as distributed
  in `testTrainMulti_7030_splits/`), or, when there are none, UCF-style lists as for `ucf101`.
- `ucf101`: `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt` in `splits_dir`.
  Either way every split found is written as `train_N` / `test_N`.
- `kinetics`: annotation CSVs (`label,youtube_id,time_start,time_end,split`; one file or a folder
  of them). Videos are found anywhere under `video_dir` as `<youtube_id>_<start:06d>_<end:06d>.*`
  (as the Kinetics downloaders name them) or `<youtube_id>.*`. Labels are the sorted class names;
  rows without a label (the test split) get label -1.
- `folder`: `video_dir/<class>/<video>`; labels 0..C-1 in sorted class-name order; written as the
  one split `split_name`. Videos directly in `video_dir` beside class folders are left out (the
  report counts them); when no class folder holds a video, the videos directly in `video_dir` are
  written unlabelled (label -1, no class names: for pretraining). A folder with no video is refused.

Output:

    {output_dir}/labels.txt                                 class names, one per line, index order
    {output_dir}/report.json                                per-split counts, skipped/partial files
    {output_dir}/{split}/{split}-{i:05d}-of-{n:05d}.tfrecord
    {output_dir}/{split}/.done/{shard}.json                 sidecar: the shard is complete

Bad input stops nothing: an empty, truncated or undecodable file is skipped and listed with its
reason; a file that fails part-way keeps the frames decoded before the failure (reported as
partial). A re-run keeps every shard whose sidecar matches (same videos, same settings), rewrites
the rest and removes temporary and stale shard files (see `shards.py`).

Example:

    config = PrepareConfig(dataset="ucf101", video_dir="UCF-101", output_dir="records/ucf101",
                           splits_dir="ucfTrainTestlist")
    report = prepare_dataset(config)
    print(report.summary())
"""

import dataclasses
import json
import os
import pathlib
import re
import time

import tqdm

from vdim_tf.data import listing, shards

DATASETS = ("ucf101", "hmdb51", "kinetics", "folder")

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
      splits_dir: ucf101/hmdb51 only: folder with `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`,
        or (hmdb51) the official `<class>_test_split<k>.txt` files.
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
        check_output_dir(self.output_dir)
        if self.dataset in ("ucf101", "hmdb51"):
            self._check_splits_dir()
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

    def _check_splits_dir(self):
        official = "<class>_test_split<k>.txt files (HMDB-51's official layout) or " if self.dataset == "hmdb51" else ""
        expected = f"{official}classInd.txt with trainlist0N.txt/testlist0N.txt"
        if not self.splits_dir:
            raise ConfigError("splits_dir", self.splits_dir, f"{self.dataset} needs the split files: {expected}")
        if not os.path.isdir(self.splits_dir):
            raise ConfigError("splits_dir", self.splits_dir, "no such directory")
        try:
            layout, found = listing.split_numbers(self.dataset, self.splits_dir)
        except ValueError as e:
            raise ConfigError("splits_dir", self.splits_dir, str(e)) from None
        if layout == "ucf_lists":
            if not os.path.isfile(os.path.join(self.splits_dir, "classInd.txt")) or not found:
                raise ConfigError("splits_dir", self.splits_dir, f"expected {expected} in this directory")
        if self.split_ids is not None and not set(self.split_ids) <= found:
            raise ConfigError("split_ids", self.split_ids, f"splits_dir has splits {sorted(found)} only")


def check_output_dir(output_dir):
    """Refuses an output_dir that is missing, or that is (or lies under) something not a folder."""
    if not output_dir:
        raise ConfigError("output_dir", output_dir, "must be given")
    path = os.path.abspath(output_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(output_dir) else f"lies under {path}, which is a file"
        raise ConfigError("output_dir", output_dir, f"{where}, not a folder; give a folder (created if needed)")



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
    unlabelled: bool = False
    left_out: list = dataclasses.field(default_factory=list)  # videos outside every class folder


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
            if s.unlabelled:
                lines.append(f"  {name}: no class folders, so the videos directly in the folder were written "
                             "without labels (label -1): for pretraining; fine-tuning needs video_dir/<class>/<video>")
            if s.left_out:
                shown = ", ".join(s.left_out[:5]) + (", ..." if len(s.left_out) > 5 else "")
                lines.append(f"  LEFT OUT {name}: {len(s.left_out)} video(s) directly in the folder, outside every "
                             f"class folder, so without a label: {shown}")
            lines += [f"  SKIPPED {name} {item['path']}: {item['reason']}" for item in s.skipped]
            lines += [f"  partial {name} {item['path']}: {item['reason']}" for item in s.partial]
        if self.num_skipped:
            lines.append(f"{self.num_skipped} file(s) skipped: see the list above and report.json")
        return "\n".join(lines)


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
    shards.write_atomically(path, lambda temp: pathlib.Path(temp).write_text(json.dumps(saved, indent=1), encoding="utf-8"))


def prepare_dataset(config):
    """Writes `config.video_dir` as sharded TFRecords under `config.output_dir`.

    Args:
      config: a `PrepareConfig`.

    Returns:
      A `PrepareReport`, also saved as `{output_dir}/report.json`.

    Raises:
      ConfigError: a `folder` video_dir with no video, in a class folder or directly in it.
      ValueError: malformed split or annotation files, or an output_dir holding another dataset.
      concurrent.futures.process.BrokenProcessPool: a worker process died (e.g. a crash inside
        FFmpeg); finished shards are kept and a re-run resumes.
    """
    start = time.monotonic()
    class_names, listings = listing.list_splits(config)
    if config.dataset == "folder":
        _check_folder_listing(config.video_dir, listings[config.split_name])
    labels_path = os.path.join(config.output_dir, "labels.txt")
    # An unlabelled folder split may join labelled splits in one output_dir: their labels stay.
    keep_labels = config.dataset == "folder" and not class_names and os.path.exists(labels_path)
    if not keep_labels:
        _check_labels(config.output_dir, class_names)
    os.makedirs(config.output_dir, exist_ok=True)
    if not keep_labels:
        shards.write_atomically(
            labels_path,
            lambda temp: pathlib.Path(temp).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8"),
        )
    report = PrepareReport(config.dataset, config.video_dir, config.output_dir, class_names,
                           shards.shard_settings(config), {})
    todo = []
    for name, videos in listings.items():
        split = report.splits[name] = SplitReport(
            listed=len(videos.entries) + len(videos.missing),
            missing=len(videos.missing),
            missing_examples=list(videos.missing[:10]),
        )
        if config.dataset == "folder":
            split.unlabelled = not class_names
            split.left_out = [] if split.unlabelled else _loose_videos(config.video_dir)
        tasks = shards.plan_shards(videos, config)
        split_dir = os.path.join(config.output_dir, name)
        os.makedirs(os.path.join(split_dir, shards.DONE_DIR), exist_ok=True)
        shards.remove_stale_files(split_dir, name, {task.name for task in tasks})
        split.shards = [task.name for task in tasks]
        for task in tasks:
            previous = shards.load_complete_shard(task)
            if previous is None:
                todo.append(task)
            else:
                split.shards_reused += 1
                _add_result(split, previous)

    workers = config.workers or os.cpu_count() or 1
    total = sum(len(task.entries) for task in todo)
    with tqdm.tqdm(total=total, unit="video", desc=f"prepare {config.dataset}", disable=not config.progress) as bar:
        for task, result in shards.run_tasks(todo, workers, bar):
            _add_result(report.splits[os.path.basename(task.split_dir)], result)

    for split in report.splits.values():
        split.skipped.sort(key=lambda item: item["path"])
        split.partial.sort(key=lambda item: item["path"])
    report.seconds = time.monotonic() - start
    _save_report(config.output_dir, report)
    return report


def _loose_videos(video_dir):
    """The video files directly in `video_dir` (not in a class folder), sorted."""
    return sorted(name for name in os.listdir(video_dir) if not name.startswith(".")
                  and os.path.splitext(name)[1].lower() in listing.VIDEO_EXTENSIONS)


def _check_folder_listing(video_dir, videos):
    """Refuses a `folder` dataset with no video, in a class folder or directly in it (nothing to write)."""
    if videos.entries:
        return
    raise ConfigError("video_dir", video_dir, "no video file in it or in a <class>/ subfolder; the folder dataset "
                      f"expects video_dir/<class>/<video> (e.g. {os.path.join(video_dir, 'walk', 'clip1.mp4')}), "
                      "labels from the class folder names, or unlabelled videos directly in video_dir")


def _add_result(split, result):
    split.written += len(result["written"])
    split.frames += result["frames"]
    split.skipped += result["skipped"]
    split.partial += result["partial"]
