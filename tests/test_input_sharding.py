"""How several workers split the input: `data` (every worker reads every file, keeps its share of
each batch) or `file` (each worker reads only its own files)."""

import re
import types

import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

from vdim_tf import loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import pipeline
from vdim_tf.data import views as views_lib


def labels_seen_by_worker(files, policy, worker, workers=2):
    """Labels of the records worker `worker` of `workers` reads, through the readers the training
    pipelines use, of the files the policy gives it (`loop.worker_files`), sharded as tf.distribute
    does for the policy (`_AutoShardDataset` is the rewrite `experimental_distribute_dataset`
    applies on each worker)."""
    files = loop.worker_files(files, policy, cluster("worker", worker, workers))
    dataset = loop.shard_per_worker(pipeline.read_records(files, shuffle=True, repeat=False, seed=0), policy)
    sharded = _AutoShardDataset(dataset, num_workers=workers, index=worker)
    return sorted(_label(s) for s in sharded)


def _label(serialized):
    context, _ = tf.io.parse_single_sequence_example(
        serialized, context_features={"clip/label/index": tf.io.FixedLenFeature([], tf.int64)})
    return int(context["clip/label/index"])


@pytest.fixture
def two_files(labelled_records):
    # File a holds 6 records of class 0, file b 2 of class 1: which labels a worker sees, and how
    # many, tells which files it read.
    return [labelled_records("a", [(0, "zero")] * 6), labelled_records("b", [(1, "one")] * 2)]


def test_file_sharding_gives_each_worker_only_its_own_files(two_files):
    seen = [labels_seen_by_worker(two_files, "file", w) for w in (0, 1)]
    assert sorted(seen) == [[0] * 6, [1] * 2]


def test_data_sharding_splits_one_common_stream_of_every_file(two_files):
    # Each worker reads both files and keeps every other record of the same seeded stream: half the
    # records each, together every record once.
    seen = [labels_seen_by_worker(two_files, "data", w) for w in (0, 1)]
    assert [len(s) for s in seen] == [4, 4]
    assert sorted(seen[0] + seen[1]) == [0] * 6 + [1] * 2


def test_file_sharding_with_fewer_files_than_workers_is_refused():
    with pytest.raises(ValueError, match=r"--input_sharding=file needs at least as many files as workers: "
                                         r"1 file\(s\) for 2 workers"):
        loop.check_input_sharding("file", ["only.tfrecord"], 2)
    loop.check_input_sharding("file", ["a.tfrecord", "b.tfrecord"], 2)
    loop.check_input_sharding("data", ["only.tfrecord"], 2)
    with pytest.raises(ValueError, match="input_sharding='rows'"):
        loop.check_input_sharding("rows", ["a.tfrecord"], 1)


def cluster(task_type, task_id, workers=2, chief=False):
    """A stand-in strategy with only what `loop.worker_files` reads: its cluster and this task."""
    spec = {"worker": [f"host{i}:1" for i in range(workers)]}
    if chief:
        spec["chief"] = ["chief:1"]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_worker_files_take_every_nth_file_from_the_worker_index_chief_first():
    files = [f"f{i}" for i in range(7)]
    assert loop.worker_files(files, "file", cluster("worker", 1)) == ["f1", "f3", "f5"]
    assert loop.worker_files(files, "file", cluster("worker", 0)) == ["f0", "f2", "f4", "f6"]
    # With a chief, it is worker 0 and the workers follow it.
    assert loop.worker_files(files, "file", cluster("chief", 0, chief=True)) == ["f0", "f3", "f6"]
    assert loop.worker_files(files, "file", cluster("worker", 0, chief=True)) == ["f1", "f4"]
    assert loop.worker_files(files, "file", cluster("worker", 1, chief=True)) == ["f2", "f5"]
    # Every file under data sharding, or with one process.
    assert loop.worker_files(files, "data", cluster("worker", 1)) == files
    assert loop.worker_files(files, "file", tf.distribute.get_strategy()) == files


