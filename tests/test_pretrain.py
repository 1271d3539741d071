"""The pretraining launcher: resumable after SIGKILL and SIGTERM, stopped by a non-finite loss,
fast to reject bad configurations, distributed over a tf.data service (worker processes:
tests/test_distributed.py), and every flagfile in configs/ parses.

Runs the CPU preset at batch 4 on a small synthetic dataset generated once per session.
Subprocesses run the real command (`python -m vdim_tf.launch.pretrain`); the rest call
`trainer.pretrain` in this process.
"""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import loop, trainer
from vdim_tf.data import pipeline, records
from vdim_tf.data import views as views_lib
from vdim_tf.data.synthetic import SyntheticConfig, generate_synthetic_dataset
from vdim_tf.launch import pretrain as launcher

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Pretraining flagfiles; the fine-tuning ones (other flags) are checked with their launcher.
CONFIGS = sorted((REPO_ROOT / "configs").glob("*pretrain*.cfg"))
TIMEOUT = 180  # seconds any one subprocess may take


@pytest.fixture(scope="session")
def train_glob(tmp_path_factory):
    """TFRecord glob of a 2-class synthetic dataset (4 + 2 videos per class, 40 frames)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(str(root), SyntheticConfig(
        num_classes=2, train_videos_per_class=4, test_videos_per_class=2, num_frames=40))
    return str(root / "train" / "*.tfrecord")


@pytest.fixture
def flags(train_glob, tmp_path):
    """Launcher flags of a tiny CPU run in a fresh model_dir."""
    return [
        "--encoder=cpu", f"--train_data={train_glob}", f"--model_dir={tmp_path / 'run'}", "--batch_size=4",
        "--embedding_dim=32", "--warmup_steps=1", "--log_every=1",
    ]


def small_config(train_glob, model_dir, **overrides):
    launcher.FLAGS.unparse_flags()
    launcher.FLAGS(["pretrain", "--encoder=cpu", f"--train_data={train_glob}", f"--model_dir={model_dir}",
                    "--batch_size=4", "--embedding_dim=32", "--warmup_steps=1", "--log_every=1",
                    "--train_steps=3", "--checkpoint_every=2"])
    config = launcher.config_from_flags()
    launcher.FLAGS.unparse_flags()
    return dataclasses.replace(config, **overrides)


def launch(args, log_path, env=None, script=None):
    """Starts the launcher (or `script`) with `args`, stdout and stderr into `log_path`."""
    command = [sys.executable, *([script] if script else ["-m", "vdim_tf.launch.pretrain"]), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)


def run(args, log_path, **kwargs):
    process = launch(args, log_path, **kwargs)
    try:
        process.wait(TIMEOUT)
    finally:
        process.kill()
    return process.returncode, pathlib.Path(log_path).read_text()


def logged_steps(log):
    """Steps of the metric lines (`step N: loss=...`), in order."""
    return [int(s) for s in re.findall(r"\bstep (\d+): ", log)]


def latest_step(model_dir):
    """Step number of the newest checkpoint in `model_dir/checkpoints`, or None."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return None if path is None else int(path.rsplit("-", 1)[1])


