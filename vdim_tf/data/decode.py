"""Decodes one video file into resized, JPEG-encoded RGB frames (PyAV / FFmpeg).

A file that cannot be used at all raises `VideoError` (its message is the reason `prepare`
reports); a file that fails part-way keeps the frames decoded before the failure and says why in
`DecodedVideo.problem`.

Example:

    video = decode_video("v_YoYo_g01_c01.avi", fps=25, short_side=128)
    print(len(video.jpeg_frames), video.fps, video.problem)
"""

import dataclasses
import math
import os

import av
import av.video.reformatter
import tensorflow as tf

# AVI headers often declare one or two frames more than the decoder delivers (seen on the HMDB-51
# clips in ../shared/data); only a larger shortfall marks a cleanly-ending decode as partial.
DECLARED_FRAMES_SLACK = 0.05


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
    if problem is None and declared and decoded < declared * (1 - DECLARED_FRAMES_SLACK) - 1:
        problem = f"decoded {decoded} of the {declared} frames the container declares (truncated?)"
        # The last frame of a cut file is decoded from a cut packet: seen garbled on a truncated
        # UCF-101 AVI, so it is dropped.
        if decoded > 1:
            jpeg_frames = jpeg_frames[: len(jpeg_frames) - repeats]
            problem += "; dropped the last, possibly cut, frame"
    if not jpeg_frames:
        raise VideoError(problem or "no frames decoded")
    return DecodedVideo(jpeg_frames, fps if resample else native_fps, problem)
