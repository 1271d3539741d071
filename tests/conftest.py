"""Shared test fixtures: quiet TensorFlow, two logical CPUs, and the real clips in ../shared/data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: paper-sized model or long training; run with -m slow")
    import tensorflow as tf

    # Two logical CPU devices so MirroredStrategy tests have two replicas; must happen before
    # any op runs, which is why it lives here and not in a test.
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data (real UCF-101/HMDB-51 clips and split files), or skip."""
    if not (SHARED_DATA / "splits").is_dir():
        pytest.skip(f"real-clip fixtures not found at {SHARED_DATA} (the repo expects ../shared/data beside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A 2-class synthetic dataset (4 train + 2 test videos per class, 40 frames of 64×64)."""
    from vdim_tf.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(str(root), SyntheticConfig(
        num_classes=2, train_videos_per_class=4, test_videos_per_class=2, num_frames=40))
    return root


@pytest.fixture(scope="session")
def pretrained_run(tiny_synthetic, tmp_path_factory):
    """A 2-step VDIM pretraining run of the CPU preset (embedding 32) on `tiny_synthetic`."""
    from vdim_tf import trainer
    from vdim_tf.data import augment as augment_lib
    from vdim_tf.data import views as views_lib

    model_dir = tmp_path_factory.mktemp("pretrain")
    config = trainer.PretrainConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), model_dir=str(model_dir), train_steps=2,
        batch_size=4, model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=32,
                                                antecedent_layers=(5, 6), consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16, factor2=2),
        augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(warmup_steps=1), checkpoint_every=2, log_every=1,
    )
    trainer.pretrain(config, progress=False)
    return model_dir



@pytest.fixture
def labelled_records(tmp_path):
    """`make(name, labels)`: writes `tmp_path/name/records.tfrecord`, one short video of noise
    (4 frames of 64×64) per `(label index, label text)` pair, and returns its path."""
    import numpy as np
    import tensorflow as tf

    from vdim_tf.data import records

    rng = np.random.default_rng(0)

    def make(name, labels):
        path = tmp_path / name / "records.tfrecord"
        path.parent.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for n, (index, text) in enumerate(labels):
                jpegs = [tf.io.encode_jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).numpy() for _ in range(4)]
                writer.write(records.make_sequence_example(jpegs, index, text, f"video{n}.mp4", 25.0).SerializeToString())
        return str(path)

    return make


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by the tests of one process: two
    strategies in one process number their collective ops alike, and a collective of the second
    then meets the first's cached instance of another shape (a "Shape mismatch in the collective
    instance" abort)."""
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "pytest_configure should have made two logical CPUs"
    return tf.distribute.MirroredStrategy(devices[:2])
