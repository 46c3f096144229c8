#!/usr/bin/env bash
# The accelerator check: the fast test subset on the GPU backend, then training / eval throughput
# of every quantization family with the `base` SegNet at a batch that fills 60% of the device,
# peak device memory per job, and the float step in bfloat16. Planned to finish in under 8
# minutes on one GPU (each part has its own time limit).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root, on the GPU machine
#
# Needs only jax (with its CUDA plugin), flax, optax, numpy, pytest and hypothesis: resq_jax.quant
# and resq_jax.nn import nothing else, so the repository runs from PYTHONPATH without installing
# its data / training dependencies (grain, tensorflow-datasets, ...), which a GPU image may lack.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
start=$(date +%s)
{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$py" -c "import sys, jax, flax; print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
} 2>&1 | tee "$out/machine.txt"

echo "== 1. fast tests on the GPU backend (limit 150 s)"
JAX_PLATFORMS=cuda timeout 150 "$py" -m pytest -q -p no:cacheprovider \
  tests/test_quant_uniform.py tests/test_quant_resq.py tests/test_quant_dynamic.py \
  tests/test_quant_cost.py tests/test_nn_clip.py -k "not sharded" 2>&1 | tee "$out/tests.txt" | tail -n 5

echo "== 2. throughput, base preset, 8 frames of 128x128, K = 4 (limit 240 s)"
timeout 240 "$py" benchmarks/bench_gpu.py --preset base --hw 128 --batch 16 --fill 0.6 \
  2>&1 | tee "$out/bench.txt" | tail -n 8

echo "== 3. float training step in bfloat16 (limit 60 s)"
timeout 60 "$py" benchmarks/bench_gpu.py --preset base --hw 128 --batch 16 --fill 0.6 --bf16 \
  --jobs train_fp 2>&1 | tee "$out/bench_bf16.txt" | tail -n 3

echo "gpu_check finished in $(( $(date +%s) - start )) s; outputs in $out"
