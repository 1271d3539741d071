"""The encoder, heads and InfoNCE loss are backend-agnostic Keras: under KERAS_BACKEND=jax they give
the TensorFlow backend's numbers on the same weights and inputs and import no TensorFlow, and
bench/gpu.py (the Keras/JAX pretraining step for the GPU machine) runs.

Slow, and skipped where JAX is not installed (`pip install jax`, the CPU wheel, beside the
project's requirements)."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="jax is not installed; `pip install jax` (CPU wheel) to compare the Keras backends"),
]

PRESET, EMBEDDING, BATCH = "cpu", 32, 4

# Largest difference over largest magnitude, float32 on CPU, oneDNN (TensorFlow) against XLA (JAX).
# Measured: every block's output in inference mode within 3.2e-7; the heads and losses, which run
# in training mode, within 3.6e-4 (head 6) and 1.6e-4 (loss 6→6): there batch norm divides by the
# spread of 4 clips at one location each, which magnifies the encoder's rounding differences.
# The tolerances leave about 5-30× room for other CPUs' kernels.
FEATURE_TOLERANCE = 1e-5
TRAINING_TOLERANCE = 2e-3

# Runs the same forward pass and loss as `_forward_and_loss` in a fresh interpreter on the JAX
# backend, with TensorFlow made unimportable, as on the GPU machine.
JAX_SIDE = """
import sys
sys.modules["tensorflow"] = None
sys.path.insert(0, {tests!r})
import test_backends
test_backends.jax_side({weights!r}, {inputs!r}, {out!r})
"""


def _build():
    from vdim_tf.models.encoder import PRESETS, Encoder
    from vdim_tf.models.heads import ContrastiveHead

    preset = PRESETS[PRESET]
    g = preset.global_layer
    pairs = tuple(sorted({(j, g) for j in (*preset.local_layers, g)} | {(g, j) for j in preset.local_layers}))
    encoder = Encoder(preset=PRESET, name="encoder")
    heads = {j: ContrastiveHead(EMBEDDING, name=f"head_{j}") for j in sorted({j for p in pairs for j in p})}
    return encoder, heads, pairs


def _variables(encoder, heads):
    return list(encoder.weights) + [w for j in sorted(heads) for w in heads[j].weights]


def _forward_and_loss(encoder, heads, pairs, view1, view2):
    """Every block's output (inference mode), the heads' embeddings and per-pair NCE (training mode)."""
    from keras import ops

    from vdim_tf.models.losses import nce_terms

    out = {f"block{j}": f for j, f in encoder(view1, training=False).items()}
    f1, f2 = encoder(view1, training=True), encoder(view2, training=True)
    flat = lambda y: ops.reshape(y, (y.shape[0], -1, y.shape[-1]))  # noqa: E731
    for j, k in pairs:
        a, c = heads[j](f1[j], training=True), heads[k](f2[k], training=True)
        out[f"head{j}_view1"], out[f"head{k}_view2"] = a, c
        out[f"loss_{j}_{k}"], out[f"accuracy_{j}_{k}"] = nce_terms(flat(a), flat(c))
    return {name: np.asarray(ops.convert_to_numpy(v), np.float64) for name, v in out.items()}


def _randomize(variables, seed=0):
    """Seeded values for every weight, so no branch is zero (some start at zero by design)."""
    rng = np.random.default_rng(seed)
    values = []
    for v in variables:
        shape, name = tuple(v.shape), v.name
        if name == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "gamma":
            value = 1 + 0.1 * rng.normal(size=shape)
        elif name in ("beta", "moving_mean", "bias"):
            value = 0.1 * rng.normal(size=shape)
        else:  # kernels: unit-variance outputs
            value = rng.normal(size=shape) / math.sqrt(math.prod(shape[:-1]))
        values.append(value.astype(np.float32))
    return values


def jax_side(weights_path, inputs_path, out_path):
    import keras

    assert keras.backend.backend() == "jax"
    inputs, saved = np.load(inputs_path), np.load(weights_path)
    encoder, heads, pairs = _build()
    _forward_and_loss(encoder, heads, pairs, inputs["view1"], inputs["view2"])  # creates the variables
    variables = _variables(encoder, heads)
    assert [v.path for v in variables] == list(saved["paths"]), "variables differ between backends"
    for i, v in enumerate(variables):
        v.assign(saved[f"w{i}"])
    np.savez(out_path, **_forward_and_loss(encoder, heads, pairs, inputs["view1"], inputs["view2"]))


def _run_jax(code, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_jax_backend_gives_the_tensorflow_numbers_for_encoder_heads_and_loss(tmp_path):
    import keras

    assert keras.backend.backend() == "tensorflow"
    rng = np.random.default_rng(1)
    shape = (BATCH, 16, 64, 64, 3)
    inputs = {"view1": rng.normal(size=shape).astype(np.float32), "view2": rng.normal(size=shape).astype(np.float32)}
    encoder, heads, pairs = _build()
    _forward_and_loss(encoder, heads, pairs, inputs["view1"], inputs["view2"])
    variables = _variables(encoder, heads)
    values = _randomize(variables)
    for v, value in zip(variables, values):
        v.assign(value)
    want = _forward_and_loss(encoder, heads, pairs, inputs["view1"], inputs["view2"])

    np.savez(tmp_path / "inputs.npz", **inputs)
    np.savez(tmp_path / "weights.npz", paths=np.array([v.path for v in variables]),
             **{f"w{i}": value for i, value in enumerate(values)})
    _run_jax(JAX_SIDE.format(tests=str(REPO_ROOT / "tests"), weights=str(tmp_path / "weights.npz"),
                             inputs=str(tmp_path / "inputs.npz"), out=str(tmp_path / "jax.npz")), tmp_path)
    got = np.load(tmp_path / "jax.npz")

    assert sorted(got.files) == sorted(want)
    assert want["loss_6_6"] > 0.1 and np.abs(want["block6"]).max() > 0.1  # not a trivial comparison
    errors = {name: float(np.abs(got[name] - expected).max() / np.abs(expected).max())
              for name, expected in want.items() if not name.startswith("accuracy")}
    print("largest difference / largest magnitude:", {k: f"{v:.1e}" for k, v in sorted(errors.items())})
    tolerance = {k: FEATURE_TOLERANCE if k.startswith("block") else TRAINING_TOLERANCE for k in errors}
    too_far = {k: f"{v:.2e} > {tolerance[k]:g}" for k, v in errors.items() if v > tolerance[k]}
    assert not too_far, f"JAX differs from TensorFlow: {too_far}"
    # An accuracy is a fraction of positives: one positive flipping on a rounding-level tie moves it
    # by 1/count.
    for name in (n for n in want if n.startswith("accuracy")):
        j, k = (int(x) for x in name.split("_")[1:])
        count = want[f"head{j}_view1"][..., 0].size * want[f"head{k}_view2"][0, ..., 0].size
        assert abs(got[name] - want[name]) <= 1 / count + 1e-7, name


def _load_bench_gpu(monkeypatch):
    # bench/gpu.py sets KERAS_BACKEND=jax where it is unset (it runs on JAX); this process already
    # runs Keras on TensorFlow, and the variable must not leak into the subprocesses of later tests.
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_gpu_bench_layer_pairs_are_the_models(preset, monkeypatch):
    from vdim_tf.models.encoder import PRESETS
    from vdim_tf.models.vdim import layer_pairs

    p = PRESETS[preset]
    want = layer_pairs((*p.local_layers, p.global_layer), (p.global_layer,), symmetric=True)
    assert _load_bench_gpu(monkeypatch).paper_pairs(preset) == want


def test_gpu_bench_dry_run_trains_without_tensorflow(tmp_path):
    code = (
        "import runpy, sys\n"
        "sys.modules['tensorflow'] = None\n"
        f"sys.argv = ['bench/gpu.py', '--dry_run', '--out_dir', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(REPO_ROOT / 'bench' / 'gpu.py')!r}, run_name='__main__')\n"
    )
    _run_jax(code, tmp_path)
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["preset"] == "cpu" and not report["skipped"]
    assert sorted(r["precision"] for r in report["results"]) == ["float32", "mixed_bfloat16"]
    for row in report["results"]:
        assert math.isfinite(row["loss_first"]) and math.isfinite(row["loss_last"]), row
        # The optimizer updated the weights: the same views give another loss after the update.
        assert row["loss_last"] != row["loss_first"], row
        assert row["clips_per_s"] > 0 and row["tflops"] > 0
    assert report["matmul_peak_tflops"]["bfloat16"] > 0 and report["matmul_peak_tflops"]["float32"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert "| mixed_bfloat16 | 2 |" in table and "| float32 | 2 |" in table
