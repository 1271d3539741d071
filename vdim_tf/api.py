"""What a run becomes in a user's own code: its encoder as a Keras model, its preprocessing as a
function, and views of a video tensor. Re-exported from `vdim_tf` (see the README's "Use from
Python").

Importing this module registers every vdim_tf Keras class, so `keras.models.load_model` can read
a `.keras` file of a VDIM, VideoClassifier or VideoEncoder (or any model using their layers).
"""

import functools
import json
import os

import keras
import tensorflow as tf

from vdim_tf import loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib
from vdim_tf.models import classifier, vdim  # noqa: F401 (registers their Keras classes)
from vdim_tf.models.encoder import Encoder, get_preset
from vdim_tf.models.heads import ContrastiveHead

EMBEDDING = "embedding"


@keras.saving.register_keras_serializable(package="vdim_tf")
class VideoEncoder(keras.Model):
    """Ψ (and φ_g) as one Keras model: video → the features of chosen blocks and/or φ_g∘Ψ.

    Args:
      encoder_preset: encoder preset name ("paper", "cpu").
      embedding_dim: output size of the global head φ_g; None for a model without it (then
        "embedding" is Ψ's global feature itself).
      outputs: names of what `call` returns: "embedding" (φ_g∘Ψ, `(B, D)`) and/or "blockN"
        (block N's output `(B, T', H', W', C)`, N = 1 … the preset's block count).
      block_batch_norm: as in `Encoder`.

    Call arguments:
      video: float `(B, T, H, W, 3)`, preprocessed (see `load_preprocess`).
      training: for batch norm.

    Returns:
      the one output's tensor, or a dict name → tensor for several.

    Example:
    >>> model = VideoEncoder("cpu", embedding_dim=32, outputs=("block5", "embedding"))
    >>> {k: v.shape for k, v in model(keras.random.normal((2, 16, 64, 64, 3))).items()}
    {'block5': (2, 3, 3, 3, 128), 'embedding': (2, 32)}
    """

    def __init__(self, encoder_preset="paper", embedding_dim=512, outputs=(EMBEDDING,),
                 block_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.encoder_preset = encoder_preset
        self.embedding_dim = embedding_dim
        self.outputs_ = tuple(outputs)
        self.block_batch_norm = block_batch_norm
        preset = get_preset(encoder_preset)
        valid = [EMBEDDING] + [f"block{i}" for i in range(1, len(preset.blocks) + 1)]
        bad = [name for name in self.outputs_ if name not in valid]
        if bad or not self.outputs_:
            raise ValueError(f"outputs={list(self.outputs_)}: valid names for the {encoder_preset!r} encoder "
                             f"are {valid}")
        self.global_layer = preset.global_layer
        self.encoder = Encoder(preset=encoder_preset, block_batch_norm=block_batch_norm, name="encoder")
        self.head = (ContrastiveHead(embedding_dim, name=f"head_{self.global_layer}")
                     if embedding_dim else None)

    def call(self, video, training=None):
        features = self.encoder(video, training=training)
        out = {}
        for name in self.outputs_:
            if name == EMBEDDING:
                g = features[self.global_layer]
                g = self.head(g, training=training) if self.head is not None else g
                out[name] = tf.reshape(g, [tf.shape(g)[0], -1])
            else:
                out[name] = features[int(name[len("block"):])]
        return out[self.outputs_[0]] if len(out) == 1 else out

    def build_for(self, frames=None, size=None, batch_size=1):
        preset = get_preset(self.encoder_preset)
        self(tf.zeros((batch_size, frames or preset.frames, size or preset.size, size or preset.size, 3)))
        return self

    def get_config(self):
        config = super().get_config()
        config.update(encoder_preset=self.encoder_preset, embedding_dim=self.embedding_dim,
                      outputs=list(self.outputs_), block_batch_norm=self.block_batch_norm)
        return config


def _run_paths(path):
    """(run folder, checkpoint prefix) of a run folder (its newest checkpoint) or a checkpoint prefix."""
    if os.path.isdir(path):
        prefix = loop.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(f"{os.path.abspath(path)}: no checkpoint in {os.path.join(path, 'checkpoints')}")
        return path, prefix
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"{os.path.abspath(path)}: neither a run folder nor a checkpoint prefix "
                                f"(no {path}.index)")
    return os.path.dirname(os.path.dirname(path)), path


def read_run_config(run_dir):
    """A run's `config.json`, after saying so when another vdim_tf version wrote it."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{os.path.abspath(path)} not found: expected a pretraining or fine-tuning run")
    with open(path) as f:
        saved = json.load(f)
    loop.note_other_version(saved, run_dir)
    return saved


def _source_model(saved, path, prefix):
    """The run's own model with the checkpoint's weights, and its (encoder, global head)."""
    if saved.get("kind") == "finetune":
        from vdim_tf import finetune

        model = finetune.make_classifier(finetune.ClassifierConfig(**saved["classifier"]), len(saved["label_names"]))
        model.build_for(saved["final_length"], saved["augment"]["output_size"])
        loop.restore_model(model, path, prefix)
        return model.encoder, model.head, saved["classifier"]
    model = vdim.VDIM(**saved["model"])
    model.build_for(saved["views"]["final_length"], saved["augment"]["output_size"])
    loop.restore_model(model, path, prefix)
    return model.encoder, model.heads.get(model.encoder.spec.global_layer), saved["model"]


def load_encoder(path, outputs=(EMBEDDING,)):
    """A pretraining or fine-tuning run (its newest checkpoint) or one checkpoint prefix, as a
    `VideoEncoder` returning `outputs` (see there), in float32, ready for `fit` or a custom loop."""
    run_dir, prefix = _run_paths(path)
    saved = read_run_config(run_dir)
    encoder, head, model_config = _source_model(saved, path, prefix)
    model = VideoEncoder(model_config["encoder_preset"], head.output_dim if head is not None else None,
                         outputs, model_config.get("block_batch_norm", False), name="video_encoder")
    model.build_for()
    model.encoder.set_weights(encoder.get_weights())
    if head is not None:
        model.head.set_weights(head.get_weights())
    return model


def load_classifier(path):
    """A fine-tuning run (its newest checkpoint) as its `VideoClassifier`: `(B, K, T, H, W, 3)` → logits."""
    from vdim_tf import finetune

    return finetune.load_finetuned(path)[0]


def load_preprocess(path):
    """The run's evaluation preprocessing as a function: uint8 (or float in [0, 1]) video
    `(B, T, H, W, 3)` → float32 `(B, T, S, S, 3)`, centre-cropped, resized to the run's image size
    and normalised in its colour space (RGB or Lab), as `evaluate` and the export do."""
    run_dir, _ = _run_paths(path)
    saved = read_run_config(run_dir)
    augment = saved["augment"]
    color_space = "lab" if augment.get("color_mode") == "lab" else "rgb"
    return functools.partial(augment_lib.eval_view, size=augment["output_size"], color_space=color_space)


def sample_views(video, config, seed):
    """Views of one video as VDIM samples them: `(T, H, W, 3)` → `(V, L, H, W, 3)`.

    Args:
      video: frames of one video, any dtype.
      config: `ViewConfig` (e.g. `ViewConfig.two_views(final_length=16, factor2=2)`).
      seed: `(2,)` int stateless seed: a random window start, then every view's frames.
    """
    indices = views_lib.sample_view_indices(tf.shape(video)[0], config, seed)
    return tf.gather(video, indices)
