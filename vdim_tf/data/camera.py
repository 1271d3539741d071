"""A real-imagery benchmark whose classes only motion tells apart: a camera moving over real video.

Every example is `frames` consecutive frames of one real clip (UCF-101 / HMDB-51 in
`../shared/data`) seen through a square virtual camera of `size` pixels that moves over them. The
class is how the picture moves on screen, the six motions of the synthetic set (`synthetic.py`):
`move_right`, `move_left`, `move_down`, `move_up` (the camera pans the other way at a constant
speed) and `rotate_cw`, `rotate_ccw` (the camera spins about its centre). The clip's own motion
(people, camera shake) is there too, the same in every class.

Construction (why a single frame is at chance, exactly in distribution):

- The camera samples the clip's frame mirrored across its borders, repeated without end (period
  2W x 2H), so it never leaves the picture and never jumps: a pan runs on over mirrored content.
- Every example draws its camera's start centre uniformly over one period and its start angle
  uniformly over the full turn, whatever the class. A pan shifts the centre by a fixed amount per
  frame and a rotation turns the angle by a fixed amount, so **every frame of every class sees a
  uniform centre and a uniform angle, independently**: no single frame, and no statistic of the
  frames' set, says which class it came from; only how they change does (tested).
- Every class takes the same windows of the same clips: one example per class (or
  `examples_per_window`) for each window of `frames` frames starting every `hop` frames.
- Train and test come from different source videos (the fixed split of `motion.py`).

Speeds are drawn per example: `speed` pixels per frame for pans, `angular_speed` degrees per frame
for rotations, uniform within the given ranges. Each record's `video/filename` is
`<source clip>#<start>:<stop>` (the clip's frames, a Python slice); the trajectory of every example
is in `examples.json`, so each can be rebuilt and checked.

Output (the layout `prepare` writes, so `pretrain`, `finetune` and `evaluate` read it unchanged):

    {output_dir}/labels.txt, manifest.json, examples.json
    {output_dir}/{split}/{split}-{i:05d}-of-{n:05d}.tfrecord

Example:

    manifest = build_benchmark(CameraConfig(data_dir="../shared/data", output_dir="data/camera"))
"""

import dataclasses
import json
import math
import os
import random

import numpy as np
import tensorflow as tf

from vdim_tf.data import motion, records
from vdim_tf.data.decode import VideoError, decode_video
from vdim_tf.data.synthetic import MOTIONS

# Picture motion on screen per unit speed, in image coordinates (y grows downwards).
_DIRECTIONS = {"move_right": (1.0, 0.0), "move_left": (-1.0, 0.0), "move_down": (0.0, 1.0), "move_up": (0.0, -1.0)}
# Sign of the camera's angle change per frame: content turns the other way.
_TURNS = {"rotate_cw": -1.0, "rotate_ccw": 1.0}
_SEED = "vdim_tf.camera"


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """What to build.

    Attributes:
      data_dir: folder holding the source clips (`../shared/data`).
      output_dir: where the records, `labels.txt`, `manifest.json` and `examples.json` go.
      frames: frames per example (32: the paper's views of the CPU preset read 32).
      hop: source frames between window starts.
      examples_per_window: examples per class drawn from each window, each with its own camera.
      size: side of the stored square frames, in pixels.
      source_short_side: the source frames are scaled to this shorter side before the camera
        samples them (one camera pixel is one scaled source pixel).
      speed: (min, max) pixels per frame of the pans.
      angular_speed: (min, max) degrees per frame of the rotations.
      jpeg_quality: JPEG quality of the stored frames, 1-100.
      seed: every camera derives from it; the same seed writes the same benchmark.
      train_sources, test_sources: clip paths relative to `data_dir`, disjoint.
      examples_per_shard: at most this many examples per TFRecord shard.
    """

    data_dir: str
    output_dir: str
    frames: int = 32
    hop: int = 8
    examples_per_window: int = 1
    size: int = 128
    source_short_side: int = 240
    speed: tuple = (2.0, 4.0)
    angular_speed: tuple = (2.0, 4.0)
    jpeg_quality: int = 90
    seed: int = 0
    train_sources: tuple = motion.TRAIN_SOURCES
    test_sources: tuple = motion.TEST_SOURCES
    examples_per_shard: int = 200

    @property
    def class_names(self):
        return list(MOTIONS)

    def validate(self):
        if self.frames < 2:
            raise ValueError(f"frames={self.frames}: must be >= 2 (one frame has no motion)")
        if self.hop < 1 or self.examples_per_window < 1:
            raise ValueError(f"hop={self.hop}, examples_per_window={self.examples_per_window}: both must be >= 1")
        if self.size < 8 or self.source_short_side < 8:
            raise ValueError(f"size={self.size}, source_short_side={self.source_short_side}: both must be >= 8")
        for name, (low, high) in (("speed", self.speed), ("angular_speed", self.angular_speed)):
            if not 0 < low <= high:
                raise ValueError(f"{name}={low},{high}: need 0 < min <= max")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")
        shared = set(self.train_sources) & set(self.test_sources)
        if shared:
            raise ValueError(f"train and test sources must differ; both list {sorted(shared)}")
        if not os.path.isdir(self.data_dir):
            raise FileNotFoundError(f"data_dir={self.data_dir}: no such folder; it should hold the UCF-101/HMDB-51 "
                                    "clips of ../shared/data (see SOURCES.md there)")


