"""The VDIM pretraining step as Keras 3 on JAX with XLA: clips/s, TFLOP/s against the matmul peak
measured in the same run, and GPU memory. Made for a GPU machine with JAX but no TensorFlow
(bench/gpu_device.sh runs it there); nothing it imports pulls in TensorFlow.

What is timed, for the paper preset (Table 1, 32×128×128 views, |Y| = 512):
  - the full step: two views through the encoder Ψ, the heads Φ of the layers used, InfoNCE
    (`losses.nce_terms`) summed over the paper's layer pairs (5→8, 6→8, 8→5, 8→6, 8→8), gradients
    and an Adam update, as one `jax.jit` over a stateless step (`model.stateless_call`,
    `optimizer.stateless_apply`) whose state buffers are donated;
  - precisions float32 and mixed_bfloat16 (bfloat16 compute, float32 variables and loss), at
    batch 16 and 32, on random views already on the device;
  - FLOPs per step from the block table, counted as bench/train_step.py counts them
    (bench/flops.py: the convolutions of both views, forward and backward; heads and loss left
    out), so TFLOP/s = FLOPs per step / step time; XLA's own count of the compiled step (every op)
    is recorded beside it;
  - matmul peak: an 8192² matmul (dry run: 256²) in float32 and bfloat16, jitted, in this run;
    float32 matmuls, here and in the step, run at JAX's default precision;
  - memory: XLA's account of the compiled step (arguments + outputs + temporaries − aliased) and
    the device's peak bytes in use so far (cumulative over the run, in the table's order).

This is the Keras model under JAX/XLA, not the TensorFlow training loop: no tf.data, no
tf.distribute, no temporal difference. It writes `gpu.json` and `gpu.md` (a table) to --out_dir
and starts a configuration only while the time so far plus the last configuration's stays under
--budget_s, listing those it skipped.

    python bench/gpu.py [--out_dir runs/bench_gpu] [--batches 16,32] [--steps 10]
                        [--precisions mixed_bfloat16,float32] [--budget_s 200]
    python bench/gpu.py --dry_run    # cpu preset, batch 2, two steps, tiny matmul: that it runs
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("KERAS_BACKEND", "jax")

try:
    import jax
    import jax.numpy as jnp
except ImportError:
    sys.exit("bench/gpu.py needs JAX (pip install jax; on the GPU machine see bench/gpu_device.sh)")
import keras
from keras import ops

from bench.flops import train_step_flops
from vdim_tf.models import losses
from vdim_tf.models.encoder import PRESETS, Encoder
from vdim_tf.models.heads import ContrastiveHead

EMBEDDING = {"paper": 512, "cpu": 128}  # as bench/train_step.py
PRECISION_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16"}


def paper_pairs(preset_name):
    """The paper's layer pairs for a preset: J = local layers + global, J' = global, symmetric.

    Equal to `vdim.layer_pairs(J, J', symmetric=True)` (a test checks), written out here because
    vdim.py holds the TensorFlow train step and imports TensorFlow.
    """
    preset = PRESETS[preset_name]
    g = preset.global_layer
    antecedents = (*preset.local_layers, g)
    return tuple(sorted({(j, g) for j in antecedents} | {(g, j) for j in antecedents}))


class PretrainObjective(keras.Model):
    """Ψ, the heads Φ and the multi-layer InfoNCE of `VDIM.compute_losses`, on one device.

    Call arguments:
      view1, view2: float `(B, T, H, W, 3)`.
      training: for batch norm.

    Returns:
      `(total loss, per-pair losses (P,))`, float32.
    """

    def __init__(self, preset, embedding_dim, pairs, **kwargs):
        super().__init__(**kwargs)
        self.pairs = tuple(pairs)
        self.encoder = Encoder(preset=preset, name="encoder")
        self.heads = {j: ContrastiveHead(embedding_dim, name=f"head_{j}")
                      for j in sorted({j for pair in self.pairs for j in pair})}

    def call(self, view1, view2, training=None):
        f1 = self.encoder(view1, training=training)  # two calls: per-view batch statistics
        f2 = self.encoder(view2, training=training)
        antecedents = {j: self._embed(f1, j, training) for j in {p[0] for p in self.pairs}}
        consequents = {k: self._embed(f2, k, training) for k in {p[1] for p in self.pairs}}
        per_pair = ops.stack([losses.nce_terms(antecedents[j], consequents[k])[0] for j, k in self.pairs])
        return ops.sum(per_pair), per_pair

    def _embed(self, features, j, training):
        y = self.heads[j](features[j], training=training)
        return ops.reshape(y, (y.shape[0], -1, y.shape[-1]))  # (B, locations, D)


def make_step(model, optimizer):
    """One jitted training step `(state, view1, view2) → (state, loss)`; state buffers donated."""

    def loss_fn(trainable, non_trainable, view1, view2):
        (loss, _), non_trainable = model.stateless_call(trainable, non_trainable, view1, view2, training=True)
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, view1, view2):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, view1, view2)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    return jax.jit(step, donate_argnums=0)


def matmul_peak(dtype, n, seconds):
    """FLOP/s of a jitted n×n matmul in `dtype`, timed for about `seconds`."""
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    mm = jax.jit(lambda a: a @ a)
    mm(x).block_until_ready()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):  # dispatch ahead; wait once per ten
            out = mm(x)
        out.block_until_ready()
        count += 10
    return 2 * n**3 * count / (time.perf_counter() - start)


def device_peak_bytes():
    stats = jax.devices()[0].memory_stats()  # None on CPU
    return stats.get("peak_bytes_in_use") if stats else None


def xla_memory_bytes(compiled):
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def xla_flops(compiled):
    """XLA's own FLOP count of the compiled step (every op, heads and loss included), or None."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every backend offers it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def measure(preset_name, precision, batch, steps):
    """Compiles and times the step for one configuration; returns its row of figures."""
    preset = PRESETS[preset_name]
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = PretrainObjective(preset_name, EMBEDDING[preset_name], paper_pairs(preset_name))
        shape = (batch, preset.frames, preset.size, preset.size, 3)
        # Creates the variables: one eager call at the smallest batch with negatives.
        start = time.perf_counter()
        model(ops.zeros((2, *shape[1:])), ops.zeros((2, *shape[1:])), training=False)
        build_s = time.perf_counter() - start
        optimizer = keras.optimizers.Adam(2e-4, beta_1=0.8)  # as bench/train_step.py
        optimizer.build(model.trainable_variables)
        state = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables])
        view1, view2 = (jax.random.normal(jax.random.key(seed), shape, jnp.float32) for seed in (1, 2))
        step = make_step(model, optimizer)

        start = time.perf_counter()
        compiled = step.lower(state, view1, view2).compile()
        compile_s = time.perf_counter() - start
        state, first_loss = compiled(state, view1, view2)  # warm-up
        first_loss = float(first_loss)
        start = time.perf_counter()
        for _ in range(steps):
            state, loss = compiled(state, view1, view2)
        loss = float(loss)  # waits for the last step
        seconds = (time.perf_counter() - start) / steps
    finally:
        keras.mixed_precision.set_global_policy("float32")
    flops, counted = train_step_flops(preset_name, batch), xla_flops(compiled)
    return {
        "preset": preset_name, "precision": precision, "batch": batch, "steps": steps,
        "step_s": seconds, "clips_per_s": batch / seconds, "gflop_per_step": flops / 1e9,
        "tflops": flops / seconds / 1e12, "build_s": build_s, "compile_s": compile_s,
        "loss_first": first_loss, "loss_last": loss,
        "xla_gflop_per_step": None if counted is None else counted / 1e9,
        "xla_memory_bytes": xla_memory_bytes(compiled), "device_peak_bytes": device_peak_bytes(),
    }


