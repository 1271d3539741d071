"""The evaluation protocol (paper §4.1, SPEC §6), made explicit.

- Every window of every test video (`pipeline.test_windows_dataset`, centre crop, K views per
  window as in training) is classified; class probabilities are averaged per video, and
  **video-level** top-1/top-5 accuracy is the headline number. Clip-level (per-window) accuracy is
  reported beside it, labelled as such.
- The test records' label indices and names must be the model's (checked before anything runs).
- Retrieval (beyond the paper; the field's standard): φ_g∘Ψ features averaged over a video's
  windows and views, centred by the training-set mean, L2-normalised; each test video queries the
  training videos by cosine similarity; R@k is the fraction of queries with a same-class video
  among the k nearest.
"""

import glob
import json
import os
import re
import zlib

import numpy as np
import tensorflow as tf

from vdim_tf.data import pipeline

RECALL_AT = (1, 5, 10, 20, 50)


def topk_accuracy(probabilities, labels, k):
    """Fraction of rows whose label is among the k highest probabilities; a tie counts as a miss.

    A row is a hit when fewer than k *other* classes score at least as high as its label (a NaN
    counts as scoring at least as high), so uniform probabilities score top-1 = 0, not 1: a
    collapsed classifier cannot report accuracy it does not have. Top-1 equals the diagonal share
    of `confusion_matrix(top1_predictions(probabilities, labels), labels, ...)`.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(_rivals(probabilities, labels).sum(axis=1) < k))


def top1_predictions(probabilities, labels):
    """The highest-scoring class of each row, a tie with the label resolved against the label.

    Equals `argmax` wherever the maximum is unique; where the label shares the maximum, the
    prediction is the first other class sharing it. Scored like `topk_accuracy(..., 1)`, so the
    confusion matrix built from these predictions agrees with top-1.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    hit = ~_rivals(probabilities, labels).any(axis=1)
    others = probabilities.astype(np.float64)  # float64 holds -inf whatever the input dtype
    others[np.arange(len(labels)), labels] = -np.inf
    return np.where(hit, labels, others.argmax(axis=1))


def _rivals(probabilities, labels):
    """`(N, C)` bool: class j ≠ label scores at least as high as the label (or either is NaN)."""
    rows = np.arange(len(labels))
    rivals = ~(probabilities < probabilities[rows, labels][:, None])
    rivals[rows, labels] = False
    return rivals


def average_per_video(values, labels, video_ids):
    """Mean of `values` rows per video id; returns (means, labels, ids) in first-seen order."""
    values = np.asarray(values)
    ids, first, inverse = np.unique(np.asarray(video_ids), return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(ids), values.shape[1]), np.float64)
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    means = sums / counts
    video_labels = np.asarray(labels)[first]
    return means[order], video_labels[order], ids[order]


def retrieval_recall(train_features, train_labels, test_features, test_labels, ks=RECALL_AT):
    """R@k of test videos querying training videos (features centred by the training mean, L2-normalised).

    Returns:
      dict `{k: recall}` for every k <= the number of training videos.
    """
    train = np.asarray(train_features, np.float64)
    test = np.asarray(test_features, np.float64)
    mean = train.mean(axis=0, keepdims=True)

    def normalise(x):
        x = x - mean
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = normalise(test) @ normalise(train).T
    ranked = np.argsort(-similarity, axis=1, kind="stable")
    matches = np.asarray(train_labels)[ranked] == np.asarray(test_labels)[:, None]
    return {k: float(np.mean(matches[:, :k].any(axis=1))) for k in ks if k <= train.shape[0]}


def confusion_matrix(predictions, labels, num_classes):
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def confusion_image(cm, cell=8):
    """Row-normalised confusion matrix as a `(1, H, W, 3)` float image (true classes down, predictions across)."""
    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    img = np.kron(norm, np.ones((cell, cell)))
    rgb = np.stack([img, img, 1 - img * 0.5], axis=-1)  # white-ish to yellow as mass grows
    return rgb[None].astype(np.float32)


def run_windows(model, dataset, progress=True):
    """Probabilities and φ_g∘Ψ features of every window; returns dict of numpy arrays."""
    from tqdm.auto import tqdm

    @tf.function
    def step(views):
        # One encoder pass gives both the classifier's input and the retrieval features.
        embeddings = model.embed_views(views, training=False)
        logits = model.classify_embeddings(embeddings, training=False)
        return tf.nn.softmax(logits), tf.reduce_mean(embeddings, axis=1)

    probs, feats, labels, ids = [], [], [], []
    for batch in tqdm(dataset, disable=not progress, unit="batch", desc="windows", mininterval=2.0):
        p, f = step(batch["views"])
        probs.append(p.numpy())
        feats.append(f.numpy())
        labels.append(batch["label"].numpy())
        ids.append(batch["video_id"].numpy())
    if not probs:
        raise ValueError("the test data yielded no windows")
    return {"probabilities": np.concatenate(probs), "features": np.concatenate(feats),
            "labels": np.concatenate(labels), "video_ids": np.concatenate(ids)}


def windows_for(saved, file_pattern, batch_size, window_stride=None):
    return pipeline.test_windows_dataset(
        file_pattern, saved["final_length"], saved["factor"], saved["augment"]["output_size"], batch_size,
        num_views_k=saved["classifier"]["num_views"], window_stride=window_stride,
        color_space=_color_space(saved),
    )


def _color_space(saved):
    from vdim_tf.data import augment as augment_lib

    return augment_lib.color_space(saved["augment"]["color_mode"])


