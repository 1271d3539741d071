"""Fine-tuning a (pretrained) encoder for action classification, paper §4.1 / SPEC §6.

`finetune(config)` trains `VideoClassifier` end to end (or, with `freeze_encoder`, only its MLP:
a probe), starting from a VDIM pretraining run (`pretrained`) or from random initialisation (the
baseline every result is compared to). Runs resume, checkpoint and log like pretraining.
"""

import collections
import dataclasses
import json
import os

import keras
import tensorflow as tf

from vdim_tf import loop
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import pipeline
from vdim_tf.data import records
from vdim_tf.data import views as views_lib
from vdim_tf.models.classifier import VideoClassifier
from vdim_tf.models.encoder import check_global_input, get_preset
from vdim_tf.models.vdim import VDIM
from vdim_tf.trainer import PRECISIONS

CONFIG_FILE = "config.json"


class PretrainedError(ValueError):
    """A `--pretrained` path that is missing or does not fit the classifier."""


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Arguments of `VideoClassifier` except the class count (paper §4.1 defaults)."""

    encoder_preset: str = "paper"
    embedding_dim: int = 512
    num_views: int = 4
    hidden_units: int = 1024
    dropout: float = 0.2
    freeze_encoder: bool = False
    block_batch_norm: bool = False
    single_frame: bool = False


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run needs; written to `model_dir/config.json`."""

    train_data: str
    model_dir: str
    train_steps: int
    batch_size: int
    label_names: tuple
    test_data: str | None = None
    pretrained: str | None = None
    classifier: ClassifierConfig = ClassifierConfig()
    final_length: int = 32
    factor: int = 1
    augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig(color_mode="lab")
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    decay_every: int = 3000
    decay_factor: float = 0.5
    strategy: str = "default"
    precision: str = "float32"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    jit_compile: bool = False
    time_limit_minutes: float = 0.0
    seed: int | None = 0
    input_sharding: str = "data"

    kind = "finetune"

    @property
    def views(self):
        return views_lib.ViewConfig.clip_views(self.final_length, self.factor, self.classifier.num_views)

    @property
    def num_classes(self):
        return len(self.label_names)

    @property
    def color_space(self):
        return augment_lib.color_space(self.augment.color_mode)

    def validate(self):
        if self.train_steps < 1:
            raise ValueError(f"train_steps={self.train_steps}: must be >= 1")
        if not self.time_limit_minutes >= 0:
            raise ValueError(f"time_limit_minutes={self.time_limit_minutes}: must be >= 0 (0: no limit)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.num_classes < 2:
            unlabelled = (" (records prepared from a folder with no class folders are unlabelled: for pretraining "
                          "only; fine-tuning needs video_dir/<class>/<video>)" if not self.label_names else "")
            raise ValueError(f"need at least 2 classes, the labels file lists {list(self.label_names)}{unlabelled}")
        if not 1 <= self.classifier.num_views <= 8:
            raise ValueError(f"num_views={self.classifier.num_views}: paper uses 1 to 4")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: valid values are {PRECISIONS}")
        try:
            check_global_input(self.classifier.encoder_preset, self.final_length, self.augment.output_size)
        except ValueError as e:
            raise ValueError(f"--final_length={self.final_length} --image_size={self.augment.output_size}: {e}") from None
        self.views.validate()

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        d["color_space"] = self.color_space
        return d


# --- the labels in the records ---------------------------------------------------------------


def record_labels(file_pattern):
    """Every record's label index and text, read from the records' context (no frame is decoded).

    Returns:
      `{index: sorted texts}` over the records of `file_pattern` (text '' where a record has none,
      index -1 where it has no label).

    Raises:
      FileNotFoundError: naming the pattern, when it matches no file.
    """
    files = pipeline.list_files(file_pattern)
    features = {records.LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
                records.LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}

    def context(serialized):
        parsed, _, _ = tf.io.parse_sequence_example(serialized, context_features=features)
        return parsed[records.LABEL_INDEX_KEY], parsed[records.LABEL_TEXT_KEY]

    dataset = (tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8))
               .batch(256).map(context, num_parallel_calls=tf.data.AUTOTUNE))
    found = collections.defaultdict(set)
    for indices, texts in dataset.as_numpy_iterator():
        for index, text in set(zip(indices.tolist(), texts.tolist())):
            found[index].add(text.decode("utf-8", "replace"))
    return {index: sorted(texts) for index, texts in sorted(found.items())}


def _format_labels(labels):
    return ", ".join(f"{index}={'|'.join(t or '?' for t in texts)}" for index, texts in labels.items())


