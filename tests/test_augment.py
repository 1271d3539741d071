"""Clip-consistent augmentation (SPEC §4.4): one set of parameters per view, one flip per clip."""

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data.augment import (
    AugmentConfig,
    apply_view_params,
    augment_views,
    center_crop_resize,
    color_jitter,
    draw_view_params,
    eval_view,
    normalize,
)

T, H, W = 4, 48, 64


def _texture(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _identical_frames_clip(num_views=2):
    """(V, T, H, W, 3) uint8: every frame of every view is the same textured image."""
    return tf.constant(np.broadcast_to(_texture(), (num_views, T, H, W, 3)))


def _horizontal_ramp():
    """(1, T, H, W, 3) uint8 gray ramp, dark on the left: flipping it reverses the slope."""
    ramp = np.linspace(0, 255, W, dtype=np.float32).astype(np.uint8)
    return tf.constant(np.broadcast_to(ramp[None, :, None], (1, T, H, W, 3)).copy())


ALL_ON = dict(output_size=32, rotation_probability=1.0, jitter_probability=1.0, grayscale_probability=0.0)


@pytest.mark.parametrize("color_mode", ["jitter", "lab"])
def test_every_frame_of_a_view_gets_the_same_augmentation(color_mode):
    config = AugmentConfig(color_mode=color_mode, **ALL_ON)
    for seed in range(5):
        out = augment_views(_identical_frames_clip(), config, tf.constant([seed, 1])).numpy()
        for view in out:
            np.testing.assert_allclose(view, np.broadcast_to(view[0], view.shape), atol=1e-5)


def test_geometry_of_each_frame_matches_applying_the_drawn_parameters_alone():
    config = AugmentConfig(output_size=32, rotation_probability=1.0, jitter_probability=0.0, grayscale_probability=0.0)
    frames = tf.constant(np.stack([_texture(t) for t in range(T)]))
    params = draw_view_params(tf.constant([3, 4]), H, W, config, flip=tf.constant(True))
    clip = apply_view_params(frames, params, config).numpy()
    for t in range(T):
        alone = apply_view_params(frames[t : t + 1], params, config).numpy()
        np.testing.assert_allclose(clip[t], alone[0], atol=1e-5)


def test_two_views_get_different_parameters():
    config = AugmentConfig(**ALL_ON)
    out = augment_views(_identical_frames_clip(), config, tf.constant([0, 1])).numpy()
    assert np.abs(out[0] - out[1]).mean() > 0.05


def test_flip_is_shared_by_all_views_of_a_clip():
    config = AugmentConfig(output_size=32, jitter_probability=0.0, grayscale_probability=0.0)
    clip = tf.concat([_horizontal_ramp()] * 3, axis=0)
    flipped = []
    for seed in range(12):
        out = augment_views(clip, config, tf.constant([seed, 5])).numpy()
        slopes = out[:, :, :, -1].mean(axis=(1, 2, 3)) - out[:, :, :, 0].mean(axis=(1, 2, 3))
        assert np.all(slopes > 0) or np.all(slopes < 0), slopes
        flipped.append(bool(slopes[0] < 0))
    assert any(flipped) and not all(flipped)


def test_lab_dropout_zeroes_exactly_one_channel_for_the_whole_view():
    config = AugmentConfig(color_mode="lab", output_size=16)
    dropped = set()
    for seed in range(10):
        out = augment_views(_identical_frames_clip(num_views=2), config, tf.constant([seed, 9])).numpy()
        for view in out:
            zero = [c for c in range(3) if np.all(view[..., c] == 0)]
            assert len(zero) == 1
            dropped.add(zero[0])
    assert dropped == {0, 1, 2}


def test_grayscale_makes_the_channels_equal():
    config = AugmentConfig(output_size=16, jitter_probability=0.0, grayscale_probability=1.0)
    out = augment_views(_identical_frames_clip(1), config, tf.constant([1, 1])).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)


def test_same_seed_reproduces_the_augmentation():
    config = AugmentConfig(**ALL_ON)
    first = augment_views(_identical_frames_clip(), config, tf.constant([4, 2]))
    second = augment_views(_identical_frames_clip(), config, tf.constant([4, 2]))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("color_mode", ["jitter", "lab"])
def test_uint8_frames_augment_as_the_same_frames_in_float(color_mode):
    # uint8 crops are resized before they are scaled to [0, 1]; bilinear resizing is linear, so the
    # result must be that of the float frames (the scaling dropped or applied twice would not be).
    clip = _identical_frames_clip()
    config = AugmentConfig(**ALL_ON, color_mode=color_mode)
    from_uint8 = augment_views(clip, config, tf.constant([3, 1]))
    from_float = augment_views(tf.cast(clip, tf.float32) / 255.0, config, tf.constant([3, 1]))
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)


def test_outputs_are_normalised_float32_of_the_configured_size():
    out = augment_views(_identical_frames_clip(), AugmentConfig(**ALL_ON), tf.constant([0, 0]))
    assert out.shape == (2, T, 32, 32, 3) and out.dtype == tf.float32
    assert -1.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


def test_normalize_maps_rgb_unit_range_to_minus_one_one():
    np.testing.assert_allclose(normalize(tf.constant([0.0, 0.5, 1.0])), [-1.0, 0.0, 1.0])


