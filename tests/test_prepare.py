"""Dataset preparation: split lists, labels, decoded frames, bad files, resuming, the CLI."""

import csv
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.data import augment, decode, listing, pipeline, prepare, records, shards, synthetic, views
from vdim_tf.launch import prepare as prepare_cli

SHORT_SIDE = 64
JPEG_QUALITY = 95
# The shortest real AVI among the fixtures: it declares its frame count, so truncation shows.
SHOTPUT = "ucf101_sample/Shotput/v_Shotput_g05_c02.avi"


def read_records(split_dir):
    """Every record under a split folder, as dicts of numpy values with decoded frames."""
    files = sorted(str(p) for p in pathlib.Path(split_dir).glob("*.tfrecord"))
    out = []
    for serialized in tf.data.TFRecordDataset(files):
        r = records.parse_sequence_example(serialized)
        out.append({
            "frames": np.stack([tf.io.decode_jpeg(f).numpy() for f in r["frames"]]),
            "label": int(r["label"]),
            "label_text": r["label_text"].numpy().decode(),
            "filename": r["filename"].numpy().decode(),
            "fps": float(r["fps"]),
        })
    return out


def expected_split(list_file, class_file, video_dir):
    """The `(path on disk, 0-based label)` pairs of a split list whose videos exist, worked out
    independently of `prepare`: class folders compared without case, files by stem (the HMDB
    fixtures were transcoded from .avi to .mp4)."""
    names = [line.split(" ", 1)[1].strip() for line in pathlib.Path(class_file).read_text().splitlines() if line.strip()]
    label_of = {name.lower(): i for i, name in enumerate(names)}
    on_disk = {(p.parent.name.lower(), p.stem.lower()): p.relative_to(video_dir).as_posix()
               for p in pathlib.Path(video_dir).glob("*/*")}
    expected = set()
    for line in pathlib.Path(list_file).read_text().splitlines():
        if line.strip():
            class_dir, name = line.split()[0].split("/")
            key = (class_dir.lower(), pathlib.PurePath(name).stem.lower())
            if key in on_disk:
                expected.add((on_disk[key], label_of[class_dir.lower()]))
    return expected


@pytest.fixture(scope="module", params=["ucf101", "hmdb51"])
def prepared(request, shared_data, tmp_path_factory):
    dataset = request.param
    config = prepare.PrepareConfig(
        dataset=dataset,
        video_dir=str(shared_data / f"{dataset}_sample"),
        output_dir=str(tmp_path_factory.mktemp(dataset)),
        splits_dir=str(shared_data / "splits" / dataset),
        short_side=SHORT_SIDE,
        jpeg_quality=JPEG_QUALITY,
        workers=1 if dataset == "ucf101" else 2,  # hmdb51 also runs the spawned worker pool.
        progress=False,
    )
    return config, prepare.prepare_dataset(config)


def test_every_split_holds_exactly_the_listed_files_on_disk(prepared):
    config, report = prepared
    splits_dir = pathlib.Path(config.splits_dir)
    list_files = sorted(splits_dir.glob("*list0*.txt"))
    assert sorted(report.splits) == sorted(f"{f.name[:-10]}_{int(f.name[-6:-4])}" for f in list_files)
    for list_file in list_files:
        split = f"{list_file.name[:-10]}_{int(list_file.name[-6:-4])}"
        expected = expected_split(list_file, splits_dir / "classInd.txt", config.video_dir)
        written = {(r["filename"], r["label"]) for r in read_records(pathlib.Path(config.output_dir) / split)}
        listed = sum(1 for line in list_file.read_text().splitlines() if line.strip())
        assert written == expected, split
        assert report.splits[split].written == len(expected)
        assert report.splits[split].missing == listed - len(expected)
        assert report.splits[split].skipped == []


def test_labels_follow_class_index(prepared):
    config, _ = prepared
    class_file = pathlib.Path(config.splits_dir) / "classInd.txt"
    names = [line.split(" ", 1)[1].strip() for line in class_file.read_text().splitlines() if line.strip()]
    output = pathlib.Path(config.output_dir)
    assert (output / "labels.txt").read_text().splitlines() == names
    all_records = [r for split in output.iterdir() if split.is_dir() for r in read_records(split)]
    assert all_records
    for r in all_records:
        assert r["label_text"] == names[r["label"]] == r["filename"].split("/")[0]


