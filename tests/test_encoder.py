"""Encoder Ψ: Table 1 sizes, the CPU preset's structure, locality, and input checks."""

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.models.encoder import PRESETS, Encoder, check_global_input, feature_shapes, global_input_range

TABLE_1 = {
    1: (16, 64, 64, 64),
    2: (14, 62, 62, 64),
    3: (14, 30, 30, 128),
    4: (14, 14, 14, 256),
    5: (7, 7, 7, 512),
    6: (5, 5, 5, 512),
    7: (3, 3, 3, 512),
    8: (1, 1, 1, 512),
}


def _randomise_zero_initialised(encoder, seed=0):
    """Fresh residual branches end in zero convs; give them weights so every path is exercised."""
    rng = np.random.default_rng(seed)
    for v in encoder.weights:
        if "kernel" in v.path and not np.any(v.numpy()):
            v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))


def test_paper_preset_reproduces_table_1_sizes():
    encoder = Encoder(preset="paper")
    outputs = encoder(tf.zeros((1, 32, 128, 128, 3)))
    assert sorted(outputs) == list(range(1, 9))
    assert {j: tuple(x.shape[1:]) for j, x in outputs.items()} == TABLE_1


def test_paper_preset_parameter_count_matches_spec_breakdown():
    encoder = Encoder(preset="paper")
    encoder(tf.zeros((1, 32, 128, 128, 3)))
    per_block = [b.count_params() for b in encoder.blocks]
    # SPEC §1: 0.025, 0.049, 0.246, 0.983, 2.62, 4.72, 4.72, 3.15 M (16.51M for Ψ).
    assert per_block == [25408, 49280, 245760, 983040, 2621440, 4718592, 4718592, 3145728]


def test_cpu_preset_keeps_local_to_global_structure():
    preset = PRESETS["cpu"]
    shapes = feature_shapes(preset.blocks, preset.frames, preset.size)
    for j in preset.local_layers:
        t, h, w, _ = shapes[j]
        assert min(t, h, w) >= 3, f"local layer {j} has only {shapes[j]} locations"
    assert shapes[preset.global_layer][:3] == (1, 1, 1)
    encoder = Encoder(preset="cpu")
    outputs = encoder(tf.zeros((2, preset.frames, preset.size, preset.size, 3)))
    assert {j: tuple(x.shape[1:]) for j, x in outputs.items()} == shapes


def test_layer5_features_are_local():
    """A paper-layer-5-like feature ignores input far outside its receptive field; the global one does not."""
    preset = PRESETS["cpu"]
    encoder = Encoder(preset="cpu")
    x = tf.random.stateless_normal((1, 16, 64, 64, 3), seed=(1, 2))
    encoder(x)
    _randomise_zero_initialised(encoder)
    local = max(preset.local_layers)
    perturbed = x.numpy()
    perturbed[:, :, 48:, 48:, :] += 5.0  # bottom-right corner, all frames
    before = encoder(x, training=False)
    after = encoder(tf.constant(perturbed), training=False)
    # The top-left location's receptive field (35 px) ends well before pixel 48.
    np.testing.assert_array_equal(before[local][:, :, 0, 0].numpy(), after[local][:, :, 0, 0].numpy())
    # The bottom-right location sees the change, and so does the global feature.
    assert np.abs(before[local][:, :, -1, -1] - after[local][:, :, -1, -1]).max() > 1e-3
    g = preset.global_layer
    assert np.abs(before[g] - after[g]).max() > 1e-3


def test_too_short_input_names_minimum():
    encoder = Encoder(preset="cpu")
    with pytest.raises(ValueError, match=r"at least 15 frames of 63×63"):
        encoder(tf.zeros((1, 8, 64, 64, 3)))
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        encoder(tf.zeros((1, 16, 64, 64)))


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="valid presets"):
        Encoder(preset="huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_global_input_range_is_exactly_the_inputs_with_a_1x1x1_global_layer(name):
    preset = PRESETS[name]
    (low_t, high_t), (low_s, high_s) = global_input_range(preset.blocks)
    for frames in range(1, 3 * preset.frames):
        t = feature_shapes(preset.blocks, frames, preset.size)[preset.global_layer][0]
        assert (t == 1) == (low_t <= frames <= high_t), (frames, t)
    for size in range(1, 3 * preset.size):
        h = feature_shapes(preset.blocks, preset.frames, size)[preset.global_layer][1]
        assert (h == 1) == (low_s <= size <= high_s), (size, h)
    assert low_t <= preset.frames <= high_t and low_s <= preset.size <= high_s


def test_input_larger_than_the_design_is_refused_with_the_sizes_that_work():
    with pytest.raises(ValueError, match=r"global layer 6 3×1×1, not 1×1×1.*15-18 frames of 63-78 px"):
        check_global_input("cpu", 24, 64)
    with pytest.raises(ValueError, match=r"global layer 8 1×3×3"):
        check_global_input("paper", 32, 160)
    with pytest.raises(ValueError, match=r"too small.*31-34 frames"):
        check_global_input("paper", 16, 128)
    check_global_input("paper", 32, 128)
