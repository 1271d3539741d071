"""Where the videos are listed: which files belong to which split, with which label.

Layouts (`list_splits` picks by `PrepareConfig.dataset`):

- Official HMDB-51 splits (`hmdb51`): the 153 files `<class>_test_split<k>.txt` of
  `testTrainMulti_7030_splits/`, one line `<video>.avi <id>` per video of the class, id 1 = train,
  2 = test, 0 = unused in split k. Labels are the sorted class names. Split k is written as
  `train_k` / `test_k`; unused videos are written to neither.
- UCF-style lists (`ucf101`, and `hmdb51` when no official split files are present):
  `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt` (`Class/video.avi [1-based label]` per
  line); labels are 0-based in classInd order.
- Kinetics annotation CSVs (`kinetics`): `label,youtube_id,time_start,time_end,split`.
- A folder of class folders (`folder`): `video_dir/<class>/<video>`; labels 0..C-1 in sorted
  class-name order.

Listed videos are matched to files on disk case-insensitively by class folder and file stem, so
the UCF lists' `HandStandPushups` finds `HandstandPushups/...` and a clip transcoded from `.avi`
to `.mp4` is still found; listed files that are not on disk are counted as missing.
"""

import csv
import dataclasses
import os
import pathlib
import re

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv", ".wmv"}
)

_SPLIT_FILE_PATTERN = re.compile(r"^(train|test)list0*(\d+)\.txt$")
_HMDB_SPLIT_FILE_PATTERN = re.compile(r"^(?P<class_name>.+)_test_split(?P<number>\d+)\.txt$")
# The ids of the official HMDB-51 split files.
_HMDB_SPLIT_IDS = {"0": None, "1": "train", "2": "test"}


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


def find_hmdb_split_files(splits_dir):
    """Returns `{(class name, split number): path}` for the official `<class>_test_split<k>.txt`.

    Raises:
      ValueError: some class lacks a split number another class has (an incomplete copy).
    """
    found = {}
    for path in pathlib.Path(splits_dir).iterdir():
        match = _HMDB_SPLIT_FILE_PATTERN.match(path.name)
        if match:
            found[(match.group("class_name"), int(match.group("number")))] = path
    classes = sorted({name for name, _ in found})
    numbers = sorted({number for _, number in found})
    absent = [f"{name}_test_split{number}.txt" for name in classes for number in numbers
              if (name, number) not in found]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ValueError(f"{splits_dir}: {len(classes)} classes have split files for splits {numbers}, "
                         f"but {shown} is missing")
    return found


def read_hmdb_split_file(path):
    """Reads one official HMDB-51 split file: `<video>.avi <0|1|2>` per line.

    Returns:
      list of `(video file name, "train" | "test" | None)`; None marks a video unused in this split.
    """
    items = []
    for number, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in _HMDB_SPLIT_IDS:
            raise ValueError(f"{path}:{number}: expected '<video> <0|1|2>' (0 unused, 1 train, 2 test), "
                             f"got {line!r}")
        items.append((parts[0], _HMDB_SPLIT_IDS[parts[1]]))
    return items


def read_hmdb_splits(splits_dir, split_ids=None):
    """Reads the official HMDB-51 split files into UCF-style split lists.

    Args:
      splits_dir: folder holding the `<class>_test_split<k>.txt` files.
      split_ids: split numbers to read; None reads every split found.

    Returns:
      `(class_names, {"train_1": [("<class>/<video>", 0-based label)], "test_1": [...], ...})`,
      class names sorted (the order of the UCF-style conversions' classInd.txt).
    """
    files = find_hmdb_split_files(splits_dir)
    class_names = sorted({name for name, _ in files})
    splits = {}
    for number in sorted({number for _, number in files}):
        if split_ids is not None and number not in split_ids:
            continue
        train, test = splits.setdefault(f"train_{number}", []), splits.setdefault(f"test_{number}", [])
        for label, name in enumerate(class_names):
            for video, subset in read_hmdb_split_file(files[(name, number)]):
                if subset is not None:
                    (train if subset == "train" else test).append((f"{name}/{video}", label))
    return class_names, splits


def split_numbers(dataset, splits_dir):
    """The numbered splits of `splits_dir`, read as `dataset` would read them.

    Returns:
      `(layout, numbers)`: layout "hmdb51_official" or "ucf_lists", numbers a set of ints (empty
      when the folder holds neither layout).

    Raises:
      ValueError: an incomplete set of official HMDB-51 split files.
    """
    if dataset == "hmdb51":
        official = find_hmdb_split_files(splits_dir)
        if official:
            return "hmdb51_official", {number for _, number in official}
    return "ucf_lists", {int(name.rpartition("_")[2]) for name in find_split_files(splits_dir)}


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
        layout, _ = split_numbers(config.dataset, config.splits_dir)
        if layout == "hmdb51_official":
            class_names, lists = read_hmdb_splits(config.splits_dir, config.split_ids)
        else:
            class_names = read_class_index(os.path.join(config.splits_dir, "classInd.txt"))
            lists = {split: read_split_list(path, class_names)
                     for split, path in find_split_files(config.splits_dir).items()
                     if config.split_ids is None or int(split.rpartition("_")[2]) in config.split_ids}
        for split, items in lists.items():
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
        if not listed[config.split_name]:
            # No class folder holds a video: the videos directly in video_dir, unlabelled (for
            # pretraining, which reads no label), with label -1 as Kinetics' unlabelled rows.
            class_names = []
            listed[config.split_name] = [(p, p, -1, "") for p in index.paths if "/" not in p]
    splits = {}
    for split, items in listed.items():
        entries = {found: VideoEntry(found, label, text) for _, found, label, text in items if found is not None}
        missing = tuple(p for p, found, _, _ in items if found is None)
        splits[split] = SplitListing(split, tuple(entries[p] for p in sorted(entries)), missing)
    return class_names, splits