def test_frames_match_a_direct_pyav_decode(prepared):
    config, _ = prepared
    output = pathlib.Path(config.output_dir)
    by_file = {r["filename"]: r for split in output.iterdir() if split.is_dir() for r in read_records(split)}
    assert len(by_file) == len(list(pathlib.Path(config.video_dir).glob("*/*")))
    for filename, record in by_file.items():
        with av.open(os.path.join(config.video_dir, filename), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            size = (round(width * SHORT_SIDE / height), SHORT_SIDE)  # every fixture is landscape
            reference = np.stack([
                f.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
                for f in container.decode(stream)
            ])
            fps = float(stream.average_rate)
        assert record["frames"].shape == reference.shape, filename
        # JPEG loss alone on these noisy 64-pixel frames with 4:2:0 chroma: 3.0-3.5 measured.
        error = np.abs(record["frames"].astype(np.float32) - reference).mean(axis=(1, 2, 3))
        assert error.max() < 4, (filename, error.max())
        # Stronger: the stored JPEG is exactly the reference frame JPEG-encoded at that quality.
        reencoded = tf.io.decode_jpeg(tf.io.encode_jpeg(reference[-1], quality=JPEG_QUALITY)).numpy()
        np.testing.assert_array_equal(record["frames"][-1], reencoded)
        assert record["fps"] == pytest.approx(fps, rel=1e-5)


def test_split_parser_maps_the_ucf_handstand_spelling_and_crlf(tmp_path):
    (tmp_path / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo")
    (tmp_path / "trainlist01.txt").write_bytes(
        b"HandStandPushups/v_HandStandPushups_g08_c01.avi 2\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
    )
    (tmp_path / "testlist01.txt").write_bytes(b"YoYo/v_YoYo_g01_c01.avi\r\n\r\n")
    names = listing.read_class_index(tmp_path / "classInd.txt")
    assert names == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert listing.read_split_list(tmp_path / "trainlist01.txt", names) == [
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
    ]
    assert listing.read_split_list(tmp_path / "testlist01.txt", names) == [("YoYo/v_YoYo_g01_c01.avi", 2)]


def test_handstand_video_is_found_in_the_classind_folder(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    (splits / "trainlist01.txt").write_bytes(b"HandStandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    videos = tmp_path / "videos"
    write_tiny_video(videos / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "ucf101", str(videos), str(tmp_path / "out"), splits_dir=str(splits), workers=1, progress=False))
    assert (report.splits["train_1"].written, report.splits["test_1"].missing) == (1, 1)
    (record,) = read_records(tmp_path / "out" / "train_1")
    assert (record["label"], record["label_text"]) == (1, "HandstandPushups")
    assert record["filename"] == "HandstandPushups/v_HandStandPushups_g08_c01.avi"


def test_split_list_label_column_must_agree_with_the_class(tmp_path):
    (tmp_path / "list.txt").write_text("YoYo/v_YoYo_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match="disagrees"):
        listing.read_split_list(tmp_path / "list.txt", ["ApplyEyeMakeup", "YoYo"])


def write_tiny_video(path, frames=6, height=48, width=64, fps=25, levels=None):
    """A short H.264 clip; frame i is flat grey `levels[i]` when given, else random texture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if levels is None:
        video = np.random.default_rng(len(str(path))).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    else:
        video = np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), height, width, 3))
    synthetic.write_video(path, np.ascontiguousarray(video), fps, crf=0)


@pytest.fixture
def folder_with_bad_files(shared_data, tmp_path):
    """A `folder` dataset: one good real clip, one half-truncated (decodes in part), one cut to
    its first kilobyte, one of random bytes, one empty, and a good tiny clip in a second class."""
    videos = tmp_path / "videos"
    (videos / "a").mkdir(parents=True)
    data = (shared_data / SHOTPUT).read_bytes()
    shutil.copy(shared_data / SHOTPUT, videos / "a" / "good.avi")
    (videos / "a" / "half.avi").write_bytes(data[: len(data) // 2])
    (videos / "a" / "header_only.avi").write_bytes(data[:1024])
    (videos / "a" / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (videos / "a" / "empty.avi").write_bytes(b"")
    (videos / "a" / "notes.txt").write_text("not a video: ignored")
    write_tiny_video(videos / "b" / "tiny.mp4")
    return videos


def test_bad_files_are_skipped_with_a_reason_and_the_rest_is_written(folder_with_bad_files, tmp_path):
    output = tmp_path / "out"
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "folder", str(folder_with_bad_files), str(output), short_side=SHORT_SIDE, workers=1, progress=False))
    split = report.splits["train"]
    reasons = {item["path"]: item["reason"] for item in split.skipped}
    assert sorted(reasons) == ["a/empty.avi", "a/garbage.mp4", "a/header_only.avi"]
    assert "empty" in reasons["a/empty.avi"]
    assert "cannot open" in reasons["a/garbage.mp4"]
    # 57 frames decode from the first half; the 57th, from a cut packet, is dropped.
    assert [(p["path"], p["frames"]) for p in split.partial] == [("a/half.avi", 56)]
    assert "130" in split.partial[0]["reason"]
    written = {r["filename"]: r for r in read_records(output / "train")}
    assert sorted(written) == ["a/good.avi", "a/half.avi", "b/tiny.mp4"]
    assert len(written["a/good.avi"]["frames"]) == 130
    np.testing.assert_array_equal(written["a/half.avi"]["frames"], written["a/good.avi"]["frames"][:56])
    saved = json.loads((output / "report.json").read_text())
    assert saved["splits"]["train"]["skipped"] == split.skipped
    assert "a/empty.avi: empty file" in report.summary()


def test_cli_exits_with_2_when_files_were_skipped(folder_with_bad_files, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.prepare", "--dataset=folder",
         f"--video_dir={folder_with_bad_files}", f"--output_dir={tmp_path / 'out'}",
         "--short_side=32", "--workers=1", "--noprogress"],
        capture_output=True, text=True, timeout=120, cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2, result.stderr
    assert "SKIPPED train a/garbage.mp4" in result.stdout
    assert "3 file(s) skipped" in result.stdout


@pytest.fixture
def cli_flags():
    """Parses flags for `prepare_cli.run` in this process, and resets them afterwards."""

    def parse(*args):
        argv = ["prepare", *args]
        prepare_cli.FLAGS.unparse_flags()
        return prepare_cli.FLAGS(argv)

    yield parse
    prepare_cli.FLAGS.unparse_flags()


def test_cli_exits_with_0_when_nothing_was_skipped(cli_flags, tmp_path, capsys):
    write_tiny_video(tmp_path / "videos" / "a" / "x.mp4")
    argv = cli_flags("--dataset=folder", f"--video_dir={tmp_path / 'videos'}", f"--output_dir={tmp_path / 'out'}",
                     "--workers=1", "--noprogress")
    assert prepare_cli.run(argv) == 0
    assert "train" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--dataset=ucf101", "--video_dir=/no/such/dir"], "--video_dir=/no/such/dir: no such directory"),
    (["--dataset=ucf101", "--video_dir=."], "--splits_dir is not set"),
    (["--dataset=kinetics", "--video_dir=."], "--annotations is not set"),
    (["--dataset=folder", "--video_dir=.", "--jpeg_quality=0"], "--jpeg_quality=0: must be in 1..100"),
])
def test_cli_names_the_bad_flag_and_value(cli_flags, tmp_path, args, message):
    argv = cli_flags(*args, f"--output_dir={tmp_path}")
    with pytest.raises(prepare_cli._FlagError, match=message):
        prepare_cli.run(argv)


def test_cli_rejects_a_split_number_the_lists_lack(cli_flags, shared_data, tmp_path):
    argv = cli_flags("--dataset=hmdb51", "--video_dir=.", f"--splits_dir={shared_data / 'splits' / 'hmdb51'}",
                     "--splits=1,4", f"--output_dir={tmp_path}")
    with pytest.raises(prepare_cli._FlagError, match=r"--splits=1,4: splits_dir has splits \[1, 2, 3\] only"):
        prepare_cli.run(argv)


# --- HMDB-51's official split files ----------------------------------------------------------


def write_official_hmdb_splits(shared_data, splits_dir):
    """Writes the 153 `<class>_test_split<k>.txt` files of HMDB-51's official layout, worked out
    from the UCF-style conversion in ../shared/data (id 1 = its trainlist, 2 = its testlist) plus
    the clips on disk that a split's lists leave out (id 0, unused), one trailing space per line
    as in the official files. Returns `{k: set of "<class>/<video>.avi" marked 0}`."""
    lists = shared_data / "splits" / "hmdb51"
    classes = [line.split(" ", 1)[1].strip() for line in (lists / "classInd.txt").read_text().splitlines() if line.strip()]
    on_disk = {f"{p.parent.name}/{p.stem}.avi" for p in (shared_data / "hmdb51_sample").glob("*/*")}
    splits_dir.mkdir()
    unused = {}
    for k in (1, 2, 3):
        ids = {}
        for subset, file in (("1", f"trainlist0{k}.txt"), ("2", f"testlist0{k}.txt")):
            for line in (lists / file).read_text().splitlines():
                if line.strip():
                    ids[line.split()[0]] = subset
        unused[k] = on_disk - set(ids)
        ids.update(dict.fromkeys(unused[k], "0"))
        for name in classes:
            lines = [f"{path.split('/')[1]} {subset} \n" for path, subset in sorted(ids.items())
                     if path.split("/")[0] == name]
            (splits_dir / f"{name}_test_split{k}.txt").write_text("".join(lines))
    return unused


def test_hmdb51_official_split_files_list_the_train_and_test_videos_and_leave_out_unused(shared_data, tmp_path):
    splits_dir = tmp_path / "testTrainMulti_7030_splits"
    unused = write_official_hmdb_splits(shared_data, splits_dir)
    assert len(list(splits_dir.iterdir())) == 153
    assert unused[1] and unused[2]  # the fixtures hold videos that splits 1 and 2 leave unused
    video_dir = shared_data / "hmdb51_sample"
    config = prepare.PrepareConfig("hmdb51", str(video_dir), str(tmp_path / "out"), splits_dir=str(splits_dir),
                                   progress=False)
    class_names, splits = listing.list_splits(config)
    lists = shared_data / "splits" / "hmdb51"
    assert class_names == listing.read_class_index(lists / "classInd.txt")
    assert sorted(splits) == sorted(f"{s}_{k}" for s in ("train", "test") for k in (1, 2, 3))
    for k in (1, 2, 3):
        for subset in ("train", "test"):
            videos = splits[f"{subset}_{k}"]
            expected = expected_split(lists / f"{subset}list0{k}.txt", lists / "classInd.txt", video_dir)
            assert {(e.path, e.label) for e in videos.entries} == expected, (subset, k)
            assert len(videos.entries) + len(videos.missing) == (70 if subset == "train" else 30) * 51
        listed = {e.path.rsplit(".", 1)[0] for s in ("train", "test") for e in splits[f"{s}_{k}"].entries}
        assert not listed & {p.rsplit(".", 1)[0] for p in unused[k]}, k


def test_hmdb51_prepare_writes_split_1_of_the_official_files(shared_data, tmp_path):
    splits_dir = tmp_path / "splits"
    write_official_hmdb_splits(shared_data, splits_dir)
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "hmdb51", str(shared_data / "hmdb51_sample"), str(tmp_path / "out"), splits_dir=str(splits_dir),
        split_ids=(1,), short_side=32, workers=1, progress=False))
    assert sorted(report.splits) == ["test_1", "train_1"]
    lists = shared_data / "splits" / "hmdb51"
    for split in ("train_1", "test_1"):
        expected = expected_split(lists / f"{split[:-2]}list01.txt", lists / "classInd.txt", shared_data / "hmdb51_sample")
        written = {(r["filename"], r["label"]) for r in read_records(tmp_path / "out" / split)}
        assert expected and written == expected and report.splits[split].written == len(expected), split


def test_hmdb51_official_split_files_must_be_well_formed_and_complete(cli_flags, tmp_path):
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    for name in ("brush_hair", "wave"):
        for k in (1, 2):
            (splits_dir / f"{name}_test_split{k}.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits_dir / "wave_test_split2.txt").write_text("a.avi 1\nb.avi 3\n")
    with pytest.raises(ValueError, match=r"wave_test_split2.txt:2: expected '<video> <0\|1\|2>'"):
        listing.read_hmdb_splits(splits_dir)
    (splits_dir / "wave_test_split2.txt").unlink()
    argv = cli_flags("--dataset=hmdb51", f"--video_dir={tmp_path}", f"--splits_dir={splits_dir}",
                     f"--output_dir={tmp_path / 'out'}")
    with pytest.raises(prepare_cli._FlagError, match=r"--splits_dir=.*wave_test_split2.txt is missing"):
        prepare_cli.run(argv)


# --- a folder where nothing can be written -----------------------------------------------------


@pytest.mark.parametrize("layout", [[], ["notes.txt", ".hidden.mp4"]])
def test_folder_without_videos_exits_1_naming_the_expected_layout(cli_flags, tmp_path, capsys, layout):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in layout:
        (videos / name).write_bytes(b"")
    (videos / "empty_class").mkdir()
    argv = cli_flags("--dataset=folder", f"--video_dir={videos}", f"--output_dir={tmp_path / 'out'}")
    with pytest.raises(SystemExit) as exit_info:
        prepare_cli.main(argv)
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(rf"prepare: error: --video_dir={re.escape(str(videos))}: no video file in it or in a "
                        r"<class>/ subfolder; the folder dataset expects video_dir/<class>/<video> \(e\.g\. .*\), "
                        r"labels from the class folder names, or unlabelled videos directly in video_dir", line)
    assert not (tmp_path / "out").exists()


def test_folder_of_unlabelled_videos_is_written_for_pretraining(tmp_path):
    videos = tmp_path / "videos"
    write_tiny_video(videos / "b.mp4")
    write_tiny_video(videos / "a.mkv")
    (videos / "notes.txt").write_text("not a video")
    (videos / "empty_class").mkdir()
    output = tmp_path / "out"
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "folder", str(videos), str(output), split_name="unlabelled", workers=1, progress=False))

    assert report.labels == [] and (output / "labels.txt").read_text() == ""
    assert report.splits["unlabelled"].unlabelled and report.splits["unlabelled"].written == 2
    assert "written without labels (label -1): for pretraining" in report.summary()
    written = read_records(output / "unlabelled")
    assert sorted((r["filename"], r["label"], r["label_text"]) for r in written) == [("a.mkv", -1, ""), ("b.mp4", -1, "")]
    # The records train as any others: the pretraining pipeline reads them (labels unused).
    files = pipeline.training_files(str(output / "unlabelled" / "*"), "train_data")
    dataset = pipeline.pretrain_dataset(files, views.ViewConfig.two_views(4), augment.AugmentConfig(output_size=32),
                                        batch_size=2, seed=0)
    batch = next(iter(dataset))
    assert batch["view1"].shape[:2] == (2, 4)


def test_folder_videos_outside_class_folders_are_left_out_and_reported(tmp_path):
    videos = tmp_path / "videos"
    write_tiny_video(videos / "walk" / "w1.mp4")
    write_tiny_video(videos / "run" / "r1.mp4")
    write_tiny_video(videos / "stray.mp4")
    output = tmp_path / "out"
    report = prepare.prepare_dataset(prepare.PrepareConfig("folder", str(videos), str(output), workers=1,
                                                           progress=False))

    assert report.splits["train"].written == 2 and report.splits["train"].left_out == ["stray.mp4"]
    assert ("LEFT OUT train: 1 video(s) directly in the folder, outside every class folder, so without a label: "
            "stray.mp4") in report.summary()
    assert json.loads((output / "report.json").read_text())["splits"]["train"]["left_out"] == ["stray.mp4"]
    # An unlabelled split may join the labelled one in the same output_dir: labels.txt stays.
    unlabelled = tmp_path / "unlabelled"
    write_tiny_video(unlabelled / "u1.mp4")
    prepare.prepare_dataset(prepare.PrepareConfig("folder", str(unlabelled), str(output), split_name="extra",
                                                  workers=1, progress=False))
    assert (output / "labels.txt").read_text() == "run\nwalk\n"
    assert [r["label"] for r in read_records(output / "extra")] == [-1]
    assert set(json.loads((output / "report.json").read_text())["splits"]) == {"train", "extra"}


@pytest.mark.parametrize("dataset", ["folder", "synthetic"])
@pytest.mark.parametrize("under", ["", "sub"])
def test_output_dir_that_is_a_file_exits_1_naming_the_flag(cli_flags, tmp_path, capsys, dataset, under):
    (tmp_path / "file").write_text("keep me")
    output_dir = tmp_path / "file" / under if under else tmp_path / "file"
    argv = cli_flags(f"--dataset={dataset}", f"--video_dir={tmp_path}", f"--output_dir={output_dir}")
    with pytest.raises(SystemExit) as exit_info:
        prepare_cli.main(argv)
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"prepare: error: --output_dir={output_dir}: ")
    assert line.endswith(f"lies under {tmp_path / 'file'}, which is a file, not a folder; give a folder (created if "
                         "needed)" if under else "is a file, not a folder; give a folder (created if needed)")
    assert (tmp_path / "file").read_text() == "keep me"


def shard_states(output):
    return {p.relative_to(output).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in output.rglob("*.tfrecord")}


def test_rerun_reuses_complete_shards_and_writes_nothing(tmp_path):
    for i in range(5):
        write_tiny_video(tmp_path / "videos" / f"class{i % 2}" / f"v{i}.mp4")
    config = prepare.PrepareConfig("folder", str(tmp_path / "videos"), str(tmp_path / "out"),
                                   videos_per_shard=2, workers=1, progress=False)
    first = prepare.prepare_dataset(config)
    before = shard_states(tmp_path / "out")
    second = prepare.prepare_dataset(config)
    assert len(before) == 3
    assert shard_states(tmp_path / "out") == before
    assert (first.splits["train"].shards_reused, second.splits["train"].shards_reused) == (0, 3)
    assert second.splits["train"].written == first.splits["train"].written == 5


def test_leftover_temp_file_is_not_taken_for_a_finished_shard(tmp_path):
    write_tiny_video(tmp_path / "videos" / "a" / "x.mp4")
    config = prepare.PrepareConfig("folder", str(tmp_path / "videos"), str(tmp_path / "out"),
                                   workers=1, progress=False)
    split_dir = tmp_path / "out" / "train"
    split_dir.mkdir(parents=True)
    (split_dir / ".train-00000-of-00001.tfrecord.tmp").write_bytes(b"half a shard")
    report = prepare.prepare_dataset(config)
    assert report.splits["train"].shards_reused == 0
    assert [p.name for p in split_dir.iterdir() if p.is_file()] == ["train-00000-of-00001.tfrecord"]
    assert len(read_records(split_dir)) == 1


def test_shard_without_its_sidecar_or_with_other_settings_is_rewritten(tmp_path):
    write_tiny_video(tmp_path / "videos" / "a" / "x.mp4")
    config = prepare.PrepareConfig("folder", str(tmp_path / "videos"), str(tmp_path / "out"),
                                   workers=1, progress=False)
    shard = tmp_path / "out" / "train" / "train-00000-of-00001.tfrecord"
    prepare.prepare_dataset(config)
    (tmp_path / "out" / "train" / ".done" / (shard.name + ".json")).unlink()
    shard.write_bytes(b"interrupted before its sidecar was written")
    assert prepare.prepare_dataset(config).splits["train"].shards_reused == 0
    assert len(read_records(shard.parent)) == 1
    smaller = prepare.prepare_dataset(dataclasses.replace(config, short_side=16))
    assert smaller.splits["train"].shards_reused == 0
    assert read_records(shard.parent)[0]["frames"].shape[1] == 16


def test_shard_assignment_is_deterministic_and_mixes_classes(tmp_path):
    entries = tuple(listing.VideoEntry(f"c{i % 3}/v{i:02d}.mp4", i % 3, f"c{i % 3}") for i in range(30))
    videos = listing.SplitListing("train", entries, ())
    config = prepare.PrepareConfig("folder", str(tmp_path), str(tmp_path / "out"), videos_per_shard=10)
    plans = [shards.plan_shards(videos, config) for _ in range(2)]
    assert [t.entries for t in plans[0]] == [t.entries for t in plans[1]]
    assert [t.name for t in plans[0]] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(e for t in plans[0] for e in t.entries) == sorted(entries)
    assert all(len({e.label for e in t.entries}) == 3 for t in plans[0])


def test_folder_labels_follow_sorted_class_names(tmp_path):
    for name in ("zebra", "Apple", "mango"):
        write_tiny_video(tmp_path / "videos" / name / f"{name}_1.mp4")
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "folder", str(tmp_path / "videos"), str(tmp_path / "out"), split_name="val", workers=1, progress=False))
    assert report.labels == ["Apple", "mango", "zebra"]
    assert (tmp_path / "out" / "labels.txt").read_text() == "Apple\nmango\nzebra\n"
    labels = {r["label_text"]: r["label"] for r in read_records(tmp_path / "out" / "val")}
    assert labels == {"Apple": 0, "mango": 1, "zebra": 2}


def test_kinetics_csv_finds_videos_by_downloader_name_or_youtube_id(tmp_path):
    with open(tmp_path / "k.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerow(["riding a bike", "Ab-c_1", 10, 20, "train"])
        writer.writerow(["abseiling", "xYz", 0, 10, "train"])
        writer.writerow(["abseiling", "missing1", 5, 15, "validate"])
        writer.writerow(["riding a bike", "vAl2", 30, 40, "validate"])
    write_tiny_video(tmp_path / "videos" / "train" / "riding a bike" / "Ab-c_1_000010_000020.mp4")
    write_tiny_video(tmp_path / "videos" / "xYz.mp4")
    write_tiny_video(tmp_path / "videos" / "val" / "vAl2_000030_000040.mkv")
    write_tiny_video(tmp_path / "videos" / "val" / "val2_000030_000040.mp4")  # YouTube ids are case-sensitive
    class_names, rows = listing.read_kinetics_annotations(tmp_path / "k.csv")
    assert class_names == ["abseiling", "riding a bike"]
    assert rows["train"][0] == (("Ab-c_1_000010_000020", "Ab-c_1"), "riding a bike")
    report = prepare.prepare_dataset(prepare.PrepareConfig(
        "kinetics", str(tmp_path / "videos"), str(tmp_path / "out"), annotations=str(tmp_path / "k.csv"),
        workers=1, progress=False))
    assert {name: (s.written, s.missing) for name, s in report.splits.items()} == {
        "train": (2, 0), "validate": (1, 1)}
    train = {r["filename"]: (r["label"], r["label_text"]) for r in read_records(tmp_path / "out" / "train")}
    assert train == {"train/riding a bike/Ab-c_1_000010_000020.mp4": (1, "riding a bike"),
                     "xYz.mp4": (0, "abseiling")}
    (val,) = read_records(tmp_path / "out" / "validate")
    assert val["filename"] == "val/vAl2_000030_000040.mkv"


def test_fps_resampling_picks_the_nearest_source_frames(tmp_path):
    levels = np.arange(20) * 12
    write_tiny_video(tmp_path / "v.mp4", levels=levels, fps=25)
    video = decode.decode_video(tmp_path / "v.mp4", fps=15, short_side=None, jpeg_quality=95)
    frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in video.jpeg_frames])
    expected = levels[[round(k * 25 / 15) for k in range(12)]]  # no ties: k * 5/3 is never x.5
    assert video.fps == 15
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), expected, atol=2)


def test_resize_keeps_aspect_with_the_short_side_given(tmp_path):
    write_tiny_video(tmp_path / "tall.mp4", height=80, width=48)
    video = decode.decode_video(tmp_path / "tall.mp4", short_side=30)
    assert tf.io.decode_jpeg(video.jpeg_frames[0]).shape == (50, 30, 3)
    assert decode.output_size(320, 240, None) == (320, 240)
