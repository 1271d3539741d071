"""The TFRecord layout: `tf.train.SequenceExample`s as DMVR and TF Model Garden write them.

One record per video. Context features:

| key                | type   | meaning                                             |
|--------------------|--------|-----------------------------------------------------|
| `clip/label/index` | int64  | class index, 0-based                                |
| `clip/label/text`  | bytes  | class name (UTF-8)                                  |
| `video/filename`   | bytes  | path of the source video, relative to its dataset   |
| `video/num_frames` | int64  | number of frames stored                             |
| `video/fps`        | float  | frame rate of the stored frames                     |

Sequence feature `image/encoded`: one JPEG-encoded RGB frame per step.

Records written by DMVR or Model Garden tools carry `image/encoded` and `clip/label/index`; the
other keys are optional when reading (defaults: empty text, empty filename, frame count taken from
the sequence length, fps 0).

`check_file` tells a whole TFRecord file of such records from a truncated one, a file that is not
a TFRecord file, or records of another layout, reading only each record's header and the first
record; `find_damaged` finds the file behind a `DataLossError` raised while training.
"""

import re
import struct

import tensorflow as tf
from google.protobuf.message import DecodeError

IMAGE_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
FILENAME_KEY = "video/filename"
NUM_FRAMES_KEY = "video/num_frames"
FPS_KEY = "video/fps"


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_sequence_example(jpeg_frames, label_index, label_text, filename, fps):
    """Builds one video's `SequenceExample`.

    Args:
      jpeg_frames: list of JPEG-encoded frames (bytes), in display order.
      label_index: int class index (use -1 for unlabelled video).
      label_text: class name.
      filename: source path, stored as UTF-8 text.
      fps: frame rate of the stored frames.

    Returns:
      A `tf.train.SequenceExample`.
    """
    context = tf.train.Features(
        feature={
            LABEL_INDEX_KEY: _int64([int(label_index)]),
            LABEL_TEXT_KEY: _bytes([label_text.encode("utf-8")]),
            FILENAME_KEY: _bytes([filename.encode("utf-8", errors="surrogateescape")]),
            NUM_FRAMES_KEY: _int64([len(jpeg_frames)]),
            FPS_KEY: _float([float(fps)]),
        }
    )
    frames = tf.train.FeatureList(feature=[_bytes([f]) for f in jpeg_frames])
    return tf.train.SequenceExample(
        context=context, feature_lists=tf.train.FeatureLists(feature_list={IMAGE_KEY: frames})
    )


def parse_sequence_example(serialized):
    """Parses one serialized record into a dict of tensors (graph-safe, for `tf.data.map`).

    Returns:
      dict with `frames` (string `(T,)`, JPEG bytes), `label` (int64 scalar), `label_text`,
      `filename` (string scalars), `num_frames` (int32 scalar), `fps` (float32 scalar).
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
            FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
            FPS_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        },
        sequence_features={IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    frames = sequence[IMAGE_KEY]
    return {
        "frames": frames,
        "label": context[LABEL_INDEX_KEY],
        "label_text": context[LABEL_TEXT_KEY],
        "filename": context[FILENAME_KEY],
        "num_frames": tf.shape(frames, out_type=tf.int32)[0],
        "fps": context[FPS_KEY],
    }


# A TFRecord record: uint64 length, uint32 masked CRC of the length, the data, uint32 masked CRC of the data.
_HEADER_BYTES = 12
_FOOTER_BYTES = 4
_JPEG_START = b"\xff\xd8"  # every JPEG file's first two bytes (start-of-image marker)


def _open(path):
    # Python's own file for local paths: ~100x faster per seek than tf.io.gfile's.
    return tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")


def record_offsets(path):
    """Byte offsets of the records of the TFRecord file `path`, read from each record's 12-byte
    header only (the data is skipped, so this is fast on large shards: ~20 µs a record).

    Raises:
      ValueError: the file ends inside a record (it is truncated, or not a TFRecord file).
    """
    size = tf.io.gfile.stat(path).length
    offsets = []
    with _open(path) as f:
        position = 0
        while position < size:
            f.seek(position)
            header = f.read(8)
            length = struct.unpack("<Q", header)[0] if len(header) == 8 else size
            end = position + _HEADER_BYTES + length + _FOOTER_BYTES
            if end > size:
                if not offsets:
                    raise ValueError(f"not a TFRecord file (its first record would need {end} bytes, the file "
                                     f"has {size})")
                raise ValueError(f"truncated: record {len(offsets)} at byte {position} needs {end - position} bytes, "
                                 f"the file ends {size - position} bytes after its start")
            offsets.append(position)
            position = end
    return offsets


def check_file(path):
    """Checks that `path` is a whole TFRecord file whose first record is a video `SequenceExample`
    of this layout (at least one JPEG frame under `image/encoded`). An empty file passes. The
    record is parsed with protobuf, not TensorFlow ops, so a check takes milliseconds.

    Returns:
      the number of records.

    Raises:
      ValueError: saying what is wrong (the caller names the file).
    """
    count = len(record_offsets(path))
    if not count:
        return 0
    with _open(path) as f:
        length = struct.unpack("<Q", f.read(8))[0]
        f.seek(_HEADER_BYTES)
        data = f.read(length)
    try:
        example = tf.train.SequenceExample.FromString(data)
    except DecodeError as e:
        raise ValueError(f"its first record is not a SequenceExample ({e})") from None
    lists = example.feature_lists.feature_list
    frames = lists[IMAGE_KEY].feature if IMAGE_KEY in lists else []
    if not frames or not frames[0].bytes_list.value:
        raise ValueError(f"its first record has no {IMAGE_KEY!r} frames: not a video record of the layout in "
                         "vdim_tf/data/records.py")
    if not frames[0].bytes_list.value[0].startswith(_JPEG_START):
        raise ValueError("the first frame of its first record is not a JPEG image")
    return count


def find_damaged(files, error=None):
    """The files among `files` that do not read back whole, as `[(path, reason)]`.

    First every file's record headers are walked (fast: finds truncated files and files that are
    not TFRecord files). When that finds nothing, the files with a record at the byte offset named
    in `error` (TensorFlow's `DataLossError` says `corrupted record at N`, not which file; all files
    when it names no offset) are read in full, which checks every record's checksum.
    """
    found, offsets = [], {}
    for path in files:
        try:
            offsets[path] = set(record_offsets(path))
        except (ValueError, tf.errors.OpError) as e:
            found.append((path, error_message(e)))
    if found:
        return found
    # The offset is a record's start (truncated record) or its data's (checksum mismatch).
    at = re.search(r"record at (\d+)", str(error or ""))
    for path in files:
        if at and not {int(at.group(1)), int(at.group(1)) - _HEADER_BYTES} & offsets[path]:
            continue
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError as e:
            found.append((path, error_message(e)))
    return found


def error_message(error):
    """An exception's message on one line, without TensorFlow's `{{function_node ...}}` and `[Op:...]`."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{.*?\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:.*$", "", text, flags=re.S).strip()
    return text.splitlines()[0] if text else type(error).__name__
