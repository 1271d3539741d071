"""The XLA path (`--jit_compile`), exercised on CPU so compile errors surface here, not on a GPU."""

import dataclasses

import numpy as np
import pytest

from vdim_tf import trainer
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib

# Relative tolerance between the XLA-compiled and the plain step's losses. XLA fuses and reorders
# float32 reductions differently from TensorFlow's kernels; measured on this CPU (2-core AMD EPYC)
# the per-pair losses after two steps differ by at most 5.2e-7 relative, so 1e-4 leaves room for
# other CPUs while catching any real difference in the computation (a wrong sign, scale or layer
# changes the loss by percents).
RTOL = 1e-4


@pytest.mark.slow
def test_jit_compiled_train_step_matches_the_plain_step(tiny_synthetic, tmp_path):
    base = trainer.PretrainConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), model_dir="", train_steps=2,
        batch_size=4, model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=32,
                                                antecedent_layers=(4, 5, 6), consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16, factor2=2),
        augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(warmup_steps=1), checkpoint_every=2, log_every=1,
    )
    results = {}
    for jit in (False, True):
        config = dataclasses.replace(base, model_dir=str(tmp_path / f"jit_{jit}"), jit_compile=jit)
        results[jit] = trainer.pretrain(config, progress=False)
    plain, compiled = results[False], results[True]
    assert compiled["step"] == plain["step"] == 2
    # The logged metrics are step 2's: they depend on step 1's update as well as on the forward pass.
    losses = {k: (plain["metrics"][k], compiled["metrics"][k]) for k in plain["metrics"] if "loss" in k}
    assert len(losses) >= 2, plain["metrics"]
    for name, (p, c) in losses.items():
        assert np.isfinite(c) and c == pytest.approx(p, rel=RTOL), (name, p, c)
