"""What the recurrent cell's initialisation changes at the start of training.

    python benchmarks/cell_init.py [--seeds 0 1 2 3 4] [--images 300] [--steps 100] [--out benchmarks/cell_init.md]

For each `cell_init` of `lstm_stn` (keras: Glorot-uniform weights and a forget
bias of 1; lasagne: normal weights of standard deviation 0.1 and zero biases)
and each seed, a fresh float32 model reads --images training images and this
records, before any update:

- how much the cell's state varies from image to image (its standard deviation
  over the images, averaged over the 256 units), per step;
- the gradient's norm on the transform head's kernel. The head starts at zero,
  so at first it is the only part of the localiser with a gradient: the cell
  learns only once the head has moved.

Then it trains the model for --steps batches of 100 (the protocol's optimizer
and clipping) and records how far the glimpses have learned to move apart: the
standard deviation over the images of each step's translation, in pixels of
the 100-pixel canvas. RMSprop moves each weight by about the same amount
whatever its gradient's scale, so a head step moves the transforms in
proportion to the states it reads. Prints a markdown table and writes it to --out.
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

from lstm_stn_tf.data import SequenceBatches, load_splits, to_model_input  # noqa: E402
from lstm_stn_tf.models import build_model  # noqa: E402
from lstm_stn_tf.models.stn import CELL_INITS  # noqa: E402
from lstm_stn_tf.paths import atomic_path  # noqa: E402
from lstm_stn_tf.training import TrainConfig, compile_model  # noqa: E402


def start_statistics(cell_init, seed, probe, train, steps):
    """(state spread per step, head gradient norm, translation spread per step
    after `steps` updates) on the `probe` images; `train` holds the updates'."""
    keras.utils.set_random_seed(seed)
    model = build_model("lstm_stn", cell_init=cell_init)
    localizer = model.get_layer("localizer")
    features = keras.Model(model.input, model.get_layer("loc_flatten").output)
    transforms = keras.Model(model.input, model.get_layer("transforms").output)
    images, labels = probe
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, model(images))
    head_gradient = float(tf.norm(tape.gradient(loss, localizer.transform_kernel)))
    spread = np.asarray(localizer.hidden_states(features(images))).std(axis=0).mean(axis=-1)

    compile_model(model, TrainConfig())
    batches = SequenceBatches(*train, batch_size=100, shuffle=True, seed=seed)
    for step in range(steps):
        model.train_on_batch(*batches[step % len(batches)])
    half_canvas = images.shape[1] / 2  # normalised coordinates span [-1, 1]
    translation = np.asarray(transforms(images))[..., :, 2] * half_canvas  # (images, steps, [tx, ty])
    return spread, head_gradient, translation.std(axis=0).mean(axis=-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--images", type=int, default=300, help="images the statistics are taken on")
    parser.add_argument("--steps", type=int, default=100, help="updates before the translations are measured")
    parser.add_argument("--out", default="benchmarks/cell_init.md")
    args = parser.parse_args(argv)

    images, labels = load_splits(names=["train"])["train"]
    images, labels = images[: 100 * args.steps], labels[: 100 * args.steps]  # batches convert them
    probe = to_model_input(images[: args.images]), labels[: args.images]
    lines = [
        f"Medians over seeds {', '.join(map(str, args.seeds))}; float32; statistics on {args.images} training images.",
        "",
        "| cell_init | state spread over images at the start, steps 1 / 2 / 3 | transform head's gradient norm at the start | "
        f"translation spread after {args.steps} updates (pixels), steps 1 / 2 / 3 |",
        "| --- | --- | --- | --- |",
    ]
    for cell_init in CELL_INITS:
        runs = [start_statistics(cell_init, seed, probe, (images, labels), args.steps) for seed in args.seeds]
        spread = np.median([run[0] for run in runs], axis=0)
        gradient = statistics.median(run[1] for run in runs)
        translation = np.median([run[2] for run in runs], axis=0)
        lines.append(f"| {cell_init} | {' / '.join(f'{s:.4f}' for s in spread)} | {gradient:.4f} "
                     f"| {' / '.join(f'{t:.2f}' for t in translation)} |")
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    text = "\n".join(["# The recurrent cell's initialisation at the start of training", "", f"`{command}`", "", *lines]) + "\n"
    print(text)
    with atomic_path(args.out) as temporary:
        temporary.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
