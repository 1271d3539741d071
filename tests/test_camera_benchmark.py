"""The camera-motion benchmark: six camera motions over real video from ../shared/data."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data import camera, records

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL_TRAIN = ("hmdb51_sample/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",)
SMALL_TEST = ("hmdb51_sample/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
              "hmdb51_sample/jump/Documentario_Le_Parkour_Londrina_jump_f_cm_np1_ri_bad_6.mp4")  # 40 frames: skipped


def _config(**changes):
    return camera.CameraConfig(data_dir="unused", output_dir="unused", **changes)


def _blob_frame(size=200, at=(100.0, 100.0)):
    """A dark frame with one bright Gaussian spot: its centroid in a view says where the picture went."""
    y, x = np.mgrid[0:size, 0:size]
    spot = np.exp(-((x - at[0]) ** 2 + (y - at[1]) ** 2) / (2 * 3.0 ** 2))
    return np.repeat((255 * spot)[..., None], 3, axis=2).astype(np.uint8)


def _centroid(view):
    weight = view[..., 0].astype(np.float64)
    y, x = np.mgrid[0:view.shape[0], 0:view.shape[1]]
    return np.array([(x * weight).sum(), (y * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("name, direction", [("move_right", (1, 0)), ("move_left", (-1, 0)),
                                             ("move_down", (0, 1)), ("move_up", (0, -1))])
def test_a_pan_moves_the_picture_the_way_its_class_says_at_any_camera_angle(name, direction):
    rng = np.random.default_rng(1)
    frame = _blob_frame()
    for _ in range(5):
        cam = camera.draw_camera(rng, name, 200, 200, _config(speed=(3.0, 3.0)))
        cam["centre"] = (100.0, 100.0)  # the spot starts in the middle of the view, whatever the angle
        first, later = camera.render([frame] * 6, cam, size=64)[::5]
        moved = _centroid(later) - _centroid(first)
        np.testing.assert_allclose(moved, 15 * np.array(direction), atol=0.5)


@pytest.mark.parametrize("name, sign", [("rotate_cw", 1), ("rotate_ccw", -1)])
def test_a_rotation_turns_the_picture_the_way_its_class_says(name, sign):
    """Clockwise on screen: with y growing downwards, the spot's polar angle about the centre grows."""
    rng = np.random.default_rng(2)
    frame = _blob_frame()
    for _ in range(5):
        cam = camera.draw_camera(rng, name, 200, 200, _config(angular_speed=(3.0, 3.0)))
        cam["centre"] = (100.0 - 20 * math.cos(cam["angle"]), 100.0 - 20 * math.sin(cam["angle"]))
        views = camera.render([frame] * 11, cam, size=64)
        start, end = (_centroid(v) - 31.5 for v in (views[0], views[10]))
        np.testing.assert_allclose(np.hypot(*start), 20, atol=0.5)  # stays on its circle: no drift
        turned = math.degrees(math.atan2(end[1], end[0]) - math.atan2(start[1], start[0]))
        turned = (turned + 180) % 360 - 180
        assert turned == pytest.approx(sign * 30, abs=1.0)


def test_the_camera_never_leaves_the_picture_nor_jumps():
    """Mirrored borders: a view straddling an edge shows the picture folded, with no black and no seam jump."""
    rng = np.random.default_rng(3)
    frame = rng.integers(40, 255, size=(30, 40, 3), dtype=np.uint8)
    view = camera.camera_view(frame, centre=(0.0, 0.0), angle=0.0, size=21)
    assert view.min() >= 40
    # Screen pixel (u, v) about the centre shows source (u, v); source -1 is source 0 folded back.
    np.testing.assert_array_equal(view[10, 10:], frame[0, :11])
    np.testing.assert_array_equal(view[10, :10], frame[0, :10][::-1])
    # One period on, the view is the same: the frame mirrored without end repeats every 2W x 2H.
    np.testing.assert_array_equal(camera.camera_view(frame, (80.0, 60.0), 0.3, 16),
                                  camera.camera_view(frame, (0.0, 0.0), 0.3, 16))


def _ks_uniform(values):
    """Largest gap between the empirical CDF of `values` (in [0, 1)) and the uniform one."""
    values = np.sort(values)
    n = len(values)
    return max(np.max(np.arange(1, n + 1) / n - values), np.max(values - np.arange(n) / n))


def test_every_frame_of_every_class_sees_a_uniform_centre_and_angle():
    """Why a single frame is at chance: at any frame t, centre (mod one period) and angle are uniform
    and independent in every class, so a frame alone does not say which class it came from."""
    width, height, frames, n = 320, 240, 32, 4000
    rng = np.random.default_rng(4)
    for name in camera.MOTIONS:
        cams = [camera.draw_camera(rng, name, width, height, _config()) for _ in range(n)]
        for t in (0, frames - 1):
            x = np.array([(c["centre"][0] + t * c["velocity"][0]) % (2 * width) for c in cams]) / (2 * width)
            y = np.array([(c["centre"][1] + t * c["velocity"][1]) % (2 * height) for c in cams]) / (2 * height)
            angle = np.array([(c["angle"] + t * c["turn"]) % (2 * math.pi) for c in cams]) / (2 * math.pi)
            for values in (x, y, angle):
                assert _ks_uniform(values) < 0.03, (name, t)
            assert abs(np.corrcoef(x, angle)[0, 1]) < 0.05 and abs(np.corrcoef(y, angle)[0, 1]) < 0.05
    with pytest.raises(ValueError, match="unknown class 'spin'"):
        camera.draw_camera(rng, "spin", width, height, _config())