def checkpoint_iterations(model_dir):
    """The optimizer's step counter stored in the newest checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def wait_for(condition, process, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training exited (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def model_dir_of(flags):
    return next(f.split("=", 1)[1] for f in flags if f.startswith("--model_dir="))


# --- never lose work -------------------------------------------------------------------------


def test_sigkill_mid_run_resumes_from_last_checkpoint_and_reaches_train_steps(flags, tmp_path):
    args = flags + ["--train_steps=24", "--checkpoint_every=3"]
    model_dir = model_dir_of(flags)
    process = launch(args, tmp_path / "killed.log")
    try:
        wait_for(lambda: (latest_step(model_dir) or 0) >= 3, process, "a checkpoint beyond step 0")
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed_from = latest_step(model_dir)
    assert resumed_from < 24

    status, log = run(args, tmp_path / "restarted.log")

    assert status == 0, log
    assert f"resuming from {os.path.join(model_dir, 'checkpoints', f'ckpt-{resumed_from}')} at step {resumed_from}" in log
    assert logged_steps(log) == list(range(resumed_from + 1, 25))
    # Training time summed over both runs (the record of the checkpoint it resumed from plus its own).
    assert re.search(r"done: step 24 \([0-9.]+ min of training\);", log), log
    assert latest_step(model_dir) == checkpoint_iterations(model_dir) == 24


def test_sigterm_saves_the_last_completed_step_and_exits_143(flags, tmp_path):
    # No periodic checkpoint before the signal: the only one is the SIGTERM save.
    args = flags + ["--train_steps=1000", "--checkpoint_every=1000"]
    model_dir = model_dir_of(flags)
    log_path = tmp_path / "terminated.log"
    process = launch(args, log_path)
    try:
        wait_for(lambda: len(logged_steps(log_path.read_text())) >= 3, process, "three training steps")
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
    finally:
        process.kill()
    log = log_path.read_text()

    assert process.returncode == 143, log
    saved = int(re.search(r"received SIGTERM: checkpoint saved at step (\d+)", log).group(1))
    assert saved == logged_steps(log)[-1] >= 3  # the last step that completed is in the checkpoint
    assert latest_step(model_dir) == checkpoint_iterations(model_dir) == saved

    status, log = run(flags + [f"--train_steps={saved + 2}", "--checkpoint_every=1000"], tmp_path / "rerun.log")
    assert status == 0, log
    assert f"at step {saved}" in log and logged_steps(log) == [saved + 1, saved + 2]


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(flags, tmp_path):
    # A huge step without the score stabilisers overflows the scores within a few steps.
    args = flags + ["--train_steps=50", "--checkpoint_every=1", "--learning_rate=1e10", "--tanh_clip=0",
                    "--noscale_scores"]
    model_dir = model_dir_of(flags)

    status, log = run(args, tmp_path / "nan.log")

    assert status == 1, log
    match = re.search(r"loss is (nan|inf|-inf) at step (\d+); stopping", log)
    assert match, log
    bad_step = int(match.group(2))
    assert latest_step(model_dir) == checkpoint_iterations(model_dir) == bad_step - 1
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


# --- fail fast -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_flag, expected", [
    ("--no_such_flag=3", "no_such_flag"),
    ("--antecedent_layers=9", "antecedent_layers=[9]"),
])
def test_bad_flags_exit_1_naming_the_flag(flags, tmp_path, bad_flag, expected):
    status, log = run(flags + ["--train_steps=5", bad_flag], tmp_path / "bad.log")

    assert status == 1, log
    assert expected in log
    assert "Traceback" not in log
    assert not os.path.exists(os.path.join(model_dir_of(flags), "checkpoints"))


def launcher_error(argv):
    """Runs the launcher's main in this process; returns its exit message (status 1 when a str)."""
    launcher.FLAGS.unparse_flags()
    try:
        launcher.FLAGS(["pretrain", *argv])
        with pytest.raises(SystemExit) as exit_info:
            launcher.main(["pretrain"])
    finally:
        launcher.FLAGS.unparse_flags()
    assert isinstance(exit_info.value.code, str), "a str exit code is exit status 1"
    return exit_info.value.code


@pytest.mark.parametrize("bad_flags, expected", [
    (["--final_length=4"], "final_length=4"),
    (["--final_length=24"], "--final_length=24 --image_size=64: views of 24 frames at 64 px make the global "
                            "layer 6 3×1×1, not 1×1×1: the 'cpu' encoder takes 15-18 frames of 63-78 px"),
    (["--image_size=96"], "--final_length=16 --image_size=96: views of 16 frames at 96 px make the global layer 6 1×3×3"),
    (["--temporal_difference", "--nosymmetric"], "temporal_difference has no consequent layer"),
    (["--view2_factor=0"], "--view2_factor=0"),
    (["--time_limit_minutes=-1"], "time_limit_minutes=-1.0: must be >= 0"),
    (["--decoded_cache_gib=-1"], "decoded_cache_gib=-1.0: must be >= 0"),
    (["--antecedent_layers=4,x"], "--antecedent_layers=4,x"),
    (["--train_data=/nonexistent/*.tfrecord"], "train_data='/nonexistent/*.tfrecord'"),
])
def test_bad_configurations_fail_before_training_naming_the_value(flags, bad_flags, expected):
    message = launcher_error(flags + ["--train_steps=5"] + bad_flags)

    assert message.startswith("pretrain: error:") and expected in message, message
    assert not os.path.exists(os.path.join(model_dir_of(flags), "checkpoints"))


def test_train_data_without_records_fails(flags, tmp_path):
    (tmp_path / "empty-00000-of-00001.tfrecord").write_bytes(b"")
    message = launcher_error(flags + ["--train_steps=5", f"--train_data={tmp_path}/empty-*.tfrecord"])

    assert "hold no records" in message and "empty-*.tfrecord" in message


