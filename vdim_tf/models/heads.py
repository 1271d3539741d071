"""Contrastive heads Φ: one location-wise residual MLP per encoder layer used (SPEC §2)."""

import keras
from keras import layers, ops

from vdim_tf.models.blocks import _bn


@keras.saving.register_keras_serializable(package="vdim_tf")
class NearIdentity(keras.initializers.Initializer):
    """Identity plus uniform noise in [-scale, scale]: AMDIM's initialisation of the head shortcut."""

    def __init__(self, scale=0.01, seed=None):
        self.scale = scale
        self.seed = seed

    def __call__(self, shape, dtype=None):
        noise = keras.initializers.RandomUniform(-self.scale, self.scale, seed=self.seed)(shape, dtype=dtype)
        return noise + ops.eye(shape[0], shape[1], dtype=dtype)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package="vdim_tf")
class ContrastiveHead(layers.Layer):
    """φ_j: `BN_out(W2 · ReLU(BN(W1 · x)) + Ws · x)`, applied at every location.

    W2 starts at zero and Ws near the identity, so a fresh head is close to a (normalised) linear
    projection (AMDIM).

    Args:
      output_dim: |Y|, the embedding size (paper: 512).
      hidden_dim: width of the hidden layer; defaults to `output_dim`.

    Call arguments:
      x: `(..., C)` features, e.g. `(B, T', H', W', C)`.
      training: for batch norm.

    Returns:
      `(..., output_dim)`.
    """

    def __init__(self, output_dim=512, hidden_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        hidden = hidden_dim or output_dim
        self.w1 = layers.Dense(hidden, use_bias=False, name="w1")
        self.bn_hidden = _bn("bn_hidden")
        self.w2 = layers.Dense(output_dim, use_bias=False, kernel_initializer="zeros", name="w2")
        self.shortcut = layers.Dense(output_dim, use_bias=False, kernel_initializer=NearIdentity(), name="ws")
        self.bn_out = _bn("bn_out")

    def call(self, x, training=None):
        h = ops.relu(self.bn_hidden(self.w1(x), training=training))
        return self.bn_out(self.w2(h) + self.shortcut(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, hidden_dim=self.hidden_dim)
        return config
