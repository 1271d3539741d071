"""The profiling benchmark runs and reads its own trace (the figures themselves go in the README)."""

import pathlib
import re
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_profile_step_reports_the_convolution_share(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "profile_step.py"), "--preset=cpu", "--batch=2", "--steps=1",
         f"--logdir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    share = re.search(r"convolutions \(forward \+ both backward kernels\): ([\d.]+)% of op time", out.stdout)
    assert share, out.stdout
    # A train step of a convolutional encoder: the convolutions are a real part of it, never all of it.
    assert 10 < float(share.group(1)) < 100
    rows = re.findall(r"^(\S+)\s+([\d.]+)\s+([\d.]+)%$", out.stdout, flags=re.M)
    assert len(rows) >= 5
    assert any("Conv3DBackpropFilter" in op for op, _, _ in rows)  # the backward pass was traced too
    assert abs(sum(float(p) for _, _, p in rows) - 100) < 50  # the top op types hold most of the time
    assert list(tmp_path.rglob("*.xplane.pb"))  # the trace stays for TensorBoard
