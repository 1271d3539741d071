"""The VDIM model: encoder Ψ, heads Φ and the multi-layer InfoNCE objective in one `keras.Model`."""

import keras
import tensorflow as tf

from vdim_tf.models import losses
from vdim_tf.models.encoder import Encoder, feature_shapes, get_preset
from vdim_tf.models.heads import ContrastiveHead


def layer_pairs(antecedent_layers, consequent_layers, symmetric=True):
    """(antecedent, consequent) block pairs; `symmetric` adds the reverse J' → J (paper §4).

    Antecedent features come from view 1 and consequent features from view 2. The paper's
    J = {5, 6, 8}, J' = {8} with the reverse gives (5, 8), (6, 8), (8, 5), (8, 6), (8, 8).
    """
    pairs = {(j, k) for j in antecedent_layers for k in consequent_layers}
    if symmetric:
        pairs |= {(k, j) for j in antecedent_layers for k in consequent_layers}
    return tuple(sorted(pairs))


# Metric names, which are also the TensorBoard tags (grouped by the part before "/"): the loss of
# pair (j, k) is view 1's layer j contrasted with view 2's layer k.
TOTAL_LOSS = "loss/total"


def pair_metric_names(j, k):
    """(loss name, NCE accuracy name) of layer pair (j, k)."""
    return f"loss/layer{j}_to_layer{k}", f"nce_accuracy/layer{j}_to_layer{k}"


def difference_layers(encoder_preset, consequent_layers, frames):
    """The consequent layers that take the temporal difference at views of `frames` frames.

    A difference needs two time steps to subtract, so it is taken on every consequent layer whose
    feature map has at least two, and a layer with one time step (the global layer) stays plain:
    with the paper's layer sets the reverse pairs 8 → 5 and 8 → 6 carry the difference and the
    pairs into layer 8 do not (WORKSPACE.md).

    Returns:
      sorted tuple of block indices.
    """
    preset = get_preset(encoder_preset)
    shapes = feature_shapes(preset.blocks, frames, preset.size)
    return tuple(sorted(k for k in set(consequent_layers) if shapes[k][0] >= 2))


def validate_layers(encoder_preset, antecedent_layers, consequent_layers, symmetric=True,
                    temporal_difference=False, frames=None):
    """Raises ValueError unless the layer choices fit the preset's block table.

    A pure function of the table (no model is built): every layer is a block of the encoder, and
    with `temporal_difference` at least one consequent layer has two time steps at views of
    `frames` frames (default: the preset's design length), else the flag would change nothing.
    """
    preset = get_preset(encoder_preset)
    n = len(preset.blocks)
    for name, layers_ in (("antecedent_layers", antecedent_layers), ("consequent_layers", consequent_layers)):
        if not layers_:
            raise ValueError(f"{name} is empty; give at least one block index in 1..{n}")
        bad = [j for j in layers_ if not 1 <= j <= n]
        if bad:
            raise ValueError(
                f"{name}={list(layers_)}: {bad} not a block of the {encoder_preset!r} encoder (valid: 1..{n})"
            )
    if temporal_difference:
        frames = frames or preset.frames
        consequents = sorted({k for _, k in layer_pairs(antecedent_layers, consequent_layers, symmetric)})
        if not difference_layers(encoder_preset, consequents, frames):
            shapes = feature_shapes(preset.blocks, frames, preset.size)
            raise ValueError(
                f"temporal_difference has no consequent layer to act on: with symmetric={symmetric} the "
                f"consequent layers are {consequents}, with {[shapes[k][0] for k in consequents]} time "
                f"step(s) at {frames} frames, and a difference needs >= 2 (e.g. the reverse pairs of "
                f"--symmetric, or a local layer in --consequent_layers)"
            )


def _flatten_locations(x):
    """`(B, T, H, W, D)` → `(B, T·H·W, D)`."""
    return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])


