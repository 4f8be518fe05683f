"""Where one `lstm_stn` training step's time goes, part by part (TensorFlow backend).

    python benchmarks/step_profile.py [--precision float32 mixed_bfloat16] [--repeats 7] [--out FILE.md]

Each part of the model is cut out of the package's own `lstm_stn` (same layers,
same weights, batch 100) and timed alone, forward and backward, as a compiled
`tf.function`; the optimizer with the protocol's two-stage clipping, the input
pipeline and the whole `train_step` (what `model.fit` runs) are timed too. The
parts are timed in interleaved rounds in one process (medians), so their
shares are comparable even when the machine's speed drifts. The parts' sum
differs from the whole step: the whole overlaps what the parts do one by one.
Prints a markdown table, and writes it with the machine to `--out`.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lstm_stn_tf  # noqa: E402, F401  (first: it sets TensorFlow's defaults, oneDNN's kernels included)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_stn_tf import machine  # noqa: E402
from lstm_stn_tf.training import TrainConfig, compile_model, training_input  # noqa: E402

BATCH = 100


def _grad_step(function, variables, differentiated, fixed=()):
    """A compiled forward + backward of `function(*differentiated, *fixed)` with respect to
    `variables` and `differentiated`: the gradients a training step needs (none for the image)."""
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(list(differentiated))
            loss = tf.reduce_sum(tf.cast(function(*differentiated, *fixed), tf.float32))
        return tape.gradient(loss, list(variables) + list(differentiated))

    return step


def parts(precision):
    """`{part: zero-argument callable}` timing one batch of each part of `lstm_stn`."""
    config = TrainConfig(precision=precision)
    model = compile_model(config.build_model(), config)
    rng = np.random.default_rng(0)
    image = tf.constant(rng.random((BATCH, 100, 100, 1), np.float32))
    labels = tf.constant(rng.integers(0, 10, (BATCH, 3)), tf.int32)

    def submodel(first, last):
        return keras.Model(model.get_layer(first).input, model.get_layer(last).output)

    localisation = submodel("loc_pool1", "loc_flatten")
    features = localisation(image)
    localizer = model.get_layer("localizer")
    transforms = model.get_layer("transforms")(localizer(features))
    grid_layer, sampler = model.get_layer("grid"), model.get_layer("glimpses")
    glimpses = sampler([image, grid_layer(transforms)])
    classifier = model.get_layer("probabilities")

    timed = {
        "localisation CNN (3 conv + 3 pool)": _grad_step(localisation, localisation.trainable_variables, (), (image,)),
        "LSTM localizer (3 steps) + transform head": _grad_step(localizer, localizer.trainable_variables, (features,)),
        "affine grid + bilinear sampler": _grad_step(lambda t, x: sampler([x, grid_layer(t)]), [], (transforms,), (image,)),
        "glimpse classifier (3 x 33 x 33, folded)": _grad_step(classifier, classifier.trainable_variables, (glimpses,)),
    }

    gradients = [tf.random.normal(v.shape, dtype=v.dtype) * 0.01 for v in model.trainable_variables]
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)

    @tf.function
    def apply():
        optimizer.apply(gradients, model.trainable_variables)

    timed["optimizer: clipping + RMSprop update"] = apply

    # What `lstm-stn train` feeds the protocol's fixed images through (numpy, in Keras's prefetch thread).
    batches = training_input(config, (rng.integers(0, 256, (20 * BATCH, 100, 100), np.uint8),
                                      rng.integers(0, 10, (20 * BATCH, 3))))
    timed["input pipeline (gather, convert, one batch)"] = lambda: batches[0]

    train_step = tf.function(model.train_step)
    timed["whole train_step (what fit runs)"] = lambda: train_step((image, labels))
    return timed


def _sync(value):
    """Waits for a result (TensorFlow runs eagerly-called functions synchronously on the CPU)."""
    for leaf in tf.nest.flatten(value):
        if hasattr(leaf, "numpy"):
            leaf.numpy()


def profile(precision, repeats, calls):
    timed = parts(precision)
    for run in timed.values():  # trace and warm up
        for _ in range(3):
            _sync(run())
    seconds = {name: [] for name in timed}
    for _ in range(repeats):
        for name, run in timed.items():
            start = time.perf_counter()
            for _ in range(calls):
                _sync(run())
            seconds[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in seconds.items()}


def table(results):
    precisions = list(results)
    whole = "whole train_step (what fit runs)"
    lines = ["| part (batch 100, forward + backward) | " + " | ".join(f"{p} ms | share" for p in precisions) + " |",
             "| --- |" + " --- | --- |" * len(precisions)]
    for name in next(iter(results.values())):
        cells = []
        for precision in precisions:
            ms = 1000 * results[precision][name]
            share = "" if name == whole else f"{100 * results[precision][name] / results[precision][whole]:.0f} %"
            cells += [f"{ms:.1f}", share]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (medians are reported)")
    parser.add_argument("--calls", type=int, default=5, help="calls of each part per round")
    parser.add_argument("--out", help="also write the report (machine + table) to this markdown file")
    args = parser.parse_args()
    results = {precision: profile(precision, args.repeats, args.calls) for precision in args.precision}
    description = machine.describe()
    report = "\n".join([
        f"Machine: {description['cpu']}, {description['cpu_count']} cores, flags {' '.join(description['cpu_flags'])}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, TF_ENABLE_ONEDNN_OPTS={description['tf_enable_onednn_opts']}; "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        f"Command: `{'ONEDNN_MAX_CPU_ISA=' + os.environ['ONEDNN_MAX_CPU_ISA'] + ' ' if 'ONEDNN_MAX_CPU_ISA' in os.environ else ''}"
        f"python benchmarks/step_profile.py --precision {' '.join(args.precision)} --repeats {args.repeats} "
        f"--calls {args.calls}{' --out ' + args.out if args.out else ''}`",
        "",
        table(results),
        "",
    ])
    print(report)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(report)


if __name__ == "__main__":
    main()
