import json

import keras
import numpy as np
import pytest

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers import IDENTITY_TRANSFORM, AffineGridGenerator
from lstm_stn_tf.layers.layer_test_case import run_layer_test


def identity(batch, steps=None):
    shape = (batch, 6) if steps is None else (batch, steps, 6)
    return np.broadcast_to(np.array(IDENTITY_TRANSFORM, "float32"), shape).copy()


def test_layer_behaviour():
    run_layer_test(AffineGridGenerator, {"output_size": (5, 7)}, identity(2), (2, 5, 7, 2))
    run_layer_test(AffineGridGenerator, {"output_size": (4, 4)}, identity(2, 3), (2, 3, 4, 4, 2))


def test_identity_grid_spans_pixel_centres():
    grid = np.asarray(AffineGridGenerator((3, 5))(identity(1)))[0]
    np.testing.assert_allclose(grid[0, :, 0], [-1, -0.5, 0, 0.5, 1], atol=1e-7)
    np.testing.assert_allclose(grid[:, 0, 1], [-1, 0, 1], atol=1e-7)


def test_affine_map_and_matrix_input():
    theta = np.array([[0.5, 0.1, 0.2, -0.3, 0.25, -0.4]], "float32")
    grid = np.asarray(AffineGridGenerator((4, 6))(theta))[0]
    xs, ys = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 4))
    a, b, tx, c, d, ty = theta[0]
    np.testing.assert_allclose(grid[..., 0], a * xs + b * ys + tx, atol=1e-6)
    np.testing.assert_allclose(grid[..., 1], c * xs + d * ys + ty, atol=1e-6)
    as_matrix = np.asarray(AffineGridGenerator((4, 6))(theta.reshape(1, 2, 3)))[0]
    np.testing.assert_allclose(as_matrix, grid, atol=1e-7)


def test_mixed_precision_dtype_keeps_float32_coordinates():
    theta = np.array([[0.9, 0.013, 0.123, -0.021, 0.87, -0.311]], "float32")
    mixed = AffineGridGenerator((10, 10), dtype="mixed_bfloat16")(theta)
    assert keras.backend.standardize_dtype(mixed.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(AffineGridGenerator((10, 10))(theta)), atol=1e-6)


def test_numpy_integer_size_makes_a_json_config():
    layer = AffineGridGenerator((np.int64(16), np.int32(12)))
    assert layer.output_size == (16, 12)
    assert json.loads(json.dumps(layer.get_config()))["output_size"] == [16, 12]


@pytest.mark.parametrize("size", [(3,), (1, 4), "big", (0, 3), (True, 4), (3.0, 4)])
def test_bad_output_size(size):
    with pytest.raises(UserError, match="output_size"):
        AffineGridGenerator(size)


def test_bad_theta_shape():
    with pytest.raises(UserError, match=r"expected \(batch, 6\)"):
        AffineGridGenerator((3, 3))(np.zeros((2, 5), "float32"))
