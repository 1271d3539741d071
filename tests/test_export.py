"""Exported SavedModels: the evaluation protocol runs inside the graph, and a process that never
imports vdim_tf gets the same numbers as the in-memory model.

A CPU-preset classifier (K = 2 views of 16 frames, Lab input) is fine-tuned for one step on the
tiny synthetic dataset and exported once per module. One fresh Python process (no vdim_tf on its
path) loads the export with `tf.saved_model.load` and with the TF1 session loader (the way TF
Serving loads it) and runs the signatures on prepared inputs; the tests compare its outputs with
the in-memory model run window by window.

Tolerance: 1e-5 absolute on probabilities and embeddings. The uint8 path involves no JPEG (the
same uint8 frames go to both sides); on the record path both sides decode the same JPEG bytes with
the same TensorFlow decoder. What remains is float32 round-off from batching windows differently.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import evaluate, export, finetune
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import pipeline, records
from vdim_tf.data import views as views_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ATOL = 1e-5
TIMEOUT = 120  # seconds any one subprocess may take

# Runs in a fresh interpreter, outside the repository: loads the export with TensorFlow alone.
FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, videos_path, records_path, out_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    results = {}
    videos = np.load(videos_path)
    for name in videos.files:
        video = tf.constant(videos[name])
        classified = loaded.signatures["serving_default"](video=video)
        for key, value in classified.items():
            results[f"video/{name}/{key}"] = value.numpy().astype(str) if value.dtype == tf.string else value.numpy()
        results[f"embed/{name}"] = loaded.signatures["embed"](video=video)["embedding"].numpy()
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(records_path)]
    out = loaded.signatures["serve_examples"](examples=tf.constant(serialized))
    results["examples/probabilities"] = out["probabilities"].numpy()
    results["examples/top_k_labels"] = out["top_k_labels"].numpy().astype(str)
    embedded = loaded.signatures["embed_examples"](examples=tf.constant(serialized))
    results["examples/embedding"] = embedded["embedding"].numpy()
    results["label_names"] = loaded.signatures["metadata"]()["label_names"].numpy().astype(str)
    # The TF1 loader, as TF Serving and `saved_model_cli run` load a SavedModel.
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        for signature, input_key, value in [("serving_default", "video", videos["odd_50x70"]),
                                            ("serve_examples", "examples", np.array(serialized, object))]:
            signature_def = meta_graph.signature_def[signature]
            results[f"session/{signature}"] = session.run(
                signature_def.outputs["probabilities"].name, {signature_def.inputs[input_key].name: value})
    results["vdim_tf_imported"] = np.array("vdim_tf" in sys.modules)
    np.savez(out_path, **results)
""")


def _subprocess_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


# --- the run, the export and the reference ---------------------------------------------------


