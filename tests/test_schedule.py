"""The one learning-rate schedule (`loop.WarmupStepDecay`): its values at the warm-up and decay
boundaries, its serialisation, and that pretraining and fine-tuning both build their Adam on it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import finetune, loop, trainer
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib


def _rates(schedule, steps):
    return np.array([float(schedule(tf.constant(s, tf.int64))) for s in steps])


def test_warmup_rises_linearly_to_the_peak_then_holds():
    schedule = loop.WarmupStepDecay(2e-4, warmup_steps=4)
    # Step s is the (s+1)-th update: the first update already moves, at peak / warmup_steps.
    np.testing.assert_allclose(_rates(schedule, [0, 1, 2, 3, 4, 1000]),
                               [0.5e-4, 1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4], rtol=1e-6)


def test_step_decay_multiplies_by_the_factor_at_each_boundary():
    schedule = loop.WarmupStepDecay(1e-3, warmup_steps=0, decay_every=3000, decay_factor=0.5)
    np.testing.assert_allclose(_rates(schedule, [0, 2999, 3000, 5999, 6000, 9000]),
                               [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4], rtol=1e-6)


def test_warmup_and_decay_combine_and_decay_counts_from_step_zero():
    schedule = loop.WarmupStepDecay(1.0, warmup_steps=10, decay_every=5, decay_factor=0.1)
    # Step 4: 5/10 of the peak; step 5: 6/10, already decayed once; step 10: warm, decayed twice.
    np.testing.assert_allclose(_rates(schedule, [4, 5, 9, 10]), [0.5, 0.06, 0.1, 0.01], rtol=1e-5)


def test_no_warmup_and_no_decay_is_a_constant_rate():
    np.testing.assert_allclose(_rates(loop.WarmupStepDecay(1e-3, 0, 0), [0, 1, 10**6]), [1e-3] * 3, rtol=1e-7)


def test_cosine_decay_holds_through_the_warmup_then_falls_to_zero_at_its_last_step():
    schedule = loop.WarmupStepDecay(1e-3, warmup_steps=10, cosine_steps=110)
    # Warm-up as without it; then 1e-3 · (1 + cos(π·(s - 10)/100)) / 2: a quarter of the way down
    # at s = 35 (0.854), half at 60, zero at 110 and after.
    np.testing.assert_allclose(
        _rates(schedule, [0, 9, 10, 35, 60, 85, 110, 500]),
        [1e-4, 1e-3, 1e-3, 1e-3 * (1 + np.cos(np.pi / 4)) / 2, 5e-4, 1e-3 * (1 - np.cos(np.pi / 4)) / 2, 0, 0],
        rtol=1e-5, atol=1e-12)
    rates = _rates(schedule, range(10, 111))
    assert np.all(np.diff(rates) < 0), "the cosine part falls at every step"


def test_cosine_decay_must_end_after_the_warmup():
    with pytest.raises(ValueError, match="must end after the warm-up"):
        loop.WarmupStepDecay(1e-3, warmup_steps=50, cosine_steps=50)


def test_schedule_round_trips_through_keras_serialisation():
    schedule = loop.WarmupStepDecay(3e-4, warmup_steps=7, decay_every=11, decay_factor=0.25)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(again, loop.WarmupStepDecay)
    assert again.get_config() == schedule.get_config()
    steps = [0, 6, 10, 11, 30]
    np.testing.assert_array_equal(_rates(again, steps), _rates(schedule, steps))
    # Inside an optimizer's config too (Keras saves the schedule that way).
    optimizer = keras.optimizers.Adam.from_config(keras.optimizers.Adam(schedule).get_config())
    optimizer.iterations.assign(11)
    assert float(optimizer.learning_rate) == pytest.approx(float(schedule(11)))


def _schedule_of(optimizer):
    return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])


@pytest.mark.parametrize("cosine_decay", [True, False])
def test_pretraining_cosine_decay_ends_at_train_steps(tmp_path, cosine_decay):
    config = trainer.PretrainConfig(
        train_data="unused", model_dir=str(tmp_path), train_steps=900, batch_size=2,
        model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=8, antecedent_layers=(6,),
                                  consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16), augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(learning_rate=1e-3, warmup_steps=50, cosine_decay=cosine_decay),
    )
    _, optimizer, _ = trainer.build_model(config, tf.distribute.get_strategy())
    schedule = _schedule_of(optimizer)
    expected = dict(peak=1e-3, warmup_steps=50, decay_every=0, decay_factor=0.5)
    assert schedule.get_config() == ({**expected, "cosine_steps": 900} if cosine_decay else expected)
    assert float(schedule(900)) == (0.0 if cosine_decay else pytest.approx(1e-3))


def test_cosine_decay_needs_more_steps_than_the_warmup(tmp_path):
    config = trainer.PretrainConfig(train_data="unused", model_dir=str(tmp_path), train_steps=50, batch_size=2,
                                    optim=trainer.OptimConfig(warmup_steps=50, cosine_decay=True))
    with pytest.raises(ValueError, match="train_steps=50, which must be more than warmup_steps=50"):
        config.validate()


def test_pretraining_optimizer_uses_the_schedule_with_its_warmup_and_decay(tmp_path):
    config = trainer.PretrainConfig(
        train_data="unused", model_dir=str(tmp_path), train_steps=1, batch_size=2,
        model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=8, antecedent_layers=(6,),
                                  consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16), augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(learning_rate=2e-4, warmup_steps=500, decay_every=7000, decay_factor=0.3),
    )
    _, optimizer, _ = trainer.build_model(config, tf.distribute.get_strategy())
    schedule = _schedule_of(optimizer)
    assert isinstance(schedule, loop.WarmupStepDecay)
    assert schedule.get_config() == dict(peak=2e-4, warmup_steps=500, decay_every=7000, decay_factor=0.3)


@pytest.mark.parametrize("decay_every", [3000, 0])
def test_finetuning_optimizer_uses_the_schedule_without_warmup(tiny_synthetic, tmp_path, monkeypatch, decay_every):
    built = {}

    def capture(loop_config, **kwargs):  # stands in for training: only the optimizer is wanted
        built.update(kwargs)
        return {"step": 0, "metrics": {}, "stopped": None}

    monkeypatch.setattr(loop, "train_loop", capture)
    config = finetune.FinetuneConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), model_dir=str(tmp_path), train_steps=1,
        batch_size=2, label_names=tuple(finetune.read_labels(str(tiny_synthetic / "labels.txt"))),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=8, num_views=1, hidden_units=8),
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64),
        learning_rate=1e-3, decay_every=decay_every, decay_factor=0.5,
    )
    finetune.finetune(config, progress=False)
    schedule = _schedule_of(built["optimizer"])
    assert isinstance(schedule, loop.WarmupStepDecay)
    assert schedule.get_config() == dict(peak=1e-3, warmup_steps=0, decay_every=decay_every, decay_factor=0.5)
