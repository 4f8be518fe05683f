import keras
import numpy as np

from lstm_stn_tf.layers import FoldedTimeDistributed
from lstm_stn_tf.layers.layer_test_case import run_layer_test

INPUTS = np.random.default_rng(0).random((2, 3, 8, 8, 1), dtype="float32")


def test_layer_behaviour():
    conv = {"layer": keras.layers.Conv2D(4, 3)}
    run_layer_test(FoldedTimeDistributed, conv, INPUTS, (2, 3, 6, 6, 4), mixed_precision=False)


def test_equals_time_distributed():
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(5)])
    folded = np.asarray(FoldedTimeDistributed(inner)(INPUTS))
    looped = np.asarray(keras.layers.TimeDistributed(inner)(INPUTS))
    np.testing.assert_allclose(folded, looped, atol=1e-6)
