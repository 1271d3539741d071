"""The tf.data pipelines, on tiny records whose frame index is painted into the pixels."""

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data import pipeline
from vdim_tf.data.augment import AugmentConfig
from vdim_tf.data.records import make_sequence_example
from vdim_tf.data.views import ViewConfig

HEIGHT, WIDTH = 48, 64
# (frames, label) per video, in two files; 10 frames is shorter than every window used below.
VIDEOS = {"a.tfrecord": [(10, 0), (40, 1), (60, 2)], "b.tfrecord": [(33, 3)]}
LENGTH_OF_LABEL = {label: n for videos in VIDEOS.values() for n, label in videos}

# No colour change and a crop of the whole frame, so pixel values still tell the frame index.
IDENTITY = AugmentConfig(
    output_size=16, crop_scale=(1.0, 1.0), crop_aspect_ratio=(WIDTH / HEIGHT, WIDTH / HEIGHT),
    jitter_probability=0.0, grayscale_probability=0.0,
)


def _frame(index):
    """A uniform gray frame of value 4 * index: JPEG keeps it within +-1, so the index survives."""
    return tf.io.encode_jpeg(np.full((HEIGHT, WIDTH, 3), 4 * index, np.uint8)).numpy()


def _frame_indices(views):
    """Frame index painted in each frame of normalised views `(..., T, S, S, 3)` -> `(..., T)`."""
    values = (np.asarray(views).mean(axis=(-3, -2, -1)) + 1.0) / 2.0 * 255.0
    return np.round(values / 4.0).astype(int)


@pytest.fixture(scope="module")
def record_pattern(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    for name, videos in VIDEOS.items():
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for num_frames, label in videos:
                frames = [_frame(i) for i in range(num_frames)]
                example = make_sequence_example(frames, label, f"class{label}", f"video{label}.avi", 25.0)
                writer.write(example.SerializeToString())
    return str(folder / "*.tfrecord")


def test_pretrain_batches_have_static_shapes_and_types(record_pattern):
    views = ViewConfig.two_views(final_length=8, offset2=0, factor2=2)
    dataset = pipeline.pretrain_dataset(record_pattern, views, AugmentConfig(output_size=16), batch_size=3, seed=0)
    spec = dataset.element_spec
    assert set(spec) == {"view1", "view2", "label"}
    assert spec["view1"].shape == spec["view2"].shape == (3, 8, 16, 16, 3)
    assert spec["view1"].dtype == tf.float32 and spec["label"].dtype == tf.int64
    assert spec["label"].shape == (3,)
    batch = next(iter(dataset))
    assert -1.0 <= float(tf.reduce_min(batch["view1"])) and float(tf.reduce_max(batch["view1"])) <= 1.0


def test_pretrain_views_take_the_configured_frames_of_one_window(record_pattern):
    views = ViewConfig.two_views(final_length=8, offset2=4, factor2=2)  # window of 20 frames
    dataset = pipeline.pretrain_dataset(record_pattern, views, IDENTITY, batch_size=4, seed=1)
    steps = np.arange(8)
    for batch in dataset.take(5):
        first, second = _frame_indices(batch["view1"]), _frame_indices(batch["view2"])
        for label, view1, view2 in zip(batch["label"].numpy(), first, second):
            last = LENGTH_OF_LABEL[label] - 1
            start = view1[0]
            assert 0 <= start <= max(last + 1 - 20, 0)
            np.testing.assert_array_equal(view1, np.minimum(start + steps, last))
            np.testing.assert_array_equal(view2, np.minimum(start + 4 + 2 * steps, last))


def test_short_video_repeats_last_frame(record_pattern):
    views = ViewConfig.clip_views(final_length=8, factor=1, num_views=2)
    dataset = pipeline.finetune_dataset(record_pattern, views, IDENTITY, batch_size=4, training=False)
    batch = next(iter(dataset))
    short = list(batch["label"].numpy()).index(0)  # the 10-frame video
    expected = [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 9, 9, 9, 9, 9, 9]]
    np.testing.assert_array_equal(_frame_indices(batch["views"][short]), expected)


