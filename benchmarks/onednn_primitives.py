"""Where oneDNN's time goes in a training step, primitive by primitive.

    python benchmarks/onednn_primitives.py [--model lstm_stn] [--precision float32] [--calls 5] [--top 25] [--conv2d]

Runs itself again with `ONEDNN_VERBOSE=1` (it must be set before TensorFlow
loads), times `--calls` `train_on_batch` calls of batch 100 after 3 warm-up
calls, and prints each primitive's milliseconds per call (kind, implementation,
propagation and shapes, e.g. `mb300_ic1oc32_ih33oh31kh3`: batch 300, 1 input
and 32 output channels, 33 -> 31 rows, 3 x 3 kernel), largest first, and their
total. Honours `ONEDNN_MAX_CPU_ISA`. `--conv2d` builds the model with Keras's own
Conv2D as the classifiers' first convolution (before `SingleChannelConv2D`).
"""

import argparse
import collections
import contextlib
import os
import subprocess
import sys

MARK = "-- timed calls start --"


def timed_calls(args):
    import lstm_stn_tf  # noqa: F401  (first: it turns on oneDNN's kernels)
    import numpy as np
    from train_throughput import keras_conv2d_first

    from lstm_stn_tf.training import TrainConfig, compile_model

    config, _ = TrainConfig(model=args.model, precision=args.precision).resolved()
    with keras_conv2d_first() if args.conv2d else contextlib.nullcontext():
        model = compile_model(config.build_model(), config)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(100,) + tuple(model.input.shape[1:])).astype("float32")
    labels = rng.integers(0, 10, (100,) + tuple(model.output.shape[1:-1]))
    for _ in range(3):
        model.train_on_batch(images, labels)
    print(MARK, flush=True)
    for _ in range(args.calls):
        model.train_on_batch(images, labels)


def summary(log, calls, top):
    """Milliseconds per call of each primitive in the oneDNN log after the mark."""
    per_primitive = collections.defaultdict(float)
    timed = False
    for line in log.splitlines():
        timed = timed or line.startswith(MARK)
        if not timed or ",exec," not in line:
            continue
        fields = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,KIND,IMPLEMENTATION,PROPAGATION,...,PROBLEM,MILLISECONDS
        per_primitive[(fields[5], fields[6], fields[7], fields[-2])] += float(fields[-1]) / calls
    rows = sorted(per_primitive.items(), key=lambda item: -item[1])
    for (kind, implementation, propagation, problem), milliseconds in rows[:top]:
        print(f"{milliseconds:8.2f} ms  {kind} {propagation} {implementation}  {problem}")
    print(f"{sum(per_primitive.values()):8.2f} ms  all {len(rows)} primitives, per call")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm_stn")
    parser.add_argument("--precision", default="float32", choices=["auto", "float32", "mixed_bfloat16"])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--conv2d", action="store_true", help="Keras's Conv2D first in the classifiers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return timed_calls(args)
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.run([sys.executable, __file__, "--child"] + sys.argv[1:], env=env,
                           capture_output=True, text=True)
    if child.returncode:
        sys.exit(child.stderr[-2000:])
    first = "Keras's Conv2D" if args.conv2d else "SingleChannelConv2D"
    print(f"{args.model} ({first} first in the classifier), {args.precision}, "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}")
    summary(child.stdout, args.calls, args.top)


if __name__ == "__main__":
    main()
