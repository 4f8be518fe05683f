import keras
import numpy as np
import pytest

from lstm_stn_tf import UserError
from lstm_stn_tf.layers import SingleChannelConv2D
from lstm_stn_tf.layers.layer_test_case import run_layer_test

INPUTS = np.random.default_rng(0).uniform(size=(3, 11, 9, 1)).astype("float32")


def test_layer_behaviour():
    run_layer_test(SingleChannelConv2D, {"filters": 4, "kernel_size": 3, "activation": "relu"}, INPUTS, (3, 9, 7, 4))


def _gradients(layer, inputs, weights, training):
    """The output and the gradients of sum(weights * layer(inputs)) for the input and each weight."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = keras.Variable(inputs)
        with tf.GradientTape() as tape:
            output = layer(x.value, training=training)
            total = tf.reduce_sum(weights * output)
        return [output] + tape.gradient(total, [x.value] + [w.value for w in layer.trainable_weights])
    import jax

    def total(values, inputs):
        output, _ = layer.stateless_call(values, [], inputs, training=training)
        return (weights * output).sum(), output

    (input_gradient, weight_gradients), output = jax.grad(total, argnums=(1, 0), has_aux=True)(
        [w.value for w in layer.trainable_weights], inputs
    )
    return [output, input_gradient] + list(weight_gradients)


@pytest.mark.parametrize("kernel_size", [3, (2, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_output_and_gradients_equal_keras_conv2d(kernel_size, training):
    # The reference: Keras's own Conv2D with the same weights, trained through its own gradient.
    reference = keras.layers.Conv2D(5, kernel_size, activation="relu")
    layer = SingleChannelConv2D(5, kernel_size, activation="relu")
    reference.build(INPUTS.shape)
    layer.build(INPUTS.shape)
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    reference.set_weights(layer.get_weights())
    weights = rng.normal(size=reference.compute_output_shape(INPUTS.shape)).astype("float32")
    expected = _gradients(reference, INPUTS, weights, training)
    got = _gradients(layer, INPUTS, weights, training)
    for name, want, have in zip(["output", "input", "kernel", "bias"], expected, got):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(have), keras.ops.convert_to_numpy(want),
                                   rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("option", [{"strides": 2}, {"padding": "same"}, {"dilation_rate": 2}])
def test_other_convolutions_are_refused(option):
    with pytest.raises(UserError, match="not supported"):
        SingleChannelConv2D(4, 3, **option)


def test_more_than_one_channel_is_refused():
    with pytest.raises(UserError, match="expected one channel"):
        SingleChannelConv2D(4, 3)(np.zeros((1, 5, 5, 2), "float32"))