def check_record_labels(label_names, labels, data, names_from):
    """Refuses records whose labels are not `label_names`.

    Every record must carry an index in `[0, len(label_names))`, and its label text, where it has
    one, must be the name at that index.

    Args:
      label_names: the run's class names, in index order.
      labels: `record_labels` of the data.
      data: the data, as the error names it (e.g. "train_data='records/x/train_1/*.tfrecord'").
      names_from: where `label_names` came from, as the error names it.

    Raises:
      ValueError: naming the first mismatch, with both lists.
    """
    problem = None
    for index, texts in labels.items():
        if index < 0:
            problem = "some records carry no label index"
        elif index >= len(label_names):
            problem = f"label index {index} is past the {len(label_names)} names"
        elif any(t and t != label_names[index] for t in texts):
            problem = f"index {index} is {'|'.join(texts)!r} in the records but {label_names[index]!r} in the labels"
        if problem:
            break
    if problem:
        raise ValueError(f"{data}: its records' labels do not match {names_from}: {problem}. Records: "
                         f"{_format_labels(labels)}; labels: {_format_labels({i: [n] for i, n in enumerate(label_names)})}")


def labels_file_for(file_pattern):
    """`labels.txt` of a prepared dataset: `<output_dir>/labels.txt` for `<output_dir>/<split>/*.tfrecord`."""
    return os.path.join(os.path.dirname(os.path.dirname(file_pattern)), "labels.txt")


def read_labels(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"labels file {os.path.abspath(path)} not found (prepare writes it beside the "
                                "split folders; or pass --labels_file)")
    with open(path, encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())


def make_classifier(config, num_classes):
    return VideoClassifier(num_classes=num_classes, **dataclasses.asdict(config), name="classifier")


def _pretrained_paths(path):
    """(config.json, checkpoint prefix) of a pretraining run folder or checkpoint prefix."""
    if os.path.isdir(path):
        config_path = os.path.join(path, CONFIG_FILE)
        prefix = loop.latest_checkpoint(path)
        if prefix is None:
            folder = os.path.abspath(os.path.join(path, "checkpoints"))
            raise PretrainedError(f"--pretrained={path}: no checkpoint in {folder}")
    else:
        if not tf.io.gfile.exists(path + ".index"):
            raise PretrainedError(f"--pretrained={path}: neither a run folder nor a checkpoint prefix "
                                  f"(no {os.path.abspath(path)}.index)")
        prefix = path
        config_path = os.path.join(os.path.dirname(os.path.dirname(path)), CONFIG_FILE)
    if not os.path.exists(config_path):
        raise PretrainedError(f"--pretrained={path}: {os.path.abspath(config_path)} not found; it records the "
                              "pretrained model")
    return config_path, prefix


def read_pretrained(path, note_version=True):
    """What a pretraining run recorded: `(the model section of its config.json, its checkpoint prefix)`.

    `path` is a run folder (its newest checkpoint) or one checkpoint's prefix. `note_version`: say
    when the run was written by another version of vdim_tf.

    Raises:
      PretrainedError: no checkpoint or config.json there, or not a VDIM pretraining run; the message
        is one line naming `--pretrained=path`.
    """
    config_path, prefix = _pretrained_paths(path)
    with open(config_path) as f:
        saved = json.load(f)
    if note_version:
        loop.note_other_version(saved, path)
    if saved.get("kind", "pretrain") != "pretrain" or "model" not in saved:
        raise PretrainedError(f"--pretrained={path}: {config_path} is not a VDIM pretraining run")
    return saved["model"], prefix


def pretrained_model_settings(path):
    """What a classifier must share with the pretraining run at `path`, as that run recorded it.

    Returns:
      dict with `encoder_preset`, `embedding_dim` and `block_batch_norm` (those the run recorded).

    Raises:
      PretrainedError: the path has no checkpoint or config, or is not a pretraining run.
    """
    model_config, _ = read_pretrained(path, note_version=False)
    keys = ("encoder_preset", "embedding_dim", "block_batch_norm")
    return {key: model_config[key] for key in keys if key in model_config}


