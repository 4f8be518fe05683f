"""Inference latency and throughput of an exported model in each format.

    lstm-stn export runs/lstm_stn-seed0-... --out export/lstm_stn
    python benchmarks/inference_latency.py export/lstm_stn [--out benchmarks/inference_latency.md]

Latency is per image at batch 1, the median of --calls calls after warm-up;
throughput is at batch 64. Everything runs on --threads CPU threads (default
one). The formats are timed in interleaved rounds, so a change in the load of
a shared machine falls on all of them alike. Prints a markdown table with the
machine and writes it to --out.
"""

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lstm_stn_tf  # noqa: E402, F401  (first: it sets TensorFlow's defaults, oneDNN's kernels included)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_stn_tf.evaluation import load_model, model_split  # noqa: E402
from lstm_stn_tf.paths import atomic_path  # noqa: E402
from lstm_stn_tf.predictor import Predictor  # noqa: E402

FORMATS = {  # label -> file in the export folder
    "Keras": "model.keras",
    "SavedModel": "saved_model",
    "TFLite float32": "model.tflite",
    "TFLite int8": "model_int8.tflite",
}
THROUGHPUT_BATCH = 64
ROUNDS = 5
WARMUP_CALLS = 10
GOAL_MS = 2.0  # TFLite float32, batch 1, one thread


def cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def seconds_per_call(predict, images, calls):
    """The time of each of `calls` calls of `predict(images)`."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        predict(images)
        times.append(time.perf_counter() - start)
    return times


def measure(predictors, images, calls, throughput_batches):
    """Per format: batch-1 call times and batch-64 call times, over interleaved rounds."""
    single, batched = {name: [] for name in predictors}, {name: [] for name in predictors}
    for predictor in predictors.values():
        seconds_per_call(predictor.predict, images[:1], WARMUP_CALLS)
        seconds_per_call(predictor.predict, images, 2)
    for _ in range(ROUNDS):
        for name, predictor in predictors.items():
            single[name] += seconds_per_call(predictor.predict, images[:1], -(-calls // ROUNDS))
            batched[name] += seconds_per_call(predictor.predict, images, -(-throughput_batches // ROUNDS))
    return single, batched


def report(folder, sizes, single, batched, threads, command):
    versions = ", ".join(f"{package} {importlib.metadata.version(package)}" for package in ("tensorflow", "keras", "ai-edge-litert"))
    calls = len(next(iter(single.values())))
    lines = [
        f"# Inference latency: {folder.name}",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}, {versions}. Load average at the start: {os.getloadavg()[0]:.2f}.",
        "",
        f"{threads} thread(s). Latency: batch 1, median and 90th percentile of {calls} calls after "
        f"{WARMUP_CALLS} warm-up calls. Throughput: batch {THROUGHPUT_BATCH}, from the median of "
        f"{len(next(iter(batched.values())))} batches. Each call is `Predictor.predict` on uint8 images.",
        "",
        "| format | file size | latency, ms/image (median) | p90, ms | throughput, images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in single:
        median = 1000 * statistics.median(single[name])
        p90 = 1000 * float(np.percentile(single[name], 90))
        throughput = THROUGHPUT_BATCH / statistics.median(batched[name])
        lines.append(f"| {name} | {sizes[name] / 1e6:.2f} MB | {median:.2f} | {p90:.2f} | {throughput:.0f} |")
    tflite_ms = 1000 * statistics.median(single["TFLite float32"])
    verdict = "met" if tflite_ms <= GOAL_MS else "not met"
    lines += ["", f"Goal, TFLite float32 at most {GOAL_MS:g} ms/image on one thread: {verdict} ({tflite_ms:.2f} ms).",
              "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", help="a folder written by `lstm-stn export`")
    parser.add_argument("--out", default="benchmarks/inference_latency.md", help="the markdown file (default %(default)s)")
    parser.add_argument("--calls", type=int, default=200, help="batch-1 calls per format (default %(default)s, at least 100)")
    parser.add_argument("--throughput-batches", type=int, default=20, help="batches of 64 per format (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every format (default %(default)s)")
    args = parser.parse_args()
    if args.calls < 100:
        parser.error(f"--calls {args.calls}: the median needs at least 100 calls.")

    # Before TensorFlow first runs: its thread pools are made once.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    folder = pathlib.Path(args.export_dir)
    if not (folder / "export.json").exists():
        parser.error(f"{folder}: not an export folder (no export.json); write one with `lstm-stn export`.")
    sizes = {name: json.loads((folder / "export.json").read_text())["file_bytes"][file] for name, file in FORMATS.items()}
    predictors = {name: Predictor(folder / file, threads=args.threads) for name, file in FORMATS.items()}
    images, _ = model_split(folder, load_model(folder / "model.keras"), "test", THROUGHPUT_BATCH)

    single, batched = measure(predictors, images, args.calls, args.throughput_batches)
    command = shlex.join(["python"] + sys.argv)
    table = report(folder, sizes, single, batched, args.threads, command)
    print(table)
    with atomic_path(args.out) as temporary:
        temporary.write_text(table)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
