"""Bad training files are refused before training, naming the file: a text file named .tfrecord, a
truncated TFRecord, a glob that matches a folder, records of another layout; a record damaged in
the middle of a file stops the loop with the file's name after saving a checkpoint."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import loop
from vdim_tf.data import pipeline, records


def write_videos(path, count=3, frames=2):
    """A TFRecord file of `count` tiny video SequenceExamples."""
    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            example = records.make_sequence_example([jpeg] * frames, i % 2, f"class{i % 2}", f"v{i}.avi", 25.0)
            writer.write(example.SerializeToString())
    return str(path)


RECORD_BYTES = 100  # data bytes of each record of `write_blobs`; 12 + 100 + 4 bytes on disk


def write_blobs(path, count):
    """A TFRecord file of `count` records of RECORD_BYTES bytes each."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            writer.write(bytes([i]) * RECORD_BYTES)
    return str(path)


def damage_record(path, index):
    """Flips one data byte of record `index`: the file keeps its length, the record's checksum fails."""
    data = bytearray(open(path, "rb").read())
    data[index * (12 + RECORD_BYTES + 4) + 12 + RECORD_BYTES // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_whole_files_pass_and_their_records_are_counted(tmp_path):
    files = [write_videos(tmp_path / "a.tfrecord", 3), write_videos(tmp_path / "b.tfrecord", 2)]
    (tmp_path / "empty.tfrecord").write_bytes(b"")

    assert pipeline.check_files(files + [str(tmp_path / "empty.tfrecord")]) == 5


def test_text_file_named_tfrecord_is_refused_naming_it(tmp_path):
    good = write_videos(tmp_path / "a.tfrecord")
    text = tmp_path / "notes.tfrecord"
    text.write_text("these are my notes, not a TFRecord file\n" * 20)

    with pytest.raises(ValueError, match=rf"1 of its 2 files cannot be used: {text}: not a TFRecord file"):
        pipeline.check_files([good, str(text)])


def test_truncated_tfrecord_is_refused_naming_it(tmp_path):
    path = write_videos(tmp_path / "a.tfrecord", 3)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 10)

    with pytest.raises(ValueError, match=rf"{path}: truncated: record 2 at byte \d+"):
        pipeline.check_files([path])