def test_missing_train_data_shows_the_absolute_path_looked_for(flags, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = launcher_error(flags + ["--train_steps=5", "--train_data=data/train/*.tfrecord"])

    expected = f"train_data='data/train/*.tfrecord' matches no file (looked for {tmp_path}/data/train/*.tfrecord)"
    assert expected in message, message


def spoil(folder, case):
    """Puts one kind of bad training file beside a good shard in `folder`; returns what the message names."""
    shard = folder / "train-00000-of-00002.tfrecord"
    if case == "text file":
        (folder / "train-00001-of-00002.tfrecord").write_text("video_0001.avi 3\n" * 100)
        return f"{folder / 'train-00001-of-00002.tfrecord'}: not a TFRecord file"
    if case == "truncated":
        data = shard.read_bytes()
        (folder / "train-00001-of-00002.tfrecord").write_bytes(data[:len(data) - 1000])
        return f"{folder / 'train-00001-of-00002.tfrecord'}: truncated: record 7 at byte"
    if case == "folder":
        (folder / "old").mkdir()
        return f"matches the folder(s) {folder / 'old'}, not only TFRecord files"
    if case == "damaged record":  # passes the checks before training: only its checksum is wrong
        data = bytearray(shard.read_bytes())
        data[records.record_offsets(str(shard))[3] + 100] ^= 0xFF
        shard.write_bytes(bytes(data))
        return f"damaged training data: {shard}: corrupted record at"


@pytest.mark.parametrize("case", ["text file", "truncated", "folder", "damaged record"])
def test_bad_training_files_stop_the_run_naming_the_file(flags, train_glob, tmp_path, case):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(train_glob.replace("*.tfrecord", "train-00000-of-00001.tfrecord"),
                folder / "train-00000-of-00002.tfrecord")
    expected = spoil(folder, case)

    message = launcher_error(flags + ["--train_steps=5", f"--train_data={folder}/*"])

    assert message.startswith("pretrain: ") and expected in message, message
    assert latest_step(model_dir_of(flags)) is None


def test_damaged_record_stops_a_run_with_the_decoded_cache_naming_the_file(flags, train_glob, tmp_path):
    # Sizing the cache reads the damaged record first: the cache stays off and training names it.
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(train_glob.replace("*.tfrecord", "train-00000-of-00001.tfrecord"),
                folder / "train-00000-of-00002.tfrecord")
    expected = spoil(folder, "damaged record")

    message = launcher_error(flags + ["--train_steps=5", f"--train_data={folder}/*", "--decoded_cache_gib=1"])

    assert message.startswith("pretrain: ") and expected in message, message
    assert latest_step(model_dir_of(flags)) is None


def test_decoded_cache_trains_from_frames_decoded_once_and_says_so(train_glob, tmp_path, capsys):
    config = small_config(train_glob, tmp_path / "run", decoded_cache_gib=1.0)

    result = trainer.pretrain(config, progress=False)

    # 8 videos of 40 frames of 64x64 (the synthetic dataset's frame size).
    expected = f"decoded cache: 8 videos, {8 * 40 * 64 * 64 * 3 / 2**20:.1f} MiB decoded once"
    out = capsys.readouterr().out
    assert expected in out
    assert "short videos" not in out  # 40 frames: longer than the 32 an example spans
    assert result["step"] == 3 and latest_step(config.model_dir) == 3
    # The run's image strips of the two views are written from the cached pipeline too.
    assert {"views/clip0_view1", "views/clip0_view2"} <= set(summary_tags(config.model_dir, "images"))


def test_videos_shorter_than_an_example_are_named_at_start(train_glob, tmp_path, capsys):
    # View 2 at a third of the frame rate: an example spans 48 frames, the videos have 40.
    config = small_config(train_glob, tmp_path / "run", train_steps=1,
                          views=views_lib.ViewConfig.two_views(16, factor2=3))

    assert trainer.pretrain(config, progress=False)["step"] == 1
    assert ("short videos: 8 of the 8 videos have fewer than the 48 frames an example spans (shortest: 40)"
            in capsys.readouterr().out)


def test_decoded_cache_stays_off_for_data_larger_than_the_limit(train_glob, tmp_path):
    config = small_config(train_glob, tmp_path / "run", decoded_cache_gib=0.0001)  # 107 kB: not one video

    videos, message = trainer.decoded_cache_plan(config, pipeline.list_files(train_glob))

    assert videos == 0
    assert message.startswith("decoded cache: off (the decoded frames exceed --decoded_cache_gib=0.0001: "
                              f"{40 * 64 * 64 * 3 / 2**20:.1f} MiB in the first 1 videos)"), message


def test_decoded_cache_stays_off_when_it_would_leave_too_little_memory(train_glob, tmp_path, monkeypatch):
    config = small_config(train_glob, tmp_path / "run", decoded_cache_gib=1.0)
    files = pipeline.list_files(train_glob)
    decoded = 8 * 40 * 64 * 64 * 3  # 3.75 MiB: well inside the limit
    # The memory available leaves the headroom, but not the headroom and the frames.
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: trainer.CACHE_HEADROOM_BYTES + decoded // 2)

    videos, message = trainer.decoded_cache_plan(config, files)

    assert videos == 0
    assert message == ("decoded cache: off (3.8 MiB of decoded frames would leave less than 2.00 GiB of the "
                       f"{(trainer.CACHE_HEADROOM_BYTES + decoded // 2) / 2**30:.2f} GiB of memory available); "
                       "decoding every epoch")
    # Enough for both: cached. Several workers: the limit alone decides (they must agree).
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: trainer.CACHE_HEADROOM_BYTES + decoded)
    assert trainer.decoded_cache_plan(config, files)[0] == 8
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: 0)
    assert trainer.decoded_cache_plan(config, files, workers=2)[0] == 8
    assert trainer.decoded_cache_plan(config, files)[0] == 0


