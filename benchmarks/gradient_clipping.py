"""How often the protocol's two-stage gradient clipping changes the gradient.

    python benchmarks/gradient_clipping.py [--steps 600] [--batches 50] [--trained lstm_stn RUN_DIR ...]
        [--out benchmarks/gradient_clipping.md]

The protocol clips every gradient element to [-1, 1], then the global norm to 5.
This trains a fresh `lstm_stn` (seed 0, float32, the protocol's optimizer) for
--steps batches of its training images and records, per step, how many gradient
elements the first stage clips and the global norm before and after it; then it
records the same, without updating, for each --trained model (by default the
shipped one: the protocol run's best epoch) on --batches training batches.
Prints a markdown table and writes it to --out.
"""

import argparse
import os
import shlex
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lstm_stn_tf  # noqa: E402, F401  (first: it sets TensorFlow's defaults, oneDNN's kernels included)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_stn_tf.data import SequenceBatches, load_splits  # noqa: E402
from lstm_stn_tf.errors import UserError  # noqa: E402
from lstm_stn_tf.evaluation import load_model  # noqa: E402
from lstm_stn_tf.paths import atomic_path  # noqa: E402
from lstm_stn_tf.training import TrainConfig, compile_model  # noqa: E402


def clipping_step(model, config, update):
    """A compiled step that returns `(gradient elements clipped, norm before, norm after
    element clipping)` for one batch, and applies the update when `update`."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=update))
        grads = tape.gradient(loss, model.trainable_variables)
        clipped = sum(tf.reduce_sum(tf.cast(tf.abs(g) > config.clip_value, tf.int32)) for g in grads)
        after = [tf.clip_by_value(g, -config.clip_value, config.clip_value) for g in grads]
        if update:  # the optimizer clips as the protocol does
            model.optimizer.apply(grads, model.trainable_variables)
        return clipped, tf.linalg.global_norm(grads), tf.linalg.global_norm(after)

    return step


def run(step, batches):
    return np.array([[float(value) for value in step(images, labels)] for images, labels in batches])


def table_row(label, stats, clip_norm):
    clipped, before, after = stats.T
    return (f"| {label} | {len(stats)} | {clipped.mean():.1f} | {100 * (clipped > 0).mean():.0f} | "
            f"{statistics.median(before):.2f} | {statistics.median(after):.2f} | {100 * (after > clip_norm).mean():.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps of the fresh model (default %(default)s: one epoch)")
    parser.add_argument("--batches", type=int, default=50, help="batches for each trained model (default %(default)s)")
    parser.add_argument("--trained", nargs="+", default=["lstm_stn"],
                        help="trained models: shipped names, run directories or .keras files (default %(default)s)")
    parser.add_argument("--out", default="benchmarks/gradient_clipping.md", help="the markdown file (default %(default)s)")
    args = parser.parse_args()
    if args.steps < 10 or args.batches < 1:
        parser.error("--steps must be at least 10 and --batches at least 1.")

    try:  # before the training step, so that a wrong path fails at once
        trained_models = {source: load_model(source) for source in args.trained}
    except UserError as error:
        parser.error(str(error))

    config = TrainConfig()
    images, labels = load_splits(config.sizes(), config.data_seed, config.clutter_spec, names=("train",))["train"]
    # Indexable numpy batches, shuffled as training shuffles them.
    batches = SequenceBatches(images, labels, config.batch_size, shuffle=True, seed=config.seed)
    keras.utils.set_random_seed(config.seed)
    fresh = compile_model(config.build_model(), config)
    training = run(clipping_step(fresh, config, update=True), (batches[i % len(batches)] for i in range(args.steps)))
    trained = {source: run(clipping_step(model, config, update=False), (batches[i] for i in range(args.batches)))
               for source, model in trained_models.items()}

    windows = [(0, 10), (10, min(100, args.steps)), (min(100, args.steps), args.steps)]
    lines = [
        "# Gradient clipping under the protocol",
        "",
        f"Clipping: each element to ±{config.clip_value:g}, then the global norm to {config.clip_global_norm:g}. "
        f"`lstm_stn` ({fresh.count_params():,} weights), float32, batches of {config.batch_size} "
        "of the protocol's training images.",
        "",
        "| batches | count | elements clipped per batch (mean) | batches with any element clipped, % | global norm before (median) "
        "| global norm after element clipping (median) | batches scaled down to the global norm, % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [table_row(f"fresh model, training steps {start + 1}-{stop}", training[start:stop], config.clip_global_norm)
              for start, stop in windows if stop > start]
    lines += [table_row(f"`{source}` (trained), no update", stats, config.clip_global_norm) for source, stats in trained.items()]
    lines += ["", "Command: `" + shlex.join(["python"] + sys.argv) + "`", ""]
    report = "\n".join(lines)
    print(report)
    with atomic_path(args.out) as temporary:
        temporary.write_text(report)


if __name__ == "__main__":
    main()