def recorded_model_settings(model_dir):
    """`pretrained_model_settings`' keys as a fine-tuning run in `model_dir` recorded them, or {}
    when it has no checkpoint or record yet (a resumed run needs no pretrained run: it may have moved)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if loop.latest_checkpoint(model_dir) is None or not os.path.exists(path):
        return {}
    with open(path) as f:
        classifier = json.load(f).get("classifier") or {}
    keys = ("encoder_preset", "embedding_dim", "block_batch_norm")
    return {key: classifier[key] for key in keys if key in classifier}


def load_pretrained(classifier, path):
    """Copies Ψ and φ_g from a VDIM pretraining run into `classifier` (already built).

    Raises:
      PretrainedError: the path has no checkpoint or config, or the run's encoder preset,
        embedding size or heads do not match the classifier.
    """
    model_config, prefix = read_pretrained(path)
    for key, mine in (("encoder_preset", classifier.encoder_preset), ("embedding_dim", classifier.embedding_dim),
                      ("block_batch_norm", classifier.block_batch_norm)):
        if model_config.get(key) != mine:
            raise PretrainedError(f"--pretrained={path}: it was trained with {key}={model_config.get(key)!r}, "
                                  f"the classifier has {key}={mine!r}")
    vdim = VDIM(**model_config)
    g = classifier.global_layer
    if g not in vdim.layers_used:
        raise PretrainedError(f"--pretrained={path}: the run has no head for the global layer {g} "
                              f"(its layers: {list(vdim.layers_used)})")
    preset = get_preset(classifier.encoder_preset)
    vdim.build_for(preset.frames, preset.size)
    try:
        prefix = loop.restore_model(vdim, path, prefix)  # a run folder: its newest checkpoint that reads back
    except AssertionError as e:
        raise PretrainedError(f"--pretrained={path}: checkpoint {prefix} does not match its config: {e}") from None
    except loop.TrainingError as e:
        raise PretrainedError(f"--pretrained={path}: {e}") from None
    classifier.encoder.set_weights(vdim.encoder.get_weights())
    classifier.head.set_weights(vdim.heads[g].get_weights())
    return prefix


def finetune(config, progress=True, strategy=None):
    """Runs (or resumes) fine-tuning until `config.train_steps`.

    Args:
      config: a `FinetuneConfig`.
      progress: show a progress bar (chief only).
      strategy: the `tf.distribute` strategy if the caller made it already (under `multi_worker`
        it must be made before any TensorFlow op); default `loop.make_strategy(config.strategy)`.

    Returns:
      the loop's result dict (`step`, `metrics`, `stopped`).

    Raises:
      ValueError / FileNotFoundError / PretrainedError: bad configuration, before training.
      loop.TrainingError: a non-finite loss.
    """
    config.validate()
    loop.check_precision(config.precision)
    strategy = strategy or loop.make_strategy(config.strategy)
    loop.check_batch(config.batch_size, strategy, config.strategy)
    files = pipeline.training_files(config.train_data, "train_data")
    loop.check_input_sharding(config.input_sharding, files, loop.num_workers(strategy))
    names_from = f"the run's {config.num_classes} labels (--labels_file)"
    check_record_labels(config.label_names, record_labels(files), f"train_data={config.train_data!r}", names_from)
    if config.test_data:
        try:
            test_labels = record_labels(config.test_data)
        except FileNotFoundError:
            raise FileNotFoundError(f"test_data={config.test_data!r} matches no file (looked for "
                                    f"{os.path.abspath(config.test_data)}); evaluate would find no test videos") from None
        check_record_labels(config.label_names, test_labels, f"test_data={config.test_data!r}", names_from)
    record = _run_record(config)
    with loop.precision_policy(config.precision):
        return _finetune(config, record, files, strategy, progress)


def top1_hits(logits, labels):
    """1.0 where the label's logit is strictly above every other class's, else 0.0 `(B,)`: a tie at
    the top (or a NaN) never counts in the model's favour, the rule of `evaluate.topk_accuracy`."""
    label_logit = tf.gather(logits, tf.cast(labels, tf.int32), batch_dims=1)[:, None]
    at_or_above = tf.reduce_sum(tf.cast(logits >= label_logit, tf.int32), axis=-1)
    return tf.cast(tf.equal(at_or_above, 1), tf.float32)


def probe_augment(augment, freeze_encoder, augment_frozen=True):
    """`augment`, or, for a frozen-encoder probe with `augment_frozen` off, the evaluation's view:
    a random resized crop of the whole area at aspect 1 is the centre square (the crop falls back
    to it), and no colour jitter, grayscale, flip or rotation."""
    if not freeze_encoder or augment_frozen:
        return augment
    return dataclasses.replace(augment, crop_scale=(1.0, 1.0), crop_aspect_ratio=(1.0, 1.0), jitter_probability=0.0,
                               grayscale_probability=0.0, flip_probability=0.0, rotation_probability=0.0)