def test_available_memory_is_read_from_the_system(monkeypatch):
    monkeypatch.setattr(trainer, "_cgroup_memory_left", lambda: None)
    available = trainer.available_memory_bytes()
    # This machine's MemAvailable (Linux); a number of bytes between 64 MiB and 64 TiB.
    assert available is None or 2**26 < available < 2**46
    if os.path.exists("/proc/meminfo"):
        assert available is not None
        # A container's limit lowers it, never raises it.
        monkeypatch.setattr(trainer, "_cgroup_memory_left", lambda: 2**27)
        assert trainer.available_memory_bytes() == 2**27
        monkeypatch.setattr(trainer, "_cgroup_memory_left", lambda: 2**50)
        assert 2**26 < trainer.available_memory_bytes() < 2**46  # MemAvailable again, not the 2**50


def test_container_memory_limit_is_read_from_cgroup_v2_and_v1(tmp_path):
    at_root = tmp_path / "proc_cgroup_root"  # a container's view: its own cgroup is the mount's root
    at_root.write_text("0::/\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{4 * 2**30}\n")
    (v2 / "memory.current").write_text(f"{3 * 2**30}\n")
    (v2 / "memory.stat").write_text(f"anon 100\ninactive_file {2**29}\nactive_file 7\n")
    # Left: limit - usage + reclaimable file cache.
    assert trainer._cgroup_memory_left(str(v2), str(at_root)) == 2**30 + 2**29
    (v2 / "memory.max").write_text("max\n")  # no limit
    assert trainer._cgroup_memory_left(str(v2), str(at_root)) is None

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2 * 2**30}\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text(f"{3 * 2**30}\n")
    (v1 / "memory" / "memory.stat").write_text("cache 9\ntotal_inactive_file 0\n")
    v1_root = tmp_path / "proc_cgroup_v1"
    v1_root.write_text("4:memory:/\n0::/\n")
    assert trainer._cgroup_memory_left(str(v1), str(v1_root)) == 0  # over the limit: nothing left, never negative
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert trainer._cgroup_memory_left(str(v1), str(v1_root)) is None
    assert trainer._cgroup_memory_left(str(tmp_path / "absent"), str(at_root)) is None
    assert trainer._cgroup_memory_left(str(v1), str(tmp_path / "no_proc_file")) is None


def _write_cgroup_v2(directory, limit, usage):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.max").write_text(f"{limit}\n")
    (directory / "memory.current").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text("inactive_file 0\n")


