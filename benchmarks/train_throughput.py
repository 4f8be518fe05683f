"""Training throughput (images/s) at the protocol's batch size.

    python benchmarks/train_throughput.py [--model lstm_stn] [--variants float32 mixed_bfloat16] [--benchmark strings]

Variants are timed side by side, in interleaved windows in one process, so
their ratio is meaningful even when the machine's speed drifts. Prints the
machine, versions, thread settings, multiply-adds per image and the fraction
of the CPU's peak reached, and what evaluating the 10,000 validation images
costs beside a 60,000-image training epoch. Runs on any Keras backend
(`KERAS_BACKEND=jax` on a GPU machine); the peak fraction is computed for CPUs only.
"""

import argparse
import contextlib
import os
import pathlib
import statistics
import sys
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lstm_stn_tf  # noqa: E402, F401  (first: it sets TensorFlow's defaults, oneDNN's kernels included)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from lstm_stn_tf import machine  # noqa: E402
from lstm_stn_tf.data import BENCHMARKS, generate, make_input, tf_dataset  # noqa: E402
from lstm_stn_tf.layers import FoldedTimeDistributed, LSTMLocalizer  # noqa: E402
from lstm_stn_tf.models import stn  # noqa: E402
from lstm_stn_tf.training import TrainConfig, compile_model  # noqa: E402

def fp32_flops_per_cycle(description):
    """FP32 FLOPs per cycle per core, from the CPU's flags: two FMA pipes of 256 bits (AVX2,
    and AMD Zen 4, which runs AVX-512 as 2 x 256 bit) or of 512 bits (Intel AVX-512).
    An assumption, printed with the result."""
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper().startswith(("AVX2", "AVX", "SSE"))
    wide = "avx512f" in description["cpu_flags"] and "AMD" not in description["cpu"] and not capped
    return 64 if wide else 32


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


def usable_cores():
    """The cores this process may run on (`taskset` narrows them), which its peak is of."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_peak_flops(flops_per_cycle):
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as handle:
            mhz = max(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        pass
    return usable_cores() * flops_per_cycle * mhz * 1e6, mhz


def software():
    """Backend, versions and thread settings, for the report."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        threads = tf.config.threading
        return (f"TensorFlow {tf.__version__}, Keras {keras.__version__}; "
                f"threads intra={threads.get_intra_op_parallelism_threads()} "
                f"inter={threads.get_inter_op_parallelism_threads()} (0 = all cores)")
    if keras.backend.backend() == "jax":
        import jax

        devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        return f"JAX {jax.__version__} on {devices}, Keras {keras.__version__}"
    return f"{keras.backend.backend()}, Keras {keras.__version__}"


def interleaved_windows(models, run_window, windows):
    """Seconds of `run_window(model)` for each model: one warm-up call (tracing,
    compiling, first steps), then `windows` calls each, interleaved so that a
    drift in the machine's speed falls on every model alike.

    Returns `(warm-up seconds, [window seconds], [window CPU seconds])`, each
    keyed like `models`; CPU seconds (all the process's threads) hold still on a
    machine shared with other work, where wall time comes in steps.
    """
    def timed(model):
        start, start_cpu = time.perf_counter(), time.process_time()
        run_window(model)
        return time.perf_counter() - start, time.process_time() - start_cpu

    warm_up = {key: timed(model)[0] for key, model in models.items()}
    seconds = {key: [] for key in models}
    cpu_seconds = {key: [] for key in models}
    for _ in range(windows):
        for key, model in models.items():
            wall, cpu = timed(model)
            seconds[key].append(wall)
            cpu_seconds[key].append(cpu)
    return warm_up, seconds, cpu_seconds


REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "bench"


