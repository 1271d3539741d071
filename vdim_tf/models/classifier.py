"""The fine-tuning classifier of paper §4.1 (Fig. 3 right, SPEC §6)."""

import keras
import tensorflow as tf
from keras import layers

from vdim_tf.models.blocks import _bn
from vdim_tf.models.encoder import Encoder, get_preset
from vdim_tf.models.heads import ContrastiveHead


@keras.saving.register_keras_serializable(package="vdim_tf")
class VideoClassifier(keras.Model):
    """K views → φ_g∘Ψ each (shared weights) → concatenated → BN → MLP(1024, dropout 0.2) → logits.

    Args:
      num_classes: number of action classes.
      encoder_preset: encoder preset name ("paper", "cpu").
      embedding_dim: output size of the global head φ_g (must match the pretrained run).
      num_views: K, views per example (paper: 1–4; 4 for UCF-101, 2 for HMDB-51).
      hidden_units: the classifier's hidden layer (paper: 1024).
      dropout: dropout after the hidden layer (paper: 0.2).
      freeze_encoder: train only the classifier on frozen φ_g∘Ψ features (linear/MLP probe);
        the frozen encoder runs in inference mode (batch-norm moving statistics).
      block_batch_norm: as in `Encoder`.
      single_frame: feed the encoder each view's first frame repeated over time (a baseline that
        cannot see motion).

    Call arguments:
      views: float `(B, K, T, H, W, 3)`, normalised.
      training: for dropout and batch norm.

    Returns:
      logits `(B, num_classes)`.
    """

    def __init__(self, num_classes, encoder_preset="paper", embedding_dim=512, num_views=4,
                 hidden_units=1024, dropout=0.2, freeze_encoder=False, block_batch_norm=False,
                 single_frame=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.encoder_preset = encoder_preset
        self.embedding_dim = embedding_dim
        self.num_views = num_views
        self.hidden_units = hidden_units
        self.dropout_rate = dropout
        self.freeze_encoder = freeze_encoder
        self.block_batch_norm = block_batch_norm
        self.single_frame = single_frame
        self.global_layer = get_preset(encoder_preset).global_layer
        self.encoder = Encoder(preset=encoder_preset, block_batch_norm=block_batch_norm, name="encoder")
        self.head = ContrastiveHead(embedding_dim, name=f"head_{self.global_layer}")
        # Not in the paper: batch norm on the concatenated embeddings. A frozen encoder runs in
        # inference mode, where its features can sit far from zero mean / unit variance (measured
        # on the synthetic probe: per-dimension mean 0.49, spread 0.05); the MLP then barely trains.
        self.input_bn = _bn("input_bn")
        self.hidden = layers.Dense(hidden_units, activation="relu", name="hidden")
        self.dropout = layers.Dropout(dropout)
        self.logits = layers.Dense(num_classes, name="logits")
        if freeze_encoder:
            self.encoder.trainable = False
            self.head.trainable = False

    def embed(self, clips, training=False):
        """φ_g∘Ψ of single clips: `(N, T, H, W, 3)` → `(N, embedding_dim)`."""
        training = training and not self.freeze_encoder
        if self.single_frame:
            clips = tf.repeat(clips[:, :1], tf.shape(clips)[1], axis=1)
        features = self.encoder(clips, training=training)[self.global_layer]
        out = self.head(features, training=training)
        return tf.reshape(out, [tf.shape(out)[0], self.embedding_dim])

    def embed_views(self, views, training=False):
        """φ_g∘Ψ of every view: `(B, K, T, H, W, 3)` → `(B, K, embedding_dim)`."""
        shape = tf.shape(views)
        clips = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))
        clips = tf.ensure_shape(clips, [None, *views.shape[2:]])
        return tf.reshape(self.embed(clips, training=training), [shape[0], shape[1], self.embedding_dim])

    def classify_embeddings(self, embeddings, training=None):
        """The MLP on concatenated view embeddings: `(B, K, embedding_dim)` → logits `(B, num_classes)`."""
        flat = tf.reshape(embeddings, [tf.shape(embeddings)[0], self.num_views * self.embedding_dim])
        flat = self.input_bn(tf.cast(flat, self.input_bn.compute_dtype), training=training)
        h = self.dropout(self.hidden(tf.cast(flat, self.hidden.compute_dtype)), training=training)
        return tf.cast(self.logits(h), tf.float32)

    def call(self, views, training=None):
        return self.classify_embeddings(self.embed_views(views, training=bool(training)), training=training)

    def build_for(self, frames=None, size=None, batch_size=2):
        preset = get_preset(self.encoder_preset)
        self(tf.zeros((batch_size, self.num_views, frames or preset.frames, size or preset.size,
                       size or preset.size, 3)), training=False)
        return self

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, encoder_preset=self.encoder_preset, embedding_dim=self.embedding_dim,
            num_views=self.num_views, hidden_units=self.hidden_units, dropout=self.dropout_rate,
            freeze_encoder=self.freeze_encoder, block_batch_norm=self.block_batch_norm,
            single_frame=self.single_frame,
        )
        return config