@pytest.mark.parametrize("which", ["pretrain", "finetune"])
def test_file_sharding_shards_the_training_pipelines_themselves(two_files, which):
    # The training pipelines zip the records with a stream of seeds; tf.distribute's FILE policy
    # cannot shard that graph (its rewrite stops at the seed stream), which failed every
    # `--input_sharding=file` run at its first step. Each worker now builds its pipeline from its
    # own files and tf.distribute leaves it whole: every batch of worker w holds only its file's labels.
    views = views_lib.ViewConfig.two_views(final_length=2, offset2=0, factor2=1)
    augment = augment_lib.AugmentConfig(output_size=16)
    for worker, label in [(0, 0), (1, 1)]:
        files = loop.worker_files(two_files, "file", cluster("worker", worker))
        if which == "pretrain":
            dataset = pipeline.pretrain_dataset(files, views, augment, batch_size=2, seed=0)
        else:
            dataset = pipeline.finetune_dataset(files, views, augment, batch_size=2, num_views_k=2, training=True,
                                                seed=0)
        sharded = _AutoShardDataset(loop.shard_per_worker(dataset, "file"), num_workers=2, index=worker)
        labels = [int(x) for batch in sharded.take(3) for x in batch["label"]]
        assert labels == [label] * 6


def _record_offset(data, index):
    """Byte offset of record `index` of a TFRecord file's bytes (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    offset = 0
    for _ in range(index):
        offset += 12 + int.from_bytes(data[offset:offset + 8], "little") + 4
    return offset


@pytest.mark.slow
def test_two_workers_with_file_sharding_train_and_a_damaged_file_stops_both_saying_why(tmp_path):
    import workers
    from vdim_tf.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    generate_synthetic_dataset(str(tmp_path / "data"), SyntheticConfig(
        num_classes=2, train_videos_per_class=4, test_videos_per_class=1, num_frames=40))
    records = [r.numpy() for f in pipeline.list_files(str(tmp_path / "data" / "train" / "*.tfrecord"))
               for r in tf.data.TFRecordDataset(f)]
    # Two files of 240 records each (every video 60 times), so that the damaged record of file 1
    # is read well into the run, after the shuffle buffer (128) has filled.
    files = [tmp_path / "split" / f"train-{k}.tfrecord" for k in range(2)]
    files[0].parent.mkdir()
    for k, path in enumerate(files):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records[k::2] * 60:
                writer.write(record)
    data = bytearray(files[1].read_bytes())
    offset = _record_offset(data, 230)
    data[offset + 12 + int.from_bytes(data[offset:offset + 8], "little") // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))

    model_dir = tmp_path / "run"
    args = ["-m", "vdim_tf.launch.pretrain", "--encoder=cpu", f"--train_data={tmp_path / 'split' / '*.tfrecord'}",
            f"--model_dir={model_dir}", "--batch_size=4", "--embedding_dim=32", "--warmup_steps=1", "--log_every=1",
            "--train_steps=200", "--checkpoint_every=5", "--strategy=multi_worker", "--input_sharding=file"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    processes = workers.start_workers(lambda i: args, lambda i: logs[i])
    try:
        for p in processes:
            p.wait(400)
    finally:
        for p in processes:
            p.kill()
    texts = [log.read_text() for log in logs]

    # Worker 1 reads file 1 alone (file sharding ran: until this change it failed at the first
    # step): it names the damaged file; worker 0, whose step then fails, says why without a traceback.
    assert [p.returncode for p in processes] == [1, 1], texts
    steps = [int(s) for s in re.findall(r"^step (\d+):", texts[0], re.MULTILINE)]
    assert steps and steps[-1] >= 5, texts[0]
    assert f"pretrain: damaged training data: {files[1]}: corrupted record at {offset + 12}" in texts[1], texts[1]
    assert f"the chief's last checkpoint in {model_dir / 'checkpoints'} resumes the run" in texts[1], texts[1]
    assert "pretrain: lost contact with another worker during step" in texts[0], texts[0]
    assert "Collective ops is aborted by" in texts[0].split("pretrain: lost contact")[1], texts[0]
    assert "Traceback" not in texts[0] + texts[1], texts
    latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert latest and f"The last checkpoint is {latest}: fix the cause and rerun every worker" in texts[0], texts[0]
