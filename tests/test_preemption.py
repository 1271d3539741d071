"""Preemption under MultiWorkerMirroredStrategy: a SIGTERM to any one worker makes every worker
save one checkpoint at the same step and exit 143, and a rerun of all workers resumes there."""

import os
import pathlib
import re
import signal
import time

import pytest
import tensorflow as tf

import workers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 300  # seconds for both workers to start and take a few steps on a busy 2-core machine
EXIT_TIMEOUT = 120  # seconds every worker may take to save and exit once one of them got SIGTERM


def pretrain_args(tmp_path):
    """Pretrain flags of both tests: a tiny synthetic dataset (generated here), the CPU preset,
    a step log every step and no periodic checkpoint."""
    from vdim_tf.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    generate_synthetic_dataset(str(tmp_path / "data"), SyntheticConfig(
        num_classes=2, train_videos_per_class=4, test_videos_per_class=1, num_frames=40))
    return ["--encoder=cpu", f"--train_data={tmp_path / 'data' / 'train' / '*.tfrecord'}",
            f"--model_dir={tmp_path / 'run'}", "--batch_size=4", "--embedding_dim=32", "--warmup_steps=1",
            "--log_every=1", "--checkpoint_every=1000"]


def start_workers(args, tmp_path, name, worker_args=lambda i: []):
    """Two pretrain workers under MultiWorkerMirroredStrategy (`worker_args(i)`: worker i's own flags)."""
    logs = [tmp_path / f"{name}_worker{i}.log" for i in range(2)]
    processes = workers.start_workers(
        lambda i: ["-m", "vdim_tf.launch.pretrain", *args, "--strategy=multi_worker", *worker_args(i)],
        lambda i: logs[i])
    return processes, logs


def wait_all(processes, timeout):
    deadline = time.monotonic() + timeout
    for p in processes:
        p.wait(max(1.0, deadline - time.monotonic()))


def finish(processes, logs, timeout):
    """Waits up to `timeout` s for every worker, kills any left, and returns their logs' texts."""
    try:
        wait_all(processes, timeout)
    finally:
        for p in processes:
            p.kill()
    return [log.read_text() for log in logs]


def chief_steps(log):
    return [int(s) for s in re.findall(r"^step (\d+):", log.read_text(), re.MULTILINE)]


@pytest.mark.slow
def test_sigterm_to_the_non_chief_saves_one_checkpoint_on_every_worker_and_the_rerun_resumes(tmp_path):
    common = pretrain_args(tmp_path)
    model_dir = tmp_path / "run"

    processes, logs = start_workers(common + ["--train_steps=1000"], tmp_path, "first")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(chief_steps(logs[0])) < 3:
            assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
            assert time.monotonic() < deadline, "the workers took no 3 steps in time"
            time.sleep(0.5)
        processes[1].send_signal(signal.SIGTERM)
        wait_all(processes, EXIT_TIMEOUT)
    finally:
        for p in processes:
            p.kill()
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in processes] == [143, 143], texts

    pattern = r"(this process|another worker) received SIGTERM: checkpoint saved at step (\d+)"
    (who0, step0), (who1, step1) = (re.search(pattern, t).groups() for t in texts)
    assert (who0, who1) == ("another worker", "this process")
    saved = int(step0)
    assert int(step1) == saved == chief_steps(logs[0])[-1] >= 3
    # One checkpoint (no periodic save before the signal), at the agreed step, kept by the chief;
    # the non-chief's scratch copy is gone.
    checkpoints = tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).all_model_checkpoint_paths
    assert [int(p.rsplit("-", 1)[1]) for p in checkpoints] == [saved]
    assert not [n for n in os.listdir(model_dir) if n.startswith(".scratch")]

    processes, logs = start_workers(common + [f"--train_steps={saved + 2}"], tmp_path, "rerun")
    texts = finish(processes, logs, STARTUP_TIMEOUT)
    assert [p.returncode for p in processes] == [0, 0], texts
    assert f"at step {saved}" in texts[0] and chief_steps(logs[0]) == [saved + 1, saved + 2]
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"-{saved + 2}")


@pytest.mark.slow
def test_time_limit_of_one_worker_stops_every_worker_at_the_same_step_with_exit_0(tmp_path):
    model_dir = tmp_path / "run"
    # Only the non-chief has a limit (shorter than the first step): the chief learns it from the
    # flag in the step's all-reduce, or it would train on to step 1000 while worker 1 waits.
    processes, logs = start_workers(pretrain_args(tmp_path) + ["--train_steps=1000"], tmp_path, "timed",
                                    worker_args=lambda i: [f"--time_limit_minutes={0.0001 if i else 0}"])
    texts = finish(processes, logs, STARTUP_TIMEOUT)
    assert [p.returncode for p in processes] == [0, 0], texts

    pattern = r"(time limit reached|another worker reached its time limit): .* checkpoint saved at step (\d+)"
    (who0, step0), (who1, step1) = (re.search(pattern, t).groups() for t in texts)
    assert (who0, who1) == ("another worker reached its time limit", "time limit reached")
    assert int(step0) == int(step1) < 1000, texts
    checkpoints = tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).all_model_checkpoint_paths
    assert [int(p.rsplit("-", 1)[1]) for p in checkpoints] == [int(step0)]
    assert f"done: step {step0} (" in texts[0] and "stopped by the time limit" in texts[0]
