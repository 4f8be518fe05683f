"""Cluttered-sequence generator speed on one core (goal: >= 20,000 images/s).

    python benchmarks/generator_speed.py [--count 20000] [--repeats 5]

Prints the median images/s over several runs of the protocol's setting
(100 x 100, 3 digits, 8 clutter patches of 9 x 9).
"""

import argparse
import os

# One core: numpy's own threading is off and nothing else is in the loop.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402

from lstm_stn_tf.data.cluttered import ClutterSpec, generate, split_seed  # noqa: E402
from lstm_stn_tf.data.mnist import load_mnist  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    digits, labels = load_mnist()["train"]
    spec = ClutterSpec()
    rates = []
    for repeat in range(args.repeats + 1):
        start = time.perf_counter()
        generate(digits, labels, args.count, split_seed(repeat, "train"), spec)
        if repeat:  # the first run warms caches
            rates.append(args.count / (time.perf_counter() - start))
    print(f"setting: {spec}")
    print(f"runs (images/s): {', '.join(f'{r:,.0f}' for r in rates)}")
    print(f"median: {statistics.median(rates):,.0f} images/s on one core")


if __name__ == "__main__":
    main()