def markdown(report):
    gib = 2**30
    lines = [
        f"Keras {report['keras']} on JAX {report['jax']} ({report['device']}), XLA; "
        f"{report['preset']} preset, layer pairs {', '.join(f'{j}→{k}' for j, k in report['pairs'])}, Adam.",
        "",
        "| precision | batch | step (ms) | clips/s | GFLOP/step | TFLOP/s | matmul peak (TFLOP/s) | of peak "
        "| XLA memory (GiB) | device peak so far (GiB) | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        peak = report["matmul_peak_tflops"][PRECISION_DTYPES[r["precision"]]]
        mem = f"{r['xla_memory_bytes'] / gib:.2f}" if r["xla_memory_bytes"] is not None else "n/a"
        dev = f"{r['device_peak_bytes'] / gib:.2f}" if r["device_peak_bytes"] is not None else "n/a"
        lines.append(
            f"| {r['precision']} | {r['batch']} | {r['step_s'] * 1e3:.1f} | {r['clips_per_s']:.1f} "
            f"| {r['gflop_per_step']:.1f} | {r['tflops']:.2f} | {peak:.1f} | {r['tflops'] / peak:.1%} "
            f"| {mem} | {dev} | {r['compile_s']:.1f} |"
        )
    for s in report["skipped"]:
        lines.append(f"| {s['precision']} | {s['batch']} | skipped: {s['why']} |||||||||")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="runs/bench_gpu", help="where gpu.json and gpu.md go")
    parser.add_argument("--batches", default="16,32", help="clips per step, comma-separated")
    parser.add_argument("--precisions", default="mixed_bfloat16,float32",
                        help=f"comma-separated, from {sorted(PRECISION_DTYPES)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--matmul_size", type=int, default=8192, help="n of the n×n matmul peak")
    parser.add_argument("--matmul_seconds", type=float, default=2.0, help="time per matmul-peak dtype")
    parser.add_argument("--budget_s", type=float, default=200.0,
                        help="a configuration starts only if the time so far plus the last configuration's "
                             "time stays under this (the run must end within 4 minutes)")
    parser.add_argument("--dry_run", action="store_true",
                        help="cpu preset, batch 2, 1 step after the warm-up, 256² matmul: checks that the script runs, on CPU")
    args = parser.parse_args(argv)
    bad = [p for p in args.precisions.split(",") if p not in PRECISION_DTYPES]
    if bad:
        parser.error(f"--precisions={args.precisions}: {bad} unknown; valid: {sorted(PRECISION_DTYPES)}")
    if args.dry_run:
        args.batches, args.steps, args.matmul_size, args.matmul_seconds = "2", 1, 256, 0.2
        args.budget_s = float("inf")  # a check that every configuration runs, however slow the CPU
    return args


