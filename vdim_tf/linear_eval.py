"""The linear evaluation protocol, beside the paper's MLP (as CVRL and TF Model Garden report it).

Frozen features of every window of a video are averaged per video (over its windows and views):
φ_g∘Ψ (the global head's embedding) and Ψ (the encoder's global block, averaged over time and
space). Each is standardised with the **training** videos' mean and standard deviation, and a
multinomial logistic regression (softmax, L2 penalty `l2 / 2 * |W|^2` on the mean cross-entropy;
`steps` full-batch Adam steps from zero) is fitted on the training videos and scored on the test
videos: video-level top-1 / top-5.

It runs on a fine-tuning run (its encoder as fine-tuned or frozen, its K views per window) and on a
pretraining run (one view of the run's view length per window, factor 1, as `export` embeds it):
a pretraining run has no classifier, so the linear probe is its whole evaluation.
"""

import json
import os

import numpy as np
import tensorflow as tf

from vdim_tf import evaluate
from vdim_tf.data import pipeline

# Chosen once, not tuned on any benchmark: a weak penalty (features are standardised) and enough
# full-batch steps to converge on a few thousand videos of a few hundred dimensions.
DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 500
DEFAULT_LEARNING_RATE = 0.05
# Adam's constants (Kingma & Ba 2015).
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-8
# Feature dimensions constant over the training videos keep their centred value (0), not inf/nan.
_MIN_STD = 1e-6


