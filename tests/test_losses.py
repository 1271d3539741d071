"""The InfoNCE loss against a loop-by-loop NumPy reference of SPEC §3."""

import math

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf.models.losses import nce_loss, nce_terms, temporal_difference


def reference_nce(a, c, scale_scores, tanh_clip, score_penalty):
    """SPEC §3 written out one positive at a time."""
    a = a.astype(np.float64)
    c = c.astype(np.float64)
    B, N, D = a.shape
    M = c.shape[1]
    S = np.zeros((B, N, B, M))
    for b in range(B):
        for i in range(N):
            for b2 in range(B):
                for i2 in range(M):
                    S[b, i, b2, i2] = np.dot(a[b, i], c[b2, i2])
    if scale_scores:
        S = S / math.sqrt(D)
    penalty = score_penalty * np.mean(S**2)
    if tanh_clip is not None:
        S = tanh_clip * np.tanh(S / tanh_clip)
    losses = []
    for b in range(B):
        for i in range(N):
            negatives = [S[b, i, b2, i2] for b2 in range(B) if b2 != b for i2 in range(M)]
            for i1 in range(M):
                pos = S[b, i, b, i1]
                denom = np.exp(pos) + np.sum(np.exp(negatives))
                losses.append(-np.log(np.exp(pos) / denom))
    return np.mean(losses) + penalty


@pytest.mark.parametrize(
    "scale_scores,tanh_clip,score_penalty",
    [(False, None, 0.0), (True, None, 0.0), (True, 20.0, 0.0), (True, 20.0, 0.05), (False, 2.0, 0.1)],
)
def test_loss_matches_loop_reference(scale_scores, tanh_clip, score_penalty):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 8)).astype(np.float32) * 2
    c = rng.normal(size=(3, 5, 8)).astype(np.float32) * 2
    got = nce_loss(tf.constant(a), tf.constant(c), scale_scores=scale_scores, tanh_clip=tanh_clip,
                   score_penalty=score_penalty)
    want = reference_nce(a, c, scale_scores, tanh_clip, score_penalty)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_random_features_give_log_number_of_candidates():
    rng = np.random.default_rng(1)
    B, N, M, D = 8, 27, 3, 64
    a = rng.normal(size=(B, N, D)).astype(np.float32) * 1e-3
    c = rng.normal(size=(B, M, D)).astype(np.float32) * 1e-3
    loss = nce_loss(a, c, scale_scores=False, tanh_clip=None, score_penalty=0.0)
    candidates = 1 + (B - 1) * M
    np.testing.assert_allclose(loss.numpy(), math.log(candidates), rtol=1e-3)


def test_perfectly_matched_features_give_zero_loss_and_full_accuracy():
    B, D = 6, 16
    a = np.zeros((B, 4, D), np.float32)
    for b in range(B):
        a[b, :, b] = 10.0
    loss, acc = nce_terms(a, a[:, :2], scale_scores=False, tanh_clip=None, score_penalty=0.0)
    assert loss.numpy() < 1e-6
    assert acc.numpy() == 1.0


def test_loss_is_float32_under_half_precision_inputs():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 3, 8)).astype(np.float32)
    c = rng.normal(size=(4, 2, 8)).astype(np.float32)
    full = nce_loss(a, c)
    half = nce_loss(tf.cast(a, tf.bfloat16), tf.cast(c, tf.bfloat16))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), full.numpy(), rtol=2e-2)


def test_gathered_consequents_pair_with_offset_clips():
    """A replica holding clips 2..3 of a global batch of 4 sees the same per-clip losses."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 3, 8)).astype(np.float32)
    c = rng.normal(size=(4, 2, 8)).astype(np.float32)
    whole, _ = nce_terms(a, c)
    first, _ = nce_terms(a[:2], c, positive_offset=0)
    second, _ = nce_terms(a[2:], c, positive_offset=2)
    # The penalty term is a mean over the scores each replica formed: equal halves average back.
    np.testing.assert_allclose((first + second).numpy() / 2, whole.numpy(), rtol=1e-5)


def test_single_clip_batch_is_rejected():
    with pytest.raises(ValueError, match="at least 2 clips"):
        nce_loss(np.ones((1, 2, 4), np.float32), np.ones((1, 2, 4), np.float32))


def test_temporal_difference_depends_on_temporal_order():
    x = tf.random.stateless_normal((2, 5, 3, 3, 4), seed=(0, 1))
    d = temporal_difference(x)
    assert d.shape == (2, 2, 3, 3, 4)
    np.testing.assert_allclose(d.numpy(), (x[:, 3:] - x[:, :2]).numpy())
    reversed_d = temporal_difference(x[:, ::-1])
    assert np.abs(reversed_d.numpy() - d.numpy()).max() > 0.1
