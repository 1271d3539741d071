"""Slow check (`./run test -m slow`): on real video whose classes only motion tells apart, VDIM
pretraining with the demo's recipe gives frozen features that beat random initialisation, and a
single repeated frame stays near chance.

It runs `bench/evidence.py` for one seed on the motion benchmark (built from `../shared/data`:
forward or reversed at 1× or 2×, train and test from different source clips), i.e. the demo's
flagfiles through the project's own launchers, as a user would; the README's evidence table is
the same script over three seeds.
"""

import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_vdim_pretraining_beats_random_initialisation_on_held_out_real_video(tmp_path):
    if not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the real clips the motion benchmark is built from) is absent")
    out = tmp_path / "evidence"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "evidence.py"), "--dataset=motion", f"--data={tmp_path / 'motion'}",
         "--seeds=0", "--arms=probe", f"--out={out}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = {r["init"]: r for r in json.loads((out / "evidence.json").read_text())["runs"]}
    chance = runs["VDIM"]["chance"]  # 4 classes: 0.25; 216 test videos, one video is 0.005
    # Margins are about a third of what seed 0 measured (README, Evidence), so that a slower or
    # faster machine's run of the same recipe passes, while a pretraining that learns no motion
    # (top-1 near chance, as the random and single-frame probes) fails.
    assert runs["VDIM"]["linear_phi_top1"] >= runs["random"]["linear_phi_top1"] + 0.10, runs
    assert runs["VDIM"]["video_top1"] >= chance + 0.10, runs
    assert runs["single frame"]["video_top1"] <= chance + 0.10, runs
