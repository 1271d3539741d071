"""SavedModels that classify (or embed) raw video, for TF Serving and for processes without vdim_tf.

`export_run(model_dir, export_dir)` writes a `tf.Module` whose signatures take uint8 video or
serialised `SequenceExample`s and do all the evaluation preprocessing in the graph: centre crop
and resize (`augment.center_crop_resize`), colour normalisation, every window of the video
(`views.window_starts`, short videos repeat their last frame), K views per window, softmax
probabilities averaged over the windows. The numbers are those of `vdim_tf.evaluate`.

Signatures of a fine-tuning run's export (an encoder-only export has `embed`, `embed_examples`
and `metadata`, with `serving_default` = `embed`):

| signature          | input                                          | outputs                                   |
|--------------------|------------------------------------------------|-------------------------------------------|
| `serving_default`  | `video` uint8 `(N, T, H, W, 3)`                | `probabilities` float32 `(N, C)`,         |
|                    |                                                | `top_k_indices` int32 `(N, k)`,           |
|                    |                                                | `top_k_probabilities` float32 `(N, k)`,   |
|                    |                                                | `top_k_labels` string `(N, k)`            |
| `serve_examples`   | `examples` string `(N,)`, records.py layout    | the same                                  |
| `embed`            | `video` uint8 `(N, T, H, W, 3)`                | `embedding` float32 `(N, D)`              |
| `embed_examples`   | `examples` string `(N,)`                       | `embedding` float32 `(N, D)`              |
| `metadata`         | none                                           | label names and preprocessing constants   |

One `video` call holds N videos of the same length and frame size (a dense tensor); videos of
different sizes go in separate calls, or as records through `serve_examples`, which loops over
them. The label names are also in `assets/labels.txt`, and every constant is an attribute of the
loaded object (`loaded.label_names`, `loaded.final_length`, ...).

    export_run("runs/demo/finetune", "exports/demo/1")
    loaded = tf.saved_model.load("exports/demo/1")          # no vdim_tf import needed
    out = loaded.signatures["serving_default"](video=tf.zeros([1, 40, 64, 64, 3], tf.uint8))
"""

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf

from vdim_tf import loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import records
from vdim_tf.data import views as views_lib
from vdim_tf.models.encoder import get_preset

CLASSIFIER = "classifier"
ENCODER = "encoder"
# Windows run through the model together: bounds memory on long videos (N * this * K clips at once).
DEFAULT_WINDOWS_PER_STEP = 8
DEFAULT_TOP_K = 5
VIDEO_SPEC = tf.TensorSpec([None, None, None, None, 3], tf.uint8, name="video")
EXAMPLES_SPEC = tf.TensorSpec([None], tf.string, name="examples")


class ExportError(ValueError):
    """A run folder that cannot be exported, or an export folder that is in the way."""


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """What the exported graph does to a video before the model sees it (the evaluation protocol).

    Attributes:
      kind: 'classifier' (probabilities and embeddings) or 'encoder' (embeddings only).
      final_length: frames per view after downsampling.
      factor: temporal downsampling of every view.
      num_views: K views per window, at offsets k * final_length * factor.
      size: side of the centre crop fed to the encoder.
      color_space: 'rgb' or 'lab' (`augment.normalize`).
      label_names: class names in index order; empty for an encoder.
      top_k: labels returned per video (at most the number of classes).
      window_stride: frames between window starts; None = the window length (as `evaluate`).
      windows_per_step: windows run through the model at once.
    """

    kind: str
    final_length: int
    factor: int
    num_views: int
    size: int
    color_space: str
    label_names: tuple = ()
    top_k: int = DEFAULT_TOP_K
    window_stride: int | None = None
    windows_per_step: int = DEFAULT_WINDOWS_PER_STEP

    def __post_init__(self):
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.kind not in (CLASSIFIER, ENCODER):
            raise ValueError(f"kind={self.kind!r}: must be {CLASSIFIER!r} or {ENCODER!r}")
        if self.kind == CLASSIFIER and len(self.label_names) < 2:
            raise ValueError(f"a classifier export needs >= 2 label names, got {list(self.label_names)}")
        if self.color_space not in ("rgb", "lab"):
            raise ValueError(f"color_space={self.color_space!r}: must be 'rgb' or 'lab'")
        if self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: must be >= 1")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"window_stride={self.window_stride}: must be >= 1, or None for the window length")
        if self.windows_per_step < 1:
            raise ValueError(f"windows_per_step={self.windows_per_step}: must be >= 1")
        self.views.validate()

    @property
    def views(self):
        return views_lib.ViewConfig.clip_views(self.final_length, self.factor, self.num_views)

    @property
    def window_length(self):
        return self.views.window_length

    @property
    def stride(self):
        return self.window_stride or self.window_length

    @property
    def k(self):
        return min(self.top_k, len(self.label_names))