def main(argv=None):
    args = parse_args(argv)
    if keras.backend.backend() != "jax":
        sys.exit(f"bench/gpu.py runs on the JAX backend; KERAS_BACKEND={keras.backend.backend()} (unset it or set jax)")
    began = time.perf_counter()
    preset = "cpu" if args.dry_run else "paper"
    device = jax.devices()[0]
    report = {
        "device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__, "keras": keras.__version__,
        "python": platform.python_version(), "preset": preset, "pairs": paper_pairs(preset),
        "matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", None) or "default"),
        "dry_run": args.dry_run, "results": [], "skipped": [],
    }
    precisions = args.precisions.split(",")
    report["matmul_peak_tflops"] = {
        PRECISION_DTYPES[p]: matmul_peak(PRECISION_DTYPES[p], args.matmul_size, args.matmul_seconds) / 1e12
        for p in precisions
    }
    print(f"{report['device']}; JAX {jax.__version__}, Keras {keras.__version__}; matmul peak "
          + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in report["matmul_peak_tflops"].items()), flush=True)
    last_seconds = 0.0
    for precision in precisions:  # precision-major: the eager build's ops compile once per dtype
        for batch in (int(b) for b in args.batches.split(",")):
            elapsed = time.perf_counter() - began
            if elapsed + last_seconds > args.budget_s:
                report["skipped"].append({
                    "precision": precision, "batch": batch,
                    "why": f"{elapsed:.0f} s + {last_seconds:.0f} s (the last configuration) > --budget_s={args.budget_s:g}",
                })
                continue
            start = time.perf_counter()
            row = measure(preset, precision, batch, args.steps)
            last_seconds = time.perf_counter() - start
            report["results"].append(row)
            print(f"{precision:<15} batch {batch:>3}: {row['step_s'] * 1e3:8.1f} ms/step "
                  f"{row['clips_per_s']:8.1f} clips/s {row['tflops']:7.2f} TFLOP/s "
                  f"(compile {row['compile_s']:.1f} s, loss {row['loss_first']:.3f} → {row['loss_last']:.3f})",
                  flush=True)
    report["wall_s"] = time.perf_counter() - began
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "gpu.json"), "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    with open(os.path.join(args.out_dir, "gpu.md"), "w") as f:
        f.write(table)
    print(table + f"wrote {args.out_dir}/gpu.json and gpu.md in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
