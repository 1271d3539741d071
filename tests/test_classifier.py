"""The K-view classifier's head: what it adds to the paper (a batch norm on its input)."""

import keras
import numpy as np
import tensorflow as tf

from vdim_tf.models.classifier import VideoClassifier


def test_classifier_input_is_standardised_so_offset_and_scale_of_frozen_features_do_not_matter():
    # A frozen encoder in inference mode gave embeddings at mean ~0.5, spread ~0.05 per dimension;
    # the MLP must see the same standardised input whatever the offset and scale.
    keras.utils.set_random_seed(0)
    model = VideoClassifier(6, encoder_preset="cpu", embedding_dim=16, num_views=2, dropout=0.0)
    model.build_for(batch_size=2)
    embeddings = tf.random.stateless_normal((32, 2, 16), seed=(1, 2))
    plain = model.classify_embeddings(embeddings, training=True)
    shifted = model.classify_embeddings(0.5 + 0.05 * embeddings, training=True)
    # Equal up to batch norm's epsilon (1e-5 against a variance of 0.0025: ~0.2% of the scale).
    np.testing.assert_allclose(shifted.numpy(), plain.numpy(), atol=0.01 * np.abs(plain.numpy()).max())
    # Without normalisation the two would differ: the hidden layer is not scale-invariant.
    raw = model.hidden(tf.reshape(embeddings, [32, 32]))
    raw_shifted = model.hidden(tf.reshape(0.5 + 0.05 * embeddings, [32, 32]))
    assert np.abs(raw.numpy() - raw_shifted.numpy()).max() > 0.1
