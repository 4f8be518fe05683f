"""Benchmark data: MNIST, cluttered sequences, and input pipelines."""

from lstm_stn_tf.data.cluttered import SPLIT_SIZES, ClutterSpec, generate
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
    "SPLIT_SIZES",
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
