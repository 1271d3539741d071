"""vdim_tf as a library: the public API, `.keras` round-trips, versioned runs and TensorBoard tags
grouped by kind."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import vdim_tf
from conftest import REPO_ROOT
from vdim_tf import api, evaluate, finetune, loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.models.classifier import VideoClassifier
from vdim_tf.models.encoder import Encoder
from vdim_tf.models.heads import ContrastiveHead
from vdim_tf.models.vdim import VDIM


def _perturbed(model, seed=0):
    """Every weight replaced by noise, so equal outputs after loading mean the weights were loaded
    (zero-initialised kernels would otherwise hide a layer that was not)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) + (1.0 if "variance" in v.path else 0.0)
                       for w, v in zip(model.get_weights(), model.weights)])
    return model


def _round_trip(model, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return keras.models.load_model(path)


def _assert_same(model, loaded, x):
    a, b = model(x, training=False), loaded(x, training=False)
    for key in (a if isinstance(a, dict) else [None]):
        np.testing.assert_array_equal(a[key] if key is not None else a, b[key] if key is not None else b)
    for w, v in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy(), err_msg=w.path)


CLIP = tf.random.stateless_normal((2, 16, 64, 64, 3), seed=(1, 2))


def test_encoder_layer_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((16, 64, 64, 3))
    features = Encoder(preset="cpu", name="encoder")(inputs)
    model = _perturbed(keras.Model(inputs, {"block5": features[5], "block6": features[6]}))
    _assert_same(model, _round_trip(model, tmp_path), CLIP)


def test_contrastive_head_round_trips_through_a_keras_file(tmp_path):
    model = _perturbed(keras.Sequential([keras.Input((3, 3, 3, 8)), ContrastiveHead(16, hidden_dim=12)]))
    _assert_same(model, _round_trip(model, tmp_path), tf.random.stateless_normal((2, 3, 3, 3, 8), seed=(3, 4)))


def test_vdim_model_round_trips_through_a_keras_file(tmp_path):
    model = _perturbed(VDIM("cpu", embedding_dim=16, antecedent_layers=(5, 6), consequent_layers=(6,)).build_for())
    loaded = _round_trip(model, tmp_path)
    assert loaded.get_config() == model.get_config()
    _assert_same(model, loaded, CLIP)


def test_classifier_and_video_encoder_round_trip_through_a_keras_file(tmp_path):
    classifier = _perturbed(VideoClassifier(3, "cpu", embedding_dim=16, num_views=2, hidden_units=8).build_for())
    _assert_same(classifier, _round_trip(classifier, tmp_path), tf.stack([CLIP, CLIP], axis=1))
    encoder = _perturbed(api.VideoEncoder("cpu", 16, outputs=("block4", "embedding")).build_for())
    _assert_same(encoder, _round_trip(encoder, tmp_path), CLIP)


def test_load_encoder_of_a_pretraining_run_gives_its_embedding_and_block_features(pretrained_run):
    config = json.loads((pretrained_run / "config.json").read_text())
    reference = VDIM(**config["model"]).build_for(16, 64)
    tf.train.Checkpoint(model=reference).restore(loop.latest_checkpoint(str(pretrained_run))).expect_partial()

    model = vdim_tf.load_encoder(str(pretrained_run), outputs=("block5", "embedding"))
    out = model(CLIP)
    np.testing.assert_allclose(out["embedding"], reference.embed(CLIP), atol=1e-5)
    np.testing.assert_allclose(out["block5"], reference.encoder(CLIP)[5], atol=1e-5)
    # A checkpoint prefix works too, and the model trains further with fit.
    single = vdim_tf.load_encoder(loop.latest_checkpoint(str(pretrained_run)))
    np.testing.assert_allclose(single(CLIP), out["embedding"], atol=1e-5)
    single.compile(optimizer="sgd", loss="mse")
    single.fit(CLIP, np.zeros((2, 32), np.float32), epochs=1, verbose=0)
    assert not np.allclose(single(CLIP), out["embedding"])


def test_load_encoder_refuses_unknown_outputs(pretrained_run):
    with pytest.raises(ValueError, match=r"outputs=\['block9'\].*'block6'"):
        vdim_tf.load_encoder(str(pretrained_run), outputs=("block9",))


def test_preprocess_crops_resizes_and_normalises_like_evaluation(pretrained_run):
    preprocess = vdim_tf.load_preprocess(str(pretrained_run))
    video = tf.random.stateless_uniform((2, 5, 90, 120, 3), seed=(5, 6), maxval=256, dtype=tf.int32)
    out = preprocess(tf.cast(video, tf.uint8))
    assert out.shape == (2, 5, 64, 64, 3) and out.dtype == tf.float32
    np.testing.assert_array_equal(out, augment_lib.eval_view(tf.cast(video, tf.uint8), 64, "rgb"))


