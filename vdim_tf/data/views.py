"""The view generator G (SPEC §4, §6): which frames of a video each view is made of.

Everything here works on frame *indices*, so the pipeline can gather the JPEG strings of the
sampled frames and decode only those (DMVR's sample-before-decode order).

A window of `window_length` consecutive frames is drawn from the video; view `v` takes
`final_length` frames from it, starting `offset` frames after the window start and stepping
`factor` frames at a time (temporal downsampling). A video shorter than the window repeats its
last frame.

    config = ViewConfig.two_views(final_length=32, offset2=0, factor2=2)
    indices = sample_view_indices(num_frames, config, seed)   # int32 (2, 32)
    # indices[0] = s + [0, 1, ..., 31], indices[1] = s + [0, 2, ..., 62]
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """One view: where it starts in the window, how many frames it spans, how it is downsampled.

    Attributes:
      offset: frames from the window start to the view's first frame (paper §4: 0 or 32 for the
        second pretraining view; multiples of the view span for fine-tuning views).
      factor: temporal downsampling factor, keep every `factor`-th frame (paper §4: 1 to 4; best
        pretraining value 2 for the second view).
      length: frames the view spans before downsampling; `None` means
        `final_length * factor`, the paper's choice (a view of 64 frames downsampled by 2).
    """

    offset: int = 0
    factor: int = 1
    length: int | None = None


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """How the views of one training example are cut from a video (SPEC §4, general form).

    Defaults are the paper's best pretraining setting (§4 ablations): view 1 is the first 32
    frames, view 2 starts at offset 0 and spans 64 frames downsampled by 2, so both are 32 frames.

    Attributes:
      final_length: frames per view after downsampling, equal for all views (paper §4: 32; the
        CPU preset uses 16).
      views: one `ViewSpec` per view.

    Raises:
      ValueError: at construction, when a view cannot reach `final_length` frames or a value is
        out of range (see `validate`).
    """

    final_length: int = 32
    views: tuple[ViewSpec, ...] = (ViewSpec(offset=0, factor=1), ViewSpec(offset=0, factor=2))

    def __post_init__(self):
        object.__setattr__(self, "views", tuple(self.views))
        self.validate()

    @classmethod
    def two_views(cls, final_length=32, offset2=0, factor1=1, factor2=2):
        """The pretraining pair of paper §3.1: view 1 at the window start, view 2 at `offset2`.

        The paper tried `offset2` in {0, 32} (0 slightly better) and `factor2` in {1, 2, 3}
        (2 best with difference features). Each view spans `final_length * factor` frames.
        """
        return cls(
            final_length=final_length,
            views=(ViewSpec(offset=0, factor=factor1), ViewSpec(offset=offset2, factor=factor2)),
        )

    @classmethod
    def clip_views(cls, final_length=32, factor=1, num_views=4):
        """K consecutive views for fine-tuning and evaluation (SPEC §6, paper Fig. 3 right).

        View k starts at `k * final_length * factor` (offsets 0, 32, 64, 96 for the paper's
        fine-tuning default: factor 1, K = 4) and spans `final_length * factor` frames.
        """
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be an int >= 1 (paper: 1 to 4), got {num_views!r}")
        span = final_length * factor
        return cls(
            final_length=final_length,
            views=tuple(ViewSpec(offset=k * span, factor=factor) for k in range(num_views)),
        )

    def validate(self):
        """Raises ValueError naming the offending values if this config cannot produce its views."""
        if not isinstance(self.final_length, int) or self.final_length < 1:
            raise ValueError(f"final_length must be an int >= 1, got {self.final_length!r}")
        if not self.views:
            raise ValueError("ViewConfig needs at least one view, got views=()")
        for i, view in enumerate(self.views):
            where = f"view {i + 1} ({view})"
            if not isinstance(view.factor, int) or view.factor < 1:
                raise ValueError(f"{where}: factor must be an int >= 1, got {view.factor!r}")
            if not isinstance(view.offset, int) or view.offset < 0:
                raise ValueError(f"{where}: offset must be an int >= 0, got {view.offset!r}")
            if view.length is not None:
                needed = (self.final_length - 1) * view.factor + 1
                if not isinstance(view.length, int) or view.length < needed:
                    raise ValueError(
                        f"{where}: length {view.length!r} cannot give final_length="
                        f"{self.final_length} frames at factor {view.factor}; it needs length >= "
                        f"(final_length - 1) * factor + 1 = {needed}"
                    )

    @property
    def num_views(self):
        return len(self.views)

    @property
    def lengths(self):
        """Frames each view spans before downsampling."""
        return tuple(
            v.length if v.length is not None else self.final_length * v.factor for v in self.views
        )

    @property
    def window_length(self):
        """Frames of the window all views are cut from: max(offset + length)."""
        return max(v.offset + n for v, n in zip(self.views, self.lengths))


def sample_window_start(num_frames, window_length, seed):
    """Uniform window start in [0, max(num_frames - window_length, 0)], stride 1 (SPEC §4.1).

    Args:
      num_frames: int32 scalar, frames in the video.
      window_length: int, frames in the window.
      seed: int32/int64 `(2,)` stateless seed.

    Returns:
      int32 scalar.
    """
    num_frames = tf.cast(num_frames, tf.int32)
    max_start = tf.maximum(num_frames - window_length, 0)
    return tf.random.stateless_uniform(
        [], seed=seed, minval=0, maxval=max_start + 1, dtype=tf.int32
    )


def view_indices(start, num_frames, config):
    """Frame indices of every view for a window starting at `start`.

    Indices past the end of the video are clamped to its last frame, which repeats it.

    Args:
      start: int32 scalar, first frame of the window.
      num_frames: int32 scalar, frames in the video (>= 1).
      config: `ViewConfig`.

    Returns:
      int32 `(V, final_length)`: row v is `start + offset_v + factor_v * [0, 1, ...]`.
    """
    offsets = tf.constant([[v.offset] for v in config.views], tf.int32)
    factors = tf.constant([[v.factor] for v in config.views], tf.int32)
    steps = tf.range(config.final_length, dtype=tf.int32)[tf.newaxis, :]
    indices = tf.cast(start, tf.int32) + offsets + factors * steps
    return tf.minimum(indices, tf.cast(num_frames, tf.int32) - 1)


def sample_view_indices(num_frames, config, seed):
    """Random window start (SPEC §4.1), then `view_indices`. Returns int32 `(V, final_length)`."""
    start = sample_window_start(num_frames, config.window_length, seed)
    return view_indices(start, num_frames, config)


def window_starts(num_frames, window_length, stride=None):
    """Starts of the windows that cover a whole video, for test-time averaging (SPEC §6).

    Windows start at 0, stride, 2 * stride, ... while they fit in the video; if they leave frames
    at the end uncovered, one last window is aligned to the end of the video. A video shorter
    than one window gets a single window at 0 (its last frame is then repeated).

    Args:
      num_frames: int32 scalar.
      window_length: int, frames per window.
      stride: int, frames between window starts; `None` means `window_length` (non-overlapping).
        A stride above `window_length` skips frames between windows.

    Returns:
      int32 `(N,)`, N >= 1, increasing.
    """
    stride = window_length if stride is None else stride
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    last = tf.maximum(tf.cast(num_frames, tf.int32) - window_length, 0)
    starts = tf.range(0, last + 1, stride, dtype=tf.int32)
    needs_tail = starts[-1] < last
    return tf.cond(needs_tail, lambda: tf.concat([starts, [last]], 0), lambda: starts)


def gather_frames(frames, indices):
    """Picks the encoded frames at `indices` (any shape) from string `(num_frames,)`."""
    return tf.gather(frames, indices)
