"""The evaluation protocol's arithmetic: top-k, per-video averaging, retrieval recall."""

import numpy as np

from vdim_tf.evaluate import (average_per_video, confusion_matrix, retrieval_recall, top1_predictions,
                              topk_accuracy)


def test_topk_accuracy_counts_label_within_k_highest():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(probs, labels, 1) == 1 / 3
    assert topk_accuracy(probs, labels, 2) == 2 / 3
    assert topk_accuracy(probs, labels, 3) == 1.0


def test_uniform_probabilities_score_no_top1_hit():
    # A collapsed classifier: every class equally likely. Top-k is a hit only once k covers them all.
    probs = np.full((4, 5), 0.2)
    labels = np.array([0, 1, 2, 4])
    assert topk_accuracy(probs, labels, 1) == 0.0
    assert topk_accuracy(probs, labels, 4) == 0.0
    assert topk_accuracy(probs, labels, 5) == 1.0


def test_a_tie_with_the_label_counts_against_the_model():
    probs = np.array([
        [0.4, 0.4, 0.2],    # label 0 tied first with class 1: miss at k=1, hit at k=2
        [0.5, 0.25, 0.25],  # label 1 tied with class 2 behind class 0: miss at k=2, hit at k=3
        [0.3, 0.6, 0.1],    # label 1 strictly first: hit at every k
        [0.2, 0.4, 0.4],    # label 0 last: hit only at k=3
    ])
    labels = np.array([0, 1, 1, 0])
    assert topk_accuracy(probs, labels, 1) == 1 / 4
    assert topk_accuracy(probs, labels, 2) == 2 / 4
    assert topk_accuracy(probs, labels, 3) == 1.0


def test_a_nan_probability_is_never_a_hit():
    probs = np.array([[np.nan, 0.5, 0.5], [0.9, np.nan, 0.1]])
    assert topk_accuracy(probs, np.array([0, 0]), 1) == 0.0


def test_top1_equals_the_confusion_matrix_diagonal_share_with_ties():
    # Probabilities on a coarse grid (0, 0.25, ..., 1 before normalising) tie often, including at
    # the top, where argmax would pick the lowest index and disagree with a pessimistic top-1.
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 5, size=(400, 4)).astype(np.float32)
    probs[probs.sum(axis=1) == 0] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=400)
    tied_at_top = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tied_at_top.sum() > 50  # the case this test is about occurs
    predictions = top1_predictions(probs, labels)
    cm = confusion_matrix(predictions, labels, num_classes=4)
    assert topk_accuracy(probs, labels, 1) == np.trace(cm) / cm.sum()
    unique = ~tied_at_top
    np.testing.assert_array_equal(predictions[unique], probs[unique].argmax(axis=1))  # argmax elsewhere


def test_video_level_differs_from_clip_level_by_construction():
    """Video A (class 0): 3 windows, 2 of them wrong but only slightly, one confidently right.

    Clip level: 1 of 3 windows of A right and 0 of 2 windows of B → 1/5. Video level: A's mean
    probability favours class 0 → right; B's windows are both wrong → wrong: 1/2.
    """
    probs = np.array([
        [0.45, 0.55],  # A, wrong
        [0.45, 0.55],  # A, wrong
        [0.95, 0.05],  # A, right
        [0.60, 0.40],  # B (class 1), wrong
        [0.70, 0.30],  # B, wrong
    ])
    labels = np.array([0, 0, 0, 1, 1])
    video_ids = np.array([7, 7, 7, 3, 3])
    assert topk_accuracy(probs, labels, 1) == 1 / 5
    video_probs, video_labels, ids = average_per_video(probs, labels, video_ids)
    assert ids.tolist() == [7, 3]  # first-seen order
    np.testing.assert_allclose(video_probs[0], [0.6166666, 0.3833333], rtol=1e-5)
    assert video_labels.tolist() == [0, 1]
    assert topk_accuracy(video_probs, video_labels, 1) == 1 / 2


def test_retrieval_recall_matches_hand_computed_example():
    # Training videos on a line; the mean (1.5, 0) is removed before cosine similarity, so
    # each training feature points left (-) or right (+) of it.
    train = np.array([[0.0, 0.0], [1.0, 0.2], [2.0, -0.2], [3.0, 0.0]])
    train_labels = np.array([0, 0, 1, 1])
    # Query 1 (class 0) lies left of the mean: its nearest by angle are train 0 then train 1 → R@1 hit.
    # Query 2 (class 1) lies left of the mean too, so the two class-0 videos rank first: R@1 and
    # R@2 miss; train 2 (class 1, cosine −0.89) ranks third ahead of train 3 (−0.995): R@3 hits.
    test = np.array([[0.0, 0.05], [0.5, -0.1]])
    test_labels = np.array([0, 1])
    recall = retrieval_recall(train, train_labels, test, test_labels, ks=(1, 2, 3, 4, 50))
    centred = train - train.mean(axis=0)
    q = test[1] - train.mean(axis=0)
    cos = centred @ q / (np.linalg.norm(centred, axis=1) * np.linalg.norm(q))
    assert np.argsort(-cos)[:2].tolist() == [0, 1]  # the hand reasoning above
    assert recall == {1: 0.5, 2: 0.5, 3: 1.0, 4: 1.0}  # k=50 > 4 training videos is left out


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(predictions=[0, 1, 1, 2], labels=[0, 0, 1, 2], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_evaluate_run_reports_top1_equal_to_its_confusion_matrix_diagonal(tmp_path, monkeypatch):
    from vdim_tf import evaluate, finetune

    # Three videos of one window each; video 0 ties its label (class 0) with class 1 at the top,
    # where a plain argmax would pick the label.
    probs = np.array([[0.45, 0.45, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], np.float32)
    saved = {"label_names": ["a", "b", "c"], "test_data": "unused", "augment": {"color_mode": "lab"}}
    monkeypatch.setattr(finetune, "restore_finetuned", lambda model_dir: (None, saved, None))
    monkeypatch.setattr(finetune, "record_labels", lambda data: None)
    monkeypatch.setattr(finetune, "check_record_labels", lambda *args: None)
    monkeypatch.setattr(evaluate, "windows_for", lambda *args, **kwargs: None)
    monkeypatch.setattr(evaluate, "run_windows", lambda *args, **kwargs: {
        "probabilities": probs, "features": np.eye(3, dtype=np.float32), "labels": np.array([0, 1, 2]),
        "video_ids": np.array([10, 11, 12])})
    results = evaluate.evaluate_run(str(tmp_path), retrieval=False, projector_videos=0, progress=False,
                                    linear_probe=False)
    cm = np.array(results["confusion_matrix"])
    assert results["video_top1"] == results["clip_top1"] == 2 / 3
    assert np.trace(cm) / cm.sum() == 2 / 3
    assert cm[0].tolist() == [0, 1, 0]  # the tie went against the label
