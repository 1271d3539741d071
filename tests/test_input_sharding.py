"""How several workers split the input: `data` (every worker reads every file, keeps its share of
each batch) or `file` (each worker reads only its own files)."""

import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

from vdim_tf import loop
from vdim_tf.data import pipeline


def labels_seen_by_worker(files, policy, worker, workers=2):
    """Labels of the records worker `worker` of `workers` reads, through the readers the training
    pipelines use, sharded as tf.distribute does for the policy (`_AutoShardDataset` is the rewrite
    `experimental_distribute_dataset` applies on each worker)."""
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
