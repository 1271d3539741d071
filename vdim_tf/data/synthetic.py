"""A built-in synthetic action dataset whose classes differ only by motion.

Each video shows a few shapes (square, bar, triangle, cross; random colour, size, orientation and
position) over a random smooth texture. The class is how every shape moves: one of
`move_right`, `move_left`, `move_down`, `move_up` (constant speed, wrapping around the borders)
or `rotate_cw`, `rotate_ccw` (spinning in place). Start positions and orientations are uniform
and translation wraps, so any single frame has the same distribution in every class: the
per-class mean frame is the same and nothing but motion tells the classes apart: in
tests/test_synthetic.py, a nearest-class-mean classifier of single frames stays near chance (1/6)
while a local translation-and-rotation fit to the frames separates the classes.

Every `scene_length` frames (default 8) the video cuts to a new background and new shapes that
go on moving the same way (same direction and speed), so two sub-clips of a video more than a
scene apart share their motion and nothing else: what a contrastive objective across time, such
as VDIM's, can only solve by looking at motion.

`generate_synthetic_dataset` writes real videos (H.264, near-lossless) and builds the records
with `prepare.prepare_dataset(dataset="folder")`, the code path real data takes:

    {output_dir}/videos/{train,test}/<class>/<class>_<i:04d>.mp4
    {output_dir}/{train,test}/{split}-{i:05d}-of-{n:05d}.tfrecord    (layout of `records.py`)
    {output_dir}/labels.txt, report.json
    {output_dir}/SYNTHETIC_COMPLETE.json                              marker: the config used

From the command line: `python -m vdim_tf.launch.prepare --dataset=synthetic --output_dir=DIR`.

Example:

    path = generate_synthetic_dataset("data/synthetic", SyntheticConfig(train_videos_per_class=8))
"""

import dataclasses
import fractions
import json
import math
import os
import shutil

import av
import numpy as np

from vdim_tf.data import prepare

MOTIONS = ("move_right", "move_left", "move_down", "move_up", "rotate_cw", "rotate_ccw")

