#!/usr/bin/env bash
# The CPU training-speed levers of issue 21, measured in one sitting beside the
# straightforward Keras build (../shared/bench/naive_train_speed.py), which runs
# first and last so that each ratio has the reference of the same minutes.
#
#     bash benchmarks/cpu_levers.sh [ISA]     # e.g. AVX2: oneDNN capped to AVX2 (ONEDNN_MAX_CPU_ISA)
#
# With ISA=AVX2 on an AVX-512/AMX machine, oneDNN runs the AVX2 kernels an AVX2-only
# CPU would (an emulation: caches, clocks and TensorFlow's own Eigen kernels stay
# this machine's). Prints everything; quote medians and the ratios of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
if [ -n "${1:-}" ]; then export ONEDNN_MAX_CPU_ISA="$1"; fi
NAIVE=../shared/bench/naive_train_speed.py
WINDOWS=(--windows 3 --window 20 --steps-per-execution 10)
quiet() { "$@" 2>&1 | grep -v -E '^(I0000|W0000|E0000|WARNING: All log|To enable the following)'; }

echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}, $(date -u +%FT%TZ)"
echo "== reference (naive build), float32"
quiet python "$NAIVE" --repeats 3 | tail -2
echo "== project: precisions, XLA"
quiet python benchmarks/train_throughput.py --variants float32 mixed_bfloat16 float32+xla "${WINDOWS[@]}" | tail -6
echo "== project: one batch per call"
quiet python benchmarks/train_throughput.py --variants float32 --windows 3 --window 20 --steps-per-execution 1 | tail -3
echo "== project: threads intra 2, inter 1"
quiet python benchmarks/train_throughput.py --variants float32 "${WINDOWS[@]}" --threads 2 1 | tail -3
echo "== project: oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, Eigen kernels)"
TF_ENABLE_ONEDNN_OPTS=0 quiet python benchmarks/train_throughput.py --variants float32 "${WINDOWS[@]}" | tail -3
echo "== project: JAX backend on the CPU"
KERAS_BACKEND=jax quiet python benchmarks/train_throughput.py --variants float32 "${WINDOWS[@]}" | tail -3
echo "== reference (naive build), float32, again"
quiet python "$NAIVE" --repeats 3 | tail -2