@pytest.fixture(scope="module")
def finetuned_run(tiny_synthetic, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("finetune")
    config = finetune.FinetuneConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"),
        test_data=str(tiny_synthetic / "test" / "*.tfrecord"),
        model_dir=str(model_dir), train_steps=1, batch_size=4,
        label_names=finetune.read_labels(str(tiny_synthetic / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=2, hidden_units=32),
        final_length=16,
        augment=augment_lib.AugmentConfig(output_size=64, color_mode="lab"),
        decay_every=0, checkpoint_every=1, log_every=1,
    )
    finetune.finetune(config, progress=False)
    return model_dir


@pytest.fixture(scope="module")
def classifier(finetuned_run):
    """(in-memory VideoClassifier, saved config dict) of the run."""
    return finetune.load_finetuned(str(finetuned_run))


@pytest.fixture(scope="module")
def export_dir(finetuned_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "classifier" / "1"
    export.export_run(str(finetuned_run), str(path), top_k=5)
    return path


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


def reference(model, saved, video, embed=False, stride=None):
    """The evaluation protocol, eagerly and one window at a time, on uint8 `(T, H, W, 3)`.

    As `pipeline.test_windows_dataset` + `evaluate.run_windows`: every window, K views at
    offsets k * final_length * factor, centre crop, normalise; softmax (or φ_g∘Ψ averaged over
    the views) per window, averaged over the windows.
    """
    views = views_lib.ViewConfig.clip_views(saved["final_length"], saved["factor"], saved["classifier"]["num_views"])
    color_space = "lab" if saved["augment"]["color_mode"] == "lab" else "rgb"
    num_frames = len(video)
    outputs = []
    for start in views_lib.window_starts(num_frames, views.window_length, stride).numpy():
        window = tf.gather(video, views_lib.view_indices(start, num_frames, views))
        window = augment_lib.eval_view(window, saved["augment"]["output_size"], color_space)
        if embed:
            outputs.append(tf.reduce_mean(model.embed(window, training=False), axis=0).numpy())
        else:
            outputs.append(tf.nn.softmax(model(window[tf.newaxis], training=False))[0].numpy())
    return np.mean(outputs, axis=0)


def _decode_record(serialized):
    parsed = records.parse_sequence_example(serialized)
    return np.stack([tf.io.decode_jpeg(jpeg, channels=3).numpy() for jpeg in parsed["frames"]])


def _jpeg_record(frames, label=0):
    jpegs = [tf.io.encode_jpeg(frame, quality=95).numpy() for frame in frames]
    return records.make_sequence_example(jpegs, label, "x", "generated", 25.0).SerializeToString()


@pytest.fixture(scope="module")
def test_records(tiny_synthetic):
    files = pipeline.list_files(str(tiny_synthetic / "test" / "*.tfrecord"))
    return [r.numpy() for r in pipeline.read_records(files, shuffle=False, repeat=False)]


@pytest.fixture(scope="module")
def videos(test_records):
    """uint8 `(N, T, H, W, 3)` inputs for `serving_default`, one call each."""
    first, second = _decode_record(test_records[0]), _decode_record(test_records[-1])
    odd = tf.cast(tf.image.resize(first[:23], [50, 70]), tf.uint8).numpy()
    return {
        "record0": first[np.newaxis],                                   # 40 frames: windows at 0 and 8
        "short": first[np.newaxis, :5],                                 # shorter than one 16-frame view
        "single_frame": first[np.newaxis, :1],
        "odd_50x70": odd[np.newaxis],                                   # 23 frames of 50 x 70
        "long": np.concatenate([first, second[:35]])[np.newaxis],      # 75 frames: windows at 0, 32, 43
        "pair": np.stack([first, second]),                              # two videos in one call
    }


@pytest.fixture(scope="module")
def mixed_records(test_records, videos):
    """Records of different lengths and sizes, for one `serve_examples` call."""
    return [test_records[0], _jpeg_record(videos["short"][0]), _jpeg_record(videos["odd_50x70"][0]),
            test_records[-1]]


@pytest.fixture(scope="module")
def served(export_dir, videos, mixed_records, tmp_path_factory):
    """Everything the fresh process computed with the loaded export."""
    work = tmp_path_factory.mktemp("fresh_process")
    np.savez(work / "videos.npz", **videos)
    with tf.io.TFRecordWriter(str(work / "mixed.tfrecord")) as writer:
        for record in mixed_records:
            writer.write(record)
    script = work / "load_export.py"
    script.write_text(FRESH_PROCESS)
    out = work / "served.npz"
    result = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(work / "videos.npz"), str(work / "mixed.tfrecord"),
         str(out)],
        cwd=work, env=_subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as data:
        return dict(data)


# --- a process without vdim_tf ---------------------------------------------------------------


def test_fresh_process_loads_the_export_without_vdim_tf(served, classifier):
    assert not served["vdim_tf_imported"]
    assert list(served["label_names"]) == list(classifier[1]["label_names"])


def test_serving_default_matches_the_evaluation_protocol(served, classifier, videos):
    model, saved = classifier
    for name, batch in videos.items():
        expected = np.stack([reference(model, saved, video) for video in batch])
        np.testing.assert_allclose(served[f"video/{name}/probabilities"], expected, atol=ATOL, err_msg=name)


def test_tf1_session_loader_as_tf_serving_uses_gets_the_same_probabilities(served, classifier, videos, mixed_records):
    model, saved = classifier
    expected = reference(model, saved, videos["odd_50x70"][0])[np.newaxis]
    np.testing.assert_allclose(served["session/serving_default"], expected, atol=ATOL)
    expected = np.stack([reference(model, saved, _decode_record(r)) for r in mixed_records])
    np.testing.assert_allclose(served["session/serve_examples"], expected, atol=ATOL)


def test_different_videos_get_different_probabilities(served):
    # Guards the comparisons above against a model that answers the same for everything.
    assert np.abs(served["video/record0/probabilities"] - served["video/odd_50x70/probabilities"]).max() > 1e-4


def test_serve_examples_matches_evaluate_run_windows(served, classifier, tiny_synthetic, test_records):
    model, saved = classifier
    windows = evaluate.windows_for(saved, str(tiny_synthetic / "test" / "*.tfrecord"), batch_size=4)
    out = evaluate.run_windows(model, windows, progress=False)
    per_video, _, _ = evaluate.average_per_video(out["probabilities"], out["labels"], out["video_ids"])
    # mixed_records holds the first and the last test record at positions 0 and 3.
    np.testing.assert_allclose(served["examples/probabilities"][[0, 3]], per_video[[0, -1]], atol=ATOL)
    per_video_features, _, _ = evaluate.average_per_video(out["features"], out["labels"], out["video_ids"])
    np.testing.assert_allclose(served["examples/embedding"][[0, 3]], per_video_features[[0, -1]], atol=ATOL)


def test_serve_examples_handles_records_of_different_lengths_and_sizes_in_one_call(served, classifier, mixed_records):
    model, saved = classifier
    expected = np.stack([reference(model, saved, _decode_record(r)) for r in mixed_records])
    np.testing.assert_allclose(served["examples/probabilities"], expected, atol=ATOL)


def test_embed_is_phi_g_of_psi_averaged_over_windows_and_views(served, classifier, videos):
    model, saved = classifier
    for name in ("record0", "short", "odd_50x70"):
        expected = reference(model, saved, videos[name][0], embed=True)
        np.testing.assert_allclose(served[f"embed/{name}"][0], expected, atol=ATOL, err_msg=name)


def test_downsampling_factor_and_window_stride_follow_the_view_config(classifier, videos):
    model, saved = classifier
    config = export.ServingConfig(kind=export.CLASSIFIER, final_length=16, factor=2, num_views=2, size=64,
                                  color_space="lab", label_names=saved["label_names"], window_stride=7,
                                  windows_per_step=3)
    module = export.VideoServingModule(model, config)
    video = videos["long"]  # 75 frames, windows of 64: starts 0, 7 and 11 (aligned to the end)
    got = module.classify(tf.constant(video))["probabilities"].numpy()
    expected = reference(model, {**saved, "factor": 2}, video[0], stride=7)
    np.testing.assert_allclose(got[0], expected, atol=ATOL)


def test_top_k_labels_name_the_highest_probabilities(served, classifier):
    names = np.array(classifier[1]["label_names"])
    probabilities = served["video/pair/probabilities"]
    assert served["video/pair/top_k_indices"].shape == (2, len(names))  # top_k=5 capped at 2 classes
    np.testing.assert_array_equal(served["video/pair/top_k_indices"], np.argsort(-probabilities, axis=1))
    np.testing.assert_array_equal(served["video/pair/top_k_labels"], names[served["video/pair/top_k_indices"]])
    np.testing.assert_allclose(served["video/pair/top_k_probabilities"], np.sort(probabilities, axis=1)[:, ::-1])


# --- what travels inside the export ----------------------------------------------------------


def test_label_names_and_preprocessing_constants_travel_inside_the_export(loaded, classifier, export_dir):
    saved = classifier[1]
    meta = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
    assert [n.decode() for n in meta["label_names"]] == list(saved["label_names"])
    assert (meta["final_length"], meta["factor"], meta["num_views"], meta["image_size"]) == (16, 1, 2, 64)
    assert meta["color_space"] == b"lab" and meta["kind"] == b"classifier"
    assert meta["window_length"] == 32 and meta["embedding_dim"] == 32
    assert [n.decode() for n in loaded.label_names.numpy()] == list(saved["label_names"])
    labels_asset = export_dir / "assets" / "labels.txt"
    assert labels_asset.read_text().splitlines() == list(saved["label_names"])


def test_export_refuses_to_overwrite_a_non_empty_folder(finetuned_run, export_dir):
    with pytest.raises(export.ExportError, match="--overwrite"):
        export.export_run(str(finetuned_run), str(export_dir))


# --- bad input gets a clear error from the signature -----------------------------------------


def test_wrong_dtype_is_rejected_by_the_signature(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        loaded.signatures["serving_default"](video=tf.zeros([1, 4, 8, 8, 3], tf.float32))


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (1, 2, 4, 8, 8, 3)])
def test_wrong_rank_is_rejected_by_the_signature(loaded, shape):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rank 5, \(N, T, H, W, 3\)"):
        loaded.signatures["serving_default"](video=tf.zeros(shape, tf.uint8))


