import keras
import numpy as np
import pytest
from keras import ops

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers import AffineGridGenerator, BilinearInterpolation
from lstm_stn_tf.layers.affine_grid_generator_test import identity
from lstm_stn_tf.layers.layer_test_case import run_layer_test

RNG = np.random.default_rng(0)


def sample(image, theta, size):
    grid = AffineGridGenerator(size)(theta)
    return np.asarray(BilinearInterpolation()([image, grid]))


def oracle(image, theta, size):
    """The same sampling with keras.ops.image.map_coordinates (order 1, zeros outside)."""
    batch, height, width, channels = image.shape
    out = np.zeros((batch, *size, channels), "float32")
    xs, ys = np.meshgrid(np.linspace(-1, 1, size[1]), np.linspace(-1, 1, size[0]))
    for n in range(batch):
        a, b, tx, c, d, ty = theta[n]
        sx = (a * xs + b * ys + tx + 1) * (width - 1) / 2
        sy = (c * xs + d * ys + ty + 1) * (height - 1) / 2
        for k in range(channels):
            out[n, ..., k] = np.asarray(ops.image.map_coordinates(
                image[n, ..., k], [sy, sx], order=1, fill_mode="constant", fill_value=0.0
            ))
    return out


def test_layer_behaviour():
    image = RNG.random((2, 12, 10, 3), dtype="float32")
    grid = np.asarray(AffineGridGenerator((5, 4))(identity(2, 3)))
    run_layer_test(BilinearInterpolation, {}, [image, grid], (2, 3, 5, 4, 3))


def test_identity_returns_the_image():
    image = RNG.random((3, 100, 100, 1), dtype="float32")
    assert np.max(np.abs(sample(image, identity(3), (100, 100)) - image)) < 1e-6


def rotation(angle, scale=1.0, tx=0.0, ty=0.0):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return [c, -s, tx, s, c, ty]


@pytest.mark.parametrize(
    "theta",
    [
        [1, 0, 0.3, 0, 1, -0.2],  # translation
        [1, 0, 1.5, 0, 1, 0],  # mostly outside: zeros
        [0.33, 0, -0.4, 0, 0.33, 0.1],  # zoom in (a glimpse)
        [1.4, 0, 0, 0, 1.4, 0],  # zoom out past the borders
        rotation(0.5),
        rotation(-2.0, 0.7, 0.1, 0.2),
        [0.8, 0.3, 0.05, -0.2, 0.9, 0.0],  # general affine
    ],
)
def test_matches_map_coordinates(theta):
    image = RNG.random((2, 20, 17, 2), dtype="float32")
    theta = np.array([theta, identity(1)[0]], "float32")
    np.testing.assert_allclose(sample(image, theta, (9, 11)), oracle(image, theta, (9, 11)), atol=1e-5)


def test_steps_are_sampled_from_one_image():
    image = RNG.random((2, 30, 30, 1), dtype="float32")
    thetas = np.array([[[0.5, 0, -0.5, 0, 0.5, 0], [0.5, 0, 0.5, 0, 0.5, 0]]] * 2, "float32")
    together = sample(image, thetas, (8, 8))
    assert together.shape == (2, 2, 8, 8, 1)
    for step in range(2):
        np.testing.assert_allclose(together[:, step], sample(image, thetas[:, step], (8, 8)), atol=1e-7)


def test_gradient_wrt_theta_matches_finite_differences():
    import tensorflow as tf

    # A smooth image keeps the piecewise-linear sampler away from kinks.
    ys, xs = np.mgrid[0:24, 0:24] / 23.0
    image = (np.sin(3 * xs) * np.cos(2 * ys))[None, :, :, None].astype("float32")
    theta = tf.Variable([[0.6, 0.1, 0.13, -0.05, 0.7, -0.11]])
    weights = RNG.random((1, 7, 7, 1), dtype="float32")
    grids, sampler = AffineGridGenerator((7, 7)), BilinearInterpolation()

    def loss(t):
        return tf.reduce_sum(sampler([image, grids(t)]) * weights)

    with tf.GradientTape() as tape:
        value = loss(theta)
    analytic = tape.gradient(value, theta).numpy()[0]
    numeric = np.zeros(6)
    eps = 1e-3
    for i in range(6):
        step = np.zeros((1, 6), "float32")
        step[0, i] = eps
        numeric[i] = (loss(theta + step) - loss(theta - step)).numpy() / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-3)
    assert np.all(analytic != 0)


