"""Block 1 of the CPU preset, as shipped against the same arithmetic laid out differently.

Block 1 (a 1×5×5 spatial conv with stride 2 on the 3 colour channels, then a 5×1×1 temporal conv
with stride 2 on 16 channels, zero padding 2 on the axes each convolves) is about a third of the
CPU preset's train step. Each rewrite below computes the same function with the same weights, so
it could replace the shipped layers without changing a checkpoint or a result:

  - spatial, space-to-depth: the padded frames folded 2×2 into 12 channels, then a 3×3 stride-1
    conv whose kernel is the 5×5 kernel zero-padded to 6×6 and folded alike (the TPU ResNet stem's
    trick: more channels per multiply, no stride);
  - spatial, 2-D: the frames of every clip as one batch of images, `tf.nn.conv2d`;
  - temporal, 2-D: time × (height·width) as a 2-D image, a 5×1 conv with stride (2, 1);
  - temporal, space-to-depth in time: frame pairs folded into 32 channels, a 3×1×1 stride-1 conv.

The shipped layout is the CPU preset `Encoder`'s own block 1 (its `ConvBlock` layers). The script
checks every rewrite's output against it (largest absolute difference) and times forward and
backward as training runs them (the spatial conv's gradients for its kernel and bias, since the
input video needs none; the temporal conv's for its kernel, bias and input), on the two views of a
batch, interleaving the layouts over rounds so that a shared machine's drift hits them alike; it
prints the median.

    python bench/block1_layouts.py [--batch 16] [--rounds 3] [--repeats 10]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from vdim_tf.models.encoder import PRESETS, Encoder

SPEC = PRESETS["cpu"].blocks[0]


def spatial_shipped(block, x):
    """The encoder's own layers: `ConvBlock`'s spatial padding and conv."""
    return block.spatial(block.pad_spatial(x))


def spatial_2d(block, x):
    kernel, bias = block.spatial.kernel, block.spatial.bias
    padded = block.pad_spatial(x)
    b, t, h, w, c = padded.shape
    out = tf.nn.conv2d(tf.reshape(padded, [b * t, h, w, c]), kernel[0], SPEC.stride, "VALID") + bias
    return tf.reshape(out, [b, t, *out.shape[1:]])


def spatial_space_to_depth(block, x):
    kernel, bias = block.spatial.kernel, block.spatial.bias
    padded = block.pad_spatial(x)
    b, t, h, w, c = padded.shape
    folded = tf.nn.space_to_depth(tf.reshape(padded, [b * t, h, w, c]), 2)  # channels (dy, dx, c)
    k = SPEC.kernel + 1  # 6: the 5×5 kernel's cover at stride 2, one zero row and column
    wide = tf.pad(kernel[0], [[0, 1], [0, 1], [0, 0], [0, 0]])
    wide = tf.reshape(wide, [k // 2, 2, k // 2, 2, c, -1])  # (ky, dy, kx, dx, c, out)
    wide = tf.reshape(tf.transpose(wide, [0, 2, 1, 3, 4, 5]), [k // 2, k // 2, 4 * c, -1])
    out = tf.nn.conv2d(folded, wide, 1, "VALID") + bias
    return tf.reshape(out, [b, t, *out.shape[1:]])


def temporal_shipped(block, y):
    """The encoder's own layers: `ConvBlock`'s temporal padding and conv."""
    return block.temporal(block.pad_temporal(y))


def temporal_2d(block, y):
    kernel, bias = block.temporal.kernel, block.temporal.bias
    padded = block.pad_temporal(y)
    b, t, h, w, c = padded.shape
    out = tf.nn.conv2d(tf.reshape(padded, [b, t, h * w, c]), kernel[:, 0], [1, SPEC.t_stride, 1, 1], "VALID")
    return tf.reshape(out + bias, [b, -1, h, w, out.shape[-1]])


def temporal_space_to_depth(block, y):
    kernel, bias = block.temporal.kernel, block.temporal.bias
    padded = block.pad_temporal(y)
    b, t, h, w, c = padded.shape
    pairs = tf.reshape(tf.transpose(tf.reshape(padded, [b, t // 2, 2, h, w, c]), [0, 1, 3, 4, 2, 5]),
                       [b, t // 2, h, w, 2 * c])  # channels (dt, c)
    k = SPEC.t_kernel + 1
    wide = tf.pad(kernel, [[0, 1], [0, 0], [0, 0], [0, 0], [0, 0]])
    wide = tf.reshape(tf.transpose(tf.reshape(wide, [k // 2, 2, 1, 1, c, -1]), [0, 2, 3, 1, 4, 5]),
                      [k // 2, 1, 1, 2 * c, -1])
    return tf.nn.conv3d(pairs, wide, [1, 1, 1, 1, 1], "VALID") + bias


SPATIAL = {"shipped": spatial_shipped, "2-D": spatial_2d, "space-to-depth": spatial_space_to_depth}
TEMPORAL = {"shipped": temporal_shipped, "2-D": temporal_2d, "space-to-depth in time": temporal_space_to_depth}


def inputs(clips, seed=0):
    """Block 1 of the CPU preset's `Encoder`, with random weights and biases, and random video of
    its input shape for `clips` clips (two views per example)."""
    preset = PRESETS["cpu"]
    g = tf.random.Generator.from_seed(seed)
    x = g.uniform((clips, preset.frames, preset.size, preset.size, 3))
    block = Encoder(preset="cpu").blocks[0]
    block(x)
    for variable in block.trainable_variables:  # biases start at 0: random ones test them too
        variable.assign(g.normal(variable.shape) * 0.1)
    return block, x


def max_differences(block, x):
    """Largest |layout - shipped| of every layout's output, on the same block and input."""
    out = {}
    ref = spatial_shipped(block, x)
    for name, f in SPATIAL.items():
        out[f"spatial, {name}"] = float(tf.reduce_max(tf.abs(f(block, x) - ref)))
    y = tf.nn.relu(ref)
    ref_t = temporal_shipped(block, y)
    for name, f in TEMPORAL.items():
        out[f"temporal, {name}"] = float(tf.reduce_max(tf.abs(f(block, y) - ref_t)))
    return out


