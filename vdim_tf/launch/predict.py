"""Classify video files with an exported SavedModel (`vdim_tf.launch.export`).

    python -m vdim_tf.launch.predict --export_dir=exports/demo/1 video1.mp4 video2.avi
    python -m vdim_tf.launch.predict --export_dir=exports/demo/1 --json --top_k=3 clips/*.mp4

Each file is decoded with PyAV into uint8 RGB frames and sent whole to the export's
`serving_default` signature, which crops, windows and averages in its graph. Only TensorFlow and
the SavedModel are used, not vdim_tf's model code. A file that cannot be decoded (or that the
model rejects) is reported with its absolute path, and the other files are still predicted. A
truncated file is predicted from the frames before the damage, with a warning (as `prepare`
keeps them). predict reads its inputs and writes nothing.

Exit status: 0 every file predicted; 2 some file failed; 1 bad flags or no usable export.
"""

import errno
import json
import os
import stat
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging

from vdim_tf import launch

flags.DEFINE_string("export_dir", None, "SavedModel folder written by vdim_tf.launch.export. Required.")
flags.DEFINE_integer("top_k", 5, "Labels shown per video (capped at the class count).")
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_integer("short_side", None, "Resize frames so the shorter side has this many pixels while "
                     "decoding (as prepare's --short_side does; saves memory on large videos). "
                     "Default: decode at the native size; the export resizes anyway.")
FLAGS = flags.FLAGS


class DecodeError(Exception):
    """A file that yields no frames; the message says why."""


def check_file(path):
    """Raises DecodeError unless `path` is a regular file, saying what it is instead."""
    where = os.path.abspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DecodeError(f"symbolic link loop at {where}") from None
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise DecodeError(f"broken symbolic link {where} -> {os.readlink(path)}") from None
        if e.errno == errno.ENOENT:
            raise DecodeError(f"no such file: {where}") from None
        raise DecodeError(f"cannot read {where}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DecodeError(f"{where} is a directory, not a video file")
    if not stat.S_ISREG(mode):
        raise DecodeError(f"{where} is not a regular file")


def decode_frames(path, short_side=None):
    """All frames of the first video stream as uint8 RGB `(T, H, W, 3)`, and a warning or None.

    A decode error after some frames keeps the frames before it, and so does a stream that ends
    well short of the frames its container declares; both come with a warning, as in `prepare`
    (which also drops the last frame of a short stream: it is decoded from a cut packet).

    Raises:
      DecodeError: missing, empty or unreadable file, no video stream, or no frame decoded.
    """
    import av
    import numpy as np

    from vdim_tf.data.decode import DECLARED_FRAMES_SLACK

    check_file(path)
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:  # PyAV raises many error types for unreadable input.
        raise DecodeError(f"cannot open: {type(e).__name__}: {e}") from None
    frames, warning = [], None
    with container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        declared = container.streams.video[0].frames
        try:
            for frame in container.decode(container.streams.video[0]):
                width, height = frame.width, frame.height
                if short_side:
                    scale = short_side / min(width, height)
                    width, height = max(1, round(width * scale)), max(1, round(height * scale))
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"))
        except Exception as e:  # a decode error mid-stream: keep what came before it.
            if not frames:
                raise DecodeError(f"cannot decode: {type(e).__name__}: {e}") from None
            warning = f"decoding stopped after {len(frames)} frames: {type(e).__name__}: {e}"
    if not frames:
        raise DecodeError("no frames decoded")
    if warning is None and declared and len(frames) < declared * (1 - DECLARED_FRAMES_SLACK) - 1:
        warning = f"decoded {len(frames)} of the {declared} frames the container declares (truncated?)"
        if len(frames) > 1:
            frames.pop()
            warning += "; dropped the last, possibly cut, frame"
    if warning:
        warning += "; predicted from the frames before the damage"
    return np.stack(frames), warning


def predict_files(loaded, paths, top_k, short_side=None):
    """Returns `(predictions, failures)`: dicts per predicted file and per failed file."""
    import numpy as np
    import tensorflow as tf

    classify = loaded.signatures["serving_default"]
    label_names = [name.decode("utf-8") for name in loaded.signatures["metadata"]()["label_names"].numpy()]
    predictions, failures = [], []
    for path in paths:
        try:
            video, warning = decode_frames(path, short_side)
        except DecodeError as e:
            failures.append({"file": path, "error": str(e)})
            continue
        try:
            probabilities = classify(video=tf.constant(video[np.newaxis]))["probabilities"].numpy()[0]
        except (tf.errors.OpError, ValueError, TypeError) as e:
            failures.append({"file": path, "error": f"the model rejected it: {type(e).__name__}: {e}"})
            continue
        order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(label_names))]
        predictions.append({
            "file": path,
            "frames": int(video.shape[0]),
            "height": int(video.shape[1]),
            "width": int(video.shape[2]),
            "top_k": [{"rank": rank, "index": int(i), "label": label_names[i],
                       "probability": float(probabilities[i])} for rank, i in enumerate(order, 1)],
            **({"warning": warning} if warning else {}),
        })
    return predictions, failures


def format_table(predictions, failures):
    rows = [(p["file"], str(t["rank"]), t["label"], f"{t['probability']:.4f}")
            for p in predictions for t in p["top_k"]]
    header = ("file", "rank", "label", "probability")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:<{widths[2]}}  {header[3]}"]
    lines += [f"{f:<{widths[0]}}  {r:>{widths[1]}}  {label:<{widths[2]}}  {p:>11}" for f, r, label, p in rows]
    lines += [f"FAILED {f['file']}: {f['error']}" for f in failures]
    return "\n".join(lines)


def main(argv):
    paths = argv[1:]
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.export_dir:
        sys.exit("predict: error: --export_dir is required")
    if not paths:
        sys.exit("predict: error: give one or more video files after the flags")
    if FLAGS.top_k < 1:
        sys.exit(f"predict: error: --top_k={FLAGS.top_k}: must be >= 1")
    if not os.path.isdir(FLAGS.export_dir):
        sys.exit(f"predict: error: --export_dir={FLAGS.export_dir}: no such folder ({os.path.abspath(FLAGS.export_dir)})")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(FLAGS.export_dir)
    except (OSError, ValueError) as e:
        sys.exit(f"predict: error: cannot load a SavedModel from --export_dir={FLAGS.export_dir}: {e}")
    kind = loaded.signatures["metadata"]()["kind"].numpy() if "metadata" in loaded.signatures else None
    if kind != b"classifier":
        sys.exit(f"predict: error: {FLAGS.export_dir} is not a classifier export (metadata kind "
                 f"{kind!r}); an encoder export answers its 'embed' signature instead")
    predictions, failures = predict_files(loaded, paths, FLAGS.top_k, FLAGS.short_side)
    for p in predictions:
        if "warning" in p:
            print(f"predict: warning: {os.path.abspath(p['file'])}: {p['warning']}", file=sys.stderr)
    if FLAGS.json:
        print(json.dumps({"predictions": predictions, "failures": failures}, indent=2))
    else:
        print(format_table(predictions, failures))
    if failures:
        print(f"predict: {len(failures)} of {len(paths)} file(s) failed", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    launch.run(main)
