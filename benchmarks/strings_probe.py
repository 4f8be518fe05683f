"""A short strings training on a variant of the benchmark: does it start to learn?

    python benchmarks/strings_probe.py --run-dir DIR [--spec '{"canvas_width": 100, ...}']
        [--option end_gradient=1.0] [--epochs 10] [--train-size 20000]

The fast recipe (`--recipe fast`: warm-up, cosine, fresh images each epoch, the
Lasagne cell start) with `lstm_stn` on the digit-strings benchmark, each of
its fields replaced by --spec (`ClutterSpec`, e.g. a 100 x 100 canvas of 1 to
3 digits starting within 8 columns of the left edge:
'{"canvas_width": null, "n_digits": 3, "n_clutter": 8, "min_gap": 0, "max_gap": 0, "max_start": 8}'),
--epochs of --train-size images, validated on 5,000. Prints Keras's epoch lines
(string accuracy); `lstm-stn evaluate DIR --split valid` shows where the
glimpses went. Used for docs/findings.md, "Why the strings model does not learn yet".
"""

import argparse
import json

from lstm_stn_tf.cli import _model_option
from lstm_stn_tf.data import STRINGS_SPEC
from lstm_stn_tf.training import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--spec", type=json.loads, default={}, help="ClutterSpec fields over the strings benchmark's")
    parser.add_argument("--option", type=_model_option, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=20_000)
    args = parser.parse_args()
    config = TrainConfig.from_recipe("fast", epochs=args.epochs, train_size=args.train_size, valid_size=5_000,
                                     test_size=1_000, steps_per_execution=10,
                                     spec=dict(STRINGS_SPEC.key(), **args.spec), model_options=dict(args.option))
    train(config, args.run_dir, verbose=2)


if __name__ == "__main__":
    main()
