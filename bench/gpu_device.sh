#!/usr/bin/env bash
# Runs bench/gpu.py on the GPU machine, which has JAX and CUDA under its python3 but no TensorFlow,
# no Keras and no network. Keras and the two of its dependencies that the machine lacks (namex,
# optree; absl-py, rich, h5py, ml-dtypes, numpy and packaging are there) travel as wheels.
#
# Once, here, in the repository root (2.8 MB of wheels; the folder is git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# Then with the device tool: command "bash bench/gpu_device.sh", carry [".whl"], timeout_s 330.
# gpu.json and gpu.md come back from $OUT.
#
# The wheels go to a --target folder on PYTHONPATH rather than a venv: the machine's python3 is
# itself a venv (/opt/torch/.venv), and a venv made from it with --system-site-packages would see
# the base interpreter's packages, not that venv's JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "bench/gpu_device.sh: no wheels in $WHEELS/; download them first (see the top of this script)" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 bench/gpu.py --out_dir "${OUT:-runs/bench_gpu}" "$@"
