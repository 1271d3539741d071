"""Profiles the VDIM train step with the TensorFlow profiler and prints where the time goes.

Runs the train step of `bench/train_step.py` (two views through the encoder, heads, multi-layer
InfoNCE, Adam; random views in memory) under `tf.profiler.experimental`, then reads the trace it
wrote (`*.xplane.pb`) and adds up the time of every TensorFlow op by op type, on the threads that
run ops (not the intra-op worker threads, whose time is already inside the op that spawned it).
Prints the op types by share of op time and the share of convolutions (forward, and the two
backward kernels), i.e. how much of the step the encoder's convolutions take.

The trace stays in `--logdir` for TensorBoard's profile tab
(`pip install tensorboard-plugin-profile`, then `tensorboard --logdir <logdir>`).

    python bench/profile_step.py [--preset cpu] [--batch 8] [--precision float32] [--steps 3]
"""

import argparse
import collections
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from vdim_tf.models.encoder import PRESETS
from vdim_tf.models.vdim import VDIM

EMBEDDING = {"paper": 512, "cpu": 128}
# Threads that run whole ops: TF's inter-op pool on CPU ("tf_Compute/..."), the op stream on GPU.
OP_THREADS = ("tf_Compute", "TensorFlow Ops", "TensorFlow Name Scope", "XLA Ops")


def is_convolution(op_type):
    return "Conv" in op_type and "Concat" not in op_type


def op_times(xplane_path):
    """{op type: total picoseconds} over the op-running threads of every plane in the trace."""
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    gpu = any(p.name.startswith("/device:GPU") for p in space.planes)
    for plane in space.planes:
        if gpu and not plane.name.startswith("/device:GPU"):
            continue  # on a GPU, the device planes hold the kernels' time
        for line in plane.lines:
            if not line.name.startswith(OP_THREADS) or line.name == "TensorFlow Name Scope":
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # "scope/op_name:OpType"; "A::B" are executor events
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps
                elif gpu and line.name.startswith(("TensorFlow Ops", "XLA Ops")):
                    totals[name] += event.duration_ps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", default="float32", help="float32, mixed_bfloat16 or mixed_float16")
    parser.add_argument("--steps", type=int, default=3, help="steps traced (after two warm-up steps)")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--logdir", default=os.path.join("runs", "profile"))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    keras.mixed_precision.set_global_policy(args.precision)
    p = PRESETS[args.preset]
    model = VDIM(encoder_preset=args.preset, embedding_dim=EMBEDDING[args.preset],
                 antecedent_layers=(*p.local_layers, p.global_layer), consequent_layers=(p.global_layer,))
    model.build_for(batch_size=args.batch)
    model.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.8))
    shape = (args.batch, p.frames, p.size, p.size, 3)
    view1, view2 = tf.random.normal(shape), tf.random.normal(shape)

    @tf.function(jit_compile=args.jit_compile or None)
    def step(a, b):
        return model.apply_gradients_step(a, b)[0]

    float(step(view1, view2))  # trace and warm up outside the profile
    float(step(view1, view2))
    logdir = os.path.join(args.logdir, f"{args.preset}_{args.precision}_b{args.batch}")
    before = set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        loss = step(view1, view2)
    float(loss)
    tf.profiler.experimental.stop()
    traces = sorted(set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)) - before)
    if not traces:
        sys.exit(f"the profiler wrote no trace under {logdir}")
    totals = op_times(traces[-1])
    all_ps = sum(totals.values())
    if not all_ps:
        sys.exit(f"no op events in {traces[-1]}")
    conv_ps = sum(v for k, v in totals.items() if is_convolution(k))
    print(f"{args.preset} preset, {args.precision}, batch {args.batch}, {args.steps} steps traced; "
          f"op time summed over op threads: {all_ps / 1e9 / args.steps:,.1f} ms/step")
    print(f"{'op type':<36} {'ms/step':>9} {'share':>7}")
    for op_type, ps in totals.most_common(args.top):
        print(f"{op_type:<36} {ps / 1e9 / args.steps:>9.1f} {ps / all_ps:>7.1%}")
    print(f"convolutions (forward + both backward kernels): {conv_ps / all_ps:.1%} of op time")
    print(f"trace: {traces[-1]}  (tensorboard --logdir {args.logdir}, profile tab)")


if __name__ == "__main__":
    main()
