"""vdim_tf: Video Deep InfoMax (Hjelm & Bachman) in TensorFlow 2 / Keras 3.

The public API (README, "Use from Python"); names load on first use, so `import vdim_tf` stays
quick and needs no TensorFlow until one is touched:

    load_encoder(run, outputs=("embedding",))  a run or checkpoint as a Keras model (VideoEncoder)
    load_classifier(run)                       a fine-tuning run's VideoClassifier
    load_preprocess(run)                       the run's preprocessing: uint8 video -> model input
    nce_loss, sample_views, augment_views      the loss, the view sampler, the clip-consistent augmentation
    ViewConfig, AugmentConfig                  their settings
    Encoder, ContrastiveHead, VDIM, VideoClassifier, VideoEncoder   the Keras models and layers
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "vdim_tf.api",
    "load_classifier": "vdim_tf.api",
    "load_preprocess": "vdim_tf.api",
    "sample_views": "vdim_tf.api",
    "VideoEncoder": "vdim_tf.api",
    "nce_loss": "vdim_tf.models.losses",
    "augment_views": "vdim_tf.data.augment",
    "AugmentConfig": "vdim_tf.data.augment",
    "ViewConfig": "vdim_tf.data.views",
    "Encoder": "vdim_tf.models.encoder",
    "ContrastiveHead": "vdim_tf.models.heads",
    "VDIM": "vdim_tf.models.vdim",
    "VideoClassifier": "vdim_tf.models.classifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vdim_tf' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted([*globals(), *_EXPORTS])