@keras.saving.register_keras_serializable(package="vdim_tf")
class VDIM(keras.Model):
    """Video Deep InfoMax: contrast local and global features of two views of the same clip.

    Args:
      encoder_preset: name of an encoder preset ("paper" = Table 1, "cpu" = small).
      embedding_dim: |Y|, the output size of every head (paper: 512).
      antecedent_layers: J, block indices whose view-1 features are antecedents (paper: 5, 6, 8).
      consequent_layers: J', block indices whose view-2 features are consequents (paper: 8).
      symmetric: also use the reverse pairs J' → J (paper: yes).
      temporal_difference: replace view-2 consequent features by the difference of their second
        and first temporal halves (paper §4, "difference" variant) on every consequent layer with
        at least two time steps (`difference_layers`); at least one must have them.
      scale_scores, tanh_clip, score_penalty: the stabilisers of `losses.nce_loss` (AMDIM).
      gather_negatives: under a distribution strategy, gather consequents of all replicas so the
        negatives span the global batch (beyond the paper; SPEC §3).
      block_batch_norm: batch norm inside the encoder's residual blocks (AMDIM default: off).

    Call arguments:
      inputs: float `(B, T, H, W, 3)`, one view.

    Returns (from `call`):
      dict: block index → head embedding `(B, T', H', W', embedding_dim)` for every layer used.

    `train_step` takes `{"view1": (B, T, H, W, 3), "view2": (B, T, H, W, 3), ...}` and returns the
    total loss (`loss/total`), the loss per layer pair (`loss/layer5_to_layer8` …) and the NCE
    accuracy per pair (`nce_accuracy/layer5_to_layer8` …).
    """

    def __init__(self, encoder_preset="paper", embedding_dim=512, antecedent_layers=(5, 6, 8),
                 consequent_layers=(8,), symmetric=True, temporal_difference=False, scale_scores=True,
                 tanh_clip=losses.DEFAULT_TANH_CLIP, score_penalty=losses.DEFAULT_SCORE_PENALTY,
                 gather_negatives=True, block_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.encoder_preset = encoder_preset
        self.embedding_dim = embedding_dim
        self.antecedent_layers = tuple(int(j) for j in antecedent_layers)
        self.consequent_layers = tuple(int(j) for j in consequent_layers)
        self.symmetric = symmetric
        self.temporal_difference = temporal_difference
        self.scale_scores = scale_scores
        self.tanh_clip = tanh_clip
        self.score_penalty = score_penalty
        self.gather_negatives = gather_negatives
        self.block_batch_norm = block_batch_norm

        validate_layers(encoder_preset, self.antecedent_layers, self.consequent_layers, symmetric,
                        temporal_difference)
        self.pairs = layer_pairs(self.antecedent_layers, self.consequent_layers, symmetric)
        self.layers_used = tuple(sorted({j for pair in self.pairs for j in pair}))
        self.encoder = Encoder(preset=encoder_preset, block_batch_norm=block_batch_norm, name="encoder")
        self.heads = {}
        for j in self.layers_used:
            self.heads[j] = ContrastiveHead(embedding_dim, name=f"head_{j}")
            # An attribute per head: tf.train.Checkpoint follows attributes, not Keras 3's dicts.
            setattr(self, f"head_{j}", self.heads[j])
        self.loss_tracker = keras.metrics.Mean(name=TOTAL_LOSS)
        self.pair_trackers = {
            pair: tuple(keras.metrics.Mean(name=name) for name in pair_metric_names(*pair))
            for pair in self.pairs
        }

    @property
    def metrics(self):
        trackers = [self.loss_tracker]
        for loss_m, acc_m in self.pair_trackers.values():
            trackers += [loss_m, acc_m]
        return trackers

    def call(self, inputs, training=None):
        features = self.encoder(inputs, training=training)
        return {j: self.heads[j](features[j], training=training) for j in self.layers_used}

    def embed(self, inputs, training=False):
        """φ_global∘Ψ: the `(B, embedding_dim)` video embedding used for evaluation (SPEC §6)."""
        g = get_preset(self.encoder_preset).global_layer
        features = self.encoder(inputs, training=training)
        head = self.heads.get(g)
        out = head(features[g], training=training) if head is not None else features[g]
        return tf.reshape(out, [tf.shape(out)[0], -1])

    def _consequent_features(self, features, j, training):
        """φ_j of view-2 features, through the temporal difference where it applies
        (`difference_layers`: layers with >= 2 time steps; a 1×1×1 global layer stays plain)."""
        f = features[j]
        if self.temporal_difference:
            if f.shape[1] is None:
                raise ValueError("temporal_difference needs views of a static length (T in (B, T, H, W, 3))")
            if f.shape[1] >= 2:
                f = losses.temporal_difference(f)
        return self.heads[j](f, training=training)

    def compute_losses(self, view1, view2, training=False):
        """Per-pair `(loss, accuracy)` for a batch of two views, in float32.

        Under a replica context with `gather_negatives`, consequents are gathered from every
        replica so that negatives span the global batch.
        """
        f1 = self.encoder(view1, training=training)  # two calls: per-view batch statistics
        f2 = self.encoder(view2, training=training)
        antecedents = {j: self.heads[j](f1[j], training=training) for j in {p[0] for p in self.pairs}}
        consequents = {k: self._consequent_features(f2, k, training) for k in {p[1] for p in self.pairs}}

        ctx = tf.distribute.get_replica_context()
        gather = self.gather_negatives and ctx is not None and ctx.num_replicas_in_sync > 1
        offset = 0
        if gather:
            offset = ctx.replica_id_in_sync_group * tf.shape(view1)[0]
        results = {}
        for j, k in self.pairs:
            a = _flatten_locations(antecedents[j])
            c = _flatten_locations(consequents[k])
            if gather:
                c = ctx.all_gather(c, axis=0)
            results[(j, k)] = losses.nce_terms(
                a, c, scale_scores=self.scale_scores, tanh_clip=self.tanh_clip,
                score_penalty=self.score_penalty, positive_offset=offset,
            )
        return results

    def apply_gradients_step(self, view1, view2):
        """One optimisation step on a (per-replica) batch; returns `(loss, per_pair_results)`.

        Shared by `train_step` (Keras `fit`) and the custom loop of `vdim_tf.trainer`, which calls
        it inside `strategy.run`.
        """
        with tf.GradientTape() as tape:
            results = self.compute_losses(view1, view2, training=True)
            loss = tf.add_n([l for l, _ in results.values()])
            # The optimizer sums gradients over replicas; dividing makes the update that of the
            # mean over the global batch.
            ctx = tf.distribute.get_replica_context()
            replicas = ctx.num_replicas_in_sync if ctx is not None else 1
            scaled = loss / replicas
            if hasattr(self.optimizer, "scale_loss"):
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return loss, results

    def train_step(self, data):
        loss, results = self.apply_gradients_step(data["view1"], data["view2"])
        return self._update_metrics(loss, results)

    def test_step(self, data):
        results = self.compute_losses(data["view1"], data["view2"], training=False)
        loss = tf.add_n([l for l, _ in results.values()])
        return self._update_metrics(loss, results)

    def _update_metrics(self, loss, results):
        self.loss_tracker.update_state(loss)
        for pair, (l, acc) in results.items():
            loss_m, acc_m = self.pair_trackers[pair]
            loss_m.update_state(l)
            acc_m.update_state(acc)
        return {m.name: m.result() for m in self.metrics}

    def build_for(self, frames=None, size=None, batch_size=2):
        """Creates every variable by running both views once (call inside a strategy scope)."""
        preset = get_preset(self.encoder_preset)
        x = tf.zeros((batch_size, frames or preset.frames, size or preset.size, size or preset.size, 3))
        self(x, training=False)
        return self

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder_preset=self.encoder_preset, embedding_dim=self.embedding_dim,
            antecedent_layers=list(self.antecedent_layers), consequent_layers=list(self.consequent_layers),
            symmetric=self.symmetric, temporal_difference=self.temporal_difference,
            scale_scores=self.scale_scores, tanh_clip=self.tanh_clip, score_penalty=self.score_penalty,
            gather_negatives=self.gather_negatives, block_batch_norm=self.block_batch_norm,
        )
        return config