def draw_camera(rng, name, width, height, config):
    """One example's camera: a dict of its start centre `(x, y)`, start `angle` (radians), and its
    per-frame `velocity` `(dx, dy)` (source pixels) and `turn` (radians) for class `name`."""
    centre = (float(rng.uniform(0, 2 * width)), float(rng.uniform(0, 2 * height)))
    angle = float(rng.uniform(0, 2 * math.pi))
    velocity, turn = (0.0, 0.0), 0.0
    if name in _DIRECTIONS:
        speed = float(rng.uniform(*config.speed))
        dx, dy = _DIRECTIONS[name]
        # The picture moves by +speed * (dx, dy) on screen when the camera moves the other way,
        # along the screen's axes as they lie in the source (rotated by `angle`).
        cos, sin = math.cos(angle), math.sin(angle)
        velocity = (-speed * (cos * dx - sin * dy), -speed * (sin * dx + cos * dy))
    elif name in _TURNS:
        turn = _TURNS[name] * math.radians(float(rng.uniform(*config.angular_speed)))
    else:
        raise ValueError(f"unknown class {name!r}; one of {', '.join(MOTIONS)}")
    return {"centre": centre, "angle": angle, "velocity": velocity, "turn": turn}


def _mirror(index, length):
    """Integer pixel indices folded into `[0, length)` on the frame mirrored without end."""
    index = np.mod(index, 2 * length)
    return np.where(index >= length, 2 * length - 1 - index, index)


def camera_view(frame, centre, angle, size):
    """The `size` x `size` view of `frame` (H x W x 3 uint8) by a camera at `centre` (x, y) turned
    by `angle` radians: screen pixel (u, v) about the view's centre shows source point
    `centre + R(angle) (u, v)`, bilinear, on the frame mirrored across its borders."""
    height, width = frame.shape[:2]
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    u, v = np.meshgrid(offsets, offsets)
    cos, sin = math.cos(angle), math.sin(angle)
    x = centre[0] + cos * u - sin * v
    y = centre[1] + sin * u + cos * v
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = _mirror(x0, width), _mirror(x0 + 1, width)
    ya, yb = _mirror(y0, height), _mirror(y0 + 1, height)
    image = frame.astype(np.float32)
    top = image[ya, xa] * (1 - fx) + image[ya, xb] * fx
    bottom = image[yb, xa] * (1 - fx) + image[yb, xb] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def render(frames, camera, size):
    """The views of consecutive `frames` by `camera` (from `draw_camera`): frame t is seen from
    `centre + t * velocity`, turned by `angle + t * turn`."""
    views = []
    for t, frame in enumerate(frames):
        centre = (camera["centre"][0] + t * camera["velocity"][0], camera["centre"][1] + t * camera["velocity"][1])
        views.append(camera_view(frame, centre, camera["angle"] + t * camera["turn"], size))
    return views


