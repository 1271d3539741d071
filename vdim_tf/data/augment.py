"""Clip-consistent augmentation (SPEC §4.4): every frame of a view gets the same parameters.

Parameters are drawn once per view by `draw_view_params` (stateless random ops, so a seed
reproduces them) and applied to all frames by `apply_view_params`: the same crop box for every
frame, the same jitter factors, the same rotation angle, the same dropped Lab channel. The two
views of a clip get independent parameters except the horizontal flip, which is drawn once per
clip and shared (AMDIM flips the image before making its two views).

    config = AugmentConfig(output_size=64)
    out = augment_views(views_uint8, config, seed)     # (V, T, H, W, 3) -> float32 (V, T, 64, 64, 3)

Values fed to the model are `normalize`d: RGB [0, 1] -> [-1, 1]; Lab -> roughly [-1, 1] per channel
(at training the two channels Lab dropout keeps are scaled by 3/2, see `lab_dropout`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

COLOR_MODES = ("jitter", "lab")


def color_space(color_mode):
    """The input a `color_mode` feeds the encoder: 'lab' for Lab dropout, else 'rgb' (jitter + gray)."""
    return "lab" if color_mode == "lab" else "rgb"

# ITU-R 601 luma weights, as tf.image.rgb_to_grayscale and torchvision use.
_LUMA = (0.2989, 0.587, 0.114)
# NTSC RGB -> YIQ; hue rotation turns the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB_TO_YIQ)).tolist()))
# sRGB (D65) -> CIE XYZ, and the D65 white point (IEC 61966-2-1).
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.950456, 1.0, 1.088754)
# sRGB colours have a in [-86, 98] and b in [-108, 95]; dividing by 110 keeps both inside [-1, 1].
_LAB_AB_SCALE = 110.0
# Lab dropout keeps 2 of 3 channels; scaling them by 3/2 (inverted dropout) makes every channel's
# expected training value the value evaluation feeds, where no channel is dropped.
LAB_KEEP_SCALE = 1.5
# torchvision's RandomResizedCrop tries 10 boxes before falling back to a centre crop.
_CROP_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of one view (SPEC §4.4). Defaults: AMDIM's image augmentation, paper §4.

    Attributes:
      output_size: side of the square output frames (paper §4: 128; the CPU preset uses 64).
      crop_scale: range of the crop's area as a fraction of the frame (AMDIM RandomResizedCrop).
      crop_aspect_ratio: range of the crop's width / height, drawn log-uniformly (AMDIM).
      flip_probability: probability of a horizontal flip, one decision shared by all views of a
        clip (AMDIM flips before making its two views).
      color_mode: 'jitter' (colour jitter + random grayscale; paper §4 best for pretraining) or
        'lab' (RGB -> Lab, one channel dropped at random; paper §4 fine-tuning default).
      jitter_probability: probability of applying colour jitter at all (AMDIM RandomApply 0.8).
      brightness: brightness factor drawn from [1 - b, 1 + b] (AMDIM ColorJitter 0.4).
      contrast: contrast factor drawn from [1 - c, 1 + c] (AMDIM ColorJitter 0.4).
      saturation: saturation factor drawn from [1 - s, 1 + s] (AMDIM ColorJitter 0.4).
      hue: hue shift drawn from [-h, h], as a fraction of the hue circle (SPEC §4: 0.1; AMDIM's
        code uses 0.2).
      grayscale_probability: probability of converting to grayscale (AMDIM RandomGrayscale 0.25).
      rotation_probability: probability of a random rotation (paper §4: rotation had no effect,
        best model without, so off by default).
      rotation_max_degrees: rotation angle drawn from [-d, d] degrees (not given in the paper; 10
        is our choice).
    """

    output_size: int = 128
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect_ratio: tuple[float, float] = (0.7, 1.4)
    flip_probability: float = 0.5
    color_mode: str = "jitter"
    jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_probability: float = 0.25
    rotation_probability: float = 0.0
    rotation_max_degrees: float = 10.0

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raises ValueError naming the offending value."""
        if not isinstance(self.output_size, int) or self.output_size < 1:
            raise ValueError(f"output_size must be an int >= 1, got {self.output_size!r}")
        if self.color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {self.color_mode!r}")
        for name in ("crop_scale", "crop_aspect_ratio"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if self.crop_scale[1] > 1:
            raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale}")
        for name in ("flip_probability", "jitter_probability", "grayscale_probability", "rotation_probability"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1] (factor drawn from [1 - x, 1 + x]), got {value}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0 <= self.rotation_max_degrees <= 180:
            raise ValueError(f"rotation_max_degrees must be in [0, 180], got {self.rotation_max_degrees}")

    @property
    def color_space(self):
        """'lab' when views are fed to the model in Lab, else 'rgb'."""
        return "lab" if self.color_mode == "lab" else "rgb"


# --- normalisation and colour spaces ----------------------------------------------------------


def _power(x, exponent):
    """x ** exponent for x > 0, as exp(log(x) * exponent): 3x faster than tf.pow on CPU."""
    return tf.exp(tf.math.log(x) * exponent)


def rgb_to_lab(rgb):
    """sRGB in [0, 1] `(..., 3)` -> CIE Lab (D65): L in [0, 100], a and b roughly [-110, 110]."""
    rgb = tf.convert_to_tensor(rgb, tf.float32)
    linear = tf.where(rgb <= 0.04045, rgb / 12.92, _power((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4))
    # One (pixels, 3) x (3, 3) matmul; tf.linalg.matvec would run a tiny matmul per pixel (20x slower).
    xyz = tf.tensordot(linear, tf.transpose(tf.constant(_RGB_TO_XYZ)), axes=1) / tf.constant(_D65_WHITE)
    f = tf.where(xyz > 0.008856, _power(tf.maximum(xyz, 0.008856), 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    # L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz), as one matmul.
    f_to_lab = tf.constant([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]])
    return tf.tensordot(f, f_to_lab, axes=1) - tf.constant([16.0, 0.0, 0.0])


def normalize(frames, color_space="rgb"):
    """What the model is fed: float RGB in [0, 1] `(..., 3)` -> float32 roughly in [-1, 1].

    'rgb': `2 * x - 1`, exactly [-1, 1]. 'lab': converted to Lab, then L / 50 - 1 and a / 110,
    b / 110, each within [-1, 1] for sRGB colours.
    """
    frames = tf.convert_to_tensor(frames, tf.float32)
    if color_space == "rgb":
        return frames * 2.0 - 1.0
    if color_space == "lab":
        lab = rgb_to_lab(frames)
        return lab / tf.constant([50.0, _LAB_AB_SCALE, _LAB_AB_SCALE]) - tf.constant([1.0, 0.0, 0.0])
    raise ValueError(f"color_space must be 'rgb' or 'lab', got {color_space!r}")


def to_float01(frames):
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    if frames.dtype == tf.uint8:
        return tf.cast(frames, tf.float32) / 255.0
    return tf.cast(frames, tf.float32)


# --- evaluation ----------------------------------------------------------------------------


def center_crop_resize(frames, size):
    """Deterministic evaluation crop: resize the short side to `size`, crop the centre square.

    Implemented as: take the central square of side min(H, W), resize it to `size` with
    antialiasing. Works for raw decoded video (serving reuses it).

    Args:
      frames: uint8 [0, 255] or float [0, 1], `(..., H, W, 3)` with at least one leading dim
        (`(T, H, W, 3)` or `(B, T, H, W, 3)`).
      size: int, output side.

    Returns:
      float32 [0, 1], `(..., size, size, 3)`.
    """
    frames = to_float01(tf.convert_to_tensor(frames))
    shape = tf.shape(frames)
    height, width = shape[-3], shape[-2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[..., top : top + side, left : left + side, :]
    flat = tf.reshape(square, tf.concat([[-1], tf.shape(square)[-3:]], 0))
    resized = tf.image.resize(flat, [size, size], method="bilinear", antialias=True)
    resized = tf.clip_by_value(resized, 0.0, 1.0)
    out = tf.reshape(resized, tf.concat([shape[:-3], [size, size, 3]], 0))
    return tf.ensure_shape(out, frames.shape[:-3] + (size, size, 3))


def eval_view(frames, size, color_space="rgb"):
    """Evaluation preprocessing of one view: `center_crop_resize` then `normalize`."""
    return normalize(center_crop_resize(frames, size), color_space)


# --- drawing parameters once per view --------------------------------------------------------


def draw_flip(seed, config):
    """One horizontal-flip decision (bool scalar), shared by every view of a clip."""
    return tf.random.stateless_uniform([], seed) < config.flip_probability


def _draw_crop_box(seed, height, width, config):
    """torchvision's RandomResizedCrop box, in pixels: int32 [top, left, height, width].

    Tries `_CROP_ATTEMPTS` (area, aspect) pairs at once and keeps the first that fits; if none
    fits, crops the centre at the nearest allowed aspect ratio, as torchvision does.
    """
    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale_low, scale_high = config.crop_scale
    ratio_low, ratio_high = config.crop_aspect_ratio
    area = height_f * width_f * tf.random.stateless_uniform([_CROP_ATTEMPTS], area_seed, scale_low, scale_high)
    aspect = tf.exp(
        tf.random.stateless_uniform([_CROP_ATTEMPTS], ratio_seed, math.log(ratio_low), math.log(ratio_high))
    )
    crop_w = tf.round(tf.sqrt(area * aspect))
    crop_h = tf.round(tf.sqrt(area / aspect))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width_f) & (crop_h <= height_f)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    frame_ratio = width_f / height_f
    fallback_w = tf.where(frame_ratio > ratio_high, tf.round(height_f * ratio_high), width_f)
    fallback_h = tf.where(frame_ratio < ratio_low, tf.round(width_f / ratio_low), height_f)
    any_fits = tf.reduce_any(fits)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)

    crop_h, crop_w = tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32)

    def uniform_offset(offset_seed, room):
        drawn = tf.random.stateless_uniform([], offset_seed, 0, room + 1, dtype=tf.int32)
        return tf.where(any_fits, drawn, room // 2)

    top = uniform_offset(top_seed, tf.cast(height, tf.int32) - crop_h)
    left = uniform_offset(left_seed, tf.cast(width, tf.int32) - crop_w)
    return tf.stack([top, left, crop_h, crop_w])


def draw_view_params(seed, height, width, config, flip):
    """Draws every augmentation parameter of one view, once.

    Args:
      seed: `(2,)` stateless seed for this view.
      height, width: int32 scalars, size of the decoded frames.
      config: `AugmentConfig`.
      flip: bool scalar, the clip's shared flip decision (`draw_flip`).

    Returns:
      dict of scalars: `crop_box` int32 `(4,)` [top, left, height, width], `flip` bool, `jitter` bool, `brightness`,
      `contrast`, `saturation` float32 factors, `hue` float32 shift (fraction of a turn),
      `jitter_order` int32 `(4,)` (a permutation of brightness, contrast, saturation, hue, as
      torchvision's ColorJitter), `grayscale` bool,
      `rotate` bool, `angle` float32 radians, `drop_channel` int32 in {0, 1, 2} (Lab mode).
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 11))

    def uniform(i, low, high, shape=()):
        return tf.random.stateless_uniform(shape, seeds[i], low, high)

    max_angle = math.radians(config.rotation_max_degrees)
    return {
        "crop_box": _draw_crop_box(seeds[0], height, width, config),
        "flip": tf.convert_to_tensor(flip, tf.bool),
        "jitter": uniform(1, 0.0, 1.0) < config.jitter_probability,
        "brightness": uniform(2, 1.0 - config.brightness, 1.0 + config.brightness),
        "contrast": uniform(3, 1.0 - config.contrast, 1.0 + config.contrast),
        "saturation": uniform(4, 1.0 - config.saturation, 1.0 + config.saturation),
        "hue": uniform(5, -config.hue, config.hue),
        "jitter_order": tf.argsort(uniform(6, 0.0, 1.0, [4])),
        "grayscale": uniform(7, 0.0, 1.0) < config.grayscale_probability,
        "rotate": uniform(8, 0.0, 1.0) < config.rotation_probability,
        "angle": uniform(9, -max_angle, max_angle),
        "drop_channel": tf.random.stateless_uniform([], seeds[10], 0, 3, dtype=tf.int32),
    }