def naive_reference(steps_per_execution):
    """The straightforward build of `../shared/bench/naive_lstm_stn.py`, compiled as
    `naive_train_speed.py` compiles it: the speed reference, timed in the same windows."""
    sys.path.insert(0, str(REFERENCE))
    from naive_lstm_stn import lstm_stn

    keras.config.set_dtype_policy("float32")
    model = lstm_stn()
    model.compile(keras.optimizers.RMSprop(5e-4, clipnorm=5.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps_per_execution)
    return model


VARIANT_OPTIONS = ("xla", "conv2d")


def keras_conv2d_first():
    """While active, models build with Keras's own Conv2D as the classifiers' first
    convolution: the models before `SingleChannelConv2D`, to time against them."""
    return mock.patch.object(stn, "SingleChannelConv2D", keras.layers.Conv2D)


def build(model_name, variant, steps_per_execution, spec):
    """A compiled model for `variant`: a precision ("auto", "float32", "mixed_bfloat16"),
    with "+xla" for XLA-compiled training steps (`jit_compile=True`) and "+conv2d" for
    Keras's own Conv2D as the classifier's first convolution (before `SingleChannelConv2D`);
    "naive" is the reference."""
    if variant == "naive":
        return naive_reference(steps_per_execution)
    precision, *options = variant.split("+")
    if set(options) - set(VARIANT_OPTIONS):
        raise SystemExit(f"variant {variant!r}: expected a precision with options from {', '.join(VARIANT_OPTIONS)}")
    config, _ = TrainConfig(model=model_name, precision=precision, steps_per_execution=steps_per_execution,
                            spec=spec.key()).resolved()
    with keras_conv2d_first() if "conv2d" in options else contextlib.nullcontext():
        model = compile_model(config.build_model(), config)
    if "xla" in options:
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      steps_per_execution=steps_per_execution, jit_compile=True)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm_stn")
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="protocol",
                        help="the images' benchmark (strings: 1 to 5 digits on 100 x 180); naive runs the protocol's only")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=["float32", "mixed_bfloat16"],
                        help="dtype policies to compare (auto: the training default's choice), each "
                        "optionally with +xla (XLA-compiled steps) and +conv2d (Keras's Conv2D first in the "
                        "classifier), e.g. float32+xla; naive: the straightforward "
                        "build of ../shared/bench, the reference for speed ratios")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--window", type=int, default=30, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs=2, metavar=("INTRA", "INTER"),
                        help="TensorFlow's intra- and inter-op thread pools (default: its own, 0 0 = all cores)")
    args = parser.parse_args()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(args.threads[1])

    spec = BENCHMARKS[args.benchmark]
    if args.benchmark != "protocol" and "naive" in args.variants:
        parser.error("the naive reference reads the protocol's images only; drop it or --benchmark")
    rng = np.random.default_rng(0)
    # Noise for digits: the speed does not depend on what they show, only the labels' form does.
    digits = (rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 1000))
    images, labels = generate(*digits, args.batch_size * args.window, 0, spec)
    if keras.backend.backend() == "tensorflow":
        dataset = tf_dataset(images, labels, args.batch_size).cache().repeat()
        window = dict(steps_per_epoch=args.window)
    else:  # one pass over the window's batches is one window
        dataset, window = make_input(images, labels, args.batch_size), {}
    models = {v: build(args.model, v, args.steps_per_execution, spec) for v in args.variants}
    compile_seconds, seconds, cpu_seconds = interleaved_windows(
        models, lambda model: model.fit(dataset, epochs=1, shuffle=False, verbose=0, **window), args.windows)
    rates = {v: [args.window * args.batch_size / s for s in values] for v, values in seconds.items()}
    cpu_rates = {v: [args.window * args.batch_size / s for s in values] for v, values in cpu_seconds.items()}

    # Validation as `train` runs it: 10,000 images in batches of 500.
    valid = make_input(*generate(*digits, 10_000, 1, spec), batch_size=500)
    evaluation_seconds = {}
    for variant, model in models.items():
        model.evaluate(valid, verbose=0)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.evaluate(valid, verbose=0)
            times.append(time.perf_counter() - start)
        evaluation_seconds[variant] = statistics.median(times)

    # The package's count of the work per image (the reference does the same work).
    forward = multiply_adds(next(models[v] for v in args.variants if v != "naive"))
    description = machine.describe()
    flops_per_cycle = fp32_flops_per_cycle(description)
    peak, mhz = cpu_peak_flops(flops_per_cycle)
    cpu = machine.accelerator() is None
    print(f"machine: {description['cpu']}, {usable_cores()} of {os.cpu_count()} cores at {mhz:.0f} MHz, flags "
          f"{' '.join(description['cpu_flags']) or 'unknown'}; {software()}; "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"model {args.model}, benchmark {args.benchmark}: {forward / 1e6:.1f} M multiply-adds per image forward, "
          f"~{3 * 2 * forward / 1e6:.0f} MFLOP per image per training step (3 x forward)")
    if cpu:
        print(f"peak assumed: {peak / 1e9:.0f} GFLOP/s ({flops_per_cycle} FP32 FLOP/cycle/core)")
    print()
    reference = statistics.median(rates["naive"]) if "naive" in rates else None
    cpu_reference = statistics.median(cpu_rates["naive"]) if "naive" in rates else None
    print("| variant | images/s (median) | ÷ naive | windows | images per CPU-second | ÷ naive | % of FP32 peak "
          "| 60k-image epoch | validation (10k) | warm-up window |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant, values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.2f}" if reference else ""
        per_cpu = statistics.median(cpu_rates[variant])
        cpu_ratio = f"{per_cpu / cpu_reference:.2f}" if cpu_reference else ""
        epoch = 60_000 / median
        evaluation = evaluation_seconds[variant]
        achieved = 6 * median * forward
        fraction = f"{100 * achieved / peak:.0f} %" if cpu else f"({achieved / 1e12:.1f} TFLOP/s; CPU only)"
        print(f"| {variant}, steps_per_execution={args.steps_per_execution} | {median:,.0f} | {ratio} | "
              f"{', '.join(f'{v:,.0f}' for v in values)} | {per_cpu:,.0f} | {cpu_ratio} | {fraction} | "
              f"{epoch:.1f} s | {evaluation:.2f} s ({100 * evaluation / epoch:.0f} % of the epoch) "
              f"| {compile_seconds[variant]:.0f} s |")


if __name__ == "__main__":
    main()
