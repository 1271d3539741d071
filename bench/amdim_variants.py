"""AMDIM's residual unit order and block-1 padding against this project's, on the synthetic set.

Two choices of `models/blocks.py` differ from AMDIM's public code (WORKSPACE.md): the residual
branch starts with a ReLU (AMDIM: `conv → ReLU → conv`, no ReLU on the branch's input), and
block 1 zero-pads (AMDIM's 128-px encoder reflect-pads its first conv). Each variant is patched in
for the run (nothing in the package changes), then pretrained and probed with a frozen encoder
with the settings below (the demo's earlier recipe, batch 8, views 24 frames apart):

    python bench/amdim_variants.py [--variants today,amdim_residual,reflect_pad] [--seed 0]
        [--pretrain_steps 1500] [--probe_steps 600]

Prints pretraining loss and NCE accuracy at the end, and the probe's held-out video top-1 and
retrieval R@1, per variant; writes them to `--out/amdim_variants.json`.

    python bench/amdim_variants.py launch VARIANT LAUNCHER [flags...]

runs one of the project's launchers (`pretrain`, `finetune`, `evaluate`, ...) with the variant
patched in, as `python -m vdim_tf.launch.LAUNCHER [flags...]` would: how `bench/evidence.py
--variant` compares the variants on real video through the demo's flagfiles. The checkpoints are the
same layers either way, so a run must be fine-tuned and evaluated with the variant it was
pretrained with.
"""

import argparse
import json
import os
import runpy
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras import ops

from vdim_tf import evaluate, finetune, trainer
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib
from vdim_tf.data.synthetic import generate_synthetic_dataset
from vdim_tf.models import blocks

def pretrain_config(data, model_dir, steps, seed):
    """The settings the variants were measured with (WORKSPACE.md): the demo's earlier recipe."""
    return trainer.PretrainConfig(
        train_data=os.path.join(data, "train", "*.tfrecord"), model_dir=model_dir, train_steps=steps,
        batch_size=8, seed=seed,
        model=trainer.ModelConfig(encoder_preset="cpu", embedding_dim=128, antecedent_layers=(4, 5, 6),
                                  consequent_layers=(6,)),
        views=views_lib.ViewConfig.two_views(final_length=16, offset2=24, factor2=1),
        augment=augment_lib.AugmentConfig(output_size=64),
        optim=trainer.OptimConfig(learning_rate=1e-3, warmup_steps=50),
        checkpoint_every=steps, log_every=max(steps // 4, 1),
    )


def finetune_config(data, model_dir, steps, seed, pretrained, freeze_encoder=False, single_frame=False):
    """configs/demo_finetune.cfg, as a config (the frozen-encoder probe)."""
    return finetune.FinetuneConfig(
        train_data=os.path.join(data, "train", "*.tfrecord"), test_data=os.path.join(data, "test", "*.tfrecord"),
        model_dir=model_dir, train_steps=steps, batch_size=8, seed=seed, pretrained=pretrained,
        label_names=finetune.read_labels(os.path.join(data, "labels.txt")),
        classifier=finetune.ClassifierConfig(encoder_preset="cpu", embedding_dim=128, num_views=2,
                                             freeze_encoder=freeze_encoder, single_frame=single_frame),
        # No flips: on direction-labelled classes a flip changes the label (move_left <-> move_right).
        final_length=16, augment=augment_lib.AugmentConfig(output_size=64, color_mode="jitter", flip_probability=0.0),
        learning_rate=1e-4, decay_every=0, checkpoint_every=steps, log_every=max(steps // 3, 1),
    )


TODAY = {"ResidualBranch.call": blocks.ResidualBranch.call, "ConvBlock.call": blocks.ConvBlock.call}


def amdim_branch_call(self, x, training=None):
    """AMDIM's order: spatial conv → ReLU → temporal conv; the branch's input is not rectified."""
    x = self.spatial(x)
    if self.bn_spatial is not None:
        x = self.bn_spatial(x, training=training)
    x = self.temporal(ops.relu(x))
    if self.bn_temporal is not None:
        x = self.bn_temporal(x, training=training)
    return x


def reflect_pad_call(self, x, training=None):
    """`ConvBlock.call` with reflect padding (space before the spatial conv, time before the
    temporal conv) in place of zeros."""
    p = self.padding
    if p:
        x = ops.pad(x, [[0, 0], [0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
    x = self.spatial(x)
    if self.bn_spatial is not None:
        x = self.bn_spatial(x, training=training)
    x = ops.relu(x)
    if p:
        x = ops.pad(x, [[0, 0], [p, p], [0, 0], [0, 0], [0, 0]], mode="reflect")
    x = self.temporal(x)
    if self.bn_temporal is not None:
        x = self.bn_temporal(x, training=training)
    return ops.relu(x)


VARIANTS = {
    "today": {},
    "amdim_residual": {"ResidualBranch.call": amdim_branch_call},
    "reflect_pad": {"ConvBlock.call": reflect_pad_call},
}


def use_variant(name):
    for key, today in TODAY.items():
        cls, method = key.split(".")
        setattr(getattr(blocks, cls), method, VARIANTS[name].get(key, today))


LAUNCHERS = ("pretrain", "finetune", "evaluate", "export", "predict")


def launch(argv):
    """`launch VARIANT LAUNCHER [flags...]`: the launcher's main with the variant patched in."""
    if len(argv) < 2 or argv[0] not in VARIANTS or argv[1] not in LAUNCHERS:
        sys.exit(f"usage: amdim_variants.py launch VARIANT LAUNCHER [flags...], VARIANT one of "
                 f"{','.join(VARIANTS)}, LAUNCHER one of {','.join(LAUNCHERS)}; got {' '.join(argv) or 'nothing'}")
    variant, launcher, flags = argv[0], argv[1], argv[2:]
    use_variant(variant)
    sys.argv = [f"vdim_tf.launch.{launcher}", *flags]
    runpy.run_module(f"vdim_tf.launch.{launcher}", run_name="__main__", alter_sys=True)


def main():
    if sys.argv[1:2] == ["launch"]:
        return launch(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain_steps", type=int, default=1500)
    parser.add_argument("--probe_steps", type=int, default=600)
    parser.add_argument("--data", default=os.path.join("data", "synthetic"))
    parser.add_argument("--out", default=os.path.join("runs", "amdim_variants"))
    args = parser.parse_args()
    unknown = [n for n in args.variants.split(",") if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; valid: {','.join(VARIANTS)}")

    generate_synthetic_dataset(args.data)
    results = {}
    for name in args.variants.split(","):
        use_variant(name)
        start = time.perf_counter()
        root = os.path.join(args.out, name)
        pretrain_dir = os.path.join(root, "pretrain")
        metrics = trainer.pretrain(
            pretrain_config(args.data, pretrain_dir, args.pretrain_steps, args.seed), progress=False
        )["metrics"]
        probe_dir = os.path.join(root, "probe")
        finetune.finetune(finetune_config(args.data, probe_dir, args.probe_steps, args.seed, pretrain_dir,
                                                   freeze_encoder=True), progress=False)
        r = evaluate.evaluate_run(probe_dir, projector_videos=0, progress=False)
        results[name] = {"pretrain_loss": metrics["loss"], "acc_6_6": metrics.get("acc_6_6"),
                         "probe_video_top1": r["video_top1"], "probe_R@1": r["retrieval"]["R@1"],
                         "minutes": (time.perf_counter() - start) / 60}
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "amdim_variants.json"), "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