def test_sampling_keeps_only_the_sampled_frames_for_decoding(record_pattern):
    serialized = next(iter(tf.data.TFRecordDataset(record_pattern.replace("*", "a")).skip(2)))  # 60 frames
    example = pipeline.parse(serialized)
    views = ViewConfig.two_views(final_length=8, offset2=0, factor2=2)
    sampled = pipeline.sample_random_window(example, views, tf.constant([0, 0]))
    # view 1: 8 frames, view 2: 8 frames at stride 2 of which 4 are view 1's -> 12 distinct frames.
    assert sampled["frames"].shape == (12,)
    assert sampled["positions"].shape == (2, 8)
    decoded = pipeline.decode(sampled)
    assert decoded["views"].shape == (2, 8, HEIGHT, WIDTH, 3)


def test_pretrain_views_are_augmented_independently(record_pattern):
    views = ViewConfig.two_views(final_length=4, offset2=0, factor2=1)  # both views: the same frames
    dataset = pipeline.pretrain_dataset(record_pattern, views, AugmentConfig(output_size=16), 4, seed=3)
    batch = next(iter(dataset))
    assert np.abs(batch["view1"].numpy() - batch["view2"].numpy()).mean() > 0.01


def test_same_seed_reproduces_pretrain_batches(record_pattern):
    views, augment = ViewConfig.two_views(final_length=4), AugmentConfig(output_size=16)
    first, second = (
        next(iter(pipeline.pretrain_dataset(record_pattern, views, augment, batch_size=2, seed=11))) for _ in range(2)
    )
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_decoded_cache_gives_the_same_batches_as_decoding_every_epoch(record_pattern):
    # Unshuffled, both pipelines take the same windows with the same augmentation, in the same
    # order (one file, so epochs follow each other alike); the cached one's later epochs come
    # from the kept frames.
    views = ViewConfig.two_views(final_length=8, offset2=0, factor2=2)
    augment = AugmentConfig(output_size=16)
    one_file = record_pattern.replace("*", "a")  # 3 videos
    plain, cached = (
        pipeline.pretrain_dataset(one_file, views, augment, 3, shuffle=False, seed=5, cache_decoded=cache)
        for cache in (False, True)
    )
    batches = 0
    for a, b in zip(plain.take(3), cached.take(3)):  # batches of 3: three epochs
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        batches += 1
    assert batches == 3


def test_decoded_cache_shuffles_and_keeps_windows_inside_their_video(record_pattern):
    views = ViewConfig.two_views(final_length=8, offset2=4, factor2=2)  # window of 20 frames
    dataset = pipeline.pretrain_dataset(record_pattern, views, IDENTITY, 4, seed=2, cache_decoded=True,
                                        shuffle_buffer_size=4)
    steps, orders = np.arange(8), set()
    for batch in dataset.take(6):
        orders.add(tuple(batch["label"].numpy()))
        for label, view1, view2 in zip(batch["label"].numpy(), _frame_indices(batch["view1"]),
                                       _frame_indices(batch["view2"])):
            last = LENGTH_OF_LABEL[label] - 1
            start = view1[0]
            assert 0 <= start <= max(last + 1 - 20, 0)
            np.testing.assert_array_equal(view1, np.minimum(start + steps, last))
            np.testing.assert_array_equal(view2, np.minimum(start + 4 + 2 * steps, last))
    assert len(orders) > 1  # reshuffled every epoch
    assert {label for order in orders for label in order} == {0, 1, 2, 3}


def test_decoded_size_sums_frames_until_the_limit(record_pattern):
    frame_bytes = HEIGHT * WIDTH * 3
    total_frames = sum(n for videos in VIDEOS.values() for n, _ in videos)
    files = pipeline.list_files(record_pattern)
    assert pipeline.decoded_size(files, 10**9) == (total_frames * frame_bytes, 4, True)
    # a.tfrecord comes first: 10 + 40 frames pass a 45-frame limit at the second video.
    limit = 45 * frame_bytes
    assert pipeline.decoded_size(files, limit) == (50 * frame_bytes, 2, False)


