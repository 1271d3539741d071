"""Fine-tuning: pretrained weights are really loaded, bad --pretrained is an error, probes freeze
the encoder, runs resume (in-process and after SIGKILL), and mixed-precision runs evaluate in float32."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import finetune, loop
from vdim_tf.data import augment as augment_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _finetune_config(data_root, model_dir, **overrides):
    base = dict(
        train_data=str(data_root / "train" / "*.tfrecord"),
        test_data=str(data_root / "test" / "*.tfrecord"),
        model_dir=str(model_dir),
        train_steps=2,
        batch_size=4,
        label_names=finetune.read_labels(str(data_root / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=2, hidden_units=32),
        final_length=16,
        augment=augment_lib.AugmentConfig(output_size=64, color_mode="jitter"),
        decay_every=0,
        checkpoint_every=1,
        log_every=1,
    )
    base.update(overrides)
    return finetune.FinetuneConfig(**base)


def test_pretrained_encoder_and_head_are_loaded(tiny_synthetic, pretrained_run):
    from vdim_tf.models.vdim import VDIM
    import json

    config = _finetune_config(tiny_synthetic, "unused")
    model = finetune.make_classifier(config.classifier, 2).build_for(16, 64)
    finetune.load_pretrained(model, str(pretrained_run))
    saved = json.loads((pretrained_run / "config.json").read_text())
    vdim = VDIM(**saved["model"]).build_for(16, 64)
    tf.train.Checkpoint(model=vdim).restore(tf.train.latest_checkpoint(str(pretrained_run / "checkpoints"))).expect_partial()
    for mine, theirs in zip(model.encoder.get_weights(), vdim.encoder.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(model.head.get_weights(), vdim.heads[6].get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # Training moved the zero-initialised branch convs: loading really copied trained weights.
    assert any(np.any(w) for w in model.encoder.blocks[2].branch.temporal.get_weights())


def test_missing_pretrained_is_an_error_not_a_random_start(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(finetune.PretrainedError, match="nowhere"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_incompatible_pretrained_names_the_mismatch(tiny_synthetic, pretrained_run, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", pretrained=str(pretrained_run))
    config = dataclasses.replace(config, classifier=dataclasses.replace(config.classifier, embedding_dim=64))
    with pytest.raises(finetune.PretrainedError, match="embedding_dim=32.*embedding_dim=64"):
        finetune.finetune(config, progress=False)


def test_frozen_encoder_probe_trains_only_the_classifier(tiny_synthetic, pretrained_run, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", pretrained=str(pretrained_run),
                              classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32,
                                                                   num_views=2, hidden_units=32, freeze_encoder=True))
    finetune.finetune(config, progress=False)
    model, _ = finetune.load_finetuned(str(tmp_path / "run"))
    reference = finetune.make_classifier(config.classifier, 2).build_for(16, 64)
    finetune.load_pretrained(reference, str(pretrained_run))
    for mine, theirs in zip(model.encoder.get_weights(), reference.encoder.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # The run seeds its initial weights (config.seed): the same seed rebuilds its starting point.
    import keras

    keras.utils.set_random_seed(config.seed)
    initial = finetune.make_classifier(config.classifier, 2).build_for(16, 64)
    for before, after in zip(initial.logits.get_weights() + initial.hidden.get_weights(),
                             model.logits.get_weights() + model.hidden.get_weights()):
        assert not np.allclose(before, after), "the classifier did not train"


def test_videos_shorter_than_the_views_are_named_at_start(tiny_synthetic, tmp_path, capsys):
    # K = 3 views of 16 frames span 48 frames; the videos have 40.
    config = _finetune_config(tiny_synthetic, tmp_path / "run", train_steps=1, classifier=finetune.ClassifierConfig(
        encoder_preset="cpu", embedding_dim=32, num_views=3, hidden_units=32))

    assert finetune.finetune(config, progress=False)["step"] == 1
    assert ("short videos: 8 of the 8 videos have fewer than the 48 frames an example spans (shortest: 40)"
            in capsys.readouterr().out)


def test_rerun_with_more_steps_resumes_the_same_run(tiny_synthetic, tmp_path, capsys):
    config = _finetune_config(tiny_synthetic, tmp_path / "run")
    assert finetune.finetune(config, progress=False)["step"] == 2
    result = finetune.finetune(dataclasses.replace(config, train_steps=4), progress=False)
    assert result["step"] == 4
    assert "resuming from" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints"))[-1].startswith("ckpt-4")


def test_time_limit_stops_finetuning_before_train_steps_with_its_checkpoint(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", train_steps=1000, checkpoint_every=500,
                              time_limit_minutes=0.0001)  # 6 ms: shorter than the first step

    result = finetune.finetune(config, progress=False)

    assert result["stopped"] == "time_limit" and 1 <= result["step"] <= 2, result
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith(f"ckpt-{result['step']}")


def test_killed_finetune_resumes_from_its_last_checkpoint(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    args = [sys.executable, "-m", "vdim_tf.launch.finetune", "--encoder=cpu", "--embedding_dim=32",
            "--hidden_units=32", "--num_views=2", "--batch_size=4", "--decay_every=0", "--log_every=1",
            f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", f"--model_dir={model_dir}",
            "--checkpoint_every=2", "--train_steps=400"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and tf.train.latest_checkpoint(str(model_dir / "checkpoints")) in (None,):
            time.sleep(0.5)
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    last = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert last is not None, "no checkpoint was written before the kill"
    killed_at = int(last.rsplit("-", 1)[1])
    assert 0 < killed_at < 400
    args[-1] = f"--train_steps={killed_at + 2}"
    out = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"at step {killed_at}" in out.stdout
    assert f"done: step {killed_at + 2}" in out.stdout


def test_every_finetune_flagfile_parses_with_the_finetune_flags():
    """Flag names and values of configs/*finetune*.cfg are valid (a subprocess: the finetune and
    pretrain launchers define flags of the same names, which absl allows once per process)."""
    configs = sorted(str(p) for p in (REPO_ROOT / "configs").glob("*finetune*.cfg"))
    assert len(configs) >= 4
    script = (
        "import sys\n"
        "from vdim_tf.launch import finetune as f\n"
        "for path in sys.argv[1:]:\n"
        "    f.FLAGS.unparse_flags()\n"
        "    f.FLAGS(['finetune', '--flagfile=' + path])\n"
        "    assert f.FLAGS.model_dir and f.FLAGS.train_steps, path\n"
        "    print(path, f.FLAGS.encoder, f.FLAGS.num_views, f.FLAGS.decay_every)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *configs], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines[str(REPO_ROOT / "configs" / "hmdb51_finetune_from_kinetics.cfg")] == "paper 2 400"
    assert lines[str(REPO_ROOT / "configs" / "demo_finetune.cfg")] == "cpu 2 0"


def test_single_frame_baseline_cannot_see_motion():
    model = finetune.make_classifier(finetune.ClassifierConfig(
        encoder_preset="cpu", embedding_dim=32, num_views=1, hidden_units=32, single_frame=True), 2).build_for(16, 64)
    clip = tf.random.stateless_normal((1, 1, 16, 64, 64, 3), seed=(1, 1))
    still = tf.repeat(clip[:, :, :1], 16, axis=2)
    np.testing.assert_allclose(model(clip).numpy(), model(still).numpy(), rtol=1e-5, atol=1e-6)
    moving = finetune.make_classifier(finetune.ClassifierConfig(
        encoder_preset="cpu", embedding_dim=32, num_views=1, hidden_units=32), 2).build_for(16, 64)
    moving.set_weights(model.get_weights())
    assert np.abs(moving(clip).numpy() - moving(still).numpy()).max() > 1e-4


def test_resuming_with_other_settings_is_refused_naming_them(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run")
    finetune.finetune(config, progress=False)
    changed = dataclasses.replace(config, train_steps=4, learning_rate=5e-4)
    with pytest.raises(ValueError, match=r"\(learning_rate: 0\.001 → 0\.0005\)"):
        finetune.finetune(changed, progress=False)
    # Only how long it runs changed: resuming is fine.
    assert finetune.finetune(dataclasses.replace(config, train_steps=3), progress=False)["step"] == 3


def test_mixed_bfloat16_finetune_loads_and_evaluates_in_float32(tiny_synthetic, tmp_path, monkeypatch):
    import json

    import keras

    from vdim_tf import evaluate

    built = []
    make_classifier = finetune.make_classifier

    def recording_make_classifier(*args, **kwargs):
        built.append(make_classifier(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(finetune, "make_classifier", recording_make_classifier)
    config = _finetune_config(tiny_synthetic, tmp_path / "run", precision="mixed_bfloat16")
    result = finetune.finetune(config, progress=False)
    assert result["step"] == 2 and np.isfinite(result["metrics"]["loss/total"])
    assert built[0].hidden.compute_dtype == "bfloat16"  # the run really computed in bfloat16
    assert keras.mixed_precision.global_policy().name == "float32"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "mixed_bfloat16"

    # Variables stay float32 under a mixed policy: evaluate/export rebuild the model in float32.
    model, saved = finetune.load_finetuned(str(tmp_path / "run"))
    assert saved["precision"] == "mixed_bfloat16"
    assert model.hidden.compute_dtype == "float32" and {v.dtype for v in model.weights} == {"float32"}
    results = evaluate.evaluate_run(str(tmp_path / "run"), retrieval=False, projector_videos=0, progress=False)
    for key in ("video_top1", "clip_top1"):
        assert 0.0 <= results[key] <= 1.0

    # As in pretraining, a resumed run may change precision, but not into or out of mixed_float16
    # (its LossScaleOptimizer checkpoints other optimizer variables).
    with pytest.raises(ValueError, match="precision='mixed_bfloat16'.*precision='mixed_float16'"):
        loop.check_resume(config.model_dir, dataclasses.replace(config, train_steps=3, precision="mixed_float16").to_dict())
    resumed = finetune.finetune(dataclasses.replace(config, train_steps=3, precision="float32"), progress=False)
    assert resumed["step"] == 3


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="checks the CPU-only refusal")
def test_mixed_float16_without_a_gpu_is_refused_before_training(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", precision="mixed_float16")
    with pytest.raises(ValueError, match="mixed_float16.*needs a GPU.*mixed_bfloat16"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_invalid_precision_names_the_valid_values(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", precision="float16")
    with pytest.raises(ValueError, match=r"precision='float16'.*mixed_float16.*mixed_bfloat16"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


# --- start-up checks of the data and its labels ----------------------------------------------


def test_labels_file_with_fewer_labels_than_the_data_is_refused_at_start_up(tiny_synthetic, labelled_records,
                                                                           tmp_path):
    train = labelled_records("train", [(0, "a"), (1, "b"), (2, "c"), (0, "a"), (1, "b"), (2, "c")])
    config = _finetune_config(tiny_synthetic, tmp_path / "run", train_data=train, test_data=None,
                              label_names=("a", "b"))
    with pytest.raises(ValueError, match=r"train_data=.*label index 2 is past the 2 names.*"
                                         r"Records: 0=a, 1=b, 2=c; .*: 0=a, 1=b$"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_records_without_labels_are_refused_saying_they_are_for_pretraining(tiny_synthetic, tmp_path):
    # `prepare --dataset=folder` on a folder without class folders writes an empty labels.txt.
    with pytest.raises(ValueError, match=r"need at least 2 classes, the labels file lists \[\] \(records prepared "
                                         r"from a folder with no class folders are unlabelled: for pretraining only"):
        _finetune_config(tiny_synthetic, tmp_path / "run", label_names=[]).validate()
    with pytest.raises(ValueError, match=r"lists \['walk'\]$"):
        _finetune_config(tiny_synthetic, tmp_path / "run", label_names=["walk"]).validate()


def test_labels_in_another_order_than_the_records_are_refused(tiny_synthetic, tmp_path):
    names = finetune.read_labels(str(tiny_synthetic / "labels.txt"))
    config = _finetune_config(tiny_synthetic, tmp_path / "run", label_names=names[::-1])
    with pytest.raises(ValueError, match=rf"index 0 is '{names[0]}' in the records but '{names[1]}'"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_test_data_that_matches_nothing_is_refused_at_start_up(tiny_synthetic, tmp_path):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", test_data=str(tmp_path / "nowhere" / "*.tfrecord"))
    with pytest.raises(FileNotFoundError, match=r"test_data=.*nowhere.*matches no file"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


# --- colour spaces ---------------------------------------------------------------------------


def test_colour_spaces_are_recorded_and_a_difference_from_pretraining_is_noted(
        tiny_synthetic, pretrained_run, tmp_path, capsys):
    import json

    from vdim_tf import evaluate

    assert json.loads((pretrained_run / "config.json").read_text())["augment"]["color_mode"] == "jitter"
    config = _finetune_config(tiny_synthetic, tmp_path / "run", pretrained=str(pretrained_run), train_steps=1,
                              augment=augment_lib.AugmentConfig(output_size=64, color_mode="lab"))
    finetune.finetune(config, progress=False)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "trained on rgb input; this run fine-tunes it on lab input" in notes[0], notes
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["color_space"], saved["pretrained_color_space"]) == ("lab", "rgb")
    results = evaluate.evaluate_run(str(tmp_path / "run"), retrieval=False, projector_videos=0, progress=False)
    assert (results["color_space"], results["pretrained_color_space"]) == ("lab", "rgb")

    # A run recorded before colour spaces were (no such keys) still resumes.
    for key in ("color_space", "pretrained_color_space"):
        del saved[key]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert finetune.finetune(dataclasses.replace(config, train_steps=2), progress=False)["step"] == 2


def test_views_longer_than_the_preset_takes_are_refused_before_training(tiny_synthetic, tmp_path):
    # 24 frames make the CPU preset's global layer 3×1×1: the classifier wants one vector per view.
    config = _finetune_config(tiny_synthetic, tmp_path / "run", final_length=24)
    with pytest.raises(ValueError, match=r"--final_length=24 --image_size=64: .*global layer 6 3×1×1, not 1×1×1.*"
                                         r"15-18 frames of 63-78 px"):
        finetune.finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_rerun_with_nothing_to_do_leaves_config_json_untouched(tiny_synthetic, tmp_path, capsys):
    config = _finetune_config(tiny_synthetic, tmp_path / "run", train_steps=1)
    finetune.finetune(config, progress=False)
    before = (tmp_path / "run" / "config.json").read_bytes()

    assert finetune.finetune(dataclasses.replace(config, train_steps=1, log_every=5), progress=False)["step"] == 1

    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "run" / "config.json").read_bytes() == before


def test_train_data_that_is_not_a_tfrecord_file_is_refused_naming_it(tiny_synthetic, tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "train").mkdir()
    text = tmp_path / "train" / "clips.tfrecord"
    text.write_text("video_0001.avi 1\n" * 50)
    config = _finetune_config(tiny_synthetic, tmp_path / "run", train_data=str(tmp_path / "train" / "*.tfrecord"))

    expected = rf"train_data=.*: 1 of its 1 files cannot be used: {text}: not a TFRecord file"
    with pytest.raises(ValueError, match=expected):
        finetune.finetune(config, progress=False)


def test_missing_labels_file_shows_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FileNotFoundError, match=rf"labels file {tmp_path}/data/labels.txt not found"):
        finetune.read_labels("data/labels.txt")


def test_model_dir_that_is_a_file_is_a_one_line_error(tiny_synthetic, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run folder")
    out = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.finetune", "--encoder=cpu", "--train_steps=2",
         f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", f"--model_dir={tmp_path / 'notes.txt'}"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=180)

    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"finetune: error: --model_dir={tmp_path / 'notes.txt'}: ")
    assert "Traceback" not in out.stderr


def test_training_accuracy_does_not_count_ties_at_the_top():
    logits = tf.constant([[1.0, 1.0, 0.0],   # the label ties another class: not a hit
                          [0.0, 2.0, 1.0],   # strictly highest: a hit
                          [3.0, 3.0, 3.0],   # uniform (collapsed): not a hit
                          [float("nan"), 0.0, 0.0],  # NaN: not a hit
                          [0.0, 1.0, 2.0]])  # another class is higher: not a hit
    labels = tf.constant([0, 1, 2, 0, 1], tf.int64)
    np.testing.assert_array_equal(finetune.top1_hits(logits, labels).numpy(), [0, 1, 0, 0, 0])


def _classifier_from_flags(*flag_args):
    """`config_from_flags().classifier` of the finetune launcher for these flags (a subprocess: absl
    flags are defined once per process), or the process's `CompletedProcess` when it fails."""
    script = (
        "import sys\n"
        "from vdim_tf.launch import finetune as f\n"
        "f.FLAGS(['finetune', *sys.argv[1:]])\n"
        "try:\n"
        "    c = f.config_from_flags().classifier\n"
        "except ValueError as e:\n"
        "    sys.exit(f'error: {e}')\n"
        "print(c.encoder_preset, c.embedding_dim, c.block_batch_norm)\n"
    )
    return subprocess.run([sys.executable, "-c", script, *flag_args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120)


def test_model_flags_left_unset_follow_the_pretrained_run(tiny_synthetic, pretrained_run, tmp_path):
    """The pretrained run records preset cpu and embedding 32: a finetune command that names only
    --pretrained gets them (not the paper preset's 512, which would be refused on load); flags
    given keep their values, and the load then names the mismatch; without --pretrained the
    defaults stay the paper's."""
    common = [f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", f"--model_dir={tmp_path / 'run'}",
              "--train_steps=2"]

    inferred = _classifier_from_flags(*common, f"--pretrained={pretrained_run}")
    given = _classifier_from_flags(*common, f"--pretrained={pretrained_run}", "--embedding_dim=64",
                                   "--block_batch_norm")
    random_start = _classifier_from_flags(*common)
    missing = _classifier_from_flags(*common, f"--pretrained={tmp_path / 'nowhere'}")

    assert inferred.returncode == 0, inferred.stderr[-2000:]
    assert inferred.stdout.split() == ["cpu", "32", "False"]
    assert given.returncode == 0, given.stderr[-2000:]
    assert given.stdout.split() == ["cpu", "64", "True"]
    assert random_start.returncode == 0, random_start.stderr[-2000:]
    assert random_start.stdout.split() == ["paper", "512", "False"]
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr


def test_finetune_of_a_pretrained_run_needs_no_model_flags(tiny_synthetic, pretrained_run, tmp_path):
    """End to end: `finetune --pretrained=RUN` without --encoder or --embedding_dim trains from
    the run's encoder (embedding 32, CPU preset)."""
    out = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.finetune", f"--pretrained={pretrained_run}", "--freeze_encoder",
         "--hidden_units=32", "--num_views=2", "--batch_size=4", "--decay_every=0", "--train_steps=2",
         f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", f"--model_dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=300)

    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: step 2" in out.stdout
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["classifier"]["encoder_preset"], saved["classifier"]["embedding_dim"]) == ("cpu", 32), saved


def test_resumed_finetune_takes_unset_model_flags_from_its_own_record(tiny_synthetic, pretrained_run, tmp_path):
    """A fine-tuning run resumes without its pretrained run (moved or deleted since): the model
    flags it left unset come from its own config.json, not the paper preset's defaults."""
    import shutil

    pretrained = tmp_path / "pretrain"
    shutil.copytree(pretrained_run, pretrained)
    args = [sys.executable, "-m", "vdim_tf.launch.finetune", "--freeze_encoder", "--hidden_units=32",
            "--num_views=2", "--batch_size=4", "--decay_every=0", "--checkpoint_every=2",
            f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", f"--model_dir={tmp_path / 'run'}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.run([*args, f"--pretrained={pretrained}", "--train_steps=2"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(pretrained)

    resumed = subprocess.run([*args, f"--pretrained={pretrained}", "--train_steps=4"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "done: step 4" in resumed.stdout


def test_probe_without_augmentation_trains_on_the_evaluation_view():
    augment = augment_lib.AugmentConfig(output_size=32, color_mode="jitter", flip_probability=0.5,
                                        rotation_probability=0.3)
    # Fine-tuning, and a probe with augmentation, keep the flags' augmentation.
    assert finetune.probe_augment(augment, freeze_encoder=False, augment_frozen=False) == augment
    assert finetune.probe_augment(augment, freeze_encoder=True, augment_frozen=True) == augment
    plain = finetune.probe_augment(augment, freeze_encoder=True, augment_frozen=False)
    assert (plain.crop_scale, plain.crop_aspect_ratio) == ((1.0, 1.0), (1.0, 1.0))
    assert (plain.jitter_probability, plain.grayscale_probability, plain.flip_probability,
            plain.rotation_probability) == (0, 0, 0, 0)
    assert (plain.output_size, plain.color_mode) == (32, "jitter")

    # What the probe then trains on: for every seed, the centre square of a wide frame as evaluation
    # sees it (evaluation resizes with antialiasing, training without: equal on a smooth frame up
    # to resampling), where the flags' augmentation gives other crops and colours.
    y, x = np.mgrid[0:96, 0:160].astype(np.float32)
    frame = np.stack([x / 160, y / 96, (x + y) / 256], -1) * 255
    views = tf.constant(np.broadcast_to(frame, (2, 4, 96, 160, 3)).astype(np.uint8))
    evaluated = augment_lib.eval_view(views[0], 32).numpy()
    for seed in range(5):
        trained = augment_lib.augment_views(views, plain, tf.constant([seed, 1])).numpy()
        np.testing.assert_allclose(trained, np.broadcast_to(evaluated, trained.shape), atol=0.03)
    augmented = augment_lib.augment_views(views, augment, tf.constant([0, 1])).numpy()
    assert np.abs(augmented - evaluated).max() > 0.1
