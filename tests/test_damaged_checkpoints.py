"""Every command that reads a run's newest checkpoint (finetune --pretrained, evaluate, export, the
Python API) skips a damaged one for the one before it, saying which and why, as resuming does; when
none restores, it stops with a one-line error naming each checkpoint's files, deleting nothing.

Runs of two steps with a checkpoint at each step, so the run has an older checkpoint to fall back to.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vdim_tf import api, evaluate, export, finetune, trainer
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tiny_synthetic, tmp_path_factory):
    """(pretraining run, fine-tuning run from it), each with checkpoints at steps 1 and 2."""
    root = tmp_path_factory.mktemp("two_checkpoints")
    trainer.pretrain(trainer.PretrainConfig(
        train_data=str(tiny_synthetic / "train" / "*.tfrecord"), model_dir=str(root / "pretrain"), train_steps=2,
        batch_size=4, model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=32,
                                                antecedent_layers=(5, 6), consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16, factor2=2),
        augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(warmup_steps=1), checkpoint_every=1, log_every=1,
    ), progress=False)
    finetune.finetune(_finetune_config(tiny_synthetic, root / "finetune", root / "pretrain"), progress=False)
    return root / "pretrain", root / "finetune"


def _finetune_config(data, model_dir, pretrained):
    return finetune.FinetuneConfig(
        train_data=str(data / "train" / "*.tfrecord"), test_data=str(data / "test" / "*.tfrecord"),
        model_dir=str(model_dir), train_steps=2, batch_size=4, pretrained=str(pretrained),
        label_names=finetune.read_labels(str(data / "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=1, hidden_units=32),
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64), decay_every=0, checkpoint_every=1)


def damaged_copy(run, tmp_path, steps=(2,)):
    """A copy of `run` whose checkpoints at `steps` are cut to half their size."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    for step in steps:
        data = copy / "checkpoints" / f"ckpt-{step}.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return copy


def sizes(run):
    return {p.name: p.stat().st_size for p in (run / "checkpoints").iterdir()}


def skip_message(run):
    return (f"checkpoint {run}/checkpoints/ckpt-2 does not restore (IndexError: Read less bytes than requested); "
            "trying the one before it")


def test_finetune_from_a_run_with_a_damaged_newest_checkpoint_loads_the_one_before(runs, tiny_synthetic, tmp_path,
                                                                                  capsys):
    copy = damaged_copy(runs[0], tmp_path)
    model = finetune.make_classifier(_finetune_config(tiny_synthetic, tmp_path / "x", copy).classifier, 2)
    model.build_for(16, 64)

    prefix = finetune.load_pretrained(model, str(copy))

    assert prefix == f"{copy}/checkpoints/ckpt-1"
    assert skip_message(copy) in capsys.readouterr().out
    expected = api.load_encoder(str(runs[0] / "checkpoints" / "ckpt-1"), outputs=("embedding",))
    for mine, theirs in zip(model.encoder.get_weights(), expected.encoder.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_evaluate_a_run_with_a_damaged_newest_checkpoint_evaluates_the_one_before(runs, tmp_path, capsys):
    copy = damaged_copy(runs[1], tmp_path)

    model, _, prefix = finetune.restore_finetuned(str(copy))

    assert prefix == f"{copy}/checkpoints/ckpt-1"
    assert skip_message(copy) in capsys.readouterr().out
    whole, _ = finetune.load_finetuned(str(runs[1]))  # ckpt-2, undamaged
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), whole.get_weights()))
    results = evaluate.evaluate_run(str(copy), retrieval=False, projector_videos=0, progress=False,
                                    linear_probe=False)
    assert 0 <= results["video_top1"] <= 1


def test_export_and_the_api_skip_a_damaged_newest_checkpoint(runs, tmp_path, capsys):
    copy = damaged_copy(runs[0], tmp_path)

    embedder, _ = export.load_pretrained_encoder(str(copy))
    assert skip_message(copy) in capsys.readouterr().out
    encoder = api.load_encoder(str(copy), outputs=("embedding",))
    assert skip_message(copy) in capsys.readouterr().out

    reference = api.load_encoder(str(runs[0] / "checkpoints" / "ckpt-1"), outputs=("embedding",))
    for mine, theirs in zip(encoder.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_no_checkpoint_that_restores_is_a_one_line_error_in_every_command(runs, tmp_path):
    pretrain_copy = damaged_copy(runs[0], tmp_path, steps=(1, 2))
    finetune_copy = damaged_copy(runs[1], tmp_path, steps=(1, 2))
    before = sizes(pretrain_copy), sizes(finetune_copy)

    with pytest.raises(export.ExportError, match=r"no checkpoint in .*pretrain/checkpoints restores \(ckpt-2 "
                                                 r"\[ckpt-2.data-00000-of-00001, ckpt-2.index\]: IndexError"):
        export.load_pretrained_encoder(str(pretrain_copy))
    model = finetune.make_classifier(finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=32, num_views=1,
                                                               hidden_units=32), 2).build_for(16, 64)
    with pytest.raises(finetune.PretrainedError, match=rf"--pretrained={pretrain_copy}: no checkpoint in "):
        finetune.load_pretrained(model, str(pretrain_copy))

    # The launcher in its own process (its flags would clash with other launchers' in this one).
    out = subprocess.run([sys.executable, "-m", "vdim_tf.launch.evaluate", f"--model_dir={finetune_copy}",
                          "--noretrieval"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 1, out.stderr
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith(f"evaluate: no checkpoint in {finetune_copy}/checkpoints restores (ckpt-2 ["), out.stderr
    assert "ckpt-1 [ckpt-1.data-00000-of-00001, ckpt-1.index]: IndexError" in message
    assert "Traceback" not in out.stderr
    assert (sizes(pretrain_copy), sizes(finetune_copy)) == before  # nothing deleted or rewritten