# --- applying them to every frame ------------------------------------------------------------


def _grayscale(frames):
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(frames))


def _color_map(frames, matrix):
    """The same linear colour map `rgb @ matrix` on every pixel, clipped to [0, 1]."""
    return tf.clip_by_value(tf.tensordot(frames, matrix, axes=1), 0.0, 1.0)


def _saturation_matrix(factor):
    """Blend with the pixel's own gray level (torchvision adjust_saturation), as a 3x3 matrix."""
    luma_rows = tf.tile(tf.constant(_LUMA)[:, tf.newaxis], [1, 3])
    return factor * tf.eye(3) + (1.0 - factor) * luma_rows


def _hue_matrix(shift):
    """Hue rotation by `shift` turns: rotate the chroma plane of YIQ about the luma axis.

    A linear stand-in for torchvision's HSV hue shift (NVIDIA DALI's hue op does the same): it
    turns hues by the same angle and is one matmul instead of an RGB -> HSV -> RGB round trip.
    """
    angle = 2.0 * math.pi * shift
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotation = tf.stack([[1.0, 0.0, 0.0], tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])])
    to_yiq, from_yiq = tf.constant(_RGB_TO_YIQ), tf.constant(_YIQ_TO_RGB)
    return tf.transpose(from_yiq @ rotation @ to_yiq)