def _runtime_rank(x):
    """The rank of `x` as the graph runs.

    `tf.rank` would be folded to the signature's static rank 5 (Grappler folds it too), so a
    tensor of another rank fed to a signature would pass; the size of a boolean mask is not
    known until it runs.
    """
    shape = tf.shape(x)
    return tf.size(tf.boolean_mask(shape, shape >= 0))


def _check_video(video):
    """Asserts a rank-5 RGB video batch of >= 1 video, >= 1 frame, >= 1x1 pixels; returns `video`."""
    rank_check = tf.debugging.assert_equal(
        _runtime_rank(video), 5, message="video must be uint8 of rank 5, (N, T, H, W, 3); got another rank")
    with tf.control_dependencies([rank_check]):
        shape = tf.shape(video)
        checks = [
            tf.debugging.assert_equal(shape[4], 3, message="video must have 3 (RGB) channels in its last dimension"),
            tf.debugging.assert_greater(shape[0], 0, message="video batch is empty (N == 0); send at least 1 video"),
            tf.debugging.assert_greater(shape[1], 0, message="video has no frames (T == 0); need at least 1 frame"),
            tf.debugging.assert_greater(shape[2], 0, message="video frames have height 0; need at least 1 pixel"),
            tf.debugging.assert_greater(shape[3], 0, message="video frames have width 0; need at least 1 pixel"),
        ]
    with tf.control_dependencies(checks):
        return tf.identity(video)


def _decode_record(serialized):
    """One serialised `SequenceExample` -> uint8 `(1, T, H, W, 3)`, every JPEG frame decoded."""
    parsed = records.parse_sequence_example(serialized)
    check = tf.debugging.assert_greater(
        parsed["num_frames"], 0, message=f"record has no frames (empty '{records.IMAGE_KEY}'); need at least 1"
    )
    with tf.control_dependencies([check]):
        jpegs = tf.identity(parsed["frames"])
    frames = tf.map_fn(lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3), jpegs,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return frames[tf.newaxis]