def window_starts(num_frames, config):
    """Start frames of a clip's windows: 0, hop, 2 hop, ... while `frames` frames fit."""
    return list(range(0, num_frames - config.frames + 1, config.hop))


def build_benchmark(config, log=print):
    """Decodes the source clips and writes the benchmark's records, `labels.txt`, `manifest.json`
    and `examples.json` (every example's source window and camera).

    Returns:
      the manifest dict.

    Raises:
      ValueError: a bad setting, or a split left with no usable clip.
      FileNotFoundError: `data_dir` is missing.
    """
    config.validate()
    names = config.class_names
    os.makedirs(config.output_dir, exist_ok=True)
    manifest = {"settings": {k: v for k, v in dataclasses.asdict(config).items() if not k.endswith("_sources")},
                "labels": names, "splits": {}}
    described = {}
    for split, sources in (("train", config.train_sources), ("test", config.test_sources)):
        serialized, used, skipped, listed = [], {}, [], []
        counts = dict.fromkeys(names, 0)
        for source in sources:
            path = os.path.join(config.data_dir, source)
            try:
                video = decode_video(path, short_side=config.source_short_side, jpeg_quality=95)
            except VideoError as e:
                skipped.append({"source": source, "reason": str(e)})
                log(f"  {split}: SKIPPED {source}: {e}")
                continue
            starts = window_starts(len(video.jpeg_frames), config)
            if not starts:
                reason = f"{len(video.jpeg_frames)} frames, fewer than one example of {config.frames}"
                skipped.append({"source": source, "reason": reason})
                log(f"  {split}: SKIPPED {source}: {reason}")
                continue
            pixels = [tf.io.decode_jpeg(jpeg, channels=3).numpy() for jpeg in video.jpeg_frames]
            height, width = pixels[0].shape[:2]
            rng = np.random.default_rng(list(f"{_SEED}/{config.seed}/{split}/{source}".encode()))
            for start in starts:
                window = pixels[start:start + config.frames]
                for label, name in enumerate(names):
                    for _ in range(config.examples_per_window):
                        camera = draw_camera(rng, name, width, height, config)
                        jpegs = [tf.io.encode_jpeg(view, quality=config.jpeg_quality).numpy()
                                 for view in render(window, camera, config.size)]
                        filename = f"{source}#{start}:{start + config.frames}"
                        example = records.make_sequence_example(jpegs, label, name, filename, video.fps)
                        serialized.append(example.SerializeToString())
                        listed.append({"filename": filename, "label": name, **camera})
                        counts[name] += 1
            used[source] = {"frames": len(video.jpeg_frames), "size": [width, height],
                            "examples": len(starts) * len(names) * config.examples_per_window}
            log(f"  {split}: {source}: {len(video.jpeg_frames)} frames -> {used[source]['examples']} examples")
        if not serialized:
            raise ValueError(f"the {split} split has no clip of at least {config.frames} frames in "
                             f"{config.data_dir}; use fewer frames or longer clips")
        order = list(range(len(serialized)))
        random.Random(f"{_SEED}/{split}").shuffle(order)
        shards = motion.write_split(split, [serialized[i] for i in order], config)
        described[split] = listed
        manifest["splits"][split] = {"examples": len(serialized), "per_class": counts, "sources": used,
                                     "skipped": skipped, "shards": shards}
    with open(os.path.join(config.output_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in names))
    with open(os.path.join(config.output_dir, "examples.json"), "w", encoding="utf-8") as f:
        json.dump(described, f)
    with open(os.path.join(config.output_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest
