"""Evidence that VDIM learns: held-out accuracy on the synthetic motion dataset, over seeds.

For every seed, in one process:
  1. VDIM pretraining of the CPU preset (configs/demo_pretrain.cfg settings);
  2. fine-tuning and a frozen-encoder probe, each from the VDIM encoder and from random
     initialisation, plus the single-frame baseline (the encoder sees one repeated frame per
     view, so it cannot use motion: it should sit near chance);
  3. evaluation on the held-out test videos: video-level top-1 and retrieval R@1.
Prints a table of means and standard deviations over the seeds, and writes every figure to
`--out/evidence.json`.

    python bench/evidence.py [--seeds 0,1,2] [--pretrain_steps 1500] [--finetune_steps 600]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from vdim_tf import evaluate, finetune, trainer
from vdim_tf.data import augment as augment_lib
from vdim_tf.data import views as views_lib
from vdim_tf.data.synthetic import generate_synthetic_dataset

ARMS = (
    ("fine-tune", "VDIM", dict(pretrained=True)),
    ("fine-tune", "random", dict()),
    ("fine-tune", "single frame", dict(single_frame=True)),
    ("probe", "VDIM", dict(pretrained=True, freeze_encoder=True)),
    ("probe", "random", dict(freeze_encoder=True)),
)


def pretrain_config(data, model_dir, steps, seed):
    """configs/demo_pretrain.cfg, as a config."""
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
    """configs/demo_finetune.cfg, as a config."""
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrain_steps", type=int, default=1500)
    parser.add_argument("--finetune_steps", type=int, default=600)
    parser.add_argument("--data", default=os.path.join("data", "synthetic"))
    parser.add_argument("--out", default=os.path.join("runs", "evidence"))
    args = parser.parse_args()

    generate_synthetic_dataset(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    figures = {}
    start = time.perf_counter()
    for seed in seeds:
        root = os.path.join(args.out, f"seed{seed}")
        pretrain_dir = os.path.join(root, "pretrain")
        trainer.pretrain(pretrain_config(args.data, pretrain_dir, args.pretrain_steps, seed), progress=False)
        for mode, init, options in ARMS:
            model_dir = os.path.join(root, f"{mode}_{init}".replace(" ", "_"))
            options = dict(options)
            pretrained = pretrain_dir if options.pop("pretrained", False) else None
            config = finetune_config(args.data, model_dir, args.finetune_steps, seed, pretrained, **options)
            finetune.finetune(config, progress=False)
            r = evaluate.evaluate_run(model_dir, projector_videos=0, progress=False)
            figures.setdefault(f"{mode}|{init}", []).append(
                {"seed": seed, "video_top1": r["video_top1"], "R@1": r["retrieval"]["R@1"], "chance": r["chance"]})
            print(f"seed {seed} {mode:<9} {init:<12} video top-1 {r['video_top1']:.3f}  R@1 {r['retrieval']['R@1']:.3f}",
                  flush=True)
    chance = next(iter(figures.values()))[0]["chance"]
    print(f"\nheld-out synthetic videos, {len(seeds)} seeds ({args.seeds}); pretraining {args.pretrain_steps} "
          f"steps, fine-tuning/probing {args.finetune_steps} steps; chance top-1 = {chance:.3f}")
    print(f"{'protocol':<10} {'initialisation':<14} {'video top-1 (mean ± sd)':>24} {'R@1 (mean ± sd)':>18}")
    summary = {}
    for key, rows in figures.items():
        mode, init = key.split("|")
        top1 = np.array([r["video_top1"] for r in rows])
        r1 = np.array([r["R@1"] for r in rows])
        summary[key] = {"video_top1_mean": top1.mean(), "video_top1_sd": top1.std(ddof=1) if len(rows) > 1 else 0.0,
                        "R@1_mean": r1.mean(), "R@1_sd": r1.std(ddof=1) if len(rows) > 1 else 0.0}
        s = summary[key]
        print(f"{mode:<10} {init:<14} {s['video_top1_mean']:>15.3f} ± {s['video_top1_sd']:.3f} "
              f"{s['R@1_mean']:>10.3f} ± {s['R@1_sd']:.3f}")
    print(f"({(time.perf_counter() - start) / 60:.1f} min)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "evidence.json"), "w") as f:
        json.dump({"args": vars(args), "runs": figures, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