class VideoServingModule(tf.Module):
    """The exported object: a model plus the evaluation protocol, as `tf.function`s.

    Args:
      model: a `VideoClassifier` (kind 'classifier': called on `(B, K, T, S, S, 3)` views, and
        `.embed` on `(N, T, S, S, 3)` clips) or anything with `.embed` (kind 'encoder', e.g. VDIM).
      config: `ServingConfig`.
    """

    def __init__(self, model, config, name="vdim_serving"):
        super().__init__(name=name)
        self.model = model
        self.config = config
        self.kind = tf.Variable(config.kind, trainable=False, name="kind")
        names = tf.constant(list(config.label_names), tf.string, shape=[len(config.label_names)])
        self.label_names = tf.Variable(names, trainable=False, name="label_names")
        self.final_length = tf.Variable(config.final_length, trainable=False, name="final_length")
        self.factor = tf.Variable(config.factor, trainable=False, name="factor")
        self.num_views = tf.Variable(config.num_views, trainable=False, name="num_views")
        self.image_size = tf.Variable(config.size, trainable=False, name="image_size")
        self.color_space = tf.Variable(config.color_space, trainable=False, name="color_space")
        self.window_length = tf.Variable(config.window_length, trainable=False, name="window_length")
        self.window_stride = tf.Variable(config.stride, trainable=False, name="window_stride")
        self.top_k = tf.Variable(config.k, trainable=False, name="top_k")
        self._embedding_dim = int(model.embedding_dim)
        self.embedding_dim = tf.Variable(self._embedding_dim, trainable=False, name="embedding_dim")
        self.embed = tf.function(self._embed_video, input_signature=[VIDEO_SPEC])
        self.embed_examples = tf.function(self._embed_examples, input_signature=[EXAMPLES_SPEC])
        self.metadata = tf.function(self._metadata, input_signature=[])
        if config.kind == CLASSIFIER:
            self.classify = tf.function(self._classify_video, input_signature=[VIDEO_SPEC])
            self.classify_examples = tf.function(self._classify_examples, input_signature=[EXAMPLES_SPEC])

    # --- the graph pieces -------------------------------------------------------------------

    def _frames(self, video):
        """uint8 `(N, T, H, W, 3)` -> normalised float32 `(N, T, S, S, 3)`.

        Every frame is cropped and resized once by `augment.eval_view`, the function the evaluation
        pipeline applies to each view frame (all three Lab channels, unscaled: training's Lab dropout
        rescales the kept channels to match); both act on one frame at a time, so the values are equal.
        """
        c = self.config
        return augment_lib.eval_view(_check_video(video), c.size, c.color_space)

    def _average_over_windows(self, frames, per_window, width):
        """Mean over every window of `per_window(views (M, K, L, S, S, 3)) -> (M, width)`.

        Returns:
          float32 `(N, width)`.
        """
        c = self.config
        shape = tf.shape(frames)
        n, num_frames = shape[0], shape[1]
        starts = views_lib.window_starts(num_frames, c.window_length, c.stride)
        # (W, K, L): view_indices broadcasts over the starts; past-the-end frames repeat the last.
        indices = views_lib.view_indices(starts[:, tf.newaxis, tf.newaxis], num_frames, c.views)
        num_windows = tf.shape(indices)[0]
        step = c.windows_per_step
        pad = (step - num_windows % step) % step
        indices = tf.concat([indices, tf.repeat(indices[-1:], pad, axis=0)], axis=0)
        chunks = tf.reshape(indices, [-1, step, c.num_views, c.final_length])

        def run(chunk):
            views = tf.gather(frames, chunk, axis=1)  # (N, step, K, L, S, S, 3)
            views = tf.reshape(views, [n * step, c.num_views, c.final_length, c.size, c.size, 3])
            return tf.reshape(per_window(views), [n, step, width])

        out = tf.map_fn(run, chunks, parallel_iterations=1,
                        fn_output_signature=tf.TensorSpec([None, step, width], tf.float32))
        out = tf.reshape(tf.transpose(out, [1, 0, 2, 3]), [n, -1, width])[:, :num_windows]
        return tf.reduce_mean(out, axis=1)

    def _window_probabilities(self, views):
        return tf.nn.softmax(self.model(views, training=False))

    def _window_embedding(self, views):
        """φ_g∘Ψ of each view, averaged over the K views of a window: `(M, D)`."""
        c = self.config
        m = tf.shape(views)[0]
        clips = tf.reshape(views, [m * c.num_views, c.final_length, c.size, c.size, 3])
        embedding = tf.reshape(self.model.embed(clips, training=False), [m, c.num_views, self._embedding_dim])
        return tf.reduce_mean(embedding, axis=1)

    def _classify(self, video):
        probabilities = self._average_over_windows(
            self._frames(video), self._window_probabilities, len(self.config.label_names))
        return self._with_top_k(probabilities)

    def _with_top_k(self, probabilities):
        top = tf.math.top_k(probabilities, k=self.config.k)
        return {
            "probabilities": probabilities,
            "top_k_indices": top.indices,
            "top_k_probabilities": top.values,
            "top_k_labels": tf.gather(tf.constant(list(self.config.label_names)), top.indices),
        }

    def _embed(self, video):
        return self._average_over_windows(self._frames(video), self._window_embedding, self._embedding_dim)

    # --- signatures (made in __init__: an encoder has no classifier to trace) ----------------

    def _classify_video(self, video):
        """uint8 `(N, T, H, W, 3)`, N videos of equal length and size -> probabilities and top-k."""
        return self._classify(video)

    def _classify_examples(self, examples):
        """Serialised `SequenceExample`s `(N,)` (any lengths and sizes) -> probabilities and top-k."""
        probabilities = tf.map_fn(
            lambda serialized: self._classify(_decode_record(serialized))["probabilities"][0], examples,
            fn_output_signature=tf.TensorSpec([len(self.config.label_names)], tf.float32))
        return self._with_top_k(probabilities)

    def _embed_video(self, video):
        """uint8 `(N, T, H, W, 3)` -> φ_g∘Ψ embedding `(N, D)`, averaged over windows and views."""
        return {"embedding": self._embed(video)}

    def _embed_examples(self, examples):
        """Serialised `SequenceExample`s `(N,)` -> embedding `(N, D)`."""
        embedding = tf.map_fn(lambda serialized: self._embed(_decode_record(serialized))[0], examples,
                              fn_output_signature=tf.TensorSpec([self._embedding_dim], tf.float32))
        return {"embedding": embedding}

    def _metadata(self):
        """The label names and preprocessing constants."""
        c = self.config
        return {
            "kind": tf.constant(c.kind),
            "label_names": tf.constant(list(c.label_names), tf.string, shape=[len(c.label_names)]),
            "final_length": tf.constant(c.final_length),
            "factor": tf.constant(c.factor),
            "num_views": tf.constant(c.num_views),
            "image_size": tf.constant(c.size),
            "color_space": tf.constant(c.color_space),
            "window_length": tf.constant(c.window_length),
            "window_stride": tf.constant(c.stride),
            "top_k": tf.constant(c.k),
            "embedding_dim": tf.constant(self._embedding_dim),
        }

    def signatures(self):
        """Name -> concrete function, for `tf.saved_model.save`."""
        out = {"embed": self.embed.get_concrete_function(),
               "embed_examples": self.embed_examples.get_concrete_function(),
               "metadata": self.metadata.get_concrete_function()}
        if self.config.kind == CLASSIFIER:
            out["serving_default"] = self.classify.get_concrete_function()
            out["serve_examples"] = self.classify_examples.get_concrete_function()
        else:
            out["serving_default"] = out["embed"]
        return out