def test_gradient_reaches_the_image():
    import tensorflow as tf

    image = tf.Variable(RNG.random((1, 10, 10, 1), dtype="float32"))
    with tf.GradientTape() as tape:
        out = BilinearInterpolation()([image, AffineGridGenerator((5, 5))(identity(1) * [0.5, 1, 1, 1, 0.5, 1])])
        total = tf.reduce_sum(out)
    gradient = tape.gradient(total, image).numpy()
    assert gradient.sum() == pytest.approx(25.0, rel=1e-5)  # bilinear weights sum to one


def test_training_samples_and_differentiates_as_inference_does():
    # On TensorFlow, training runs the sampler XLA-compiled; it must be the same function.
    import tensorflow as tf

    image = tf.Variable(RNG.random((2, 30, 26, 2), dtype="float32"))
    theta = tf.Variable(np.array([[rotation(0.4, 0.5, 0.2, -0.1), [1, 0, 1.5, 0, 1, 0]]] * 2, "float32"))
    weights = RNG.random((2, 2, 9, 11, 2), dtype="float32")
    grids, sampler = AffineGridGenerator((9, 11)), BilinearInterpolation()
    results = []
    for training in (False, True):
        with tf.GradientTape() as tape:
            out = sampler([image, grids(theta)], training=training)
            total = tf.reduce_sum(out * weights)
        results.append([out.numpy()] + [g.numpy() for g in tape.gradient(total, [theta, image])])
    for plain, compiled in zip(*results):  # float32 sums in another order: equal to 1e-5 of the largest
        np.testing.assert_allclose(compiled, plain, atol=1e-5 * np.abs(plain).max())
    assert np.abs(results[0][1]).sum() > 0


def test_mixed_precision_keeps_float32_coordinates():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = BilinearInterpolation()
        assert layer.compute_dtype == "float32"
        image = RNG.random((1, 100, 100, 1), dtype="float32")
        out = sample(image, identity(1), (100, 100))
        assert np.max(np.abs(out - image)) < 1e-6
    finally:
        keras.config.set_dtype_policy("float32")


def test_mixed_precision_dtype_keeps_float32_coordinates():
    image = RNG.random((2, 100, 100, 1), dtype="float32")
    theta = np.array([[0.9, 0.013, 0.123, -0.021, 0.87, -0.311]] * 2, "float32")
    grid = np.asarray(AffineGridGenerator((33, 33))(theta))
    mixed = BilinearInterpolation(dtype="mixed_bfloat16")([image, grid])
    assert keras.backend.standardize_dtype(mixed.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(BilinearInterpolation()([image, grid])), atol=1e-6)


def test_an_empty_batch_samples_nothing():
    grid = np.zeros((0, 3, 4, 4, 2), "float32")
    out = BilinearInterpolation()([np.zeros((0, 10, 10, 2), "float32"), grid])
    assert tuple(out.shape) == (0, 3, 4, 4, 2)


def test_bad_shapes():
    image = np.zeros((2, 10, 10, 1), "float32")
    with pytest.raises(UserError, match="image has shape"):
        BilinearInterpolation()([image[0], np.zeros((2, 4, 4, 2), "float32")])
    with pytest.raises(UserError, match="grid has shape"):
        BilinearInterpolation()([image, np.zeros((2, 4, 4, 3), "float32")])
    with pytest.raises(UserError, match=r"image has shape \(2, 10, 10, 1\) and grid \(3, 4, 4, 2\); expected the same batch"):
        BilinearInterpolation()([image, np.zeros((3, 4, 4, 2), "float32")])
