import numpy as np
import pytest

from lstm_stn_tf import UserError
from lstm_stn_tf.layers import StringSteps
from lstm_stn_tf.layers.layer_test_case import run_layer_test

RNG = np.random.default_rng(0)
DIGITS = RNG.dirichlet(np.ones(10), size=(2, 4)).astype("float32")
END = RNG.random((2, 4, 1), dtype="float32")


def test_layer_behaviour():
    run_layer_test(StringSteps, {}, [DIGITS, END], (2, 4, 11))


def test_a_step_ends_or_goes_on_with_a_digit():
    steps = np.asarray(StringSteps()([DIGITS, END]))
    np.testing.assert_allclose(steps[..., 10:], END)
    np.testing.assert_allclose(steps[..., :10], (1 - END) * DIGITS, atol=1e-7)
    np.testing.assert_allclose(steps.sum(-1), 1.0, atol=1e-6)


def test_bad_shapes():
    with pytest.raises(UserError, match="expected \\[\\(batch, steps, classes\\), \\(batch, steps, 1\\)\\]"):
        StringSteps()([DIGITS, END[:, :3]])