def test_decoded_size_of_an_unreadable_record_is_unknown(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(make_sequence_example([_frame(0)] * 3, 0, "c", "v.avi", 25.0).SerializeToString())
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the record's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert pipeline.decoded_size([str(path)], 10**9) is None


def test_finetune_training_yields_k_augmented_views(record_pattern):
    views = ViewConfig.clip_views(final_length=4, factor=2, num_views=3)
    dataset = pipeline.finetune_dataset(record_pattern, views, AugmentConfig(output_size=16), 2, 3, seed=0)
    assert dataset.element_spec["views"].shape == (2, 3, 4, 16, 16, 3)
    assert dataset.element_spec["label"].shape == (2,)
    views_batch = next(iter(dataset))["views"].numpy()
    assert np.all(np.abs(views_batch) <= 1.0)
    # the K views show different frames and are augmented independently
    assert np.abs(views_batch[:, 0] - views_batch[:, 1]).max() > 0.01


def test_finetune_evaluation_starts_at_frame_zero_and_sees_every_video_once(record_pattern):
    views = ViewConfig.clip_views(final_length=4, factor=2, num_views=2)
    dataset = pipeline.finetune_dataset(record_pattern, views, IDENTITY, batch_size=3, num_views_k=2, training=False)
    labels, indices = [], []
    for batch in dataset:
        labels += list(batch["label"].numpy())
        indices += list(_frame_indices(batch["views"]))
    assert sorted(labels) == [0, 1, 2, 3]
    for label, frames in zip(labels, indices):
        expected = np.minimum(np.arange(0, 16, 2).reshape(2, 4), LENGTH_OF_LABEL[label] - 1)
        np.testing.assert_array_equal(frames, expected)


def test_num_views_k_must_match_the_view_config(record_pattern):
    with pytest.raises(ValueError, match="num_views_k=4 but the ViewConfig has 2 views"):
        pipeline.finetune_dataset(record_pattern, ViewConfig.clip_views(num_views=2), IDENTITY, 2, 4)


def test_test_windows_cover_every_video_and_carry_its_id(record_pattern):
    final_length, factor, k = 4, 2, 2  # windows of 16 frames
    dataset = pipeline.test_windows_dataset(record_pattern, final_length, factor, 16, batch_size=5, num_views_k=k)
    assert dataset.element_spec["views"].shape.as_list() == [None, k, final_length, 16, 16, 3]
    covered, label_of = {}, {}
    for batch in dataset:
        rows = zip(batch["video_id"].numpy(), batch["label"].numpy(), _frame_indices(batch["views"]))
        for video_id, label, frames in rows:
            assert label_of.setdefault(video_id, label) == label
            start = frames[0, 0]
            # every window: K views of the window, each `factor`-downsampled
            np.testing.assert_array_equal(
                frames, np.minimum(start + np.arange(16).reshape(k, -1)[:, ::factor], LENGTH_OF_LABEL[label] - 1)
            )
            covered.setdefault(video_id, set()).update(range(start, start + 16))
    assert sorted(label_of.values()) == [0, 1, 2, 3]
    for video_id, frames in covered.items():
        num_frames = LENGTH_OF_LABEL[label_of[video_id]]
        assert set(range(num_frames)) <= frames


def test_test_windows_honour_the_stride(record_pattern):
    dataset = pipeline.test_windows_dataset(record_pattern, 4, 1, 16, batch_size=8, window_stride=2)
    starts = [
        frames[0, 0]
        for batch in dataset
        for label, frames in zip(batch["label"].numpy(), _frame_indices(batch["views"]))
        if label == 2  # the 60-frame video
    ]
    np.testing.assert_array_equal(starts, np.arange(0, 57, 2))


def test_no_matching_files_raises_naming_the_pattern(tmp_path):
    pattern = str(tmp_path / "missing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="missing-"):
        pipeline.pretrain_dataset(pattern, ViewConfig(), AugmentConfig(), 2)
    with pytest.raises(FileNotFoundError, match="missing-"):
        pipeline.test_windows_dataset(pattern, 32, 1, 128, 2)


def test_long_running_datasets_have_no_autotuning_thread_to_wait_for(record_pattern):
    # Deleting an iterator waits for tf.data's autotuning thread, whose period grows to 60 s: the
    # pretraining command sometimes sat idle for a minute after its last checkpoint. The datasets
    # that training and evaluation iterate for minutes run without it.
    views = ViewConfig.clip_views(final_length=4, factor=2, num_views=2)
    datasets = [
        pipeline.pretrain_dataset(record_pattern, ViewConfig.two_views(final_length=4, offset2=0, factor2=2), IDENTITY, 2, seed=0),
        pipeline.pretrain_dataset(record_pattern, ViewConfig.two_views(final_length=4, offset2=0, factor2=2), IDENTITY, 2, seed=0, cache_decoded=True,
                                  shuffle_buffer_size=4),
        pipeline.finetune_dataset(record_pattern, views, IDENTITY, 2, 2, seed=0),
        pipeline.test_windows_dataset(record_pattern, 4, 2, 16, batch_size=2, num_views_k=2),
    ]
    for dataset in datasets:
        assert dataset.options().autotune.enabled is False
        assert next(iter(dataset)) is not None  # and they still produce batches
