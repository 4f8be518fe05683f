"""Training throughput (images/s) at the protocol's batch size.

    python benchmarks/train_throughput.py [--model lstm_stn] [--variants float32 mixed_bfloat16]

Variants are timed side by side, in interleaved windows in one process, so
their ratio is meaningful even when the machine's speed drifts. Prints the
machine, versions, thread settings, multiply-adds per image and the fraction
of the CPU's peak reached, and what evaluating the 10,000 validation images
costs beside a 60,000-image training epoch.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_stn_tf.data import make_input, tf_dataset  # noqa: E402
from lstm_stn_tf.layers import FoldedTimeDistributed, LSTMLocalizer  # noqa: E402
from lstm_stn_tf.models import build_model  # noqa: E402
from lstm_stn_tf.training import TrainConfig, compile_model  # noqa: E402

# FP32 FLOPs per cycle per core: two 256-bit FMA pipes (AMD Zen 4 runs AVX-512
# as 2 x 256 bit). An assumption, printed with the result.
FLOPS_PER_CYCLE = 32


def multiply_adds(layer, repeat=1):
    """Forward multiply-adds per image of the convolutions, dense layers and LSTM."""
    total = 0
    if isinstance(layer, FoldedTimeDistributed):
        steps = layer.input.shape[1] if hasattr(layer, "input") else 1
        return multiply_adds(layer.layer, repeat * steps)
    if isinstance(layer, keras.Model):
        return sum(multiply_adds(inner, repeat) for inner in layer.layers)
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output.shape
        c_in = layer.input.shape[-1]
        total = h * w * c_out * c_in * np.prod(layer.kernel_size)
    elif isinstance(layer, keras.layers.Dense):
        total = layer.input.shape[-1] * layer.units
    elif isinstance(layer, LSTMLocalizer):
        gates = layer.kernel.shape[1]
        total = layer.kernel.shape[0] * gates + layer.steps * (layer.units * gates + layer.units * 6)
    return int(total) * repeat


def cpu_peak_flops():
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as handle:
            mhz = max(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        pass
    return os.cpu_count() * FLOPS_PER_CYCLE * mhz * 1e6, mhz


def build(model_name, precision, steps_per_execution):
    config = TrainConfig(model=model_name, precision=precision, steps_per_execution=steps_per_execution)
    return compile_model(config.build_model(), config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm_stn")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=["float32", "mixed_bfloat16"],
                        help="dtype policies to compare")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--window", type=int, default=30, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size * args.window, 100, 100), dtype=np.uint8)
    labels = rng.integers(0, 10, (len(images), 3))
    dataset = tf_dataset(images, labels, args.batch_size).cache().repeat()
    models = {v: build(args.model, v, args.steps_per_execution) for v in args.variants}
    for model in models.values():  # warm-up: trace and first steps
        model.fit(dataset, steps_per_epoch=args.window // 2, epochs=1, shuffle=False, verbose=0)
    rates = {v: [] for v in args.variants}
    for _ in range(args.windows):
        for variant, model in models.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.window, epochs=1, shuffle=False, verbose=0)
            rates[variant].append(args.window * args.batch_size / (time.perf_counter() - start))

    # Validation as `train` runs it: 10,000 images in batches of 500.
    valid_images = rng.integers(0, 256, (10_000, 100, 100), dtype=np.uint8)
    valid = make_input(valid_images, rng.integers(0, 10, (10_000, 3)), batch_size=500)
    evaluation_seconds = {}
    for variant, model in models.items():
        model.evaluate(valid, verbose=0)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.evaluate(valid, verbose=0)
            times.append(time.perf_counter() - start)
        evaluation_seconds[variant] = statistics.median(times)

    forward = multiply_adds(models[args.variants[0]])
    peak, mhz = cpu_peak_flops()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores at {mhz:.0f} MHz; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}; "
          f"threads intra={tf.config.threading.get_intra_op_parallelism_threads()} "
          f"inter={tf.config.threading.get_inter_op_parallelism_threads()} (0 = all cores)")
    print(f"model {args.model}: {forward / 1e6:.1f} M multiply-adds per image forward, "
          f"~{3 * 2 * forward / 1e6:.0f} MFLOP per image per training step (3 x forward)")
    print(f"peak assumed: {peak / 1e9:.0f} GFLOP/s ({FLOPS_PER_CYCLE} FP32 FLOP/cycle/core)\n")
    print("| variant | images/s (median) | windows | % of FP32 peak | 60k-image epoch | validation (10k) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant, values in rates.items():
        median = statistics.median(values)
        epoch = 60_000 / median
        evaluation = evaluation_seconds[variant]
        print(f"| {variant}, steps_per_execution={args.steps_per_execution} | {median:,.0f} | "
              f"{', '.join(f'{v:,.0f}' for v in values)} | {100 * median * 6 * forward / peak:.0f} % | "
              f"{epoch:.0f} s | {evaluation:.1f} s ({100 * evaluation / epoch:.0f} % of the epoch) |")


if __name__ == "__main__":
    main()
