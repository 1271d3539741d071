"""The VDIM encoder Ψ: R(2+1)D residual blocks built from a table of block specs (SPEC §1).

The architecture is data. `PRESETS["paper"]` is the paper's Table 1, row for row; `PRESETS["cpu"]`
keeps the same local→global structure at 16×64×64 input with narrower widths, for tests and demos
on a laptop.
"""

import dataclasses

import keras
from keras import layers

from vdim_tf.models.blocks import ConvBlock, ResBlock, _bn


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One row of the encoder table.

    Attributes:
      kind: "conv" (ConvBlock, Fig. 2a) or "res" (ResBlock, Fig. 2b).
      width: output channels.
      kernel, stride: spatial kernel and stride.
      t_kernel, t_stride: temporal kernel and stride.
      padding: zero padding on every side before the block ("conv" only; 0 = valid).
      num_1x1: residual 1×1×1 blocks after the first ("res" only).
      batch_norm: batch norm inside the block; None means "use the encoder's `block_batch_norm`"
        (the paper's ConvBlocks say False explicitly).
    """

    kind: str
    width: int
    kernel: int
    stride: int
    t_kernel: int
    t_stride: int
    padding: int = 0
    num_1x1: int = 0
    batch_norm: bool | None = None

    def output_size(self, size, temporal):
        k, s = (self.t_kernel, self.t_stride) if temporal else (self.kernel, self.stride)
        return (size + 2 * self.padding - k) // s + 1


@dataclasses.dataclass(frozen=True)
class EncoderPreset:
    """A named encoder: its block table, the input it is meant for, and its feature layers.

    Attributes:
      blocks: the table, block 1 first.
      frames, size: the clip length and frame size the preset is designed for (T, H = W).
      local_layers: block indices whose features are local (paper: 5, 6).
      global_layer: block index of the global 1×1×1 feature (paper: 8).
    """

    blocks: tuple
    frames: int
    size: int
    local_layers: tuple
    global_layer: int


# Paper Table 1. Strides follow AMDIM's rule (even kernel strides 2, odd strides 1) except block 1,
# whose stride 2 and padding 2 the table gives explicitly.
PAPER_BLOCKS = (
    BlockSpec("conv", 64, 5, 2, 5, 2, padding=2, batch_norm=False),
    BlockSpec("conv", 64, 3, 1, 3, 1, batch_norm=False),
    BlockSpec("res", 128, 4, 2, 1, 1, num_1x1=3),
    BlockSpec("res", 256, 4, 2, 1, 1, num_1x1=3),
    BlockSpec("res", 512, 2, 2, 2, 2, num_1x1=3),
    BlockSpec("res", 512, 3, 1, 3, 1, num_1x1=3),
    BlockSpec("res", 512, 3, 1, 3, 1, num_1x1=3),
    BlockSpec("res", 512, 3, 1, 3, 1, num_1x1=0),
)

# 16×64×64 input: 8×32×32 → 6×30×30 → 6×14×14 → 6×6×6 → 3×3×3 (local, 27 locations) → 1×1×1.
CPU_BLOCKS = (
    BlockSpec("conv", 16, 5, 2, 5, 2, padding=2, batch_norm=False),
    BlockSpec("conv", 16, 3, 1, 3, 1, batch_norm=False),
    BlockSpec("res", 32, 4, 2, 1, 1, num_1x1=1),
    BlockSpec("res", 64, 4, 2, 1, 1, num_1x1=1),
    BlockSpec("res", 128, 2, 2, 2, 2, num_1x1=1),
    BlockSpec("res", 128, 3, 1, 3, 1, num_1x1=0),
)

PRESETS = {
    "paper": EncoderPreset(PAPER_BLOCKS, frames=32, size=128, local_layers=(5, 6), global_layer=8),
    "cpu": EncoderPreset(CPU_BLOCKS, frames=16, size=64, local_layers=(4, 5), global_layer=6),
}


def get_preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name]


def feature_shapes(blocks, frames, size):
    """Output `(T', H', W', C)` of every block for a `(frames, size, size)` input, by block index."""
    shapes = {}
    t, h = frames, size
    for index, spec in enumerate(blocks, start=1):
        t, h = spec.output_size(t, temporal=True), spec.output_size(h, temporal=False)
        shapes[index] = (t, h, h, spec.width)
    return shapes


def _smallest_input(blocks, temporal, output):
    """Smallest input extent whose last block has at least `output` steps along that axis.

    A block's output never shrinks as its input grows, so this bounds a contiguous range.
    """
    n = 1
    while True:
        m = n
        for spec in blocks:
            m = spec.output_size(m, temporal)
        if m >= output:
            return n
        n += 1


def minimum_input(blocks):
    """Smallest (frames, size) for which every block's output has at least one location."""
    return _smallest_input(blocks, True, 1), _smallest_input(blocks, False, 1)


def global_input_range(blocks):
    """Inputs for which the last (global) block's output is 1×1×1, as in Table 1.

    Returns:
      `((min_frames, max_frames), (min_size, max_size))`, both ranges inclusive; for the paper's
      table `((31, 34), (127, 142))`.
    """
    return tuple(
        (_smallest_input(blocks, temporal, 1), _smallest_input(blocks, temporal, 2) - 1)
        for temporal in (True, False)
    )


def check_global_input(preset_name, frames, size):
    """Raises ValueError unless `frames`×`size`×`size` views give the preset's global layer 1×1×1.

    The global layer is one feature for the whole view: the evaluated model φ_g∘Ψ and the
    classifier take exactly one vector per view, and a larger input would silently make it a
    grid of local features. Inputs below the range give some block no output at all.
    """
    preset = get_preset(preset_name)
    (min_frames, max_frames), (min_size, max_size) = global_input_range(preset.blocks)
    if min_frames <= frames <= max_frames and min_size <= size <= max_size:
        return
    works = (f"the {preset_name!r} encoder takes {min_frames}-{max_frames} frames of {min_size}-{max_size} px "
             f"(designed for {preset.frames}×{preset.size}×{preset.size})")
    if frames < min_frames or size < min_size:
        raise ValueError(f"views of {frames} frames at {size} px are too small: {works}")
    t, h, w, _ = feature_shapes(preset.blocks, frames, size)[len(preset.blocks)]
    raise ValueError(
        f"views of {frames} frames at {size} px make the global layer {preset.global_layer} {t}×{h}×{w}, "
        f"not 1×1×1: {works}"
    )


@keras.saving.register_keras_serializable(package="vdim_tf")
class Encoder(layers.Layer):
    """The encoder Ψ: a stack of R(2+1)D blocks that returns every block's output.

    Args:
      preset: name of a preset in `PRESETS` ("paper" is Table 1; "cpu" the small one).
      block_batch_norm: batch norm inside residual blocks (AMDIM's default: off).
      output_batch_norm: batch norm on the encoder's final output (paper §4: "batch norm is used on
        the output of the encoder").

    Call arguments:
      x: float `(B, T, H, W, 3)`, normalised frames.
      training: for batch norm.

    Returns:
      dict mapping block index (1-based int) to that block's output `(B, T', H', W', C)`.

    Example:
    >>> enc = Encoder(preset="cpu")
    >>> {k: v.shape for k, v in enc(keras.random.normal((2, 16, 64, 64, 3))).items()}[6]
    (2, 1, 1, 1, 128)
    """

    def __init__(self, preset="paper", block_batch_norm=False, output_batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        self.block_batch_norm = block_batch_norm
        self.output_batch_norm = output_batch_norm
        self.spec = get_preset(preset)
        self.min_frames, self.min_size = minimum_input(self.spec.blocks)
        self.blocks = []
        for index, spec in enumerate(self.spec.blocks, start=1):
            bn = block_batch_norm if spec.batch_norm is None else spec.batch_norm
            args = dict(
                width=spec.width, kernel=spec.kernel, stride=spec.stride, t_kernel=spec.t_kernel,
                t_stride=spec.t_stride, batch_norm=bn, name=f"block{index}",
            )
            if spec.kind == "conv":
                block = ConvBlock(padding=spec.padding, **args)
            elif spec.kind == "res":
                block = ResBlock(num_1x1=spec.num_1x1, **args)
            else:
                raise ValueError(f"block {index}: kind must be 'conv' or 'res', got {spec.kind!r}")
            # One attribute per block: tf.train.Checkpoint follows attributes, not Keras 3's
            # tracked lists, and every variable must be reachable for checkpoints to restore it.
            setattr(self, f"block{index}", block)
            self.blocks.append(block)
        self.output_bn = _bn("output_bn") if output_batch_norm else None

    @property
    def num_blocks(self):
        return len(self.blocks)

    def check_input_shape(self, shape):
        """Raises ValueError when a `(B, T, H, W, C)` shape is too small for this encoder."""
        if len(shape) != 5 or shape[-1] != 3:
            raise ValueError(f"Encoder expects float video (B, T, H, W, 3); got shape {tuple(shape)}")
        t, h, w = shape[1], shape[2], shape[3]
        if (t is not None and t < self.min_frames) or any(s is not None and s < self.min_size for s in (h, w)):
            raise ValueError(
                f"input (T, H, W) = ({t}, {h}, {w}) is too small for the {self.preset!r} encoder: it needs "
                f"at least {self.min_frames} frames of {self.min_size}×{self.min_size} pixels "
                f"(designed for {self.spec.frames}×{self.spec.size}×{self.spec.size})"
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def call(self, x, training=None):
        self.check_input_shape(tuple(x.shape))
        outputs = {}
        for index, block in enumerate(self.blocks, start=1):
            x = block(x, training=training)
            if index == len(self.blocks) and self.output_bn is not None:
                x = self.output_bn(x, training=training)
            outputs[index] = x
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            preset=self.preset, block_batch_norm=self.block_batch_norm,
            output_batch_norm=self.output_batch_norm,
        )
        return config
