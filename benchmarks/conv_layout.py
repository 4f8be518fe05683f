"""Training throughput of `lstm_stn`'s convolution stacks, NHWC against NCHW.

    python benchmarks/conv_layout.py [--windows 7] [--window 30]

The package builds its convolutions in Keras's default channels-last (NHWC)
layout. This times one training step of the two conv stacks `lstm_stn` runs
per batch (the localisation CNN on the 100 x 100 image, the glimpse classifier
on the 3 x 33 x 33 glimpses folded into the batch), built by the package's own
`localisation_features` and `classifier_trunk` under each
`keras.config.image_data_format`, in float32 and mixed_bfloat16, in
interleaved windows in one process so the ratios are meaningful. With one
channel the NHWC -> NCHW input reshape moves no data. Images/s counts images
of 100 x 100 (each with its 3 glimpses).
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lstm_stn_tf  # noqa: E402, F401  (first: it sets TensorFlow's defaults, oneDNN's kernels included)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from train_throughput import interleaved_windows, software  # noqa: E402

from lstm_stn_tf.models.stn import classifier_trunk, localisation_features  # noqa: E402

LAYOUTS = ("channels_last", "channels_first")


def conv_stacks(layout, precision, steps, glimpse=33):
    """The two conv stacks with a small head each, built in `layout`."""
    keras.config.set_image_data_format(layout)
    keras.mixed_precision.set_global_policy(precision)
    try:
        image = keras.Input((100, 100, 1), name="image")
        glimpses = keras.Input((glimpse, glimpse, 1), name="glimpses")
        if layout == "channels_first":  # one channel: the same bytes, NCHW shape
            image_in = keras.layers.Reshape((1, 100, 100))(image)
            glimpses_in = keras.layers.Reshape((1, glimpse, glimpse))(glimpses)
        else:
            image_in, glimpses_in = image, glimpses
        theta = keras.layers.Dense(6, dtype="float32", name="theta")(localisation_features(image_in))
        digits = classifier_trunk(32, 400, "glimpse_features")(glimpses_in)
        digits = keras.layers.Dense(10, dtype="float32", name="digit")(digits)
        model = keras.Model([image, glimpses], [theta, digits])
        model.compile(optimizer="rmsprop", loss=["mse", "mse"], steps_per_execution=steps)
        return model
    finally:
        keras.config.set_image_data_format("channels_last")
        keras.mixed_precision.set_global_policy("float32")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps-per-execution", type=int, default=10)
    parser.add_argument("--window", type=int, default=30, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    args = parser.parse_args()

    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = args.batch_size * args.window
    inputs = (rng.random((n, 100, 100, 1), np.float32), rng.random((3 * n, 33, 33, 1), np.float32))
    targets = (rng.random((n, 6), np.float32), rng.random((3 * n, 10), np.float32))
    # Each batch: 100 images and their 300 glimpses, as lstm_stn's step sees them.
    dataset = tf.data.Dataset.zip(
        tf.data.Dataset.from_tensor_slices((inputs[0], targets[0])).batch(args.batch_size),
        tf.data.Dataset.from_tensor_slices((inputs[1], targets[1])).batch(3 * args.batch_size),
    ).map(lambda a, b: ((a[0], b[0]), (a[1], b[1]))).cache().repeat()

    variants = {(layout, precision): conv_stacks(layout, precision, args.steps_per_execution)
                for precision in args.precisions for layout in LAYOUTS}
    _, seconds, _ = interleaved_windows(
        variants, lambda model: model.fit(dataset, epochs=1, steps_per_epoch=args.window, shuffle=False, verbose=0),
        args.windows)
    rates = {variant: [n / s for s in values] for variant, values in seconds.items()}

    print(f"{os.cpu_count()} cores; {software()}")
    print("| conv layout | precision | images/s (median) | windows | vs channels_last |")
    print("| --- | --- | --- | --- | --- |")
    for (layout, precision), values in rates.items():
        median = statistics.median(values)
        base = statistics.median(rates[("channels_last", precision)])
        print(f"| {layout} | {precision} | {median:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} "
              f"| {median / base:.2f} |")


if __name__ == "__main__":
    main()
