"""tf.data input pipelines: read -> parse -> sample -> decode -> augment/preprocess -> batch.

Each phase is a small function on a dict of tensors (DMVR's layout), so a phase can be tested or
replaced alone. Sampling picks frame indices before anything is decoded; `select_frames` keeps
each needed frame's JPEG string once, and `decode` decodes only those.

Datasets (S = output size, T = final_length, K = number of views, B = batch size):

| function               | yields                                                            |
|------------------------|-------------------------------------------------------------------|
| `pretrain_dataset`     | `view1`, `view2` float32 (B, T, S, S, 3); `label` int64 (B,)      |
| `finetune_dataset`     | `views` float32 (B, K, T, S, S, 3); `label` int64 (B,)            |
| `test_windows_dataset` | `views` float32 (B, K, T, S, S, 3); `label`, `video_id` int64 (B,) |

Frames are `augment.normalize`d: RGB in [-1, 1], or Lab roughly in [-1, 1] per channel.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from vdim_tf.data import augment as augment_lib
from vdim_tf.data import records
from vdim_tf.data import views as views_lib

AUTOTUNE = tf.data.AUTOTUNE
# Serialized records held for shuffling: a UCF-101 video (~190 frames of 320x240) is ~2 MB of JPEG.
DEFAULT_SHUFFLE_BUFFER = 128
# Files read at once by `interleave`.
DEFAULT_CYCLE_LENGTH = 8


# --- reading ---------------------------------------------------------------------------------


def absolute(path):
    """`path` made absolute against the working directory (URLs such as gs://... unchanged): what
    messages show, so a relative path says where it was looked for."""
    return path if "://" in path else os.path.abspath(path)


def _hidden_by_wildcard(pattern, path):
    """Whether a wildcard of `pattern` matched a hidden name (one starting with ".") in `path`,
    which the shell's glob never does: TensorFlow's glob would let `train/*` match prepare's
    `train/.done/` sidecar folder."""
    # Compared from the end: a wildcard never spans a "/", and TensorFlow may prefix "./".
    return any(got.startswith(".") and not wanted.startswith(".") and any(c in wanted for c in "*?[")
               for wanted, got in zip(reversed(pattern.split("/")), reversed(path.split("/"))))


def list_files(file_pattern, name="file_pattern"):
    """Files matching a glob (or a list of globs), sorted; `name` is the setting messages name.

    As in the shell, a wildcard does not match a name starting with "." (so `train/*` leaves out
    prepare's hidden `train/.done/` folder); name such a file or folder explicitly to read it.

    Raises:
      FileNotFoundError: naming the pattern and its absolute form, when nothing matches.
      ValueError: naming the folders, when it matches folders.
    """
    patterns = [file_pattern] if isinstance(file_pattern, (str, bytes)) else list(file_pattern)
    patterns = [os.fsdecode(p) for p in patterns]
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p) if not _hidden_by_wildcard(p, f)})
    if not files:
        looked = ", ".join(absolute(os.fsdecode(p)) for p in patterns)
        raise FileNotFoundError(f"no TFRecord files match {name}={file_pattern!r} (looked for {looked})")
    folders = [f for f in files if tf.io.gfile.isdir(f)]
    if folders:
        raise ValueError(f"{name}={file_pattern!r} matches the folder(s) {', '.join(map(absolute, folders))}, "
                         "not only TFRecord files; narrow the glob, e.g. to .../*.tfrecord")
    return files


def check_files(files):
    """Checks every file with `records.check_file` before a long run depends on them.

    Returns:
      the number of records in all files.

    Raises:
      ValueError: naming every file that is truncated, not a TFRecord file, or whose first record
        is not a video `SequenceExample`.
    """
    total, bad = 0, []
    for path in files:
        try:
            total += records.check_file(path)
        except (ValueError, tf.errors.OpError) as e:
            bad.append(f"{absolute(path)}: {records.error_message(e)}")
    if bad:
        raise ValueError(f"{len(bad)} of its {len(files)} files cannot be used: " + "; ".join(bad))
    return total


def training_files(file_pattern, name):
    """The files of `file_pattern` (the setting `name`), each checked (`check_files`) before a long
    run depends on it, holding at least one record (an endless pipeline over empty files would
    otherwise wait forever).

    Raises:
      FileNotFoundError: nothing matches (the message shows the absolute path looked for), or the
        files hold no records.
      ValueError: a folder matches, or a file cannot be used.
    """
    try:
        files = list_files(file_pattern, name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name}={file_pattern!r} matches no file (looked for {absolute(file_pattern)}); give a glob of "
            "TFRecord shards (see `python -m vdim_tf.launch.prepare`) or 'synthetic'"
        ) from None
    try:
        count = check_files(files)
    except ValueError as e:
        raise ValueError(f"{name}={file_pattern!r}: {e}") from None
    if not count:
        raise FileNotFoundError(f"{name}={file_pattern!r}: the {len(files)} file(s) it matches hold no records")
    return files


def read_records(files, *, shuffle, repeat, seed=None, cycle_length=DEFAULT_CYCLE_LENGTH):
    """Serialized records, interleaved across files; file order shuffled when `shuffle`."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=not shuffle or seed is not None,
    )


def _seeds(seed):
    """An endless dataset of `(2,)` int64 stateless seeds, one per example."""
    return tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)