def standardise(train, test):
    """`(train, test)` centred and scaled by the training features' per-dimension mean and std."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), _MIN_STD)
    return (train - mean) / std, (test - mean) / std


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_logistic_regression(features, labels, num_classes, l2=DEFAULT_L2, steps=DEFAULT_STEPS,
                            learning_rate=DEFAULT_LEARNING_RATE):
    """Multinomial logistic regression by full-batch Adam.

    Args:
      features: `(N, D)` float.
      labels: `(N,)` int in `[0, num_classes)`.
      num_classes: C.
      l2: weight of `0.5 * |W|^2` (not the bias) added to the mean cross-entropy.
      steps, learning_rate: Adam's full-batch steps and step size.

    Returns:
      `(weights (D, C), bias (C,))`.
    """
    x = np.asarray(features, np.float64)
    onehot = np.eye(num_classes)[np.asarray(labels)]
    params = [np.zeros((x.shape[1], num_classes)), np.zeros(num_classes)]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for t in range(1, steps + 1):
        error = (_softmax(x @ params[0] + params[1]) - onehot) / len(x)
        grads = [x.T @ error + l2 * params[0], error.sum(axis=0)]
        for p, g, m in zip(params, grads, moments):
            m[0] = _BETA_1 * m[0] + (1 - _BETA_1) * g
            m[1] = _BETA_2 * m[1] + (1 - _BETA_2) * g * g
            p -= learning_rate * (m[0] / (1 - _BETA_1 ** t)) / (np.sqrt(m[1] / (1 - _BETA_2 ** t)) + _EPSILON)
    return params[0], params[1]


def linear_probe(train_features, train_labels, test_features, test_labels, num_classes, **fit_args):
    """Standardise (training statistics), fit on the training rows, score the test rows.

    Returns:
      dict: `top1`, `top5` (test), `train_top1`.
    """
    train, test = standardise(train_features, test_features)
    weights, bias = fit_logistic_regression(train, train_labels, num_classes, **fit_args)
    return {
        "top1": evaluate.topk_accuracy(_softmax(test @ weights + bias), test_labels, 1),
        "top5": evaluate.topk_accuracy(_softmax(test @ weights + bias), test_labels, 5),
        "train_top1": evaluate.topk_accuracy(_softmax(train @ weights + bias), train_labels, 1),
    }


def video_features(model, dataset, progress=True):
    """φ_g∘Ψ and Ψ features per video, averaged over its windows and views.

    Args:
      model: has `encoder`, `head` (φ_g; None for none) and `global_layer`, like `VideoClassifier`
        or `export.PretrainedEmbedder`; a `single_frame` model sees each view's first frame.
      dataset: `pipeline.test_windows_dataset` batches (`views` `(B, K, T, S, S, 3)`).

    Returns:
      dict of numpy arrays: `phi` `(V, D)` (absent without a head), `psi` `(V, C)`, `labels` `(V,)`.
    """
    from tqdm.auto import tqdm

    @tf.function
    def step(views):
        shape = tf.shape(views)
        clips = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))
        clips = tf.ensure_shape(clips, [None, *views.shape[2:]])
        if getattr(model, "single_frame", False):
            clips = tf.repeat(clips[:, :1], tf.shape(clips)[1], axis=1)
        features = model.encoder(clips, training=False)[model.global_layer]
        out = {"psi": tf.reduce_mean(tf.cast(features, tf.float32), axis=[1, 2, 3])}
        if model.head is not None:
            out["phi"] = tf.reshape(tf.cast(model.head(features, training=False), tf.float32), [shape[0] * shape[1], -1])
        # Mean over the K views of each window.
        return {k: tf.reduce_mean(tf.reshape(v, [shape[0], shape[1], -1]), axis=1) for k, v in out.items()}

    rows = {}
    for batch in tqdm(dataset, disable=not progress, unit="batch", desc="linear-probe windows", mininterval=2.0):
        for key, value in step(batch["views"]).items():
            rows.setdefault(key, []).append(value.numpy())
        rows.setdefault("labels", []).append(batch["label"].numpy())
        rows.setdefault("video_ids", []).append(batch["video_id"].numpy())
    if not rows:
        raise ValueError("the data yielded no windows")
    rows = {k: np.concatenate(v) for k, v in rows.items()}
    out = {}
    for key in ("phi", "psi"):
        if key in rows:
            out[key], out["labels"], _ = evaluate.average_per_video(rows[key], rows["labels"], rows["video_ids"])
    return out


def probe_model(model, make_windows, train_data, test_data, num_classes, progress=True, **fit_args):
    """The linear protocol for a model: features of `train_data` and `test_data` windows
    (`make_windows(file_pattern)` builds them), one logistic regression per feature.

    Returns:
      dict: `phi` and `psi` (each `linear_probe`'s dict), `train_videos`, `test_videos`, `l2`, `steps`.
    """
    train = video_features(model, make_windows(train_data), progress)
    if train["labels"].min() < 0:
        raise ValueError(f"train_data={train_data!r} holds unlabelled records (label -1); the linear probe needs "
                         "labelled training videos (--train_data)")
    test = video_features(model, make_windows(test_data), progress)
    result = {"train_videos": int(len(train["labels"])), "test_videos": int(len(test["labels"])),
              "l2": fit_args.get("l2", DEFAULT_L2), "steps": fit_args.get("steps", DEFAULT_STEPS)}
    for key in ("phi", "psi"):
        if key in train:
            result[key] = linear_probe(train[key], train["labels"], test[key], test["labels"], num_classes, **fit_args)
    return result


def is_pretraining_run(model_dir):
    """True when `model_dir/config.json` records a VDIM pretraining run (not a fine-tuning one)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get("kind", "pretrain") == "pretrain"


def evaluate_pretraining_run(model_dir, test_data, train_data=None, batch_size=8, window_stride=None,
                             progress=True, labels_file=None):
    """The linear protocol on a pretraining run's newest checkpoint; writes `model_dir/results.json`.

    Args:
      model_dir: a pretraining run folder.
      test_data: glob of labelled test records (required: pretraining records none).
      train_data: glob of labelled training records; default the run's own `train_data`.
      labels_file: class names; default `labels.txt` beside `test_data`'s split folder.

    Returns:
      the results dict.

    Raises:
      ValueError: no `test_data`, or training data without labels.
    """
    from vdim_tf import export, finetune

    if not test_data:
        raise ValueError(f"{model_dir} is a pretraining run: pass --test_data (labelled test records) for its "
                         "linear probe")
    try:
        model, saved = export.load_pretrained_encoder(model_dir)
    except export.ExportError as e:
        raise ValueError(str(e)) from None
    train_data = train_data or saved["train_data"]
    names = list(finetune.read_labels(labels_file or finetune.labels_file_for(test_data)))
    color_space = "lab" if saved["augment"]["color_mode"] == "lab" else "rgb"

    def make_windows(file_pattern):
        return pipeline.test_windows_dataset(file_pattern, saved["views"]["final_length"], 1,
                                             saved["augment"]["output_size"], batch_size, num_views_k=1,
                                             window_stride=window_stride, color_space=color_space)

    probe = probe_model(model, make_windows, train_data, test_data, len(names), progress)
    results = {"model_dir": model_dir, "kind": "pretrain", "train_data": train_data, "test_data": test_data,
               "videos": probe["test_videos"], "chance": 1.0 / len(names), "label_names": names,
               "linear_probe": probe}
    with open(os.path.join(model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
