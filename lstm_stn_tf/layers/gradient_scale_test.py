import keras
import numpy as np
import pytest
from keras import ops

from lstm_stn_tf import UserError
from lstm_stn_tf.layers import GradientScale
from lstm_stn_tf.layers.layer_test_case import run_layer_test

INPUTS = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")


def test_layer_behaviour():
    run_layer_test(GradientScale, {"scale": 0.1}, INPUTS, (3, 4, 5))


@pytest.mark.parametrize("scale", [0.0, 0.1, 1.0])
def test_the_output_is_the_input_and_the_gradient_is_scaled(scale):
    # A gradient of sum(weights * output) with respect to the input, on the backend in use.
    x = keras.Variable(INPUTS)
    weights = np.random.default_rng(1).normal(size=INPUTS.shape).astype("float32")
    layer = GradientScale(scale)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(INPUTS)), INPUTS)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = tf.reduce_sum(weights * layer(x.value))
        gradient = tape.gradient(total, x.value)
    else:
        import jax

        gradient = jax.grad(lambda v: (weights * layer(v)).sum())(INPUTS)
    np.testing.assert_allclose(ops.convert_to_numpy(gradient), scale * weights, rtol=1e-6)


@pytest.mark.parametrize("scale", [-0.1, 1.5, True, "0.1"])
def test_bad_scale(scale):
    with pytest.raises(UserError, match="expected a number from 0 to 1"):
        GradientScale(scale)