def test_memory_limit_of_a_cgroup_above_the_process_is_read(tmp_path):
    # A batch job's limit (Slurm, systemd) sits a few levels above the task the process runs in.
    root = tmp_path / "cgroup"
    job = root / "system.slice" / "slurmstepd.scope" / "job_7"
    task = job / "step_0" / "user" / "task_0"
    _write_cgroup_v2(root, "max", 50 * 2**30)  # the host: no limit
    _write_cgroup_v2(job, 8 * 2**30, 5 * 2**30)  # the job's limit: 3 GiB left
    _write_cgroup_v2(task, "max", 2**30)
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n")
    assert trainer._cgroup_memory_left(str(root), str(proc)) == 3 * 2**30
    # The least left wins, wherever it is on the way up.
    _write_cgroup_v2(task, 2**31, 2**30)
    assert trainer._cgroup_memory_left(str(root), str(proc)) == 2**30
    # A path that is not under the mount (a container that shows the host's path and mounts its
    # own cgroup at the root): only the root is read.
    proc.write_text("0::/docker/0123abcd\n")
    _write_cgroup_v2(root, 6 * 2**30, 2**30)
    assert trainer._cgroup_memory_left(str(root), str(proc)) == 5 * 2**30
    # cgroup v1 (a hybrid host): the memory controller's own hierarchy, named on its line.
    v1 = tmp_path / "v1" / "memory"
    group = v1 / "slurm" / "uid_1000" / "job_7"
    for directory, limit, usage in ((v1, 9223372036854771712, 2**34), (group, 4 * 2**30, 2**30),
                                    (group / "step_batch", 9223372036854771712, 2**30)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (directory / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (directory / "memory.stat").write_text(f"total_inactive_file {2**29}\n")
    proc.write_text("9:cpu,cpuacct:/slurm/uid_1000/job_7/step_batch\n"
                    "4:memory:/slurm/uid_1000/job_7/step_batch\n0::/\n")
    assert trainer._cgroup_memory_left(str(tmp_path / "v1"), str(proc)) == 3 * 2**30 + 2**29


def test_batch_that_does_not_divide_across_replicas_fails(train_glob, tmp_path):
    # conftest.py gives this process two logical CPUs, so `mirrored` has two replicas.
    config = small_config(train_glob, tmp_path / "run", strategy="mirrored", batch_size=3)

    with pytest.raises(ValueError, match=r"batch_size=3 does not divide across 2 replicas"):
        trainer.pretrain(config, progress=False)


def test_batch_larger_than_the_dataset_is_refused_before_training(train_glob, tmp_path):
    # train_glob holds 8 videos: a batch of 10 would hold some video twice, its own negative.
    config = small_config(train_glob, tmp_path / "run", batch_size=10)

    with pytest.raises(ValueError, match=r"batch_size=10 is larger than the 8 videos of train_data=.*<= 8"):
        trainer.pretrain(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_per_replica_negatives_with_one_clip_per_replica_fail(train_glob, tmp_path):
    # Two replicas (conftest.py), global batch 2: one clip each, so without gathering a replica's
    # NCE would have no negative at all.
    config = small_config(train_glob, tmp_path / "run", strategy="mirrored", batch_size=2)
    lone = dataclasses.replace(config, model=dataclasses.replace(config.model, gather_negatives=False))

    with pytest.raises(ValueError, match=r"--nogather_negatives with --batch_size=2 on 2 replicas leaves 1 clip "
                                         r"per replica.*--batch_size >= 4"):
        trainer.pretrain(lone, progress=False)
    assert not (tmp_path / "run").exists()
    config.validate_replicas(2)  # gathered negatives span the global batch: 1 clip per replica is fine
    dataclasses.replace(lone, batch_size=4).validate_replicas(2)


def test_mixed_bfloat16_run_computes_in_bfloat16_and_restores_the_policy(train_glob, tmp_path):
    import keras

    config = small_config(train_glob, tmp_path / "run", precision="mixed_bfloat16", train_steps=2)
    result = trainer.pretrain(config, progress=False)

    assert result["step"] == 2 and np.isfinite(result["metrics"]["loss/total"])
    assert result["model"].encoder.compute_dtype == "bfloat16"
    assert {v.dtype for v in result["model"].weights} == {"float32"}  # checkpoints stay float32
    assert keras.mixed_precision.global_policy().name == "float32"


# --- resume, resolved config, TensorBoard ----------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(train_glob, tmp_path_factory):
    """A 3-step in-process run (checkpoints at 2 and 3)."""
    config = small_config(train_glob, str(tmp_path_factory.mktemp("finished") / "run"))
    result = trainer.pretrain(config, progress=False)
    return config, result


def test_run_writes_the_resolved_config(finished_run):
    config, _ = finished_run
    with open(os.path.join(config.model_dir, "config.json")) as f:
        written = json.load(f)

    assert written.pop("versions") == loop.run_versions()
    assert written.pop("color_space") == "rgb"  # --color_mode=jitter: the RGB input the encoder learns from
    assert written == json.loads(config.to_json())
    assert written["model"]["antecedent_layers"] == [4, 5, 6] and written["views"]["final_length"] == 16


def summary_tags(model_dir, plugin):
    """{tag: [steps]} of the run's training summaries of one TensorBoard plugin."""
    tags = {}
    for path in tf.io.gfile.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    tags.setdefault(value.tag, []).append(event.step)
    return tags


def scalar_tags(model_dir):
    return summary_tags(model_dir, "scalars")


def test_tensorboard_logs_losses_accuracies_learning_rate_and_throughput(finished_run):
    config, _ = finished_run
    tags = scalar_tags(config.model_dir)

    expected = {"loss/total", "loss/layer4_to_layer6", "loss/layer6_to_layer4", "nce_accuracy/layer4_to_layer6",
                "nce_accuracy/layer6_to_layer6", "optimizer/learning_rate", "throughput/clips_per_second",
                "throughput/step_time_seconds"}
    assert expected <= set(tags), sorted(tags)
    assert {tag.split("/")[0] for tag in tags} == {"loss", "nce_accuracy", "optimizer", "throughput"}, sorted(tags)
    assert sorted(tags["loss/total"]) == [1, 2, 3]


def test_larger_train_steps_continues_the_same_run(finished_run, capsys):
    config, _ = finished_run

    result = trainer.pretrain(dataclasses.replace(config, train_steps=5), progress=False)

    assert f"resuming from {os.path.join(config.model_dir, 'checkpoints', 'ckpt-3')} at step 3" in capsys.readouterr().out
    assert result["step"] == 5 and latest_step(config.model_dir) == checkpoint_iterations(config.model_dir) == 5
    assert sorted(scalar_tags(config.model_dir)["loss/total"]) == [1, 2, 3, 4, 5]


# --- damaged, moved and rerun run folders --------------------------------------------------


def copy_of(finished_run, tmp_path):
    """The finished run's config, pointing at a copy of its run folder."""
    config, _ = finished_run
    shutil.copytree(config.model_dir, tmp_path / "copy")
    return dataclasses.replace(config, model_dir=str(tmp_path / "copy"))


def checkpoint_prefixes(model_dir):
    """The checkpoints listed in `model_dir/checkpoints`, oldest first."""
    return list(tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints")).all_model_checkpoint_paths)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_truncated_newest_checkpoint_is_skipped_for_the_one_before(finished_run, tmp_path, capsys):
    config = copy_of(finished_run, tmp_path)
    *_, previous, newest = checkpoint_prefixes(config.model_dir)
    truncate(tf.io.gfile.glob(newest + ".data-*")[0])
    newest_step, previous_step = (int(p.rsplit("-", 1)[1]) for p in (newest, previous))

    result = trainer.pretrain(dataclasses.replace(config, train_steps=newest_step), progress=False)

    out = capsys.readouterr().out
    assert (f"checkpoint {newest} does not restore (IndexError: Read less bytes than requested); trying the one "
            f"before it") in out
    assert f"resuming from {previous} at step {previous_step}" in out
    assert result["step"] == newest_step
    assert latest_step(config.model_dir) == checkpoint_iterations(config.model_dir) == newest_step  # rewritten whole


def test_no_checkpoint_that_restores_is_an_error_naming_the_files(finished_run, tmp_path):
    config = copy_of(finished_run, tmp_path)
    for prefix in checkpoint_prefixes(config.model_dir):
        truncate(tf.io.gfile.glob(prefix + ".data-*")[0])
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "copy" / "checkpoints").iterdir()}

    message = launcher_error(["--encoder=cpu", f"--train_data={config.train_data}", f"--model_dir={config.model_dir}",
                              "--batch_size=4", "--embedding_dim=32", "--warmup_steps=1", "--log_every=1",
                              "--train_steps=20", "--checkpoint_every=2"])

    assert message.startswith(f"pretrain: no checkpoint in {config.model_dir}/checkpoints restores"), message
    for prefix in checkpoint_prefixes(config.model_dir):
        name = os.path.basename(prefix)
        assert f"{name} [{name}.data-00000-of-00001, {name}.index]: IndexError" in message
    assert {p.name: p.stat().st_size for p in (tmp_path / "copy" / "checkpoints").iterdir()} == sizes


def test_copied_run_folder_resumes(finished_run, tmp_path, capsys):
    config = copy_of(finished_run, tmp_path)
    step = latest_step(config.model_dir)

    result = trainer.pretrain(dataclasses.replace(config, train_steps=step), progress=False)

    assert result["step"] == step
    assert f"resuming from {config.model_dir}/checkpoints/ckpt-{step} at step {step}" in capsys.readouterr().out


def test_rerun_with_nothing_to_do_leaves_config_json_untouched(finished_run, tmp_path, capsys):
    config = copy_of(finished_run, tmp_path)
    path = tmp_path / "copy" / "config.json"
    before = path.read_bytes()

    trainer.pretrain(dataclasses.replace(config, train_steps=1), progress=False)

    assert "nothing to do" in capsys.readouterr().out
    assert path.read_bytes() == before


# --- a time limit -------------------------------------------------------------------------------


def training_time(model_dir):
    with open(os.path.join(model_dir, loop.TRAINING_TIME_FILE)) as f:
        return {int(step): seconds for step, seconds in json.load(f).items()}


@pytest.fixture(scope="module")
def timed_run(train_glob, tmp_path_factory):
    """A run stopped by a time limit shorter than its first step (0.0001 min = 6 ms)."""
    config = small_config(train_glob, str(tmp_path_factory.mktemp("timed") / "run"), train_steps=1000,
                          checkpoint_every=500, time_limit_minutes=0.0001)
    return config, trainer.pretrain(config, progress=False)


def test_time_limit_stops_the_run_saving_the_step_it_stopped_at(timed_run):
    config, result = timed_run

    # The limit is checked before each step and stops the cluster after the step it rides in.
    assert result["stopped"] == "time_limit" and 1 <= result["step"] <= 2, result
    assert latest_step(config.model_dir) == checkpoint_iterations(config.model_dir) == result["step"]
    recorded = training_time(config.model_dir)
    assert list(recorded) == [result["step"]]
    assert recorded[result["step"]] == pytest.approx(result["training_seconds"], abs=0.01)
    assert recorded[result["step"]] > config.time_limit_minutes * 60
    assert result["step"] in scalar_tags(config.model_dir)["loss/total"]  # the last window is logged


def test_rerun_after_the_time_limit_has_nothing_to_do_and_a_larger_limit_continues(timed_run, tmp_path, capsys):
    config, result = timed_run
    shutil.copytree(config.model_dir, tmp_path / "copy")
    config = dataclasses.replace(config, model_dir=str(tmp_path / "copy"))
    before = training_time(config.model_dir)[result["step"]]

    again = trainer.pretrain(config, progress=False)

    assert again["step"] == result["step"] and again["stopped"] == "time_limit"
    assert "nothing to do. A larger --time_limit_minutes continues the run." in capsys.readouterr().out

    longer = trainer.pretrain(dataclasses.replace(config, time_limit_minutes=10, train_steps=result["step"] + 2),
                              progress=False)

    assert longer["step"] == result["step"] + 2 and longer["stopped"] is None
    out = capsys.readouterr().out
    assert f"training until step {result['step'] + 2} or for " in out
    # Summed over both runs: the resumed run adds its own seconds to the first run's.
    assert training_time(config.model_dir)[longer["step"]] > before
    assert longer["training_seconds"] == pytest.approx(training_time(config.model_dir)[longer["step"]], abs=0.01)


def test_time_limit_on_a_run_without_a_recorded_time_counts_from_now(timed_run, tmp_path, capsys):
    config, result = timed_run
    shutil.copytree(config.model_dir, tmp_path / "copy")
    os.remove(tmp_path / "copy" / loop.TRAINING_TIME_FILE)  # as a run from before the time was recorded

    resumed = trainer.pretrain(dataclasses.replace(config, model_dir=str(tmp_path / "copy"), time_limit_minutes=10,
                                                   train_steps=result["step"] + 1), progress=False)

    assert resumed["step"] == result["step"] + 1
    assert (f"note: the training time before step {result['step']} was not recorded; the time limit of 10 min "
            "counts from now") in capsys.readouterr().out


def scalar_values(model_dir, tag):
    """{step: value} of one training scalar."""
    values = {}
    for path in tf.io.gfile.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_cosine_decay_under_a_time_limit_reaches_zero_where_the_time_runs_out_and_resumes_on_the_curve(
        train_glob, tmp_path):
    # train_steps far beyond what 20 s reach: a cosine over train_steps would hardly have moved.
    config = small_config(train_glob, str(tmp_path / "run"), train_steps=100_000, checkpoint_every=100_000,
                          time_limit_minutes=20 / 60)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, learning_rate=1e-3,
                                                                   warmup_steps=2, cosine_decay=True))
    result = trainer.pretrain(config, progress=False)

    assert result["stopped"] == "time_limit", result
    last = result["step"]
    assert last >= 10, f"too few steps in 20 s to see a decay: {last}"
    rates = scalar_values(config.model_dir, "optimizer/learning_rate")
    # Logged at step s: the rate of the next update. Near the peak after the warm-up, near 0 at the end.
    assert rates[2] > 0.9e-3, rates
    assert rates[last] < 0.1e-3, rates
    assert rates[last // 2] < 0.95e-3, rates

    # Resumed with twice the time: the record's speed puts the new end near step 2·last, so the
    # first resumed update is about half way down the new curve, not back at the peak.
    resumed = trainer.pretrain(dataclasses.replace(config, time_limit_minutes=40 / 60), progress=False)
    rates = scalar_values(config.model_dir, "optimizer/learning_rate")
    assert resumed["step"] > last
    assert 0.2e-3 < rates[last + 1] < 0.8e-3, rates
    assert rates[resumed["step"]] < 0.1e-3, rates


def test_launcher_stopped_by_the_time_limit_exits_0_saying_so(flags, capsys):
    launcher.FLAGS.unparse_flags()
    try:
        launcher.FLAGS(["pretrain", *flags, "--train_steps=1000", "--time_limit_minutes=0.0001"])
        launcher.main(["pretrain"])  # returns: exit status 0
    finally:
        launcher.FLAGS.unparse_flags()

    out = capsys.readouterr().out
    assert re.search(r"time limit reached: [0-9.]+ min of training \(time_limit_minutes=0.0001\); checkpoint saved "
                     r"at step [12] in ", out), out
    assert re.search(r"done: step [12] \([0-9.]+ min of training, stopped by the time limit\)", out), out


def test_other_settings_are_refused_naming_only_what_differs(finished_run, tmp_path):
    config = copy_of(finished_run, tmp_path)
    changed = dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_dim=64),
                                  optim=dataclasses.replace(config.optim, learning_rate=1e-3))

    with pytest.raises(ValueError) as info:
        trainer.pretrain(changed, progress=False)

    assert "(model.embedding_dim: 32 → 64; optim.learning_rate: 0.0002 → 0.001)" in str(info.value), info.value