def test_loss_view_sampler_and_augmentation_work_on_a_users_tensors():
    video = tf.cast(tf.reshape(tf.range(40), (40, 1, 1, 1)) * tf.ones((1, 32, 32, 3), tf.int32), tf.uint8)
    config = vdim_tf.ViewConfig.two_views(final_length=8, offset2=4, factor2=2)
    views = vdim_tf.sample_views(video, config, seed=tf.constant([0, 1]))
    frames = views[:, :, 0, 0, 0].numpy()  # each frame is painted with its index
    assert views.shape == (2, 8, 32, 32, 3)
    np.testing.assert_array_equal(frames[0], frames[0][0] + np.arange(8))
    np.testing.assert_array_equal(frames[1], frames[0][0] + 4 + 2 * np.arange(8))
    augmented = vdim_tf.augment_views(views, vdim_tf.AugmentConfig(output_size=16), tf.constant([2, 3]))
    assert augmented.shape == (2, 8, 16, 16, 3)
    a = tf.random.stateless_normal((4, 27, 8), seed=(1, 1))
    assert float(vdim_tf.nce_loss(a, a[:, :1])) > 0


def _readme_python_example():
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs(pretrained_run, tmp_path):
    code = _readme_python_example().replace('"runs/demo/pretrain"', repr(str(pretrained_run)))
    assert repr(str(pretrained_run)) in code, "the example starts from a pretraining run folder"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]


def _copy_run(run, tmp_path, edit):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "config.json").read_text())
    edit(saved)
    (copy / "config.json").write_text(json.dumps(saved))
    return copy, saved


def test_config_records_the_versions_that_wrote_the_run(pretrained_run):
    versions = json.loads((pretrained_run / "config.json").read_text())["versions"]
    assert versions == {"vdim_tf": vdim_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def test_a_run_written_by_another_version_resumes_and_says_so(pretrained_run, tmp_path, capsys):
    run, saved = _copy_run(pretrained_run, tmp_path, lambda s: s["versions"].update(vdim_tf="0.0.1", keras="3.0.0"))
    settings = {k: v for k, v in saved.items() if k != "versions"}
    loop.check_resume(str(run), settings)  # not refused
    assert f"{run} was written by vdim_tf 0.0.1 (TensorFlow {tf.__version__}, Keras 3.0.0)" in capsys.readouterr().err
    vdim_tf.load_encoder(str(run))
    assert "written by vdim_tf 0.0.1" in capsys.readouterr().err


def test_a_run_from_before_versions_were_recorded_still_resumes_silently(pretrained_run, tmp_path, capsys):
    run, saved = _copy_run(pretrained_run, tmp_path, lambda s: s.pop("versions"))
    loop.check_resume(str(run), saved)
    assert "written by" not in capsys.readouterr().err


def _scalar_tags(folder):
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {v.tag for v in event.summary.value if v.metadata.plugin_data.plugin_name == "scalars"}
    return tags


def test_finetune_and_evaluate_tensorboard_tags_are_grouped_by_kind_and_the_run_exports_as_keras(tiny_synthetic, pretrained_run, tmp_path):
    config = finetune.FinetuneConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), test_data=str(tiny_synthetic / "test" / "*.tfrecord"),
        model_dir=str(tmp_path / "run"), train_steps=2, batch_size=4,
        label_names=finetune.read_labels(str(tiny_synthetic / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=1, hidden_units=16),
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64), decay_every=0, log_every=1,
        pretrained=str(pretrained_run))
    finetune.finetune(config, progress=False)
    evaluate.evaluate_run(config.model_dir, batch_size=4, projector_videos=0, progress=False)

    assert _scalar_tags(os.path.join(config.model_dir, "train")) == {
        "loss/total", "accuracy/train_clip_top1", "optimizer/learning_rate", "throughput/clips_per_second",
        "throughput/step_time_seconds"}
    assert _scalar_tags(os.path.join(config.model_dir, "eval")) == {
        "accuracy/video_top1", "accuracy/video_top5", "accuracy/clip_top1", "accuracy/clip_top5",
        "accuracy/linear_probe_phi_top1", "accuracy/linear_probe_psi_top1",
        *(f"retrieval/R@{k}" for k in (1, 5))}  # R@k for k <= the 8 training videos

    # The same run exported as one .keras file: the classifier, with the run's weights.
    from vdim_tf import export

    classifier = export.export_keras(config.model_dir, str(tmp_path / "classifier.keras"))
    loaded = keras.models.load_model(str(tmp_path / "classifier.keras"))
    assert isinstance(loaded, VideoClassifier)
    np.testing.assert_array_equal(loaded(CLIP[:, None]), classifier(CLIP[:, None]))


def test_export_keras_writes_the_classifier_or_the_encoder(tiny_synthetic, pretrained_run, tmp_path):
    from vdim_tf import export

    encoder = export.export_keras(str(pretrained_run), str(tmp_path / "encoder.keras"))
    loaded = keras.models.load_model(str(tmp_path / "encoder.keras"))
    np.testing.assert_array_equal(loaded(CLIP), encoder(CLIP))
    with pytest.raises(export.ExportError, match="exists; pass --overwrite"):
        export.export_keras(str(pretrained_run), str(tmp_path / "encoder.keras"))
    with pytest.raises(export.ExportError, match="ends in .keras"):
        export.export_keras(str(pretrained_run), str(tmp_path / "encoder"))