@pytest.fixture(scope="module")
def benchmark(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("camera")
    config = camera.CameraConfig(data_dir=str(shared_data), output_dir=str(out), frames=48, hop=24, size=32,
                                 source_short_side=64, train_sources=SMALL_TRAIN, test_sources=SMALL_TEST,
                                 examples_per_shard=10)
    lines = []
    manifest = camera.build_benchmark(config, log=lines.append)
    return config, manifest, lines


def _read_split(config, split):
    items = []
    for path in sorted(tf.io.gfile.glob(f"{config.output_dir}/{split}/*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(path):
            example = records.parse_sequence_example(serialized)
            items.append({"label": int(example["label"]), "label_text": example["label_text"].numpy().decode(),
                          "filename": example["filename"].numpy().decode(),
                          "frames": [tf.io.decode_jpeg(f).numpy() for f in example["frames"].numpy()]})
    return items


def test_benchmark_is_balanced_from_different_source_videos_and_says_what_it_skipped(benchmark):
    config, manifest, lines = benchmark
    labels = (pathlib.Path(config.output_dir) / "labels.txt").read_text().split()
    assert labels == list(camera.MOTIONS)
    for split in ("train", "test"):
        items = _read_split(config, split)
        info = manifest["splits"][split]
        assert len(items) == info["examples"] > 0
        # 74 and 72 frames, windows of 48 every 24: 2 windows, one example per class each.
        assert info["per_class"] == dict.fromkeys(labels, 2)
        assert all(item["label_text"] == labels[item["label"]] for item in items)
        assert all(len(item["frames"]) == 48 and item["frames"][0].shape == (32, 32, 3) for item in items)
    train_sources = {item["filename"].partition("#")[0] for item in _read_split(config, "train")}
    test_sources = {item["filename"].partition("#")[0] for item in _read_split(config, "test")}
    assert train_sources == set(SMALL_TRAIN) and test_sources == {SMALL_TEST[0]}
    assert manifest["splits"]["test"]["skipped"][0]["source"] == SMALL_TEST[1]
    assert any("SKIPPED" in line and "40 frames" in line for line in lines)


def test_examples_json_rebuilds_every_stored_view(benchmark, shared_data):
    """Each example's window and camera are on record: rendering them again gives the stored frames."""
    config, _, _ = benchmark
    described = json.loads((pathlib.Path(config.output_dir) / "examples.json").read_text())
    from vdim_tf.data.decode import decode_video

    video = decode_video(shared_data / SMALL_TRAIN[0], short_side=config.source_short_side, jpeg_quality=95)
    pixels = [tf.io.decode_jpeg(jpeg, channels=3).numpy() for jpeg in video.jpeg_frames]
    stored = {(item["filename"], item["label_text"]): item["frames"] for item in _read_split(config, "train")}
    assert len(described["train"]) == len(stored)
    for entry in described["train"]:
        start, stop = (int(v) for v in entry["filename"].partition("#")[2].split(":"))
        views = camera.render(pixels[start:stop], entry, config.size)
        error = np.abs(np.stack(views).astype(int) - np.stack(stored[(entry["filename"], entry["label"])]))
        assert error.mean() < 4  # JPEG's loss only


def test_the_same_seed_builds_the_same_benchmark(shared_data, tmp_path, benchmark):
    config, _, _ = benchmark
    again = camera.CameraConfig(**{**config.__dict__, "output_dir": str(tmp_path)})
    camera.build_benchmark(again, log=lambda line: None)
    for name in ("examples.json", "manifest.json"):
        first = json.loads((pathlib.Path(config.output_dir) / name).read_text())
        second = json.loads((tmp_path / name).read_text())
        if name == "manifest.json":
            first["settings"].pop("output_dir"), second["settings"].pop("output_dir")
        assert first == second


@pytest.mark.parametrize("changes, message", [
    ({"frames": 1}, "frames=1"), ({"speed": (3.0, 2.0)}, "speed=3.0,2.0"), ({"angular_speed": (0.0, 1.0)}, "angular_speed"),
    ({"train_sources": ("a",), "test_sources": ("a",)}, "must differ"), ({"jpeg_quality": 0}, "jpeg_quality=0")])
def test_bad_settings_are_refused_naming_the_setting(changes, message, tmp_path):
    config = camera.CameraConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "out"), **changes)
    with pytest.raises(ValueError, match=message):
        camera.build_benchmark(config)


@pytest.mark.parametrize("flags, message", [
    (["--data_dir=/no/such/folder"], "--data_dir=/no/such/folder: no such folder"),
    (["--speed=2"], "--speed=2: give two numbers, min,max"),
    (["--speed=4,2"], "speed=4.0,2.0: need 0 < min <= max")])
def test_launcher_refuses_bad_input_in_one_line(flags, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "vdim_tf.launch.camera_benchmark", f"--output_dir={tmp_path}",
                             *flags], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
