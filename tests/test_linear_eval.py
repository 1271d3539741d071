"""The linear evaluation protocol: logistic regression on standardised frozen features."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vdim_tf import linear_eval

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blobs(rng, num_classes, per_class, dim, spread):
    centres = rng.normal(0, 1, (num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dim)), labels


def test_separable_features_reach_full_accuracy():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, num_classes=6, per_class=40, dim=16, spread=0.05)
    # Offset and scale far from standard, as frozen features in inference mode are.
    x = 3.0 + 0.01 * x
    result = linear_eval.linear_probe(x[::2], y[::2], x[1::2], y[1::2], num_classes=6)
    assert result["top1"] == 1.0 and result["train_top1"] == 1.0


def test_shuffled_labels_stay_near_chance():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, num_classes=6, per_class=100, dim=16, spread=0.05)
    shuffled = rng.permutation(y)
    result = linear_eval.linear_probe(x[::2], shuffled[::2], x[1::2], shuffled[1::2], num_classes=6)
    assert abs(result["top1"] - 1 / 6) < 0.07, result


def test_standardisation_uses_the_training_statistics_only():
    train = np.array([[0.0, 10.0], [2.0, 30.0]])
    test = np.array([[1.0, 50.0]])
    train_out, test_out = linear_eval.standardise(train, test)
    np.testing.assert_allclose(train_out, [[-1, -1], [1, 1]])
    np.testing.assert_allclose(test_out, [[0.0, 3.0]])  # (50 - 20) / 10, not centred on itself


def test_a_test_set_of_one_class_is_scored_with_the_training_scale():
    """Test videos all of class 1: standardised by their own statistics they would be centred onto
    the decision boundary; by the training statistics they stay on class 1's side."""
    rng = np.random.default_rng(2)
    train = np.concatenate([rng.normal(-1, 0.1, (50, 1)), rng.normal(1, 0.1, (50, 1))])
    labels = np.repeat([0, 1], 50)
    test = rng.normal(1, 0.1, (40, 1))
    result = linear_eval.linear_probe(train, labels, test, np.ones(40, int), num_classes=2)
    assert result["top1"] == 1.0


def test_a_constant_feature_gives_finite_results():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    y = np.array([0, 0, 1, 1])
    train, test = linear_eval.standardise(x, x)
    assert np.isfinite(train).all() and np.isfinite(test).all()
    assert linear_eval.linear_probe(x, y, x, y, num_classes=2)["top1"] == 1.0


def test_pretraining_run_gets_the_linear_probe_on_phi_and_psi(tiny_synthetic, pretrained_run):
    results = linear_eval.evaluate_pretraining_run(
        str(pretrained_run), test_data=str(tiny_synthetic / "test" / "*.tfrecord"), batch_size=4, progress=False)
    probe = results["linear_probe"]
    assert (probe["train_videos"], probe["test_videos"]) == (8, 4)
    for key in ("phi", "psi"):
        assert 0.0 <= probe[key]["top1"] <= 1.0 and 0.0 <= probe[key]["train_top1"] <= 1.0
    saved = json.loads((pretrained_run / "results.json").read_text())
    assert saved["linear_probe"]["phi"] == probe["phi"] and saved["chance"] == 0.5


def test_pretraining_run_without_test_data_names_the_flag(pretrained_run):
    with pytest.raises(ValueError, match="pretraining run: pass --test_data"):
        linear_eval.evaluate_pretraining_run(str(pretrained_run), test_data=None)


def test_finetuned_run_reports_the_linear_probe_beside_the_mlp(tiny_synthetic, tmp_path):
    from vdim_tf import evaluate, finetune
    from vdim_tf.data import augment as augment_lib

    config = finetune.FinetuneConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), test_data=str(tiny_synthetic / "test" / "*.tfrecord"),
        model_dir=str(tmp_path / "run"), train_steps=1, batch_size=4,
        label_names=finetune.read_labels(str(tiny_synthetic / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=2, hidden_units=32),
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64, color_mode="jitter"), decay_every=0,
        checkpoint_every=1, log_every=1)
    finetune.finetune(config, progress=False)
    results = evaluate.evaluate_run(config.model_dir, retrieval=False, projector_videos=0, progress=False)
    assert 0.0 <= results["video_top1"] <= 1.0
    probe = results["linear_probe"]
    assert probe["test_videos"] == results["videos"] == 4 and probe["train_videos"] == 8
    assert {"phi", "psi"} <= set(probe)


def test_evaluate_launcher_prints_the_linear_columns_for_a_pretraining_run(tiny_synthetic, pretrained_run):
    out = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.evaluate", f"--model_dir={pretrained_run}",
         f"--test_data={tiny_synthetic / 'test' / '*.tfrecord'}", "--batch_size=4"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    header, row = out.stdout.splitlines()[:2]
    assert header.split("\t")[-2:] == ["linear_phi_top1", "linear_psi_top1"]
    assert row.split("\t")[2] == "nan"  # no MLP for a pretraining run
    assert 0.0 <= float(row.split("\t")[-1]) <= 1.0
