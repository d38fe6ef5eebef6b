#!/usr/bin/env bash
# The GPU check on a lent machine (the `device` tool): about 8 minutes. That machine has JAX and PyTorch but
# no TensorFlow, and no network: the project's other Python dependencies travel with the working tree as
# wheels, and boss-ds1 travels already prepared (normalize + validate need Great Expectations): `make gpu-kit`
# puts both into bench/gpu-kit (git-ignored; carry it).
#   run(command="bash bench/gpu.sh", carry=["bench/gpu-kit"], timeout_s=540)
# Figures: time per 2018 step vs the post's ~42 s on a GTX 1080, the default model's training throughput,
# and the boss-ds1 validation ESR after 5 GPU-minutes; written to $OUT/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax
export PYTHONPATH="$PWD/src"  # ampsim itself from the tree: no build step offline
python -m pip install --quiet --no-index --no-deps bench/gpu-kit/wheels/*.whl
python - <<'PY'
import jax
print("jax", jax.__version__, jax.devices())
PY
timeout 480 python bench/gpu.py --prepared bench/gpu-kit/prepared --minutes 5 --batches 20 --out "${OUT:-.}/gpu.json"
