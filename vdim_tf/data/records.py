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
"""

import tensorflow as tf

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
