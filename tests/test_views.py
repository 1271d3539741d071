"""The view generator G: which frames each view takes (SPEC §4, §6)."""

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data.views import (
    ViewConfig,
    ViewSpec,
    sample_view_indices,
    view_indices,
    window_starts,
)


def test_defaults_are_the_papers_best_pretraining_views():
    config = ViewConfig()
    assert config.final_length == 32
    assert [(v.offset, v.factor) for v in config.views] == [(0, 1), (0, 2)]
    assert config.lengths == (32, 64)
    assert config.window_length == 64


def test_downsampling_and_offsets_give_expected_frame_indices():
    config = ViewConfig.two_views(final_length=4, offset2=4, factor1=1, factor2=3)
    indices = view_indices(10, 100, config).numpy()
    np.testing.assert_array_equal(indices[0], [10, 11, 12, 13])
    np.testing.assert_array_equal(indices[1], [14, 17, 20, 23])


def test_window_length_is_the_furthest_view_end():
    config = ViewConfig(final_length=4, views=(ViewSpec(offset=0, factor=1), ViewSpec(offset=8, factor=2, length=9)))
    assert config.lengths == (4, 9)
    assert config.window_length == 17


def test_short_video_repeats_last_frame():
    config = ViewConfig.two_views(final_length=4, offset2=0, factor2=2)
    indices = sample_view_indices(tf.constant(5), config, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(indices[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(indices[1], [0, 2, 4, 4])


def test_window_start_is_uniform_over_every_valid_start():
    config = ViewConfig.two_views(final_length=4, offset2=0, factor2=2)  # window of 8 frames
    starts = [
        int(sample_view_indices(tf.constant(12), config, tf.constant([seed, 0]))[0, 0]) for seed in range(200)
    ]
    assert set(starts) == {0, 1, 2, 3, 4}


def test_same_seed_gives_same_indices():
    config = ViewConfig()
    first = sample_view_indices(tf.constant(300), config, tf.constant([7, 8]))
    second = sample_view_indices(tf.constant(300), config, tf.constant([7, 8]))
    np.testing.assert_array_equal(first, second)


def test_view_too_short_for_final_length_raises_naming_values():
    with pytest.raises(ValueError, match=r"length 10 .*final_length=8.*factor 2.*>= .*15"):
        ViewConfig(final_length=8, views=(ViewSpec(offset=0, factor=2, length=10),))


def test_negative_offset_raises_naming_value():
    with pytest.raises(ValueError, match="offset must be an int >= 0, got -1"):
        ViewConfig.two_views(offset2=-1)


def test_zero_factor_raises_naming_value():
    with pytest.raises(ValueError, match="factor must be an int >= 1, got 0"):
        ViewConfig.two_views(factor2=0)


def test_clip_views_start_at_multiples_of_the_view_span():
    config = ViewConfig.clip_views(final_length=32, factor=1, num_views=4)
    assert [v.offset for v in config.views] == [0, 32, 64, 96]
    config = ViewConfig.clip_views(final_length=16, factor=2, num_views=2)
    assert [v.offset for v in config.views] == [0, 32]
    assert config.window_length == 64


def test_clip_views_rejects_zero_views():
    with pytest.raises(ValueError, match="num_views must be an int >= 1.*got 0"):
        ViewConfig.clip_views(num_views=0)


@pytest.mark.parametrize("num_frames,stride", [(5, None), (16, None), (17, None), (50, None), (50, 3)])
def test_window_starts_cover_the_whole_video(num_frames, stride):
    window = 8
    starts = window_starts(tf.constant(num_frames), window, stride).numpy()
    assert starts[0] == 0
    assert np.all(np.diff(starts) > 0)
    covered = {min(s + i, num_frames - 1) for s in starts for i in range(window)}
    assert covered == set(range(num_frames))
    assert starts[-1] == max(num_frames - window, 0)


def test_non_overlapping_windows_by_default():
    np.testing.assert_array_equal(window_starts(tf.constant(32), 8).numpy(), [0, 8, 16, 24])
