import numpy as np
import pytest

from lstm_stn_tf import UserError
from lstm_stn_tf.layers import EndsFromLength
from lstm_stn_tf.layers.layer_test_case import run_layer_test

LOGITS = np.random.default_rng(0).normal(0, 2, (3, 4)).astype("float32")


def test_layer_behaviour():
    run_layer_test(EndsFromLength, {}, LOGITS, (3, 5, 1))


def test_the_steps_multiply_back_to_the_length_distribution():
    end = np.asarray(EndsFromLength()(LOGITS))[..., 0].astype(np.float64)
    assert np.all(end[:, 0] == 0) and np.all(end[:, -1] == 1)  # a string has a digit, and at most 4
    lengths = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
    for n in range(1, 5):  # P(L = n) = prod_{k < n} (1 - end_k) * end_n
        np.testing.assert_allclose(np.prod(1 - end[:, :n], axis=1) * end[:, n], lengths[:, n - 1], rtol=1e-5)


def test_finite_where_the_probabilities_vanish():
    certain = np.array([[80.0, -80.0, -80.0]], "float32")  # P(L >= 2) ~ 1e-70: 0 in float32
    end = np.asarray(EndsFromLength()(certain))[0, :, 0]
    np.testing.assert_allclose(end, [0.0, 1.0, 0.5, 1.0], atol=1e-6)


def test_bad_shape():
    with pytest.raises(UserError, match="expected \\(batch, N\\)"):
        EndsFromLength()(LOGITS[:, :, None])
