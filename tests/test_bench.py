"""The benchmarks' arithmetic: the analytic FLOP count against the convolutions of the built
encoder, the trace reader against a trace with known op times, and the profile's printed table
against itself (the figures themselves go in the README)."""

import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.models.encoder import PRESETS, Encoder

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_conv_flop_count_equals_the_convolutions_of_the_traced_encoder(preset):
    # Independent of the block table: every Conv3D op in the encoder's graph does
    # 2 · (kt·kh·kw·C_in) FLOPs per output element (a multiply and an add per weight).
    p, batch = PRESETS[preset], 2
    encoder = Encoder(preset=preset)
    graph = tf.function(lambda x: encoder(x, training=True)).get_concrete_function(
        tf.TensorSpec((batch, p.frames, p.size, p.size, 3), tf.float32)).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv3D"]
    assert len(convs) == sum(2 + 2 * spec.num_1x1 for spec in p.blocks)  # every conv of the table was traced
    traced = sum(2 * math.prod(op.inputs[1].shape[:4]) * math.prod(op.outputs[0].shape) for op in convs)
    assert _bench("flops").conv_flops_forward(preset, batch) == traced


def _write_xspace(path, planes):
    """`planes`: {plane name: {line name: [(event name, duration_ps), ...]}} → an XSpace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    for plane_name, lines in planes.items():
        plane = space.planes.add(name=plane_name)
        ids = {}
        for line_name, events in lines.items():
            line = plane.lines.add(name=line_name)
            for name, duration in events:
                if name not in ids:
                    ids[name] = len(ids) + 1
                    plane.event_metadata[ids[name]].name = name
                line.events.add(metadata_id=ids[name], duration_ps=duration)
    path.write_bytes(space.SerializeToString())
    return str(path)


def test_trace_reader_sums_op_events_by_type_on_op_threads_only(tmp_path):
    # As TensorFlow writes a CPU trace: ops as "scope/name:OpType" on the inter-op threads
    # (tf_Compute/...), beside executor bookkeeping ("A::B") and the intra-op Eigen threads, whose
    # time is already inside the op that used them.
    trace = _write_xspace(tmp_path / "cpu.xplane.pb", {"/host:CPU": {
        "python": [("step", 10_000), ("EagerExecute", 9_000)],
        "tf_Compute/1": [("ExecutorState::Process", 7_000), ("enc/block1/spatial:Conv3D", 300),
                         ("grad/block1/spatial:Conv3DBackpropFilterV2", 500), ("enc/relu:Relu", 20)],
        "tf_Compute/2": [("enc/block2/spatial:Conv3D", 200), ("ThreadpoolListener::StartRegion", 50),
                         ("adam/Sub/ReadVariableOp:ReadVariableOp", 5)],
        "tf_numa_-1_Eigen/3": [("enc/block1/spatial:Conv3D", 4_000)],
    }})
    profile = _bench("profile_step")
    totals = profile.op_times(trace)
    assert dict(totals) == {"Conv3D": 500, "Conv3DBackpropFilterV2": 500, "Relu": 20, "ReadVariableOp": 5}
    assert [t for t in totals if profile.is_convolution(t)] == ["Conv3D", "Conv3DBackpropFilterV2"]


def test_trace_reader_takes_gpu_op_time_from_the_device_plane(tmp_path):
    trace = _write_xspace(tmp_path / "gpu.xplane.pb", {
        "/host:CPU": {"tf_Compute/1": [("enc/conv:Conv3D", 9_999)]},  # host-side launch, not the kernel
        "/device:GPU:0": {
            "TensorFlow Ops": [("enc/conv:Conv3D", 700), ("ConcatV2", 30)],
            "TensorFlow Name Scope": [("enc", 730)],
            "Stream #7(Compute)": [("volta_scudnn_128x64", 690)],
        },
    })
    assert dict(_bench("profile_step").op_times(trace)) == {"Conv3D": 700, "ConcatV2": 30}


@pytest.mark.slow  # a real profiler trace of three train steps (~20 s); the parser is tested on a hand-built trace above
def test_profile_step_table_is_consistent_with_its_totals(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "profile_step.py"), "--preset=cpu", "--batch=2", "--steps=1",
         "--top=1000", f"--logdir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    total = float(re.search(r"op time summed over op threads: ([\d,.]+) ms/step", out.stdout).group(1).replace(",", ""))
    conv = float(re.search(r"convolutions \(forward \+ both backward kernels\): ([\d.]+)% of op time",
                           out.stdout).group(1))
    rows = re.findall(r"^(\S+)\s+([\d.]+)\s+([\d.]+)%$", out.stdout, flags=re.M)
    names = [op for op, _, _ in rows]
    ms, share = np.array([[float(m), float(s)] for _, m, s in rows]).T
    # --top=1000 lists every op type, each rounded to 0.1 ms and 0.1 %.
    assert share.sum() == pytest.approx(100, abs=0.05 * len(rows) + 1e-9)
    assert ms.sum() == pytest.approx(total, abs=0.05 * len(rows) + 0.05)
    assert (np.diff(ms) <= 0).all(), "rows are sorted by time"
    is_conv = np.array([_bench("profile_step").is_convolution(n) for n in names])
    assert conv == pytest.approx(share[is_conv].sum(), abs=0.05 * is_conv.sum() + 0.05)
    # Forward and both backward kernels were traced (CPU names carry oneDNN's _MklNative prefix).
    for kind in ("Conv3D", "Conv3DBackpropFilter", "Conv3DBackpropInput"):
        assert any(re.fullmatch(rf"(_MklNative|_MklNativeFused|Fused)?{kind}(V2)?", n) for n in names), (kind, names)
    assert list(tmp_path.rglob("*.xplane.pb"))  # the trace stays for TensorBoard


def test_throughput_bench_reads_the_steady_state_figure_of_the_loop_log():
    # The loop logs every --log_every steps; the bench takes the last log (after the warm-up one).
    log = ("step 2: loss/total=20.1, throughput/clips_per_second=12.5, throughput/step_time_seconds=1.2\n"
           "step 4: loss/total=19.8, throughput/clips_per_second=96.41, throughput/step_time_seconds=0.166\n")
    assert [float(x) for x in _bench("pretrain_throughput").THROUGHPUT.findall(log)] == [12.5, 96.41]


@pytest.mark.slow  # two short pretraining runs on real clips (~1 min)
def test_throughput_bench_runs_both_revisions_and_removes_the_baseline_checkout(tmp_path):
    if not (REPO_ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the real clips the bench prepares) is absent")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "pretrain_throughput.py"), "--baseline", "HEAD", "--batches", "4",
         "--steps", "2", "--rounds", "1", "--short_side", "64", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    import json

    figures = json.loads((out / "throughput.json").read_text())
    (row,) = figures["rows"]
    assert row["batch"] == 4 and row["baseline"] > 0 and row["current"] > 0
    assert row["ratio"] == pytest.approx(row["current"] / row["baseline"])
    assert "| 4 |" in result.stdout  # the printed table
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert figures["baseline_commit"] == head.stdout.strip()  # the revision asked for was the one checked out
    worktrees = subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "vdim_throughput_" not in worktrees


def test_throughput_bench_refuses_an_unknown_revision_in_one_line():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "pretrain_throughput.py"), "--baseline",
                             "no-such-revision"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "--baseline=no-such-revision: not a commit" in result.stderr and "Traceback" not in result.stderr


def test_evidence_records_the_pretraining_step_and_training_time_from_the_run_record(tmp_path):
    evidence = _bench("evidence")
    assert evidence.pretraining_record(str(tmp_path)) == (None, None)  # no record: a run from before it existed
    # Written by the training loop's own writer, so a change of its file or format fails here.
    from vdim_tf import loop
    for step, seconds in ((1300, 250.5), (1404, 270.4), (1400, 269.6)):
        loop._write_training_time(str(tmp_path), step, seconds, kept_steps={1300, 1400, 1404})

    assert evidence.pretraining_record(str(tmp_path)) == (1404, 270.4)  # the newest checkpoint's, not the last line


def test_evidence_builds_the_slow_camera_benchmark_with_the_flags_the_readme_gives(tmp_path, monkeypatch):
    # `--dataset=camera_slow` must be the benchmark `./run camera_benchmark --speed=0.5,1.5
    # --angular_speed=0.5,1.5` writes (README); the build itself is tested in test_camera_benchmark.
    evidence = _bench("evidence")
    from vdim_tf.data import camera
    built = []
    monkeypatch.setattr(camera, "build_benchmark", lambda config, log: built.append(config))

    evidence.build_camera(str(tmp_path / "slow"), **evidence.SLOW_CAMERA)
    evidence.build_camera(str(tmp_path / "default"))

    assert (built[0].speed, built[0].angular_speed) == ((0.5, 1.5), (0.5, 1.5))
    defaults = camera.CameraConfig(data_dir="d", output_dir="o")
    assert (built[1].speed, built[1].angular_speed) == (defaults.speed, defaults.angular_speed)
    assert built[0].output_dir.endswith("slow") and built[0].data_dir == evidence.SHARED_DATA


def test_evidence_vdim_arm_runs_the_vdim_probe_alone_and_each_arm_once():
    evidence = _bench("evidence")
    names = lambda arms: [(mode, init) for mode, init, _, _ in arms]
    assert names(evidence.select_arms("vdim")) == [("probe", "VDIM")]
    assert names(evidence.select_arms("probe,vdim")) == [("probe", "VDIM"), ("probe", "random"),
                                                         ("probe", "single frame")]
    assert names(evidence.select_arms("vdim,finetune")) == [("probe", "VDIM"), ("fine-tune", "VDIM"),
                                                            ("fine-tune", "random")]
    with pytest.raises(ValueError, match="unknown \\['linear'\\]"):
        evidence.select_arms("probe,linear")


@pytest.mark.parametrize("flags, message", [(["--arms=probe,linear"], "unknown ['linear']"),
                                            (["--seeds=0,one"], "--seeds=0,one: give comma-separated integers")])
def test_evidence_refuses_a_bad_flag_before_building_any_data(tmp_path, monkeypatch, capsys, flags, message):
    evidence = _bench("evidence")
    built = []
    monkeypatch.setattr(evidence, "build_camera", lambda folder, **settings: built.append(folder))
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=camera", f"--data={tmp_path / 'camera'}",
                                      f"--out={tmp_path / 'out'}", *flags])
    with pytest.raises(SystemExit) as exit_:
        evidence.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert built == [] and not (tmp_path / "out").exists()


def _fake_launchers(evidence, monkeypatch, calls):
    """Records every launcher call of `evidence.main` instead of running it; `evaluate` writes the
    results a run of it would."""
    import json

    def run(command, log, variant="today"):
        calls.append((command, variant))
        if command[0] == "evaluate":
            model_dir = next(flag.split("=", 1)[1] for flag in command if flag.startswith("--model_dir="))
            os.makedirs(model_dir, exist_ok=True)
            with open(os.path.join(model_dir, "results.json"), "w") as f:
                json.dump({"video_top1": 0.5, "retrieval": {"R@1": 0.25}, "chance": 1 / 6,
                           "linear_probe": {"phi": {"top1": 0.75}}}, f)
    monkeypatch.setattr(evidence, "run", run)


def test_evidence_pretrain_from_probes_the_earlier_pretrainings_without_pretraining_again(tmp_path, monkeypatch):
    evidence = _bench("evidence")
    earlier = tmp_path / "earlier"
    for seed in (0, 1):
        (earlier / f"seed{seed}" / "pretrain").mkdir(parents=True)
        (earlier / f"seed{seed}" / evidence.VARIANT_FILE).write_text("today\n")
    calls = []
    _fake_launchers(evidence, monkeypatch, calls)
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=synthetic", f"--data={tmp_path / 'data'}",
                                      f"--out={tmp_path / 'out'}", "--seeds=0,1", "--arms=vdim",
                                      f"--pretrain_from={earlier}", "--finetune_flags=--learning_rate=1e-3"])
    evidence.main()

    assert [command[0] for command, _ in calls] == ["finetune", "evaluate", "finetune", "evaluate"]
    finetunes = [command for command, _ in calls if command[0] == "finetune"]
    for seed, command in enumerate(finetunes):
        assert f"--pretrained={earlier / f'seed{seed}' / 'pretrain'}" in command
        assert command[-1] == "--learning_rate=1e-3" and f"--model_dir={tmp_path / 'out' / f'seed{seed}' / 'probe_VDIM'}" in command
    assert not (tmp_path / "out" / "seed0" / "pretrain").exists()
    import json
    record = json.loads((tmp_path / "out" / "evidence.json").read_text())
    assert [r["pretrain_seconds"] for r in record["runs"]] == [None, None]
    assert record["summary"]["probe|VDIM"]["video_top1"] == [0.5, 0.0]


@pytest.mark.parametrize("setup, flags, message", [
    ("none", [], "no pretraining of seed(s) 1 there"),
    ("both", ["--pretrain_flags=--batch_size=8"], "--pretrain_flags with --pretrain_from"),
    ("both", ["--variant=amdim_residual"], "was pretrained with --variant=today"),
])
def test_evidence_pretrain_from_refuses_what_it_cannot_honour(tmp_path, monkeypatch, capsys, setup, flags, message):
    evidence = _bench("evidence")
    earlier = tmp_path / "earlier"
    for seed in (0, 1) if setup == "both" else (0,):
        (earlier / f"seed{seed}" / "pretrain").mkdir(parents=True)
        (earlier / f"seed{seed}" / evidence.VARIANT_FILE).write_text("today\n")
    calls = []
    _fake_launchers(evidence, monkeypatch, calls)
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=synthetic", f"--out={tmp_path / 'out'}",
                                      "--seeds=0,1", f"--pretrain_from={earlier}", *flags])
    with pytest.raises(SystemExit) as exit_:
        evidence.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "out").exists()


def test_evidence_variant_runs_every_launcher_with_the_variant_and_records_it(tmp_path, monkeypatch):
    evidence = _bench("evidence")
    calls = []
    _fake_launchers(evidence, monkeypatch, calls)
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=synthetic", f"--out={tmp_path / 'out'}",
                                      "--seeds=3", "--arms=vdim", "--variant=amdim_residual"])
    evidence.main()

    assert [(command[0], variant) for command, variant in calls] == [
        ("pretrain", "amdim_residual"), ("finetune", "amdim_residual"), ("evaluate", "amdim_residual")]
    assert evidence.recorded_variant(str(tmp_path / "out"), 3) == "amdim_residual"
    command = evidence.launcher_command(["finetune", "--freeze_encoder"], "amdim_residual")
    assert command[1:] == [str(REPO_ROOT / "bench" / "amdim_variants.py"), "launch", "amdim_residual", "finetune",
                           "--freeze_encoder"]
    assert evidence.launcher_command(["evaluate", "--model_dir=r"])[1:] == ["-m", "vdim_tf.launch.evaluate",
                                                                          "--model_dir=r"]


def test_amdim_variants_launch_patches_the_variant_in_before_the_launcher_runs(monkeypatch):
    variants = _bench("amdim_variants")
    from vdim_tf.models import blocks
    seen = []
    monkeypatch.setattr(variants.runpy, "run_module", lambda name, run_name, alter_sys: seen.append(
        (name, list(sys.argv), blocks.ResidualBranch.call)))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    try:
        variants.launch(["amdim_residual", "finetune", "--freeze_encoder"])
    finally:
        variants.use_variant("today")
    assert seen == [("vdim_tf.launch.finetune", ["vdim_tf.launch.finetune", "--freeze_encoder"],
                     variants.amdim_branch_call)]
    # evidence.py names the variants without importing TensorFlow; they must be these.
    assert _bench("evidence").VARIANTS == tuple(variants.VARIANTS)
    for bad in (["no_such_variant", "pretrain"], ["amdim_residual", "train"], []):
        with pytest.raises(SystemExit, match="usage: amdim_variants.py launch VARIANT LAUNCHER"):
            variants.launch(bad)


def test_amdim_variants_launch_runs_the_real_launcher(tmp_path):
    # The real runpy path, end to end: the launcher's own flag parsing and its one-line error.
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "amdim_variants.py"), "launch",
                             "amdim_residual", "evaluate", f"--model_dir={tmp_path / 'no_run'}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "no_run" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("record", ["amdim_residual\n", None])
def test_evidence_refuses_to_resume_a_seed_under_another_variant(tmp_path, monkeypatch, capsys, record):
    # A seed folder pretrained (or interrupted) with one variant is not resumed with another; a
    # pretraining without a record is from before --variant, hence today's.
    evidence = _bench("evidence")
    (tmp_path / "out" / "seed0" / "pretrain").mkdir(parents=True)
    if record:
        (tmp_path / "out" / "seed0" / evidence.VARIANT_FILE).write_text(record)
    variant = "today" if record else "reflect_pad"
    calls = []
    _fake_launchers(evidence, monkeypatch, calls)
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=synthetic", f"--out={tmp_path / 'out'}",
                                      "--seeds=0", "--arms=vdim", f"--variant={variant}"])
    with pytest.raises(SystemExit) as exit_:
        evidence.main()
    recorded = record.strip() if record else "today"
    assert exit_.value.code == 2 and f"was pretrained with --variant={recorded}" in capsys.readouterr().err
    assert calls == []


def test_evidence_records_the_variant_before_pretraining_so_an_interrupted_seed_keeps_it(tmp_path, monkeypatch):
    evidence = _bench("evidence")

    def interrupted(command, log, variant="today"):
        sys.exit(f"{command[0]} failed (exit 143)")
    monkeypatch.setattr(evidence, "run", interrupted)
    monkeypatch.setattr(sys, "argv", ["evidence.py", "--dataset=synthetic", f"--out={tmp_path / 'out'}",
                                      "--seeds=0", "--arms=vdim", "--variant=amdim_residual"])
    with pytest.raises(SystemExit):
        evidence.main()
    assert evidence.recorded_variant(str(tmp_path / "out"), 0) == "amdim_residual"


def test_block1_layouts_compute_what_the_shipped_block_computes():
    # The layouts bench/block1_layouts.py times are only comparable if each computes block 1 as the
    # encoder does: every layout must give the output of the CPU encoder's own block 1.
    layouts = _bench("block1_layouts")
    block, x = layouts.inputs(2, seed=3)
    assert block.name == "block1" and layouts.SPEC == PRESETS["cpu"].blocks[0]
    assert all(float(tf.reduce_max(tf.abs(v))) > 0 for v in block.trainable_variables)  # biases too
    diffs = layouts.max_differences(block, x)
    assert set(diffs) == {f"spatial, {n}" for n in layouts.SPATIAL} | {f"temporal, {n}" for n in layouts.TEMPORAL}
    assert max(diffs.values()) < 1e-5, diffs
    # Not vacuous: a kernel off by one row would not pass.
    shipped = layouts.spatial_shipped(block, x)
    block.spatial.kernel.assign(tf.roll(block.spatial.kernel, 1, axis=1))
    assert float(tf.reduce_max(tf.abs(layouts.spatial_space_to_depth(block, x) - shipped))) > 1e-3
    # What it times: every layout's step returns a gradient for each of its variables.
    for name, step in layouts.steps(block, x).items():
        grads = step()
        assert all(g is not None and np.all(np.isfinite(g.numpy())) and np.any(g.numpy()) for g in grads), name


def _copy_run_with_a_second_checkpoint(pretrained_run, run):
    """`pretrained_run` copied to `run`, plus a later checkpoint (step 7) of other weights: (first, second)
    weights of the model."""
    import shutil

    from vdim_tf.models.vdim import VDIM

    shutil.copytree(pretrained_run, run)
    saved = json.loads((run / "config.json").read_text())
    model = VDIM(**saved["model"]).build_for(16, 64)
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, str(run / "checkpoints"), max_to_keep=3)
    checkpoint.restore(manager.latest_checkpoint).expect_partial().assert_existing_objects_matched()
    first = model.get_weights()
    second = [w + np.random.default_rng(i).normal(size=w.shape).astype(w.dtype) for i, w in enumerate(first)]
    model.set_weights(second)
    manager.save(checkpoint_number=7)
    return first, second


def test_average_checkpoints_writes_the_mean_weights_as_a_run_the_launchers_load(pretrained_run, tmp_path):
    from vdim_tf import finetune
    from vdim_tf.models.vdim import VDIM

    averaging = _bench("average_checkpoints")
    run = tmp_path / "run"
    first, second = _copy_run_with_a_second_checkpoint(pretrained_run, run)
    assert list(averaging.kept_checkpoints(str(run))) == [2, 7]
    prefix = averaging.average(str(run), str(tmp_path / "avg"))
    assert prefix.endswith("ckpt-7")  # numbered as the newest checkpoint averaged
    assert (tmp_path / "avg" / "config.json").read_text() == (run / "config.json").read_text()

    # Read back the way fine-tuning reads a pretrained run: the mean of the two, weight by weight.
    saved = json.loads((run / "config.json").read_text())
    model = VDIM(**saved["model"]).build_for(16, 64)
    tf.train.Checkpoint(model=model).restore(finetune._pretrained_paths(str(tmp_path / "avg"))[1]).expect_partial() \
        .assert_existing_objects_matched()
    for got, a, b in zip(model.get_weights(), first, second):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-6)
    classifier = finetune.make_classifier(finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32),
                                          2).build_for(16, 64)
    finetune.load_pretrained(classifier, str(tmp_path / "avg"))
    for got, want in zip(classifier.encoder.get_weights(), model.encoder.get_weights()):
        np.testing.assert_array_equal(got, want)

    # One step: that checkpoint alone.
    averaging.average(str(run), str(tmp_path / "only2"), [2])
    model2 = VDIM(**saved["model"]).build_for(16, 64)
    tf.train.Checkpoint(model=model2).restore(str(tmp_path / "only2" / "checkpoints" / "ckpt-2")).expect_partial()
    for got, a in zip(model2.get_weights(), first):
        np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("args, message", [
    (["--checkpoints=3"], "no checkpoint at step(s) 3; it keeps 2, 7"),
    (["--checkpoints=x"], "give 'all' or comma-separated steps"),
    (["--out=EXISTING"], "holds a run already"),
    (["--run=NOTARUN"], "--run=NOTARUN_PATH: no checkpoint in"),
])
def test_average_checkpoints_refuses_bad_arguments_in_one_line(pretrained_run, tmp_path, args, message):
    run = tmp_path / "run"
    _copy_run_with_a_second_checkpoint(pretrained_run, run)
    flags = {"--run": str(run), "--out": str(tmp_path / "out")}
    for arg in args:
        name, value = arg.split("=", 1)
        flags[name] = {"EXISTING": str(run), "NOTARUN": str(tmp_path)}.get(value, value)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "average_checkpoints.py"),
                             *(f"{k}={v}" for k, v in flags.items())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    message = message.replace("NOTARUN_PATH", str(tmp_path))
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()
