"""VDIM train-step throughput, achieved FLOP/s against this machine's matmul peak, and memory.

Measured in one run, on whatever device TensorFlow sees (CPU here; the same script on a GPU):
  - matmul peak: a 4096² (CPU: 2048²) matmul in float32 and bfloat16 (float16 on GPU);
  - the train step (two views through the encoder, heads, multi-layer InfoNCE, Adam) for the
    chosen presets and precisions, on random views already in memory (no input pipeline);
  - FLOPs per step counted analytically from the block table (2·k·C_in·C_out per output location
    of every conv, ×3 for forward + backward), so achieved FLOP/s = FLOPs per step / step time;
  - the encoder's share of the step: the encoder alone (forward + backward on both views, no heads,
    loss or optimizer) timed the same way, divided by the full step time;
  - peak memory: on GPU from `tf.config.experimental.get_memory_info`; on CPU the process's peak
    RSS after each batch size, from which memory per clip and the largest batch that fits are
    estimated.

    python bench/train_step.py [--presets cpu,paper] [--precisions float32,mixed_bfloat16]
                               [--batch cpu=8,paper=2] [--steps 5] [--jit_compile]
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from bench.flops import train_step_flops
from vdim_tf.models.encoder import PRESETS
from vdim_tf.models.vdim import VDIM

EMBEDDING = {"paper": 512, "cpu": 128}


def matmul_peak(dtype, n, seconds=3.0):
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)

    @tf.function
    def mm(x):
        return tf.matmul(x, x)

    mm(a).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mm(a).numpy()
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(preset, precision, batch, steps, jit_compile, encoder_share=False):
    keras.mixed_precision.set_global_policy(precision)
    try:
        p = PRESETS[preset]
        model = VDIM(encoder_preset=preset, embedding_dim=EMBEDDING[preset],
                     antecedent_layers=(*p.local_layers, p.global_layer), consequent_layers=(p.global_layer,))
        model.build_for(batch_size=batch)
        model.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.8))
        shape = (batch, p.frames, p.size, p.size, 3)
        views = {"view1": tf.random.normal(shape), "view2": tf.random.normal(shape)}

        @tf.function(jit_compile=jit_compile or None)
        def step(v):
            loss, _ = model.apply_gradients_step(v["view1"], v["view2"])
            return loss

        seconds = _time(step, views, steps)
        encoder_seconds = None
        if encoder_share:
            # The encoder alone, forward and backward on both views, with no heads, loss or
            # optimizer: what the train step would cost if everything else were free.
            encoder_vars = model.encoder.trainable_variables

            @tf.function(jit_compile=jit_compile or None)
            def encoder_step(v):
                with tf.GradientTape() as tape:
                    out = [model.encoder(v[k], training=True)[p.global_layer] for k in ("view1", "view2")]
                    total = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32)) for o in out])
                # Every gradient feeds the output, so none is pruned from the graph.
                return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(total, encoder_vars)])

            encoder_seconds = _time(encoder_step, views, steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    flops = train_step_flops(preset, batch)
    return (seconds, flops, encoder_seconds) if encoder_share else (seconds, flops)


def _time(fn, views, steps):
    float(fn(views))  # trace + warm up
    float(fn(views))
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(views)
    float(out)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="cpu,paper")
    parser.add_argument("--precisions", default=None, help="default: float32,mixed_bfloat16 on CPU; "
                        "float32,mixed_float16,mixed_bfloat16 on GPU")
    parser.add_argument("--batch", default="cpu=8,paper=2", help="clips per step for each preset")
    parser.add_argument("--memory_batches", default="", help="e.g. paper=1,2,4: peak-memory sweep")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit_compile", action="store_true")
    args = parser.parse_args()

    gpu = bool(tf.config.list_physical_devices("GPU"))
    device = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get(
        "device_name", "GPU") if gpu else f"CPU ({os.cpu_count()} cores)"
    precisions = (args.precisions or ("float32,mixed_float16,mixed_bfloat16" if gpu else "float32,mixed_bfloat16")).split(",")
    batches = dict(item.split("=") for item in args.batch.split(","))
    n = 4096 if gpu else 2048
    peaks = {"float32": matmul_peak(tf.float32, n), "mixed_bfloat16": matmul_peak(tf.bfloat16, n)}
    if gpu:
        peaks["mixed_float16"] = matmul_peak(tf.float16, n)
    print(f"device: {device}; TensorFlow {tf.__version__}; XLA: {args.jit_compile}")
    for k, v in peaks.items():
        print(f"matmul peak {n}x{n} {k.replace('mixed_', ''):<9}: {v / 1e9:,.0f} GFLOP/s")
    print(f"{'preset':<6} {'precision':<15} {'batch':>5} {'step s':>8} {'clips/s':>8} {'GFLOP/step':>11} "
          f"{'GFLOP/s':>9} {'of peak':>8} {'encoder share':>14}")
    for preset in args.presets.split(","):
        batch = int(batches[preset])
        for precision in precisions:
            seconds, flops, encoder_seconds = measure(preset, precision, batch, args.steps, args.jit_compile,
                                                      encoder_share=True)
            achieved = flops / seconds
            print(f"{preset:<6} {precision:<15} {batch:>5} {seconds:>8.3f} {batch / seconds:>8.2f} "
                  f"{flops / 1e9:>11.1f} {achieved / 1e9:>9.1f} {achieved / peaks[precision]:>8.1%} "
                  f"{encoder_seconds / seconds:>14.0%}", flush=True)
    if args.memory_batches:
        for item in args.memory_batches.split(";"):
            preset, sizes = item.split("=")
            print(f"peak memory, {preset} preset, float32 train step:")
            for b in [int(x) for x in sizes.split(",")]:
                measure(preset, "float32", b, 1, args.jit_compile)
                if gpu:
                    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
                    tf.config.experimental.reset_memory_stats("GPU:0")
                else:
                    peak = peak_rss_bytes()
                print(f"  batch {b}: peak {'GPU' if gpu else 'process RSS'} {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