def color_jitter(frames, params):
    """torchvision ColorJitter with the drawn factors, in `params['jitter_order']`.

    Each step is one colour map, clipped to [0, 1] as torchvision clips after each step.
    Contrast blends towards the mean gray level of the whole view, not of each frame, so every
    frame of the view undergoes exactly the same pixel-wise map.

    Args:
      frames: float32 [0, 1], `(T, H, W, 3)`.
      params: dict from `draw_view_params`.

    Returns:
      float32 [0, 1], same shape.
    """

    def contrast(x):
        mean_gray = tf.tensordot(tf.reduce_mean(x, axis=[0, 1, 2]), tf.constant(_LUMA), axes=1)
        factor = params["contrast"]
        return tf.clip_by_value(factor * x + (1.0 - factor) * mean_gray, 0.0, 1.0)

    adjustments = [
        lambda x: tf.clip_by_value(params["brightness"] * x, 0.0, 1.0),
        contrast,
        lambda x: _color_map(x, _saturation_matrix(params["saturation"])),
        lambda x: _color_map(x, _hue_matrix(params["hue"])),
    ]
    for step in range(4):
        frames = tf.switch_case(params["jitter_order"][step], [lambda f=f: f(frames) for f in adjustments])
    return frames


def rotate(frames, angle):
    """Rotates every frame of `(T, H, W, 3)` by the same `angle` (radians) about its centre.

    Uncovered corners are filled by reflection, so the rotation leaves no black borders.
    """
    shape = tf.shape(frames)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=frames,
        transforms=tf.tile(transform[tf.newaxis], [shape[0], 1]),
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def lab_dropout(lab, channel):
    """Zeroes channel `channel` (int32 scalar) of normalised Lab `(..., 3)` (paper §3.1) and
    scales the two kept channels by `LAB_KEEP_SCALE` = 3/2, as inverted dropout does.

    Each channel is kept with probability 2/3, so its expected training value is the unscaled
    value that evaluation feeds with all three channels (WORKSPACE.md).
    """
    keep = 1.0 - tf.one_hot(channel, 3, dtype=lab.dtype)
    return lab * (keep * LAB_KEEP_SCALE)