def _train_step(block, layout, inputs, variables):
    """Forward + backward of one layout as training runs it: a tf.function returning the gradients."""

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = layout(block, inputs)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, variables)

    return step


def steps(block, x):
    """Every layout's `_train_step`: the spatial conv's gradients for its kernel and bias (the input
    video needs none), the temporal conv's for its kernel, bias and input."""
    y = tf.Variable(tf.nn.relu(spatial_shipped(block, x)))
    spatial_vars = [block.spatial.kernel, block.spatial.bias]
    temporal_vars = [block.temporal.kernel, block.temporal.bias, y]
    fns = {f"spatial, {name}": _train_step(block, f, x, spatial_vars) for name, f in SPATIAL.items()}
    fns.update({f"temporal, {name}": _train_step(block, f, y, temporal_vars) for name, f in TEMPORAL.items()})
    return fns


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=_positive, default=16,
                        help="examples per step, two views each (default 16: the CPU recipe's batch)")
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="interleaved rounds; the median is reported (default 3)")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed calls per layout per round (default 10)")
    args = parser.parse_args()
    block, x = inputs(2 * args.batch)
    diffs = max_differences(block, x)
    fns = steps(block, x)
    for fn in fns.values():
        fn()  # trace
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(args.repeats):
                grads = fn()
            grads[0].numpy()
            times[name].append((time.perf_counter() - start) / args.repeats * 1e3)
    print(f"block 1 of the cpu preset, batch {args.batch} (two views: {2 * args.batch} clips), "
          f"forward + backward, median of {args.rounds} rounds")
    print("| layout | max abs difference from shipped | ms per step |")
    print("|---|---|---|")
    for name in fns:
        print(f"| {name} | {diffs[name]:.1e} | {statistics.median(times[name]):.1f} |")


if __name__ == "__main__":
    main()