@pytest.mark.parametrize("where", ["file", "inside a file"])
def test_model_dir_that_is_a_file_is_a_one_line_error(flags, tmp_path, where):
    (tmp_path / "notes.txt").write_text("not a run folder")
    model_dir = tmp_path / "notes.txt" / ("run" if where == "inside a file" else "")

    message = launcher_error(flags + ["--train_steps=5", f"--model_dir={model_dir}"])

    assert message.startswith(f"pretrain: error: --model_dir={model_dir}: ") and "not a folder" in message, message


# --- distribution ----------------------------------------------------------------------------

def test_trains_through_a_tf_data_service(train_glob, tmp_path):
    dispatcher = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher.target.split("://")[1]))
    config = small_config(train_glob, str(tmp_path / "run"), data_service_address=dispatcher.target)

    result = trainer.pretrain(config, progress=False)

    assert result["step"] == 3 and np.isfinite(result["metrics"]["loss/total"])
    assert worker._num_tasks() >= 1, "the service worker produced no data"  # private, test-only count
    worker.stop()
    dispatcher.stop()


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_flagfile_builds_a_valid_config(path, monkeypatch):
    from vdim_tf.models.vdim import VDIM

    monkeypatch.chdir(REPO_ROOT)  # nested --flagfile=configs/... paths are relative to the repo
    config = config_of(path)
    config.validate()
    VDIM(**dataclasses.asdict(config.model))  # layer choices; builds no weights
    assert path.read_text().startswith("#"), "each flagfile starts with a comment saying what it is"


def config_of(path):
    launcher.FLAGS.unparse_flags()
    try:
        launcher.FLAGS(["pretrain", f"--flagfile={path}"])
        return launcher.config_from_flags()
    finally:
        launcher.FLAGS.unparse_flags()


ABLATIONS = sorted((REPO_ROOT / "configs").glob("ucf101_pretrain_*.cfg"))


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.name for p in ABLATIONS])
def test_each_ablation_changes_the_ucf101_config_and_its_model_dir(path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    base = dataclasses.asdict(config_of(REPO_ROOT / "configs" / "ucf101_pretrain.cfg"))
    ablation = dataclasses.asdict(config_of(path))

    changed = {k for k in base if base[k] != ablation[k]}
    assert "model_dir" in changed and changed - {"model_dir"}, f"{path.name} changes nothing but model_dir"
    assert ablation["train_steps"] == 50000 and ablation["train_data"] == base["train_data"]
