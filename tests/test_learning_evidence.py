"""Slow check (`./run test -m slow`): on real video whose classes only motion tells apart, VDIM
pretraining with the demo's recipe gives frozen features far better than random weights' and a
single repeated frame's on the camera-motion benchmark; on the playback benchmark, a single
repeated frame through the trained encoder stays at chance, as the benchmark's construction
guarantees.

Each runs `bench/evidence.py` for seed 0, probe arms only (frozen-encoder MLP probe and the linear
protocol, from the VDIM encoder, from random weights and from single frames): the demo's flagfiles
through the project's own launchers, as a user would, with the recipe's time limit replaced by
1100 steps, so that a slower or busy machine runs the same check.

On the camera-motion benchmark (six camera motions over real clips, chance 1/6) the recipe learns
far more than the baselines (README, "Evidence that it learns"), so the check asks for a size: a
probe of at least 0.75 and 0.3 above random weights and single frames.

On the playback benchmark (speed × direction, chance 1/4) every arm is near chance at these
budgets, and VDIM's order against random weights is noise: 1100 steps gave VDIM 0.306 / 0.269 /
0.333 against random weights' 0.282 / 0.273 / 0.282 over seeds 0 / 1 / 2, the recipe as shipped
(1490–1692 steps) 0.264 / 0.222 / 0.255 against the same 0.282 / 0.273 / 0.282 (README, "Today's
flagfiles, as shipped"). A check of that order could fail only by chance (a collapsed encoder
would give about chance too, so it would not catch one), so this check asks only what the
benchmark's construction guarantees: that the trained encoder cannot tell the classes from one
frame, which a leak of the label into single frames (blur, frame borders, clip length) would break.
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
def test_a_single_frame_through_the_trained_encoder_is_at_chance_on_held_out_playback_video(tmp_path):
    if not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the real clips the motion benchmark is built from) is absent")
    runs = _evidence(tmp_path, "motion")
    chance = runs["VDIM"]["chance"]  # 4 classes: 0.25; 216 test examples, one is 0.005
    # Seed 0, 1100 steps, the flagfile's probe: single frame 0.231, 0.269 and 0.282 in three runs,
    # linear protocol 0.264 and 0.208 (the recipe as shipped, seeds 0 / 1 / 2: 0.250 / 0.269 / 0.204,
    # linear 0.245 / 0.236 / 0.231). A leak raises accuracy, so only the upper side is checked: 216
    # windows from 5 test clips put chance-level runs up to 0.05 below chance.
    assert runs["single frame"]["video_top1"] <= chance + 0.06, runs
    assert runs["single frame"]["linear_phi_top1"] <= chance + 0.06, runs


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