# --- run folders -> modules ------------------------------------------------------------------


def _read_run_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise ExportError(f"{os.path.abspath(path)} not found: --model_dir should be a fine-tuning or pretraining "
                          "run folder")
    with open(path) as f:
        saved = json.load(f)
    loop.note_other_version(saved, model_dir)
    return saved


class PretrainedEmbedder(tf.Module):
    """φ_g∘Ψ of a VDIM model, keeping only Ψ and the global head.

    VDIM's other heads live in a dict with int keys, which a SavedModel cannot hold; the
    embedding does not need them.

    Args:
      vdim: a built `VDIM`.
      frames, size: an input it accepts, to measure the embedding size.
    """

    def __init__(self, vdim, frames, size):
        super().__init__(name="pretrained_embedder")
        self.global_layer = get_preset(vdim.encoder_preset).global_layer
        self.encoder = vdim.encoder
        self.head = vdim.heads.get(self.global_layer)
        self.embedding_dim = int(vdim.embed(tf.zeros([1, frames, size, size, 3])).shape[-1])

    def embed(self, clips, training=False):
        """Same as `VDIM.embed`: `(N, T, S, S, 3)` -> `(N, embedding_dim)`."""
        features = self.encoder(clips, training=training)[self.global_layer]
        out = features if self.head is None else self.head(features, training=training)
        return tf.reshape(out, [tf.shape(out)[0], self.embedding_dim])