def test_normalize_lab_stays_within_minus_one_one():
    corners = tf.constant([[r, g, b] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)])
    lab = normalize(corners, "lab").numpy()
    assert np.all(np.abs(lab) <= 1.0)
    np.testing.assert_allclose(lab[0], [-1, 0, 0], atol=1e-3)  # black
    np.testing.assert_allclose(lab[-1], [1, 0, 0], atol=1e-3)  # white


def test_center_crop_resize_keeps_the_centre_square():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 20:60] = 255  # the centre 40x40 square is white, the sides black
    out = center_crop_resize(tf.constant(frame[None]), 16)
    assert out.shape == (1, 16, 16, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_center_crop_resize_accepts_batched_clips():
    out = center_crop_resize(tf.zeros((2, 3, 30, 20, 3), tf.uint8), 8)
    assert out.shape == (2, 3, 8, 8, 3)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("color_mode", "hsv", "color_mode must be one of .*got 'hsv'"),
        ("crop_scale", (0.5, 0.2), r"crop_scale .*got \(0.5, 0.2\)"),
        ("grayscale_probability", 1.5, "grayscale_probability must be in \\[0, 1\\], got 1.5"),
        ("hue", 0.7, "hue must be in \\[0, 0.5\\], got 0.7"),
    ],
)
def test_invalid_augment_config_raises_naming_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})


def test_rotation_turns_every_frame_counter_clockwise_by_the_drawn_angle():
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    config = AugmentConfig(
        output_size=32, crop_scale=(1.0, 1.0), crop_aspect_ratio=(1.0, 1.0), flip_probability=0.0,
        jitter_probability=0.0, grayscale_probability=0.0, rotation_probability=1.0,
    )
    params = draw_view_params(tf.constant([1, 1]), 32, 32, config, flip=tf.constant(False))
    params["angle"] = tf.constant(np.pi / 2, tf.float32)
    out = apply_view_params(tf.constant(frames), params, config).numpy()
    expected = normalize(np.rot90(frames, k=1, axes=(1, 2)) / 255.0).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def _hue_only(shift):
    return {
        "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": tf.constant(shift),
        "jitter_order": tf.constant([3, 0, 1, 2]),
    }


def test_hue_shift_turns_colours_but_keeps_grays_and_luma():
    colours = tf.constant([[[[0.6, 0.4, 0.3], [0.3, 0.5, 0.4], [0.5, 0.5, 0.5]]]])  # (1, 1, 3, 3)
    shifted = color_jitter(colours, _hue_only(0.1)).numpy()
    luma = np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(shifted @ luma, colours.numpy() @ luma, atol=1e-3)
    np.testing.assert_allclose(shifted[0, 0, 2], [0.5, 0.5, 0.5], atol=1e-4)
    assert np.abs(shifted[0, 0, :2] - colours.numpy()[0, 0, :2]).max() > 0.05
    np.testing.assert_allclose(color_jitter(colours, _hue_only(0.0)), colours, atol=1e-5)


def _lab_training_expectation(frames, size):
    """Mean of the training input over the three equally likely dropped Lab channels, with a crop of
    the whole (square) frame and no flip, so only the Lab dropout differs from evaluation."""
    config = AugmentConfig(color_mode="lab", output_size=size, crop_scale=(1.0, 1.0), crop_aspect_ratio=(1.0, 1.0),
                           flip_probability=0.0)
    params = draw_view_params(tf.constant([3, 1]), size, size, config, flip=False)
    drops = [apply_view_params(frames, {**params, "drop_channel": tf.constant(c)}, config) for c in range(3)]
    return np.mean([d.numpy() for d in drops], axis=0)


def test_lab_training_inputs_match_evaluation_inputs_in_expectation():
    # Evaluation (and export, below) feeds all three Lab channels unscaled; training drops one at
    # random. Averaged over the dropped channel, training must feed what evaluation feeds.
    size = 32
    frames = tf.constant(np.random.default_rng(4).integers(0, 256, (2, size, size, 3), dtype=np.uint8))
    evaluation = eval_view(frames, size, "lab").numpy()
    training = _lab_training_expectation(frames, size)
    assert np.abs(evaluation).mean(axis=(0, 1, 2)).min() > 0.05, "every channel carries signal"
    np.testing.assert_allclose(training.mean(axis=(0, 1, 2)), evaluation.mean(axis=(0, 1, 2)), atol=1e-4)
    np.testing.assert_allclose(training, evaluation, atol=1e-4)


def test_export_feeds_lab_inputs_as_evaluation_does():
    from vdim_tf import export

    class Encoder:
        embedding_dim = 4

        def embed(self, clips, training=False):
            return tf.zeros([tf.shape(clips)[0], 4])

    config = export.ServingConfig(kind=export.ENCODER, final_length=2, factor=1, num_views=1, size=32,
                                  color_space="lab")
    video = np.random.default_rng(5).integers(0, 256, (1, 2, 40, 48, 3), dtype=np.uint8)
    served = export.VideoServingModule(Encoder(), config)._frames(tf.constant(video)).numpy()
    np.testing.assert_allclose(served[0], eval_view(tf.constant(video[0]), 32, "lab").numpy(), atol=1e-6)
