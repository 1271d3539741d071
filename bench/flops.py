"""FLOPs of the encoder counted from its block table: no TensorFlow and no JAX, so that both
bench/train_step.py (TensorFlow) and bench/gpu.py (Keras on JAX) count the same way."""

from vdim_tf.models.encoder import PRESETS, feature_shapes


def conv_flops_forward(preset_name, batch):
    """Multiply-adds ×2 of every convolution of one encoder pass over `batch` clips."""
    preset = PRESETS[preset_name]
    shapes = feature_shapes(preset.blocks, preset.frames, preset.size)
    flops = 0
    t_in, c_in = preset.frames, 3
    for index, spec in enumerate(preset.blocks, start=1):
        t_out, s_out, _, c_out = shapes[index]
        # Spatial conv runs on every input frame, at the output's spatial grid.
        flops += 2 * spec.kernel**2 * c_in * c_out * t_in * s_out**2
        flops += 2 * spec.t_kernel * c_out * c_out * t_out * s_out**2
        flops += spec.num_1x1 * 2 * (2 * c_out * c_out * t_out * s_out**2)
        t_in, c_in = t_out, c_out
    return flops * batch


def train_step_flops(preset_name, batch):
    """Convolution FLOPs of one pretraining step: two views, forward + backward (2× forward)."""
    return 3 * 2 * conv_flops_forward(preset_name, batch)
