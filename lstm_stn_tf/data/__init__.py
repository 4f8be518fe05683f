"""Benchmark data: MNIST, cluttered sequences, and input pipelines."""

from lstm_stn_tf.data.cluttered import BENCHMARKS, SPLIT_SIZES, STRINGS_SPEC, ClutterSpec, generate
from lstm_stn_tf.data.mnist import load_mnist
from lstm_stn_tf.data.pipeline import (
    FreshClutterBatches,
    SequenceBatches,
    load_split,
    load_splits,
    make_input,
    split_digit_corners,
    tf_dataset,
    to_model_input,
)

__all__ = [
    "BENCHMARKS",
    "SPLIT_SIZES",
    "STRINGS_SPEC",
    "ClutterSpec",
    "FreshClutterBatches",
    "SequenceBatches",
    "generate",
    "load_mnist",
    "load_split",
    "load_splits",
    "make_input",
    "split_digit_corners",
    "tf_dataset",
    "to_model_input",
]