def output_names(test_data, recorded_test_data):
    """(results file, TensorBoard folder) of an evaluation, relative to the run folder.

    The run's own test data gives `results.json` and `eval/`; any other data gets names that say
    which (its last two folder names and a hash of its absolute pattern), so a result on other
    data never replaces the run's.
    """
    absolute = os.path.abspath(test_data)
    if recorded_test_data and absolute == os.path.abspath(recorded_test_data):
        return "results.json", "eval"
    folders = [part for part in absolute.split(os.sep) if part and not glob.has_magic(part)]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(folders[-2:]))
    suffix = f"{name}-{zlib.crc32(absolute.encode()):08x}"
    return f"results_{suffix}.json", f"eval_{suffix}"


def evaluate_run(model_dir, test_data=None, batch_size=8, window_stride=None, retrieval=True,
                 projector_videos=200, progress=True, linear_probe=True):
    """Evaluates a fine-tuning run; writes its results and TensorBoard logs into `model_dir`.

    The run's own test data (the default) gives `results.json` and `eval/`; other `test_data`
    gives `results_<data>.json` and `eval_<data>/` (`output_names`).

    With `linear_probe`, also the linear protocol (`linear_eval.probe_model`) on the run's frozen
    φ_g∘Ψ and Ψ features: `results["linear_probe"]`.

    Returns:
      the results dict (also in the results file), with `results_file` added.

    Raises:
      ValueError / FileNotFoundError: no test data, or records whose labels are not the model's.
    """
    from vdim_tf import finetune

    model, saved, prefix = finetune.restore_finetuned(model_dir)
    test_data = test_data or saved.get("test_data")
    if not test_data:
        raise ValueError(f"{model_dir} records no test data; pass --test_data")
    names = list(saved["label_names"])
    try:
        labels = finetune.record_labels(test_data)
    except FileNotFoundError:
        raise FileNotFoundError(f"test_data={test_data!r} matches no file (looked for {os.path.abspath(test_data)})"
                                ) from None
    finetune.check_record_labels(names, labels, f"test_data={test_data!r}",
                                 f"the {len(names)} labels of the model in {model_dir}")
    results_name, eval_name = output_names(test_data, saved.get("test_data"))
    out = run_windows(model, windows_for(saved, test_data, batch_size, window_stride), progress)
    clip_top1 = topk_accuracy(out["probabilities"], out["labels"], 1)
    clip_top5 = topk_accuracy(out["probabilities"], out["labels"], 5)
    video_probs, video_labels, video_ids = average_per_video(out["probabilities"], out["labels"], out["video_ids"])
    video_feats, _, _ = average_per_video(out["features"], out["labels"], out["video_ids"])
    predictions = top1_predictions(video_probs, video_labels)
    cm = confusion_matrix(predictions, video_labels, len(names))
    results = {
        "model_dir": model_dir,
        "test_data": test_data,
        "videos": int(len(video_ids)),
        "windows": int(len(out["labels"])),
        "video_top1": topk_accuracy(video_probs, video_labels, 1),
        "video_top5": topk_accuracy(video_probs, video_labels, 5),
        "clip_top1": clip_top1,
        "clip_top5": clip_top5,
        "chance": 1.0 / len(names),
        "confusion_matrix": cm.tolist(),
        "label_names": names,
        "color_space": _color_space(saved),
        "pretrained": saved.get("pretrained"),
        "pretrained_color_space": saved.get("pretrained_color_space"),
    }
    if retrieval:
        train = run_windows(model, windows_for(saved, saved["train_data"], batch_size, window_stride), progress)
        train_feats, train_labels, _ = average_per_video(train["features"], train["labels"], train["video_ids"])
        recall = retrieval_recall(train_feats, train_labels, video_feats, video_labels)
        results["retrieval"] = {f"R@{k}": v for k, v in recall.items()}
    if linear_probe:
        from vdim_tf import linear_eval

        results["linear_probe"] = linear_eval.probe_model(
            model, lambda data: windows_for(saved, data, batch_size, window_stride), saved["train_data"], test_data,
            len(names), progress)
    results_file = os.path.join(model_dir, results_name)
    with open(results_file, "w") as f:
        json.dump(results, f, indent=2)
    eval_dir = os.path.join(model_dir, eval_name)
    step = _checkpoint_step(prefix)
    with tf.summary.create_file_writer(eval_dir).as_default(step=step):
        for key in ("video_top1", "video_top5", "clip_top1", "clip_top5"):
            tf.summary.scalar(f"accuracy/{key}", results[key])
        for key, value in results.get("retrieval", {}).items():
            tf.summary.scalar(f"retrieval/{key}", value)
        for key in ("phi", "psi"):
            if key in results.get("linear_probe", {}):
                tf.summary.scalar(f"accuracy/linear_probe_{key}_top1", results["linear_probe"][key]["top1"])
        tf.summary.image("confusion_matrix", confusion_image(cm))
    if projector_videos:
        write_projector(eval_dir, video_feats[:projector_videos], [names[i] for i in video_labels[:projector_videos]])
    return {**results, "results_file": results_file}


def _checkpoint_step(prefix):
    """The step of the checkpoint `prefix` (`.../ckpt-<step>`) evaluated; 0 for none."""
    return int(prefix.rsplit("-", 1)[-1]) if prefix else 0


def write_projector(log_dir, features, labels):
    """Embeddings for TensorBoard's projector, one point per video, coloured by label."""
    from tensorboard.plugins import projector

    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "metadata.tsv"), "w", encoding="utf-8") as f:
        for label in labels:
            f.write(f"{label}\n")
    embedding = tf.Variable(np.asarray(features, np.float32), name="video_embedding")
    tf.train.Checkpoint(embedding=embedding).save(os.path.join(log_dir, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    e = config.embeddings.add()
    e.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    e.metadata_path = "metadata.tsv"
    projector.visualize_embeddings(log_dir, config)