def load_pretrained_encoder(model_dir):
    """`PretrainedEmbedder` of a pretraining run's newest checkpoint, and the run's saved config dict."""
    from vdim_tf.models.vdim import VDIM

    saved = _read_run_config(model_dir)
    if saved.get("kind", "pretrain") != "pretrain" or "model" not in saved:
        raise ExportError(f"{model_dir}: config.json is not a VDIM pretraining run (kind {saved.get('kind')!r})")
    if loop.latest_checkpoint(model_dir) is None:
        raise ExportError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')}")
    frames, size = saved["views"]["final_length"], saved["augment"]["output_size"]
    model = VDIM(**saved["model"])
    model.build_for(frames, size)
    try:
        # The newest checkpoint that reads back (a damaged one is skipped, saying so).
        loop.restore_newest(tf.train.Checkpoint(model=model), model_dir, partial=True)
    except AssertionError as e:
        raise ExportError(f"{model_dir}: its checkpoint does not match config.json: {str(e)[:500]}") from None
    except loop.TrainingError as e:
        raise ExportError(str(e)) from None
    return PretrainedEmbedder(model, frames, size), saved


def module_for_run(model_dir, encoder_only=False, top_k=DEFAULT_TOP_K, window_stride=None,
                   windows_per_step=DEFAULT_WINDOWS_PER_STEP):
    """A `VideoServingModule` for a fine-tuning run (classifier) or a pretraining run (encoder).

    A pretraining run is embedded with one view of `final_length` frames per window (factor 1),
    at its training crop size and colour space.
    """
    saved = _read_run_config(model_dir)
    if saved.get("kind") == "finetune":
        from vdim_tf import finetune

        try:
            model, saved = finetune.load_finetuned(model_dir)
        except AssertionError as e:
            raise ExportError(f"{model_dir}: the checkpoint does not match config.json: {str(e)[:500]}") from None
        except loop.TrainingError as e:
            raise ExportError(str(e)) from None
        config = ServingConfig(
            kind=ENCODER if encoder_only else CLASSIFIER,
            final_length=saved["final_length"], factor=saved["factor"],
            num_views=saved["classifier"]["num_views"], size=saved["augment"]["output_size"],
            color_space=augment_lib.color_space(saved["augment"].get("color_mode")),
            label_names=() if encoder_only else saved["label_names"],
            top_k=top_k, window_stride=window_stride, windows_per_step=windows_per_step)
    else:
        model, saved = load_pretrained_encoder(model_dir)
        config = ServingConfig(
            kind=ENCODER, final_length=saved["views"]["final_length"], factor=1, num_views=1,
            size=saved["augment"]["output_size"],
            color_space=augment_lib.color_space(saved["augment"].get("color_mode")),
            window_stride=window_stride, windows_per_step=windows_per_step)
    return VideoServingModule(model, config)


# What `tf.saved_model.save` and `save` put in an export folder; `--overwrite` replaces only
# folders that hold nothing else.
SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"})


