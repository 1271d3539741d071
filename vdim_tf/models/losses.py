"""The multi-location InfoNCE objective of VDIM (paper eqs. 1–4, SPEC §3).

Everything here is computed in float32, whatever the compute dtype of the features. Written in
`keras.ops` only, so the same loss runs under TensorFlow (the training loop) and JAX (bench/gpu.py);
gathering negatives across replicas is the caller's job (`VDIM.compute_losses`).
"""

import math

from keras import ops

# AMDIM's public code: scores are soft-clipped to ±20 and penalised by 0.05 · mean(score²).
DEFAULT_TANH_CLIP = 20.0
DEFAULT_SCORE_PENALTY = 0.05


def _transform_scores(scores, dim, scale_scores, tanh_clip):
    if scale_scores:
        scores = scores / math.sqrt(dim)
    penalty_base = scores
    if tanh_clip is not None:
        scores = tanh_clip * ops.tanh(scores / tanh_clip)
    return scores, penalty_base


def nce_terms(antecedent, consequent, *, scale_scores=True, tanh_clip=DEFAULT_TANH_CLIP,
              score_penalty=DEFAULT_SCORE_PENALTY, positive_offset=0):
    """The NCE loss and its accuracy, with negatives possibly drawn from a larger (gathered) batch.

    Args:
      antecedent: `(B, N, D)`, features of the first view at N locations.
      consequent: `(B', M, D)`, features of the second view; `B' >= B`. Antecedent clip `b` is
        paired with consequent clip `b + positive_offset`; every other consequent clip supplies
        negatives (under a distribution strategy, `B'` is the global batch and the offset is this
        replica's position in it).
      scale_scores: divide scores by √D.
      tanh_clip: soft-clip scores to `±tanh_clip` after the penalty is taken; None turns it off.
      score_penalty: weight of `mean(S²)` over all scores (before clipping); 0 turns it off.
      positive_offset: see `consequent`.

    Returns:
      `(loss, accuracy)`: float32 scalars. `loss` is the mean over all positives (b, i, i') of
      `−log(exp s⁺ / (exp s⁺ + Σ negatives))`, plus the penalty; `accuracy` is how often a positive
      scores higher than every negative of its antecedent location.
    """
    a = ops.cast(antecedent, "float32")
    c = ops.cast(consequent, "float32")
    batch, local_batch = ops.shape(c)[0], ops.shape(a)[0]
    dim = a.shape[-1]
    if a.shape[0] is not None and c.shape[0] is not None and c.shape[0] < 2:
        raise ValueError(f"NCE needs at least 2 clips in the batch for negatives; got {c.shape[0]}")

    # S[b, i, b', i'] is built once, as one (B·N, D) × (D, B'·M) matmul; positives are its diagonal
    # blocks b' = b + offset. (On TensorFlow the equivalent `ops.einsum` rounds its gradient
    # differently from the `tf.einsum` this replaced; the matmul reproduces it bit for bit.)
    n, m = ops.shape(a)[1], ops.shape(c)[1]
    scores = ops.matmul(ops.reshape(a, (-1, dim)), ops.transpose(ops.reshape(c, (-1, dim))))
    scores = ops.reshape(scores, (local_batch, n, batch, m))
    scores, penalty_base = _transform_scores(scores, dim, scale_scores, tanh_clip)
    own = ops.equal(ops.arange(local_batch, dtype="int32")[:, None] + positive_offset,
                    ops.arange(batch, dtype="int32")[None, :])
    own = own[:, None, :, None]  # (B, 1, B', 1)
    negatives = ops.where(own, -float("inf"), scores)
    # One log-sum-exp per antecedent location over all negatives: the softplus form of the k-way
    # NCE never forms a logits matrix with one row per positive.
    lse = ops.logsumexp(negatives, axis=(2, 3))  # (B, N)
    max_negative = ops.max(negatives, axis=(2, 3))
    positives = ops.sum(ops.where(own, scores, 0.0), axis=2)  # (B, N, M)
    loss = ops.mean(ops.softplus(lse[:, :, None] - positives))
    if score_penalty:
        loss += score_penalty * ops.mean(ops.square(penalty_base))
    accuracy = ops.mean(ops.cast(ops.greater(positives, max_negative[:, :, None]), "float32"))
    return loss, accuracy


def nce_loss(antecedent, consequent, *, scale_scores=True, tanh_clip=DEFAULT_TANH_CLIP,
             score_penalty=DEFAULT_SCORE_PENALTY):
    """InfoNCE between all antecedent and consequent locations of the same clip (SPEC §3).

    Args:
      antecedent: `(B, N, D)`.
      consequent: `(B, M, D)`.
      scale_scores, tanh_clip, score_penalty: AMDIM's stabilisers; with `False, None, 0` this is
        the plain formula of the paper.

    Returns:
      float32 scalar: the mean over positives (b, i, i') of the k-way NCE loss whose negatives are
      every consequent location of every other clip in the batch, plus `score_penalty · mean(S²)`.

    Example:
    >>> a = keras.random.normal((4, 27, 64)); c = keras.random.normal((4, 1, 64))
    >>> float(nce_loss(a, c, scale_scores=True, tanh_clip=None, score_penalty=0.0)) > 0
    True
    """
    loss, _ = nce_terms(antecedent, consequent, scale_scores=scale_scores, tanh_clip=tanh_clip,
                        score_penalty=score_penalty)
    return loss


def temporal_difference(features):
    """Second temporal half minus the first: `(B, T, H, W, C)` → `(B, T // 2, H, W, C)`.

    For odd T the middle step belongs to neither half. Needs T >= 2.
    """
    t = features.shape[1]
    if t is not None and t < 2:
        raise ValueError(f"temporal difference needs a feature map with >= 2 time steps, got T={t}")
    half = ops.shape(features)[1] // 2
    return features[:, -half:] - features[:, :half]
