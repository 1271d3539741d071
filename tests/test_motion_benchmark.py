"""The real-video motion benchmark: speed × direction classes from ../shared/data clips."""

import collections
import csv
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data import augment as augment_lib
from vdim_tf.data import motion, pipeline, records
from vdim_tf.data import views as views_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Three short clips (72-76 frames) keep the build to about a second; the default split is checked
# separately, without decoding.
SMALL_TRAIN = ("hmdb51_sample/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
               "hmdb51_sample/handstand/Bodenturnen_im_sportunterricht_handstand_f_cm_np1_le_med_1.mp4")
SMALL_TEST = ("hmdb51_sample/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
              "hmdb51_sample/jump/Documentario_Le_Parkour_Londrina_jump_f_cm_np1_ri_bad_6.mp4")  # 40 frames: skipped


@pytest.fixture(scope="module")
def benchmark(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("motion")
    config = motion.MotionConfig(data_dir=str(shared_data), output_dir=str(out), hop=5,
                                 train_sources=SMALL_TRAIN, test_sources=SMALL_TEST, examples_per_shard=20)
    manifest = motion.build_benchmark(config, log=lambda line: None)
    return config, manifest


def _read_split(config, split):
    """Every record of a split as dicts: label, label_text, source, indices, jpeg frames."""
    items = []
    for path in sorted(tf.io.gfile.glob(f"{config.output_dir}/{split}/*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(path):
            example = records.parse_sequence_example(serialized)
            source, _, frame_slice = example["filename"].numpy().decode().partition("#")
            items.append({"label": int(example["label"]), "label_text": example["label_text"].numpy().decode(),
                          "source": source, "slice": frame_slice, "frames": list(example["frames"].numpy())})
    return items


def test_classes_are_direction_times_speed():
    assert motion.class_names((1, 2)) == ["forward_1x", "forward_2x", "reversed_1x", "reversed_2x"]
    assert len(motion.class_names((1, 2, 3))) == 6


def test_each_class_uses_every_frame_of_a_segment_once():
    """The construction, for three speeds: per class, the segment's frames, each exactly once."""
    examples = motion.segment_examples(10, speeds=(1, 2, 3), frames=4)
    by_class = collections.defaultdict(list)
    for name, indices in examples:
        by_class[name] += indices
    assert len(by_class) == 6
    for name, indices in by_class.items():
        assert sorted(indices) == list(range(10, 10 + 6 * 4)), name
    assert len({len([e for e in examples if e[0] == name]) for name in by_class}) == 1  # same count per class


def test_default_split_has_disjoint_sources_long_enough(shared_data):
    config = motion.MotionConfig(data_dir=str(shared_data), output_dir="unused")
    assert not set(config.train_sources) & set(config.test_sources)
    with open(shared_data / "manifest.csv", newline="") as f:
        frames = {row["path"]: int(row["frames"]) for row in csv.DictReader(f)}
    for source in config.train_sources + config.test_sources:
        assert frames[source] >= config.segment_length, source


def test_train_and_test_come_from_different_source_videos(benchmark):
    config, manifest = benchmark
    train = {item["source"] for item in _read_split(config, "train")}
    test = {item["source"] for item in _read_split(config, "test")}
    assert train == set(SMALL_TRAIN) and test == {SMALL_TEST[0]}
    assert manifest["splits"]["test"]["skipped"][0]["source"] == SMALL_TEST[1]  # 40 frames < 64


def test_examples_are_distinct_source_frames_in_class_order_without_padding(benchmark, shared_data):
    config, manifest = benchmark
    names = config.class_names
    decoded = {}
    for split in ("train", "test"):
        for item in _read_split(config, split):
            if item["source"] not in decoded:
                decoded[item["source"]] = motion.decode_video(
                    shared_data / item["source"], short_side=config.short_side, jpeg_quality=config.jpeg_quality).jpeg_frames
            num_frames = manifest["splits"][split]["sources"][item["source"]]["frames"]
            indices = motion.parse_frame_slice(item["slice"], num_frames)
            assert item["frames"] == [decoded[item["source"]][i] for i in indices]  # the frames it claims
            direction, speed = item["label_text"].split("_")
            step = int(speed[:-1]) * (1 if direction == "forward" else -1)
            assert names[item["label"]] == item["label_text"]
            assert len(item["frames"]) == len(indices) == config.frames
            assert np.all(np.diff(indices) == step), item["slice"]  # never a repeated (or skipped) frame
            assert 0 <= min(indices) and max(indices) < num_frames


def test_every_class_holds_the_same_multiset_of_frames(benchmark):
    """Single frames are at chance by construction: each class shows the same JPEGs, as often."""
    config, _ = benchmark
    for split in ("train", "test"):
        per_class = collections.defaultdict(collections.Counter)
        for item in _read_split(config, split):
            per_class[item["label"]].update(item["frames"])
        assert sorted(per_class) == list(range(len(config.class_names)))
        reference = per_class[0]
        assert sum(reference.values()) > 0
        for label, counter in per_class.items():
            assert counter == reference, (split, label)


def test_records_read_through_the_projects_pipeline(benchmark):
    config, manifest = benchmark
    from vdim_tf.finetune import labels_file_for, read_labels

    train = f"{config.output_dir}/train/*"
    assert list(read_labels(labels_file_for(train))) == config.class_names
    augment = augment_lib.AugmentConfig(output_size=64)
    batch = next(iter(pipeline.pretrain_dataset(train, views_lib.ViewConfig.two_views(16, factor2=2), augment, 4,
                                                seed=0)))
    assert batch["view1"].shape == (4, 16, 64, 64, 3) and batch["view2"].shape == (4, 16, 64, 64, 3)
    windows = pipeline.test_windows_dataset(f"{config.output_dir}/test/*", 16, 1, 64, 16, num_views_k=2)
    labels, ids = [], []
    for batch in windows:
        labels += batch["label"].numpy().tolist()
        ids += batch["video_id"].numpy().tolist()
    # 32-frame records and windows of 2 x 16 frames: one window per record, all classes present.
    assert len(ids) == len(set(ids)) == manifest["splits"]["test"]["examples"]
    assert collections.Counter(labels) == collections.Counter(
        {i: n for i, n in enumerate(manifest["splits"]["test"]["per_class"].values())})


def test_a_clip_shorter_than_every_segment_is_an_error_naming_the_split(shared_data, tmp_path):
    config = motion.MotionConfig(data_dir=str(shared_data), output_dir=str(tmp_path), speeds=(1, 2, 3),
                                 train_sources=SMALL_TRAIN, test_sources=SMALL_TEST[:1])
    assert config.segment_length == math.lcm(1, 2, 3) * 32
    with pytest.raises(ValueError, match="the train split has no clip of at least 192 frames"):
        motion.build_benchmark(config, log=lambda line: None)


def test_launcher_names_a_missing_data_dir(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vdim_tf.launch.motion_benchmark",
                          f"--data_dir={tmp_path / 'absent'}", f"--output_dir={tmp_path / 'out'}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"motion_benchmark: error: --data_dir={tmp_path / 'absent'}: no such folder" in out.stderr
    assert "Traceback" not in out.stderr


def test_frame_differences_tell_speeds_apart_but_not_directions(benchmark):
    """Motion is what separates the classes: the mean absolute frame-to-frame difference is larger
    at 2x than at 1x, and identical forward and reversed (the same frame pairs, swapped)."""
    config, _ = benchmark
    per_class = collections.defaultdict(list)
    for item in _read_split(config, "train"):
        frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in item["frames"]]).astype(np.float64)
        per_class[item["label_text"]].append(np.abs(np.diff(frames, axis=0)).mean())
    mean = {name: np.mean(values) for name, values in per_class.items()}
    assert mean["forward_2x"] > 1.2 * mean["forward_1x"], mean
    assert mean["forward_1x"] == pytest.approx(mean["reversed_1x"])
    assert mean["forward_2x"] == pytest.approx(mean["reversed_2x"])