# (dx, dy) per frame for a unit speed, in image coordinates (y grows downwards).
_DIRECTIONS = {"move_right": (1, 0), "move_left": (-1, 0), "move_down": (0, 1), "move_up": (0, -1)}
_SHAPES = ("square", "bar", "triangle", "cross")
_MARKER = "SYNTHETIC_COMPLETE.json"
# Every shape lies within 1.5 radii of its centre (a square's corner is at sqrt(2)); rendering
# adds one pixel for the anti-aliased edge.
_REACH = 1.5


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size and randomness of the synthetic dataset.

    Attributes:
      num_classes: how many of `MOTIONS` to use (the first ones), 2..6.
      train_videos_per_class, test_videos_per_class: videos per class in each split.
      num_frames: frames per video.
      frame_size: height and width in pixels (even, for H.264's 4:2:0 chroma).
      fps: frame rate written into the videos.
      num_shapes: shapes per video.
      shape_radius: (min, max) half-size of a shape in pixels.
      speed: (min, max) pixels per frame of the translation classes.
      angular_speed: (min, max) degrees per frame of the rotation classes; under 45, the symmetry
        angle of a square, so a rotation never looks like the opposite one.
      scene_length: frames between scene cuts (new background and shapes, same motion); 0 means
        no cuts. With cuts, what two views of a video that are more than `scene_length` frames
        apart share is their motion and nothing else.
      crf: H.264 constant rate factor (0 lossless, 51 worst); low so motion survives compression.
      jpeg_quality: JPEG quality of the frames in the records.
      seed: everything random derives from it; the same seed writes the same dataset.
      workers: processes for building the records (see `PrepareConfig.workers`).
    """

    num_classes: int = 6
    train_videos_per_class: int = 32
    test_videos_per_class: int = 8
    num_frames: int = 48
    frame_size: int = 64
    fps: float = 25.0
    num_shapes: int = 3
    shape_radius: tuple = (5.0, 10.0)
    speed: tuple = (1.0, 2.0)
    angular_speed: tuple = (4.0, 8.0)
    scene_length: int = 8
    crf: int = 10
    jpeg_quality: int = 95
    seed: int = 0
    workers: int = 1

    def __post_init__(self):
        if not 2 <= self.num_classes <= len(MOTIONS):
            raise ValueError(f"num_classes={self.num_classes}: must be in 2..{len(MOTIONS)}")
        if self.frame_size < 16 or self.frame_size % 2:
            raise ValueError(f"frame_size={self.frame_size}: must be even and >= 16")
        if self.num_frames < 2:
            raise ValueError(f"num_frames={self.num_frames}: must be >= 2 (motion needs two frames)")
        if self.train_videos_per_class < 1 or self.test_videos_per_class < 1:
            raise ValueError(
                f"train_videos_per_class={self.train_videos_per_class}, "
                f"test_videos_per_class={self.test_videos_per_class}: both must be >= 1"
            )
        extent = 2 * math.ceil(_REACH * self.shape_radius[1] + 1) + 1
        if extent > self.frame_size:
            raise ValueError(f"shape_radius={self.shape_radius}: the largest shape needs {extent} pixels, "
                             f"more than frame_size={self.frame_size}")
        if self.scene_length < 0 or self.scene_length == 1:
            raise ValueError(f"scene_length={self.scene_length}: must be 0 (no cuts) or >= 2 (motion needs two frames)")
        if not 0 < self.angular_speed[0] <= self.angular_speed[1] < 45:
            raise ValueError(f"angular_speed={self.angular_speed}: need 0 < min <= max < 45 degrees")

    @property
    def class_names(self):
        return MOTIONS[: self.num_classes]


def _texture(rng, size):
    """A smooth random colour texture `(size, size, 3)` in [0, 1]: a few random sinusoids plus
    fine noise, so the background has structure to move over but no class information."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0.25, 0.75, size=3)
    texture = np.broadcast_to(base, (size, size, 3)).copy()
    for _ in range(6):
        fx, fy = rng.integers(-4, 5, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        amplitude = rng.uniform(0.03, 0.08, size=3)
        texture += amplitude * np.sin(2 * np.pi * (fx * x + fy * y) + phase)[..., None]
    texture += rng.normal(0, 0.03, size=texture.shape)
    return np.clip(texture, 0, 1)


def _coverage(kind, u, v, radius):
    """Anti-aliased coverage in [0, 1] of a shape centred at the origin, in its own frame (u, v)."""
    au, av_ = np.abs(u), np.abs(v)
    if kind == "square":
        distance = np.maximum(au, av_) - radius
    elif kind == "bar":
        distance = np.maximum(au, 3 * av_) - radius
    elif kind == "cross":
        distance = np.minimum(np.maximum(au, 3 * av_), np.maximum(3 * au, av_)) - radius
    else:  # triangle: intersection of three half-planes with outward normals 120 degrees apart.
        normals = [(np.cos(a), np.sin(a)) for a in np.deg2rad([90, 210, 330])]
        distance = np.max([nu * u + nv * v for nu, nv in normals], axis=0) - radius / 2
    return np.clip(0.5 - distance, 0, 1)


def _draw_shapes(rng, config, count):
    """Kind, colour, size, start position and orientation of `count` shapes (no motion)."""
    return [{
        "kind": _SHAPES[rng.integers(len(_SHAPES))],
        "colour": rng.uniform(0, 1, size=3),
        "radius": rng.uniform(*config.shape_radius),
        "centre": rng.uniform(0, config.frame_size, size=2),
        "angle": rng.uniform(0, 2 * np.pi),
    } for _ in range(count)]


def render_video(motion, rng, config):
    """Renders one video of class `motion`.

    The motion (direction, speed or angular speed) is drawn once per video. Every
    `config.scene_length` frames the scene is cut: a new background and new shapes (kind, colour,
    size, position, orientation) that go on moving the same way.

    Args:
      motion: one of `MOTIONS`.
      rng: a `numpy.random.Generator`; all per-video randomness comes from it.
      config: a `SyntheticConfig`.

    Returns:
      uint8 array `(T, H, W, 3)`.
    """
    size, frames = config.frame_size, config.num_frames
    if motion in _DIRECTIONS:
        velocity, spin = np.multiply(_DIRECTIONS[motion], rng.uniform(*config.speed)), 0.0
    else:
        sign = 1.0 if motion == "rotate_cw" else -1.0  # y points down: positive angle is clockwise.
        velocity, spin = np.zeros(2), sign * np.deg2rad(rng.uniform(*config.angular_speed))
    scene_length = config.scene_length or frames
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        if t % scene_length == 0:
            background, shapes, scene_start = _texture(rng, size), _draw_shapes(rng, config, config.num_shapes), t
        frame = background.copy()
        age = t - scene_start
        for shape in shapes:
            centre = (shape["centre"] + age * velocity) % size
            # Draw only a box around the shape; its pixel indices wrap around the borders, so a
            # shape leaving one border enters at the other.
            reach = math.ceil(_REACH * shape["radius"] + 1)
            start = np.floor(centre).astype(int) - reach
            offsets = np.arange(2 * reach + 1)
            dx = start[0] + offsets + 0.5 - centre[0]
            dy = (start[1] + offsets + 0.5 - centre[1])[:, None]
            angle = shape["angle"] + age * spin
            u = np.cos(angle) * dx + np.sin(angle) * dy
            v = -np.sin(angle) * dx + np.cos(angle) * dy
            alpha = _coverage(shape["kind"], u, v, shape["radius"])[..., None]
            box = np.ix_((start[1] + offsets) % size, (start[0] + offsets) % size)
            frame[box] = frame[box] * (1 - alpha) + shape["colour"] * alpha
        video[t] = np.round(frame * 255)
    return video


def write_video(path, video, fps, crf):
    """Writes a uint8 `(T, H, W, 3)` video as H.264 (libx264, yuv420p) in an .mp4 file."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _config_dict(config):
    """The config as saved in the marker: everything that shapes the data (not `workers`)."""
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    del saved["workers"]
    return saved


def generate_synthetic_dataset(output_dir, config=SyntheticConfig()):
    """Writes the synthetic videos and their TFRecords; reuses a complete dataset with this config.

    Returns:
      `output_dir`, holding `train/` and `test/` shards, `labels.txt` and `report.json`.

    Raises:
      ValueError: `output_dir` holds a complete synthetic dataset made with another config.
    """
    marker = os.path.join(output_dir, _MARKER)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            previous = json.load(f)
        if previous == _config_dict(config):
            return output_dir
        current = _config_dict(config)
        differing = {k: (previous.get(k), v) for k, v in current.items() if previous.get(k) != v}
        raise ValueError(
            f"{output_dir} holds a synthetic dataset made with another config ({marker}); differing "
            + ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differing.items())
            + f". Delete {output_dir} (it is regenerated in seconds) or use a fresh output_dir"
        )
    # No marker: nothing here is known to match this config (an interrupted run may have used
    # another seed or size, under the same file names), so start again; it takes seconds.
    for name in ("videos", "train", "test"):
        shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    for name in ("labels.txt", "report.json"):
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    for split_index, (split, per_class) in enumerate(
        [("train", config.train_videos_per_class), ("test", config.test_videos_per_class)]
    ):
        for class_index, motion in enumerate(config.class_names):
            class_dir = os.path.join(output_dir, "videos", split, motion)
            os.makedirs(class_dir, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([config.seed, split_index, class_index, i])
                video = render_video(motion, rng, config)
                write_video(os.path.join(class_dir, f"{motion}_{i:04d}.mp4"), video, config.fps, config.crf)
        report = prepare.prepare_dataset(prepare.PrepareConfig(
            dataset="folder",
            video_dir=os.path.join(output_dir, "videos", split),
            output_dir=output_dir,
            split_name=split,
            short_side=None,
            jpeg_quality=config.jpeg_quality,
            workers=config.workers,
            progress=False,
        ))
        if report.num_skipped:
            raise RuntimeError(f"synthetic videos failed to decode:\n{report.summary()}")
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(_config_dict(config), f, indent=1)
    return output_dir