def apply_view_params(frames, params, config):
    """Applies one view's drawn parameters to all its frames.

    Order: random resized crop, flip, rotation, then colour (jitter and grayscale, or Lab
    dropout), then `normalize`: AMDIM's order, with rotation added after the flip. Flipping after
    the crop is the same as flipping the video first, since crop positions are symmetric.

    Args:
      frames: uint8 [0, 255] or float [0, 1], `(T, H, W, 3)`.
      params: dict from `draw_view_params`.
      config: `AugmentConfig`.

    Returns:
      float32 `(T, S, S, 3)`, `S = config.output_size`, normalised (see `normalize`).
    """
    frames = tf.convert_to_tensor(frames)
    size = config.output_size
    top, left, height, width = tf.unstack(params["crop_box"])
    # Slicing then resizing is 3x faster than tf.image.crop_and_resize on CPU. Bilinear resizing is
    # linear, so uint8 frames are resized first and scaled to [0, 1] after: the cast and scale then
    # touch the S×S output, not the larger crop.
    crop = frames[:, top : top + height, left : left + width, :]
    out = tf.image.resize(crop, [size, size], method="bilinear")
    if frames.dtype == tf.uint8:
        out = out * (1.0 / 255.0)
    out = tf.clip_by_value(out, 0.0, 1.0)
    out = tf.cond(params["flip"], lambda: tf.reverse(out, axis=[2]), lambda: out)
    if config.rotation_probability > 0:
        out = tf.cond(params["rotate"], lambda: rotate(out, params["angle"]), lambda: out)
    if config.color_mode == "lab":
        out = lab_dropout(normalize(out, "lab"), params["drop_channel"])
    else:
        out = tf.cond(params["jitter"], lambda: color_jitter(out, params), lambda: out)
        out = tf.cond(params["grayscale"], lambda: _grayscale(out), lambda: out)
        out = normalize(out, "rgb")
    return tf.ensure_shape(out, [frames.shape[0], size, size, 3])


def augment_view(frames, config, seed, flip):
    """Draws one view's parameters from `seed` and applies them to `(T, H, W, 3)` frames."""
    shape = tf.shape(frames)
    params = draw_view_params(seed, shape[1], shape[2], config, flip)
    return apply_view_params(frames, params, config)


def augment_views(views, config, seed):
    """Augments V views of one clip: independent parameters, one shared flip (SPEC §4.4).

    Args:
      views: uint8 or float [0, 1], `(V, T, H, W, 3)` with static V.
      config: `AugmentConfig`.
      seed: `(2,)` stateless seed for the clip.

    Returns:
      float32 `(V, T, S, S, 3)`, normalised.
    """
    num_views = views.shape[0]
    if num_views is None:
        raise ValueError(f"augment_views needs a static number of views, got shape {views.shape}")
    seeds = tf.random.experimental.stateless_split(seed, num_views + 1)
    flip = draw_flip(seeds[0], config)
    return tf.stack([augment_view(views[v], config, seeds[v + 1], flip) for v in range(num_views)])