# --- phases ----------------------------------------------------------------------------------


def parse(serialized):
    """Phase 1: a serialized `SequenceExample` -> dict (see `records.parse_sequence_example`)."""
    return records.parse_sequence_example(serialized)


def select_frames(example, indices):
    """Keeps the JPEG strings of the frames at `indices` `(V, T)`, each distinct frame once.

    Returns:
      dict with `frames` string `(N,)`, N <= V * T, the distinct sampled frames; `positions`
      int32 `(V, T)`, where each view frame is in `frames`; and `label`.
    """
    static_shape = indices.shape
    unique, positions = tf.unique(tf.reshape(indices, [-1]))
    return {
        "frames": views_lib.gather_frames(example["frames"], unique),
        "positions": tf.reshape(positions, static_shape),
        "label": example["label"],
    }


def sample_random_window(example, views, seed):
    """Phase 2 (training): uniform window start (SPEC §4.1), frames of every view selected."""
    indices = views_lib.sample_view_indices(example["num_frames"], views, seed)
    return select_frames(example, indices)


def sample_window_at(example, views, start=0):
    """Phase 2 (evaluation): the window starting at frame `start`."""
    indices = views_lib.view_indices(start, example["num_frames"], views)
    return select_frames(example, indices)


def decode_all(example):
    """Decodes every frame of a parsed record: `frames` uint8 `(N, H, W, 3)`, `num_frames`, `label`."""
    frames = tf.map_fn(
        lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
        example["frames"],
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    return {"frames": frames, "num_frames": example["num_frames"], "label": example["label"]}


def sample_decoded_window(example, views, seed):
    """Phase 2 on a `decode_all`ed record: the frames of a uniform random window, every view's
    frames taken from the decoded video -> `views` uint8 `(V, T, H, W, 3)`, as `decode` gives them."""
    indices = views_lib.sample_view_indices(example["num_frames"], views, seed)
    return {"views": tf.gather(example["frames"], indices), "label": example["label"]}


def decoded_size(files, limit_bytes):
    """Bytes the records' frames take decoded (uint8 `N × H × W × 3`), summed until past a limit.

    Reads each record's frame count and its first frame's JPEG header (every frame of a record has
    one size: `prepare` and the motion benchmark resize all of a video's frames alike), decoding
    nothing, and stops at the first record that takes the sum past `limit_bytes`.

    Returns:
      `(bytes, videos, complete)`: the sum and the number of records summed; `complete` is False
      when the limit stopped the count (the dataset is larger than `bytes`). `None` when a record
      cannot be read: training will name it (`records.RecordError` via the loop).
    """

    def size(serialized):
        frames = parse(serialized)["frames"]
        count = tf.shape(frames, out_type=tf.int64)[0]
        shape = tf.cond(
            count > 0,
            lambda: tf.io.extract_jpeg_shape(frames[0], output_type=tf.int64),
            lambda: tf.zeros([3], tf.int64),
        )
        return count * shape[0] * shape[1] * 3

    total = videos = 0
    dataset = tf.data.TFRecordDataset(files).map(size, num_parallel_calls=AUTOTUNE)
    try:
        for nbytes in dataset.as_numpy_iterator():
            total += int(nbytes)
            videos += 1
            if total > limit_bytes:
                return total, videos, False
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        return None
    return total, videos, True


SHORT_VIDEO_SCAN_RECORDS = 5000


def short_videos_note(files, window_length, max_records=SHORT_VIDEO_SCAN_RECORDS):
    """The line that says how many training videos are shorter than the window an example spans,
    or None when none is (or a record cannot be read: training will name it).

    Such a video's window is filled by repeating its last frame (`views.view_indices`), so its
    examples end on a still picture: worth knowing before a long run, never an error. Reads the
    frame lists of the first `max_records` records (their frames are not decoded).
    """
    dataset = (tf.data.TFRecordDataset(files).take(max_records)
               .map(lambda s: parse(s)["num_frames"], num_parallel_calls=AUTOTUNE).batch(1024))
    try:
        counts = np.concatenate([c for c in dataset.as_numpy_iterator()] or [np.zeros([0], np.int64)])
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        return None
    short = counts[counts < window_length]
    if not short.size:
        return None
    read = f"{len(counts)} videos read" if len(counts) >= max_records else f"{len(counts)} videos"
    verb = "has" if short.size == 1 else "have"
    return (f"short videos: {short.size} of the {read} {verb} fewer than the {window_length} frames an example "
            f"spans (shortest: {short.min()}); their windows are filled by repeating "
            "the last frame, so those examples end on a still frame")


def decode(example):
    """Phase 3: decodes only the selected JPEG frames -> `views` uint8 `(V, T, H, W, 3)`."""
    decoded = tf.map_fn(
        lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
        example["frames"],
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    out = {k: v for k, v in example.items() if k not in ("frames", "positions")}
    out["views"] = tf.gather(decoded, example["positions"])
    return out


def augment_train(example, config, seed):
    """Phase 4 (training): clip-consistent augmentation, one shared flip (SPEC §4.4)."""
    return {**example, "views": augment_lib.augment_views(example["views"], config, seed)}


def preprocess_eval(example, size, color_space="rgb"):
    """Phase 4 (evaluation): deterministic centre crop and normalisation of every view."""
    return {**example, "views": augment_lib.eval_view(example["views"], size, color_space)}


# --- datasets --------------------------------------------------------------------------------


def _finish(dataset, batch_size, drop_remainder, deterministic):
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    # No autotuning model thread. Its optimisation period grows to 60 s, and deleting an iterator
    # waits for that thread: the pretraining command, its work done, sometimes waited 57-60 s more
    # when the training loop let go of its iterator (seen in 4 of 12 runs of the CPU recipe;
    # docs/recipe_study.md). Without autotuning, AUTOTUNE means one parallel call per core and
    # the prefetch buffer grows by tf.data's own rule; the same clips/s on 2 cores (measured, README).
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(AUTOTUNE)


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


def pretrain_dataset(
    file_pattern,
    views: views_lib.ViewConfig,
    augment: augment_lib.AugmentConfig,
    batch_size: int,
    *,
    shuffle=True,
    repeat=True,
    seed=None,
    num_parallel_calls=AUTOTUNE,
    shuffle_buffer_size=DEFAULT_SHUFFLE_BUFFER,
    cache_decoded=False,
):
    """Pretraining batches: V augmented views of a random window of each video (SPEC §4).

    Args:
      file_pattern: glob (or list of globs) of TFRecord files of `SequenceExample`s.
      views: `ViewConfig`; its views become `view1`, `view2`, ... (two for VDIM).
      augment: `AugmentConfig`.
      batch_size: clips per batch (the remainder is dropped, so shapes are static).
      shuffle: shuffle files and records.
      repeat: repeat forever.
      seed: int, makes windows, augmentation and order reproducible; None draws fresh ones.
      num_parallel_calls: parallelism of the per-clip map.
      shuffle_buffer_size: records in the shuffle buffer.
      cache_decoded: decode every frame of every record once, in the first epoch, and keep the
        decoded videos in memory (`decoded_size` says how much that takes); later epochs sample
        and augment windows of the kept frames. The windows, frames and augmentation are those of
        the uncached pipeline; only the order differs when shuffling: the files are shuffled once,
        then `shuffle_buffer_size` decoded videos are shuffled (the buffer holds references to the
        cache, not copies: give it the number of videos for a full shuffle every epoch).

    Returns:
      `tf.data.Dataset` of dicts: `view1`, `view2`, ... float32 `(B, T, S, S, 3)`, normalised
      (see `augment.normalize`), and `label` int64 `(B,)` (-1 for unlabelled video).

    Raises:
      FileNotFoundError: when `file_pattern` matches no file.
    """
    _check_batch_size(batch_size)
    files = list_files(file_pattern)
    if cache_decoded:
        dataset = read_records(files, shuffle=shuffle, repeat=False, seed=seed)
        dataset = dataset.map(lambda serialized: decode_all(parse(serialized)), num_parallel_calls=num_parallel_calls)
        dataset = dataset.cache()
        if repeat:
            dataset = dataset.repeat()
    else:
        dataset = read_records(files, shuffle=shuffle, repeat=repeat, seed=seed)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    shape = (views.final_length, augment.output_size, augment.output_size, 3)

    def make_views(record, seed):
        sample_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if cache_decoded:
            example = sample_decoded_window(record, views, sample_seed)
        else:
            example = decode(sample_random_window(parse(record), views, sample_seed))
        example = augment_train(example, augment, augment_seed)
        out = {f"view{v + 1}": tf.ensure_shape(example["views"][v], shape) for v in range(views.num_views)}
        out["label"] = example["label"]
        return out

    dataset = tf.data.Dataset.zip(dataset, _seeds(seed)).map(make_views, num_parallel_calls=num_parallel_calls)
    return _finish(dataset, batch_size, drop_remainder=True, deterministic=not shuffle or seed is not None)


def finetune_dataset(
    file_pattern,
    views: views_lib.ViewConfig,
    augment: augment_lib.AugmentConfig,
    batch_size: int,
    num_views_k: int | None = None,
    *,
    training=True,
    shuffle=None,
    repeat=None,
    drop_remainder=None,
    seed=None,
    num_parallel_calls=AUTOTUNE,
    shuffle_buffer_size=DEFAULT_SHUFFLE_BUFFER,
):
    """Fine-tuning batches: K views of one window per video (SPEC §6).

    With `training=True`, a random window start and clip-consistent augmentation of each view
    (independent parameters, one shared flip); with `training=False`, the window at frame 0,
    centre-cropped (`augment.center_crop_resize`) to `augment.output_size` and normalised in
    `augment.color_space` (in Lab mode no channel is dropped at evaluation).

    Args:
      file_pattern: glob (or list of globs) of TFRecord files.
      views: `ViewConfig` of the K views, normally `ViewConfig.clip_views(final_length, factor, K)`.
      augment: `AugmentConfig` (`output_size` and `color_mode` are used in evaluation too).
      batch_size: clips per batch.
      num_views_k: K, checked against `views.num_views` when given.
      training: random window + augmentation, or start 0 + centre crop.
      shuffle, repeat, drop_remainder: default to `training`.
      seed, num_parallel_calls, shuffle_buffer_size: as in `pretrain_dataset`.

    Returns:
      `tf.data.Dataset` of dicts: `views` float32 `(B, K, T, S, S, 3)`, normalised; `label` int64
      `(B,)`. B is static when `drop_remainder`.

    Raises:
      ValueError: when `num_views_k` differs from `views.num_views`.
      FileNotFoundError: when `file_pattern` matches no file.
    """
    if num_views_k is not None and num_views_k != views.num_views:
        raise ValueError(
            f"num_views_k={num_views_k} but the ViewConfig has {views.num_views} views; build it "
            f"with ViewConfig.clip_views(final_length, factor, num_views={num_views_k})"
        )
    _check_batch_size(batch_size)
    shuffle = training if shuffle is None else shuffle
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    files = list_files(file_pattern)
    dataset = read_records(files, shuffle=shuffle, repeat=repeat, seed=seed)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    shape = (views.num_views, views.final_length, augment.output_size, augment.output_size, 3)

    def make_views(serialized, seed):
        example = parse(serialized)
        if training:
            sample_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            example = decode(sample_random_window(example, views, sample_seed))
            example = augment_train(example, augment, augment_seed)
        else:
            example = decode(sample_window_at(example, views, 0))
            example = preprocess_eval(example, augment.output_size, augment.color_space)
        return {"views": tf.ensure_shape(example["views"], shape), "label": example["label"]}

    dataset = tf.data.Dataset.zip(dataset, _seeds(seed)).map(make_views, num_parallel_calls=num_parallel_calls)
    return _finish(dataset, batch_size, drop_remainder, deterministic=not shuffle or seed is not None)


def test_windows_dataset(
    file_pattern,
    final_length: int,
    factor: int,
    size: int,
    batch_size: int,
    num_views_k: int = 1,
    window_stride: int | None = None,
    *,
    color_space="rgb",
    num_parallel_calls=AUTOTUNE,
):
    """Every window of every video, for test-time averaging of predictions (SPEC §6).

    A window is K consecutive views of `final_length * factor` frames each (offsets 0,
    `final_length * factor`, ...); windows start every `window_stride` frames (default: the window
    length, so they do not overlap), plus one aligned to the end of the video when frames are
    left over (see `views.window_starts`). Each window is one element, centre-cropped and
    normalised; no shuffle, no repeat, the last batch may be smaller.

    Args:
      file_pattern: glob (or list of globs) of TFRecord files.
      final_length: frames per view after downsampling (T).
      factor: temporal downsampling factor of every view.
      size: output side S.
      batch_size: windows per batch.
      num_views_k: K.
      window_stride: frames between window starts; None = window length.
      color_space: 'rgb' or 'lab' (`AugmentConfig.color_space` of the fine-tuned model).
      num_parallel_calls: parallelism of the decode map.

    Returns:
      `tf.data.Dataset` of dicts: `views` float32 `(B, K, T, S, S, 3)`; `label` int64 `(B,)`;
      `video_id` int64 `(B,)`, the video's position in reading order (files sorted by name,
      records in file order), equal for all windows of a video.

    Raises:
      FileNotFoundError: when `file_pattern` matches no file.
    """
    _check_batch_size(batch_size)
    views = views_lib.ViewConfig.clip_views(final_length, factor, num_views_k)
    window_length = views.window_length
    stride = window_length if window_stride is None else window_stride
    if stride < 1:
        raise ValueError(f"window_stride must be >= 1, got {window_stride}")
    files = list_files(file_pattern)
    dataset = read_records(files, shuffle=False, repeat=False).map(parse).enumerate()

    def windows(video_id, example):
        starts = views_lib.window_starts(example["num_frames"], window_length, stride)

        def window(start):
            out = sample_window_at(example, views, start)
            out["video_id"] = video_id
            return out

        return tf.data.Dataset.from_tensor_slices(starts).map(window)

    def preprocess(example):
        example = preprocess_eval(decode(example), size, color_space)
        shape = (views.num_views, final_length, size, size, 3)
        return {
            "views": tf.ensure_shape(example["views"], shape),
            "label": example["label"],
            "video_id": example["video_id"],
        }

    dataset = dataset.flat_map(windows).map(preprocess, num_parallel_calls=num_parallel_calls)
    return _finish(dataset, batch_size, drop_remainder=False, deterministic=True)


# Its name starts with `test_`: keep pytest from collecting it when a test module imports it.
test_windows_dataset.__test__ = False
