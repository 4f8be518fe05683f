import json

import keras
import numpy as np
import pytest

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers import IDENTITY_TRANSFORM, LSTMLocalizer
from lstm_stn_tf.layers.layer_test_case import run_layer_test

FEATURES = np.random.default_rng(0).random((4, 12), dtype="float32")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_behaviour(cell):
    run_layer_test(LSTMLocalizer, {"units": 8, "steps": 3, "cell": cell}, FEATURES, (4, 3, 6))


def test_layer_behaviour_with_lasagne_style_initialisation():
    normal = {"class_name": "RandomNormal", "config": {"stddev": 0.1}}
    options = {"units": 8, "kernel_initializer": normal, "recurrent_initializer": normal, "unit_forget_bias": False}
    run_layer_test(LSTMLocalizer, options, FEATURES, (4, 3, 6))


def test_starts_at_the_identity():
    theta = np.asarray(LSTMLocalizer(units=8, steps=3)(FEATURES))
    np.testing.assert_array_equal(theta, np.broadcast_to(IDENTITY_TRANSFORM, (4, 3, 6)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_keras_recurrent_layer_fed_the_same_vector(cell):
    localizer = LSTMLocalizer(units=5, steps=3, cell=cell)
    localizer(FEATURES)
    reference = (
        keras.layers.LSTM(5, return_sequences=True, unit_forget_bias=False)
        if cell == "lstm"
        else keras.layers.GRU(5, return_sequences=True, reset_after=True)
    )
    repeated = np.repeat(FEATURES[:, None], 3, axis=1)
    reference(repeated)
    weights = [localizer.kernel, localizer.recurrent_kernel, localizer.bias]
    if cell == "gru":
        weights = [localizer.kernel, localizer.recurrent_kernel,
                   np.stack([np.asarray(localizer.bias), np.asarray(localizer.recurrent_bias)])]
        localizer.recurrent_bias.assign(np.random.default_rng(1).normal(size=15))
        weights[2] = np.stack([np.asarray(localizer.bias), np.asarray(localizer.recurrent_bias)])
    reference.set_weights([np.asarray(w) for w in weights])
    projection = np.random.default_rng(2).normal(size=(5, 6)).astype("float32")
    localizer.transform_kernel.assign(projection)
    hidden = np.asarray(reference(repeated))
    expected = hidden @ projection + np.array(IDENTITY_TRANSFORM)
    np.testing.assert_allclose(np.asarray(localizer(FEATURES)), expected, atol=1e-5)


def test_output_is_float32_under_mixed_precision():
    layer = LSTMLocalizer(units=8, steps=2, dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(layer(FEATURES).dtype) == "float32"


def test_numpy_integers_make_a_json_config():
    layer = LSTMLocalizer(units=np.int64(16), steps=np.int32(2))
    assert layer(FEATURES).shape == (4, 2, 6)
    config = json.loads(json.dumps(layer.get_config()))
    assert (config["units"], config["steps"]) == (16, 2)


@pytest.mark.parametrize("kwargs, match", [({"units": 0}, "units"), ({"steps": -1}, "steps"), ({"cell": "rnn"}, "cell"),
                                                   ({"unit_forget_bias": 1}, "unit_forget_bias"), ({"units": True}, "units"),
                                                   ({"units": 16.0}, "units"), ({"return_states": "yes"}, "return_states"),
                                                   ({"transform_rate": 0}, "transform_rate"),
                                                   ({"transform_rate": 1.5}, "transform_rate"),
                                                   ({"initial_transform": [1, 0, 0]}, "initial_transform")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        LSTMLocalizer(**kwargs)


def test_bad_feature_shape():
    with pytest.raises(UserError, match="expected \\(batch, features\\)"):
        LSTMLocalizer()(np.zeros((2, 3, 4), "float32"))


def test_hidden_states_are_what_the_transform_head_reads():
    localizer = LSTMLocalizer(units=8, steps=3)
    projection = np.random.default_rng(3).normal(size=(8, 6)).astype("float32")
    localizer(FEATURES)
    localizer.transform_kernel.assign(projection)
    states = np.asarray(localizer.hidden_states(FEATURES))
    assert states.shape == (4, 3, 8)
    assert not np.allclose(states[:, 0], states[:, 1])  # the steps differ
    np.testing.assert_allclose(np.asarray(localizer(FEATURES)), states @ projection + np.array(IDENTITY_TRANSFORM), atol=1e-6)


def test_return_states_gives_the_states_the_transform_head_reads():
    localizer = LSTMLocalizer(units=8, steps=3, return_states=True)
    transforms, states = localizer(FEATURES)
    np.testing.assert_allclose(np.asarray(states), np.asarray(localizer.hidden_states(FEATURES)), atol=1e-6)
    plain = LSTMLocalizer.from_config({**localizer.get_config(), "return_states": False})
    plain(FEATURES)
    plain.set_weights(localizer.get_weights())
    np.testing.assert_array_equal(np.asarray(plain(FEATURES)), np.asarray(transforms))
    symbolic = LSTMLocalizer.from_config(localizer.get_config())(keras.Input((12,)))
    assert [tuple(output.shape) for output in symbolic] == [(None, 3, 6), (None, 3, 8)]


def test_transform_rate_scales_how_far_the_head_moves_from_the_identity():
    full, slow = LSTMLocalizer(units=8, steps=3), LSTMLocalizer(units=8, steps=3, transform_rate=0.1)
    full(FEATURES)
    np.testing.assert_array_equal(np.asarray(slow(FEATURES)), np.broadcast_to(IDENTITY_TRANSFORM, (4, 3, 6)))
    full.transform_kernel.assign(np.random.default_rng(4).normal(size=(8, 6)).astype("float32"))
    full.transform_bias.assign(np.array(IDENTITY_TRANSFORM, "float32") + 0.5)
    slow.set_weights(full.get_weights())
    moved = np.asarray(full(FEATURES)) - np.array(IDENTITY_TRANSFORM)
    np.testing.assert_allclose(np.asarray(slow(FEATURES)) - np.array(IDENTITY_TRANSFORM), 0.1 * moved, atol=1e-6)
    assert LSTMLocalizer.from_config(slow.get_config()).transform_rate == 0.1


def test_every_step_starts_at_the_initial_transform():
    window = [0.55, 0.0, -0.45, 0.0, 1.0, 0.0]  # the left 100 columns of a 180-column canvas
    layer = LSTMLocalizer(units=8, steps=3, initial_transform=window, transform_rate=0.5)
    np.testing.assert_allclose(np.asarray(layer(FEATURES)), np.broadcast_to(window, (4, 3, 6)), atol=1e-7)
    assert LSTMLocalizer.from_config(json.loads(json.dumps(layer.get_config()))).initial_transform == tuple(window)
