"""Slow check (`./run test -m slow`): VDIM pretraining makes a better video representation than
random initialisation on held-out synthetic videos.

The measure is retrieval R@1 of frozen φ_g∘Ψ features (test videos querying training videos), so
it depends on the encoder alone. bench/evidence.py reports the same over several seeds.
"""

import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))


@pytest.mark.slow
def test_vdim_pretraining_beats_random_initialisation_on_held_out_retrieval(tmp_path):
    import evidence  # bench/evidence.py: the demo's configs as dataclasses

    from vdim_tf import evaluate, finetune, trainer
    from vdim_tf.data.synthetic import generate_synthetic_dataset

    data = str(tmp_path / "synthetic")
    generate_synthetic_dataset(data)
    pretrain_dir = str(tmp_path / "pretrain")
    trainer.pretrain(evidence.pretrain_config(data, pretrain_dir, steps=1500, seed=0), progress=False)
    recall = {}
    for name, pretrained in (("vdim", pretrain_dir), ("random", None)):
        model_dir = str(tmp_path / name)
        # One probe step only creates a fine-tuning run to evaluate; the encoder stays frozen.
        finetune.finetune(evidence.finetune_config(data, model_dir, steps=1, seed=0, pretrained=pretrained,
                                                   freeze_encoder=True), progress=False)
        recall[name] = evaluate.evaluate_run(model_dir, projector_videos=0, progress=False)["retrieval"]["R@1"]
    # 48 test videos, 6 classes: a margin of 0.05 is 3 videos.
    assert recall["vdim"] >= recall["random"] + 0.05, recall
