"""The synthetic dataset: classes told apart by motion only, written as real videos and records."""

import dataclasses
import json
import pathlib
import time

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from vdim_tf.data import records, synthetic
from vdim_tf.launch import prepare as prepare_cli

CONFIG = synthetic.SyntheticConfig(train_videos_per_class=6, test_videos_per_class=4, num_frames=24, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    output = tmp_path_factory.mktemp("synthetic")
    start = time.monotonic()
    path = synthetic.generate_synthetic_dataset(str(output), CONFIG)
    return pathlib.Path(path), time.monotonic() - start


def load_split(path, split):
    """Decoded frames `(N, T, H, W, 3)` in [0, 1], labels, label texts and filenames of a split."""
    files = sorted(str(p) for p in (path / split).glob("*.tfrecord"))
    videos, labels, texts, names = [], [], [], []
    for serialized in tf.data.TFRecordDataset(files):
        r = records.parse_sequence_example(serialized)
        videos.append(np.stack([tf.io.decode_jpeg(f).numpy() for f in r["frames"]]))
        labels.append(int(r["label"]))
        texts.append(r["label_text"].numpy().decode())
        names.append(r["filename"].numpy().decode())
    return np.stack(videos).astype(np.float32) / 255, np.array(labels), texts, names


def motion_features(video, patch=12, stride=6, moving_threshold=0.03, scene_length=CONFIG.scene_length):
    """Mean local motion of a video: (x velocity, y velocity, angular velocity) per frame.

    Frame pairs across a scene cut (every `scene_length` frames) are left out: nothing moves
    across a cut, the whole picture changes.

    In each patch, a translation plus a rotation about the patch centre is fitted by least squares
    to brightness constancy (`Ix u + Iy v + It = 0`, Lucas-Kanade with a rotation term) over the
    pixels that change between frames; the static background would otherwise pull every estimate
    to zero. Positive angular velocity is clockwise on screen (y points down).
    """
    gray = video.mean(-1)
    iy, ix = np.gradient(gray, axis=(1, 2))
    ix, iy = (ix[1:] + ix[:-1]) / 2, (iy[1:] + iy[:-1]) / 2
    it = gray[1:] - gray[:-1]
    moving = (np.abs(it) > moving_threshold).astype(np.float32)
    if scene_length:
        moving[scene_length - 1::scene_length] = 0  # pair (t, t + 1) with t + 1 a cut

    def patches(a):
        windows = sliding_window_view(a, (patch, patch), axis=(1, 2))[:, ::stride, ::stride]
        return windows.reshape(a.shape[0], -1, patch * patch)

    ix, iy, it, moving = patches(ix), patches(iy), patches(it), patches(moving)
    offsets = np.arange(patch) - (patch - 1) / 2
    dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    basis = np.stack([ix, iy, iy * dx - ix * dy], -1)
    normal = np.einsum("tpki,tpkj,tpk->tpij", basis, basis, moving)
    rhs = -np.einsum("tpki,tpk,tpk->tpi", basis, it, moving)
    solvable = np.linalg.eigvalsh(normal)[..., 0] > 1e-3
    return np.linalg.solve(normal[solvable], rhs[solvable][..., None])[..., 0].mean(0)


def nearest_class_mean_accuracy(train_x, train_y, test_x, test_y):
    means = np.stack([train_x[train_y == c].mean(0) for c in range(CONFIG.num_classes)])
    scale = train_x.std(0) + 1e-6
    distances = (((test_x[:, None] - means[None]) / scale) ** 2).reshape(len(test_x), len(means), -1).sum(-1)
    return (distances.argmin(1) == test_y).mean()


def test_generation_is_fast_and_writes_real_videos(dataset):
    path, seconds = dataset
    assert seconds < 30
    for split, per_class in (("train", CONFIG.train_videos_per_class), ("test", CONFIG.test_videos_per_class)):
        for motion in synthetic.MOTIONS:
            videos = sorted((path / "videos" / split / motion).glob("*.mp4"))
            assert len(videos) == per_class
    assert json.loads((path / "report.json").read_text())["splits"].keys() == {"train", "test"}


def test_records_carry_the_class_names(dataset):
    path, _ = dataset
    labels = (path / "labels.txt").read_text().splitlines()
    assert labels == sorted(synthetic.MOTIONS)
    for split, per_class in (("train", CONFIG.train_videos_per_class), ("test", CONFIG.test_videos_per_class)):
        videos, label, texts, names = load_split(path, split)
        assert videos.shape == (6 * per_class, CONFIG.num_frames, CONFIG.frame_size, CONFIG.frame_size, 3)
        assert np.bincount(label).tolist() == [per_class] * 6
        assert all(labels[i] == text == name.split("/")[0] for i, text, name in zip(label, texts, names))


def test_first_frame_does_not_depend_on_the_class():
    frames = [synthetic.render_video(m, np.random.default_rng(11), CONFIG)[0] for m in synthetic.MOTIONS]
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame, frames[0])


