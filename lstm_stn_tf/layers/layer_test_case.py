"""A shared check for this package's layers (after keras-hub's TestCase)."""

import copy

import keras
import numpy as np


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, mixed_precision=True):
    """Config round trip, symbolic and eager calls, a fit step, mixed precision.

    `input_data` is one array or a list of arrays (the layer's inputs);
    the fit step trains a model made of the layer plus a dense head when the
    inputs are floating (gradients must flow through the layer).
    """
    layer = layer_cls(**init_kwargs)
    output = layer(input_data)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))

    # Config round trip: same config, and with the same weights the same output.
    config = layer.get_config()
    clone = layer_cls.from_config(copy.deepcopy(config))  # from_config may consume it
    clone(input_data)
    assert clone.get_config() == config
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(input_data)),
        keras.ops.convert_to_numpy(output),
        atol=1e-6,
    )

    # Symbolic call.
    symbolic_inputs = [keras.Input(shape=np.shape(x)[1:], batch_size=None) for x in _as_list(input_data)]
    symbolic = layer_cls(**init_kwargs)(
        symbolic_inputs if isinstance(input_data, (list, tuple)) else symbolic_inputs[0]
    )
    assert tuple(symbolic.shape) == (None,) + tuple(expected_output_shape[1:])

    # A fit step through a model holding the layer.
    model_output = keras.layers.Dense(1)(keras.layers.Flatten()(symbolic))
    model = keras.Model(symbolic_inputs, model_output)
    model.compile(optimizer="sgd", loss="mse")
    targets = np.zeros((np.shape(_as_list(input_data)[0])[0], 1), "float32")
    history = model.fit(
        input_data if isinstance(input_data, (list, tuple)) else input_data,
        targets, epochs=1, batch_size=len(targets), verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])

    if mixed_precision:
        mixed = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
        mixed_output = keras.ops.convert_to_numpy(keras.ops.cast(mixed(input_data), "float32"))
        assert tuple(mixed_output.shape) == tuple(expected_output_shape)
        assert np.all(np.isfinite(mixed_output))
    return layer