def _run_record(config):
    """What config.json records: the config, its colour space and the pretrained encoder's.

    A fresh run reads the pretrained run's colour space from its config; a resumed run keeps the
    one it recorded (the pretrained run may have moved since). Prints a notice when the two differ.
    """
    path = os.path.join(config.model_dir, CONFIG_FILE)
    if loop.latest_checkpoint(config.model_dir) is not None and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        pretrained_space = saved.get("pretrained_color_space")
    elif config.pretrained:
        with open(_pretrained_paths(config.pretrained)[0]) as f:
            pretrained_space = augment_lib.color_space(json.load(f).get("augment", {}).get("color_mode"))
    else:
        pretrained_space = None
    if pretrained_space and pretrained_space != config.color_space:
        keep = "jitter" if pretrained_space == "rgb" else "lab"
        print(f"note: the pretrained encoder was trained on {pretrained_space} input; this run fine-tunes it on "
              f"{config.color_space} input (--color_mode={config.augment.color_mode}). The paper pairs rgb "
              f"pretraining with lab fine-tuning on purpose (§4.1, §4.2); --color_mode={keep} keeps "
              f"{pretrained_space}.")
    # Facts, not settings (loop.RUN_RECORD_KEYS): resuming does not compare them.
    return {**config.to_dict(), "pretrained_color_space": pretrained_space}


def _finetune(config, record, files, strategy, progress):
    os.makedirs(config.model_dir, exist_ok=True)
    loop.check_resume(config.model_dir, record)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = make_classifier(config.classifier, config.num_classes)
        model.build_for(config.final_length, config.augment.output_size)
        schedule = loop.WarmupStepDecay(config.learning_rate, 0, config.decay_every, config.decay_factor)
        optimizer = keras.optimizers.Adam(schedule, beta_1=config.beta_1, beta_2=config.beta_2)
        if config.precision == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    fresh = loop.latest_checkpoint(config.model_dir) is None
    if fresh and config.pretrained:
        prefix = load_pretrained(model, config.pretrained)
        print(f"initialised encoder and φ_{model.global_layer} from {prefix}")
    elif fresh:
        print("no --pretrained: encoder initialised at random (the baseline)")
    note = pipeline.short_videos_note(files, config.views.window_length)
    if note:
        print(note, flush=True)

    views = config.views

    def make_dataset(start):
        seed = None if config.seed is None else config.seed + start
        own_files = loop.worker_files(files, config.input_sharding, strategy)
        return loop.shard_per_worker(pipeline.finetune_dataset(
            own_files, views, config.augment, config.batch_size, config.classifier.num_views, training=True, seed=seed),
            config.input_sharding)

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def replica_step(batch):
        with tf.GradientTape() as tape:
            logits = model(batch["views"], training=True)
            per_example = loss_fn(batch["label"], logits)
            loss = tf.reduce_mean(per_example)  # float32: the classifier casts its logits
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
            if hasattr(optimizer, "scale_loss"):  # LossScaleOptimizer (mixed_float16); `apply` unscales
                scaled = optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return {loop.LOSS: loss, "accuracy/train_clip_top1": tf.reduce_mean(top1_hits(logits, batch["label"]))}

    nan_hint = "Try a lower --learning_rate" + (" or --precision=float32." if config.precision != "float32" else ".")
    loop_config = loop.LoopConfig(config.model_dir, config.train_steps, config.checkpoint_every,
                                  config.keep_checkpoints, config.log_every, config.jit_compile,
                                  config.time_limit_minutes)
    return loop.train_loop(loop_config, strategy=strategy, checkpoint=checkpoint, optimizer=optimizer,
                           make_dataset=make_dataset, replica_step=replica_step, batch_size=config.batch_size,
                           progress=progress, nan_hint=nan_hint, run_config=record, data_files=files)


def load_config(model_dir):
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{os.path.abspath(path)} not found: --model_dir should be a fine-tuning run folder")
    with open(path) as f:
        saved = json.load(f)
    loop.note_other_version(saved, model_dir)
    if saved.get("kind") != "finetune":
        raise ValueError(f"{model_dir} is not a fine-tuning run (config kind {saved.get('kind', 'pretrain')!r})")
    return saved


def restore_finetuned(model_dir):
    """(classifier, saved config dict, checkpoint prefix) of a fine-tuning run, with the weights of
    its newest checkpoint that reads back (`loop.restore_newest`: a damaged one is skipped, saying
    so; none that restores is a `loop.TrainingError` naming each one's files)."""
    saved = load_config(model_dir)
    if loop.latest_checkpoint(model_dir) is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.abspath(os.path.join(model_dir, 'checkpoints'))}")
    model = make_classifier(ClassifierConfig(**saved["classifier"]), len(saved["label_names"]))
    model.build_for(saved["final_length"], saved["augment"]["output_size"])
    prefix = loop.restore_newest(tf.train.Checkpoint(model=model), model_dir, partial=True)
    return model, saved, prefix


def load_finetuned(model_dir):
    """(classifier, saved config dict) of a fine-tuning run, as `restore_finetuned`."""
    return restore_finetuned(model_dir)[:2]
