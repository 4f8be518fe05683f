#!/usr/bin/env bash
# The CPU training-speed levers of issue 21, each timed in interleaved windows in one
# process beside the straightforward Keras build of ../shared/bench (variant "naive"),
# so each "÷ naive" ratio is of the same minutes; the shared script itself runs first
# and last, as the reference's own figure.
#
#     bash benchmarks/cpu_levers.sh [ISA]     # e.g. AVX2: oneDNN capped to AVX2 (ONEDNN_MAX_CPU_ISA)
#
# With ISA=AVX2 on an AVX-512/AMX machine, oneDNN runs the AVX2 kernels an AVX2-only
# CPU would (an emulation: caches, clocks and TensorFlow's own Eigen kernels stay
# this machine's). Prints everything; quote medians and the ratios of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
PRECISIONS=(float32 mixed_bfloat16)
if [ -n "${1:-}" ]; then
  export ONEDNN_MAX_CPU_ISA="$1"
  PRECISIONS=(float32)  # capped below AVX-512, oneDNN has no bfloat16 pooling here: TensorFlow aborts
fi
NAIVE=../shared/bench/naive_train_speed.py
WINDOWS=(--windows 3 --window 20 --steps-per-execution 10)
quiet() { "$@" 2>&1 | grep -v -E '^(I0000|W0000|E0000|WARNING: All log|To enable the following)'; }
rows() { tail -n "$1"; }

echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}, $(date -u +%FT%TZ)"
echo "== reference script (naive build), float32"
quiet python "$NAIVE" --repeats 3 | rows 2
echo "== precisions and XLA, beside the reference"
quiet python benchmarks/train_throughput.py --variants naive "${PRECISIONS[@]}" float32+xla "${WINDOWS[@]}" | rows 8
echo "== the classifier's first convolution as Keras's Conv2D (+conv2d, before SingleChannelConv2D)"
quiet python benchmarks/train_throughput.py --variants naive float32+conv2d float32 "${WINDOWS[@]}" | rows 5
echo "== one batch per call"
quiet python benchmarks/train_throughput.py --variants naive float32 --windows 3 --window 20 --steps-per-execution 1 | rows 4
echo "== threads intra 2, inter 1 (both models)"
quiet python benchmarks/train_throughput.py --variants naive float32 "${WINDOWS[@]}" --threads 2 1 | rows 4
echo "== oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, Eigen kernels; both models)"
TF_ENABLE_ONEDNN_OPTS=0 quiet python benchmarks/train_throughput.py --variants naive float32 "${WINDOWS[@]}" | rows 4
echo "== the JAX backend on the CPU (both models)"
KERAS_BACKEND=jax quiet python benchmarks/train_throughput.py --variants naive float32 "${WINDOWS[@]}" | rows 4
echo "== reference script (naive build), float32, again"
quiet python "$NAIVE" --repeats 3 | rows 2