def test_single_frames_do_not_reveal_the_class(dataset):
    path, _ = dataset
    train, train_y, _, _ = load_split(path, "train")
    test, test_y, _, _ = load_split(path, "test")
    # Nearest class-mean frame: if class could be read from appearance (e.g. shapes of the
    # right-moving class starting on the left), mean frames would differ and this would beat chance.
    frames_y = np.repeat(test_y, CONFIG.num_frames)
    accuracy = nearest_class_mean_accuracy(
        train.reshape(-1, *train.shape[2:]), np.repeat(train_y, CONFIG.num_frames),
        test.reshape(-1, *test.shape[2:]), frames_y)
    assert accuracy < 0.35  # chance is 1/6
    # The spread of the per-class mean frames is no larger than with labels assigned at random.
    video_means = train.mean(1)

    def spread(labels):
        class_means = np.stack([video_means[labels == c].mean(0) for c in range(6)])
        return np.abs(class_means - class_means.mean(0)).mean()

    rng = np.random.default_rng(0)
    shuffled = [spread(rng.permutation(train_y)) for _ in range(50)]
    assert spread(train_y) < 1.3 * np.median(shuffled)


def test_motion_tells_the_classes_apart(dataset):
    path, _ = dataset
    labels = (path / "labels.txt").read_text().splitlines()
    train, train_y, _, _ = load_split(path, "train")
    test, test_y, _, _ = load_split(path, "test")
    train_f = np.stack([motion_features(v) for v in train])
    test_f = np.stack([motion_features(v) for v in test])
    assert nearest_class_mean_accuracy(train_f, train_y, test_f, test_y) >= 0.9
    mean = {labels[c]: train_f[train_y == c].mean(0) for c in range(6)}
    low_speed, low_spin = CONFIG.speed[0] / 2, np.deg2rad(CONFIG.angular_speed[0]) / 2
    assert mean["move_right"][0] > low_speed and mean["move_left"][0] < -low_speed
    assert mean["move_down"][1] > low_speed and mean["move_up"][1] < -low_speed
    assert mean["rotate_cw"][2] > low_spin and mean["rotate_ccw"][2] < -low_spin


def test_scene_cuts_change_everything_but_the_motion():
    video = synthetic.render_video("move_right", np.random.default_rng(5), CONFIG).astype(np.float32) / 255
    n = CONFIG.scene_length
    step = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
    cuts = step[n - 1::n]
    within = np.delete(step, np.arange(n - 1, len(step), n))
    assert len(cuts) == CONFIG.num_frames // n - (CONFIG.num_frames % n == 0)
    assert cuts.min() > 5 * within.max()  # a cut redraws the whole picture
    # Across a cut, frames are as unrelated as frames of two different videos.
    other = synthetic.render_video("move_right", np.random.default_rng(6), CONFIG).astype(np.float32) / 255
    across = np.abs(video[n - 1] - video[n]).mean()
    between = np.abs(video[n - 1] - other[n]).mean()
    assert 0.7 * between < across < 1.3 * between
    # The motion goes on the same way in every scene.
    speeds = [motion_features(video[i:i + n], scene_length=0)[0] for i in range(0, CONFIG.num_frames, n)]
    np.testing.assert_allclose(speeds, speeds[0], rtol=0.35)
    assert min(speeds) > CONFIG.speed[0] / 2
    no_cuts = synthetic.render_video("move_right", np.random.default_rng(5), dataclasses.replace(CONFIG, scene_length=0))
    assert np.abs(np.diff(no_cuts.astype(np.float32) / 255, axis=0)).mean(axis=(1, 2, 3)).max() < cuts.min() / 5


def test_second_call_reuses_the_dataset_and_another_config_is_refused(dataset):
    path, _ = dataset
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    start = time.monotonic()
    assert synthetic.generate_synthetic_dataset(str(path), CONFIG) == str(path)
    assert time.monotonic() - start < 1
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == before
    assert synthetic.generate_synthetic_dataset(str(path), dataclasses.replace(CONFIG, workers=2)) == str(path)
    with pytest.raises(ValueError, match=r"another config.*seed: 3 there, 4 now.*Delete"):
        synthetic.generate_synthetic_dataset(str(path), dataclasses.replace(CONFIG, seed=4))


def test_interrupted_generation_starts_again_without_leftovers(tmp_path):
    config = dataclasses.replace(CONFIG, num_classes=2, train_videos_per_class=2, test_videos_per_class=1,
                                 num_frames=4)
    leftover = tmp_path / "videos" / "train" / "move_right" / "move_right_0007.mp4"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"from a run with more videos per class, interrupted")
    synthetic.generate_synthetic_dataset(str(tmp_path), config)
    assert not leftover.exists()
    assert json.loads((tmp_path / "report.json").read_text())["splits"]["train"]["written"] == 4


def test_cli_generates_a_small_synthetic_dataset(tmp_path, capsys):
    argv = ["prepare", "--dataset=synthetic", f"--output_dir={tmp_path}", "--synthetic_classes=2",
            "--synthetic_train_per_class=2", "--synthetic_test_per_class=1", "--synthetic_frames=4"]
    prepare_cli.FLAGS.unparse_flags()
    try:
        assert prepare_cli.run(prepare_cli.FLAGS(argv)) == 0
    finally:
        prepare_cli.FLAGS.unparse_flags()
    assert "synthetic dataset ready" in capsys.readouterr().out
    assert (tmp_path / "labels.txt").read_text().splitlines() == ["move_left", "move_right"]
    assert len(list((tmp_path / "train").glob("*.tfrecord"))) == 1