def _check_export_dir(export_dir, overwrite, model_dir=None):
    """Refuses an `export_dir` that `save` must not replace.

    `overwrite` replaces an empty folder or a previous SavedModel export (nothing in it but
    `SAVED_MODEL_ENTRIES`), never a folder that holds anything else, and never the run folder
    `model_dir` or a folder that contains it (its checkpoints would be deleted).

    Raises:
      ExportError: naming the folder and what is in the way.
    """
    where = os.path.abspath(export_dir)
    if model_dir is not None:
        run = os.path.realpath(model_dir)
        target = os.path.realpath(export_dir)
        if os.path.commonpath([run, target]) == target:
            what = "is the run folder" if run == target else f"contains the run folder {run}"
            raise ExportError(f"export_dir={export_dir} ({where}) {what} given as --model_dir; replacing it would "
                              "delete the run's checkpoints. Export to another folder, e.g. <model_dir>/export")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ExportError(f"export_dir={export_dir} ({where}) is a file; give a folder")
    entries = sorted(os.listdir(export_dir)) if os.path.isdir(export_dir) else []
    if not entries:
        return
    if not overwrite:
        raise ExportError(f"export_dir={export_dir} ({where}) exists and is not empty; pass --overwrite to replace "
                          "a previous export")
    foreign = [e for e in entries if e not in SAVED_MODEL_ENTRIES]
    if foreign or "saved_model.pb" not in entries:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(f"export_dir={export_dir} ({where}) is not a previous SavedModel export "
                          f"({'it holds ' + shown if foreign else 'no saved_model.pb'}); --overwrite replaces only "
                          "an export, so empty or remove that folder yourself, or export elsewhere")


def save(module, export_dir, overwrite=False, model_dir=None):
    """Writes `module` as a SavedModel (with `assets/labels.txt`) to `export_dir`, atomically.

    Raises:
      ExportError: `export_dir` is not empty and `overwrite` is False; or it holds something other
        than a previous export; or it is or contains `model_dir` (see `_check_export_dir`).
    """
    _check_export_dir(export_dir, overwrite, model_dir)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        labels_path = os.path.join(temp, "labels.txt")
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in module.config.label_names))
        module.labels_file = tf.saved_model.Asset(labels_path)
        saved_dir = os.path.join(temp, "saved_model")
        signatures = module.signatures()
        # Keras 3 variables reached only through the model are missing from the restore that
        # TF1-style loaders run (TF Serving, `saved_model_cli run`: "Could not find variable");
        # listing the functions' own tf.Variables on the module fixes it, as keras's
        # ExportArchive does (keras-team/keras#20095).
        used = {}
        for function in signatures.values():
            for variable in function.variables:
                used.setdefault(id(variable), variable)
        module.function_variables = list(used.values())
        tf.saved_model.save(module, saved_dir, signatures=signatures)
        if os.path.exists(export_dir):
            # The previous export moves aside and is deleted with the temporary folder, or put
            # back if the new one cannot take its place.
            previous = os.path.join(temp, "previous")
            os.replace(export_dir, previous)
            try:
                os.replace(saved_dir, export_dir)
            except OSError:
                os.replace(previous, export_dir)
                raise
        else:
            os.replace(saved_dir, export_dir)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return export_dir


def export_run(model_dir, export_dir, overwrite=False, **kwargs):
    """Exports a run folder; `kwargs` go to `module_for_run`. Returns the module's `ServingConfig`."""
    _check_export_dir(export_dir, overwrite, model_dir)
    module = module_for_run(model_dir, **kwargs)
    save(module, export_dir, overwrite=overwrite, model_dir=model_dir)
    return module.config


def export_keras(model_dir, path, overwrite=False, encoder_only=False):
    """Writes a run as one Keras file (`keras.models.load_model` reads it back, given vdim_tf):
    a fine-tuning run's `VideoClassifier`, or `VideoEncoder` (φ_g∘Ψ) for a pretraining run or
    with `encoder_only`. Unlike the SavedModel it holds the model only, not the preprocessing or
    the windowing. Returns the model."""
    from vdim_tf import api

    if not path.endswith(".keras"):
        raise ExportError(f"--export_dir={path}: a Keras export is one file whose name ends in .keras")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ExportError(f"--export_dir={os.path.abspath(path)} is a folder, not a .keras file; --overwrite "
                          "replaces only a previous .keras file")
    if os.path.exists(path) and not overwrite:
        raise ExportError(f"--export_dir={os.path.abspath(path)} exists; pass --overwrite to replace it")
    saved = _read_run_config(model_dir)
    if saved.get("kind") == "finetune" and not encoder_only:
        model = api.load_classifier(model_dir)
    else:
        model = api.load_encoder(model_dir)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    return model