def test_wrong_rank_is_rejected_by_the_restored_function_before_it_runs(loaded):
    with pytest.raises(TypeError, match="uint8"):
        loaded.classify(tf.zeros([4, 8, 8, 3], tf.uint8))


def test_empty_video_is_an_error_naming_the_frame_count(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"no frames \(T == 0\)"):
        loaded.signatures["serving_default"](video=tf.zeros([1, 0, 64, 64, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"no frames \(T == 0\)"):
        loaded.signatures["embed"](video=tf.zeros([1, 0, 64, 64, 3], tf.uint8))


def test_record_without_frames_is_an_error(loaded):
    empty = records.make_sequence_example([], 0, "x", "empty", 25.0).SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="record has no frames"):
        loaded.signatures["serve_examples"](examples=tf.constant([empty]))


# --- the predict command ---------------------------------------------------------------------


def _predict(export_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.predict", f"--export_dir={export_dir}", *args],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=TIMEOUT)


def test_predict_reports_an_undecodable_file_and_predicts_the_rest(export_dir, tiny_synthetic, classifier, tmp_path):
    good = sorted((tiny_synthetic / "videos" / "test").glob("*/*.mp4"))[0]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[:300])
    result = _predict(export_dir, "--json", "--top_k=1", str(good), str(corrupt))
    assert result.returncode == 2, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert [p["file"] for p in out["predictions"]] == [str(good)]
    (top,) = out["predictions"][0]["top_k"]
    assert top["label"] in classifier[1]["label_names"] and 0.0 < top["probability"] <= 1.0
    assert [f["file"] for f in out["failures"]] == [str(corrupt)]
    assert "1 of 2 file(s) failed" in result.stderr


def test_predict_prints_a_table_and_exits_0_when_all_files_are_predicted(export_dir, tiny_synthetic, classifier):
    good = sorted((tiny_synthetic / "videos" / "test").glob("*/*.mp4"))[:2]
    result = _predict(export_dir, *map(str, good))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["file", "rank", "label", "probability"]
    assert len(lines) == 1 + 2 * len(classifier[1]["label_names"])  # default --top_k=5, capped at 2 classes
    assert all(line.split()[2] in classifier[1]["label_names"] for line in lines[1:])


# --- encoder-only export of a pretraining run ------------------------------------------------


def test_export_command_writes_an_encoder_for_a_pretraining_run(pretrained_run, videos, tmp_path):
    target = tmp_path / "encoder" / "1"
    result = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.export", f"--model_dir={pretrained_run}", f"--export_dir={target}"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "encoder (embedding only)" in result.stdout
    loaded = tf.saved_model.load(str(target))
    assert set(loaded.signatures) == {"serving_default", "embed", "embed_examples", "metadata"}
    assert loaded.signatures["metadata"]()["kind"].numpy() == b"encoder"

    from vdim_tf.models.vdim import VDIM

    saved = json.loads((pretrained_run / "config.json").read_text())
    vdim = VDIM(**saved["model"]).build_for(16, 64)
    checkpoint = tf.train.latest_checkpoint(str(pretrained_run / "checkpoints"))
    tf.train.Checkpoint(model=vdim).restore(checkpoint).expect_partial().assert_existing_objects_matched()
    # One view of final_length frames per window, at the run's crop size and colour space.
    protocol = {"final_length": 16, "factor": 1, "classifier": {"num_views": 1},
                "augment": {"output_size": 64, "color_mode": saved["augment"]["color_mode"]}}
    for name in ("record0", "short", "odd_50x70"):
        got = loaded.signatures["embed"](video=tf.constant(videos[name]))["embedding"].numpy()
        expected = reference(vdim, protocol, videos[name][0], embed=True)
        np.testing.assert_allclose(got[0], expected, atol=ATOL, err_msg=name)
    default = loaded.signatures["serving_default"](video=tf.constant(videos["short"]))["embedding"].numpy()
    np.testing.assert_allclose(default, loaded.signatures["embed"](video=tf.constant(videos["short"]))["embedding"])


# --- what export may replace -----------------------------------------------------------------


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_overwrite_refuses_the_run_folder_and_its_parent_and_the_run_survives(finetuned_run, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "finetune"
    shutil.copytree(finetuned_run, run)
    before = _tree(runs)
    with pytest.raises(export.ExportError, match=r"is the run folder given as --model_dir"):
        export.export_run(str(run), str(run), overwrite=True)
    with pytest.raises(export.ExportError, match=rf"contains the run folder {re.escape(str(run.resolve()))}"):
        export.export_run(str(run), str(runs), overwrite=True)
    assert _tree(runs) == before
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) is not None


def test_overwrite_refuses_a_folder_that_is_not_an_export_naming_what_is_in_it(finetuned_run, tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "saved_model.pb").write_bytes(b"")
    with pytest.raises(export.ExportError, match=r"not a previous SavedModel export \(it holds notes\.txt\)"):
        export.export_run(str(finetuned_run), str(target), overwrite=True)
    assert (target / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_previous_export(finetuned_run, export_dir, tmp_path):
    target = tmp_path / "1"
    shutil.copytree(export_dir, target)
    (target / "variables" / "stale.marker").write_bytes(b"")  # only inside the SavedModel's own folders
    export.export_run(str(finetuned_run), str(target), overwrite=True, top_k=1)
    assert not (target / "variables" / "stale.marker").exists()
    assert tf.saved_model.load(str(target)).top_k.numpy() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["1"], "the temporary folder is left behind"


def test_export_command_refuses_the_run_folder_in_one_line_and_exits_1(finetuned_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finetuned_run, run)
    result = subprocess.run(
        [sys.executable, "-m", "vdim_tf.launch.export", f"--model_dir={run}", f"--export_dir={run}", "--overwrite"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=TIMEOUT)
    assert result.returncode == 1, result.stderr[-2000:]
    # TensorFlow's C++ start-up lines may come first; the command's own output is one line.
    ours = [line for line in result.stderr.splitlines() if line.startswith("export:")]
    assert len(ours) == 1 and ours[0].startswith("export: error: export_dir="), result.stderr
    assert "Traceback" not in result.stderr
    assert (run / "config.json").exists() and tf.train.latest_checkpoint(str(run / "checkpoints"))


# --- predict on files that are not videos, or damaged ----------------------------------------


def _write_avi(path, frames=40, size=64):
    """An MPEG-4 AVI of noise: its header declares the frame count, so a truncated copy shows it."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def predicted_odd_files(export_dir, tmp_path_factory):
    """predict --json on a truncated AVI, a directory, a symbolic link loop and a missing relative path."""
    root = tmp_path_factory.mktemp("odd_files")
    _write_avi(root / "whole.avi")
    data = (root / "whole.avi").read_bytes()
    (root / "truncated.avi").write_bytes(data[: len(data) // 2])
    (root / "folder.mp4").mkdir()
    os.symlink(root / "loop_b.mp4", root / "loop_a.mp4")
    os.symlink(root / "loop_a.mp4", root / "loop_b.mp4")
    paths = [root / "truncated.avi", root / "folder.mp4", root / "loop_a.mp4", "no_such_clip.mp4"]
    result = _predict(export_dir, "--json", *map(str, paths))
    return root, result, json.loads(result.stdout)


def test_predict_names_a_directory_a_link_loop_and_a_missing_file_for_what_they_are(predicted_odd_files):
    root, result, out = predicted_odd_files
    assert result.returncode == 2, result.stderr[-2000:]
    errors = {f["file"]: f["error"] for f in out["failures"]}
    assert errors == {
        str(root / "folder.mp4"): f"{root / 'folder.mp4'} is a directory, not a video file",
        str(root / "loop_a.mp4"): f"symbolic link loop at {root / 'loop_a.mp4'}",
        "no_such_clip.mp4": f"no such file: {REPO_ROOT / 'no_such_clip.mp4'}",  # predict ran in REPO_ROOT
    }


def test_predict_warns_that_a_truncated_clip_was_decoded_in_part(predicted_odd_files):
    root, result, out = predicted_odd_files
    (prediction,) = out["predictions"]
    assert prediction["file"] == str(root / "truncated.avi") and 1 <= prediction["frames"] < 40
    assert "predicted from the frames before the damage" in prediction["warning"]
    assert f"predict: warning: {root / 'truncated.avi'}: " in result.stderr
