"""Slow check (`./run test -m slow`): on real video whose classes only motion tells apart, VDIM
pretraining with the demo's recipe gives frozen features no worse than random weights', and a
single repeated frame stays near chance; on the camera-motion benchmark, far better than both.

It runs `bench/evidence.py` for seed 0 on the motion (playback) benchmark, probe arms only
(frozen-encoder MLP probe and the linear protocol, from the VDIM encoder, from random weights and
from single frames): the demo's flagfiles through the project's own launchers, as a user would,
with the recipe's time limit replaced by 1100 steps, so that a slower or busy machine runs the
same check. At that budget every arm of the playback benchmark is near chance: over seeds 0 / 1 / 2
(README, "The CPU recipe", all three probe arms) VDIM gave 0.292 / 0.255 / 0.310 against random
weights' 0.255 / 0.278 / 0.282 with the augmented probe, and with the flagfile's un-augmented
probe 0.306 / 0.269 / 0.333 against 0.282 / 0.273 / 0.282. VDIM above random weights, which this
check asked for while three earlier seeds showed it, no longer holds in every seed (seed 1 is
below in both protocols), and another machine's run is another sample, not a replay; so the
check asks only that VDIM is not below random weights by more than the seeds' spread (0.05, 11 of
216 test examples), which a pretraining that damaged the features would break.

The second check does the same on the camera-motion benchmark (six camera motions over real clips,
chance 1/6), where the recipe learns far more (README, "Evidence that it learns": probe 0.912 mean
over three seeds at the recipe's 4.5 minutes), so it asks for a size: a probe of at least 0.75 and
0.3 above random weights and single frames.
"""

import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _evidence(tmp_path, dataset):
    out = tmp_path / "evidence"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "evidence.py"), f"--dataset={dataset}",
         f"--data={tmp_path / dataset}", "--seeds=0", "--arms=probe", f"--out={out}",
         # A step count, not the flagfile's time limit: the same run on a slow or busy machine.
         "--pretrain_flags=--time_limit_minutes=0 --train_steps=1100"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {r["init"]: r for r in json.loads((out / "evidence.json").read_text())["runs"]}


@pytest.mark.slow
def test_vdim_features_are_no_worse_than_random_weights_on_held_out_playback_video(tmp_path):
    if not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the real clips the motion benchmark is built from) is absent")
    runs = _evidence(tmp_path, "motion")
    chance = runs["VDIM"]["chance"]  # 4 classes: 0.25; 216 test examples, one is 0.005
    # MLP probe on frozen φ_g∘Ψ after 1100 steps, seed 0, the flagfile's un-augmented probe: VDIM
    # 0.296, random 0.282, single frame 0.231 (another run: 0.306 / 0.282 / 0.269; with the augmented
    # probe 0.292 / 0.255 / 0.250).
    assert runs["VDIM"]["video_top1"] >= runs["random"]["video_top1"] - 0.05, runs
    assert abs(runs["single frame"]["video_top1"] - chance) <= 0.06, runs


@pytest.mark.slow
def test_vdim_features_tell_camera_motions_apart_on_held_out_real_video(tmp_path):
    """The camera-motion benchmark (six camera motions over real clips, chance 1/6): here the
    recipe's frozen features separate the classes far above random weights and single frames."""
    if not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the real clips the camera benchmark is built from) is absent")
    runs = _evidence(tmp_path, "camera")
    # MLP probe on frozen φ_g∘Ψ after 1100 steps, seed 0 (366 test examples, one is 0.003): with the
    # flagfile's un-augmented probe VDIM 0.923, random 0.314, single frame 0.363 (its classifier sees
    # the first frames of two views 16 frames apart); with the augmented probe VDIM 0.921, random
    # 0.249, single frame 0.363 in one run, 0.921 / 0.240 / 0.287 in another.
    assert runs["VDIM"]["video_top1"] >= 0.75, runs
    assert runs["VDIM"]["video_top1"] >= runs["random"]["video_top1"] + 0.3, runs
    assert runs["VDIM"]["video_top1"] >= runs["single frame"]["video_top1"] + 0.3, runs