def test_records_of_another_layout_are_refused(tmp_path):
    path = str(tmp_path / "images.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:  # a tf.train.Example of an image, not a video
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

    with pytest.raises(ValueError, match=rf"{path}: its first record has no 'image/encoded' frames"):
        pipeline.check_files([path])


def test_frames_that_are_not_jpeg_are_refused(tmp_path):
    path = str(tmp_path / "png.tfrecord")
    png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(records.make_sequence_example([png], 0, "a", "v.avi", 25.0).SerializeToString())

    with pytest.raises(ValueError, match=rf"{path}: the first frame of its first record is not a JPEG image"):
        pipeline.check_files([path])


def test_glob_matching_a_folder_is_refused_naming_it(tmp_path):
    write_videos(tmp_path / "train-00000-of-00001.tfrecord")
    (tmp_path / "old").mkdir()

    with pytest.raises(ValueError, match=rf"train_data='.*/\*' matches the folder\(s\) {tmp_path / 'old'}"):
        pipeline.list_files(str(tmp_path / "*"), name="train_data")
    assert pipeline.list_files(str(tmp_path / "*.tfrecord")) == [str(tmp_path / "train-00000-of-00001.tfrecord")]


def test_wildcards_leave_out_hidden_names_as_the_shell_does(tmp_path, monkeypatch):
    shard = tmp_path / "train" / "train-00000-of-00001.tfrecord"
    (tmp_path / "train" / ".done").mkdir(parents=True)
    write_videos(shard)  # prepare's sidecar folder, which TensorFlow's glob matches
    (tmp_path / "train" / ".done" / "train-00000-of-00001.json").write_text("{}")
    write_videos(tmp_path / "train" / ".partial.tfrecord")
    assert tf.io.gfile.isdir(str(tmp_path / "train" / ".done"))
    assert pipeline.list_files(str(tmp_path / "train" / "*")) == [str(shard)]
    assert pipeline.list_files(str(tmp_path / "*" / "*.tfrecord")) == [str(shard)]
    # Named explicitly, a hidden name is read; relative patterns behave alike.
    assert pipeline.list_files(str(tmp_path / "train" / ".p*")) == [str(tmp_path / "train" / ".partial.tfrecord")]
    monkeypatch.chdir(tmp_path)
    assert pipeline.list_files("train/*") == ["train/train-00000-of-00001.tfrecord"]
    (tmp_path / ".cache").mkdir()
    write_videos(tmp_path / ".cache" / "train-00000-of-00001.tfrecord")
    assert pipeline.list_files(".cache/*.tfrecord") == [".cache/train-00000-of-00001.tfrecord"]
    with pytest.raises(FileNotFoundError, match=r"no TFRecord files match"):
        pipeline.list_files("?cache/train-00000-of-00001.tfrecord")  # a wildcard, as in the shell


def test_videos_shorter_than_an_example_are_counted_before_training(tmp_path):
    files = [write_videos(tmp_path / "a.tfrecord", count=3, frames=2),
             write_videos(tmp_path / "b.tfrecord", count=2, frames=40)]

    assert pipeline.short_videos_note(files, 32) == (
        "short videos: 3 of the 5 videos have fewer than the 32 frames an example spans (shortest: 2); "
        "their windows are filled by repeating the last frame, so those examples end on a still frame")
    assert pipeline.short_videos_note(files, 2) is None  # every video is long enough: nothing to say
    assert pipeline.short_videos_note(files[1:], 41).startswith("short videos: 2 of the 2 videos have fewer ")
    assert pipeline.short_videos_note(files, 32, max_records=2).startswith("short videos: 2 of the 2 videos read ")
    damaged = write_blobs(tmp_path / "c.tfrecord", 2)  # not videos: training names the file, not this note
    assert pipeline.short_videos_note([damaged], 32) is None


def test_no_match_shows_the_absolute_path_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FileNotFoundError, match=rf"looked for {tmp_path}/missing/\*\.tfrecord"):
        pipeline.list_files("missing/*.tfrecord")


def read_error(path):
    with pytest.raises(tf.errors.DataLossError) as info:
        for _ in tf.data.TFRecordDataset(path):
            pass
    return info.value


def test_find_damaged_names_the_file_behind_a_checksum_error(tmp_path):
    files = [write_blobs(tmp_path / f"{name}.tfrecord", 5) for name in ("a", "b", "c")]
    damage_record(files[1], 3)
    assert [len(records.record_offsets(f)) for f in files] == [5, 5, 5]  # the header walk cannot see it

    found = records.find_damaged(files, read_error(files[1]))

    assert [path for path, _ in found] == [files[1]]
    assert "corrupted record at 360" in found[0][1]  # record 3 starts at byte 3 * 116, its data 12 bytes later


def test_damaged_record_mid_run_saves_a_checkpoint_and_names_the_file(tmp_path):
    path = write_blobs(tmp_path / "train.tfrecord", 6)
    damage_record(path, 3)  # steps 1-3 read records 0-2; step 4 fails
    model = keras.Sequential([keras.layers.Dense(1)])
    model.build((None, 3))
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(batch["x"]) ** 2)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return {loop.LOSS: loss}

    def make_dataset(start):
        return tf.data.TFRecordDataset(path).map(lambda record: {"x": tf.ones([2, 3])})

    config = loop.LoopConfig(str(tmp_path / "run"), train_steps=10, checkpoint_every=100, log_every=100)
    with pytest.raises(loop.TrainingError) as info:
        loop.train_loop(config, strategy=tf.distribute.get_strategy(),
                        checkpoint=tf.train.Checkpoint(model=model, optimizer=optimizer), optimizer=optimizer,
                        make_dataset=make_dataset, replica_step=replica_step, batch_size=2, progress=False,
                        data_files=[path])

    message = str(info.value)
    assert f"damaged training data: {path}: corrupted record at 360" in message, message
    assert "Stopped at step 3, its checkpoint saved" in message, message
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-3")
