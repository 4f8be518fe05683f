import keras
from keras import ops

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers.arguments import is_integer


def _check_size(output_size):
    if (
        not isinstance(output_size, (list, tuple))
        or len(output_size) != 2
        or not all(is_integer(s) and s >= 2 for s in output_size)
    ):
        raise UserError(
            f"output_size={output_size!r} is not valid: expected two integers "
            "(height, width), each at least 2."
        )
    return tuple(int(s) for s in output_size)  # plain ints: the config is JSON


def normalised_coordinates(size):
    """Pixel centres of an axis of `size` pixels on [-1, 1] (corners at ±1)."""
    return ops.linspace(-1.0, 1.0, size, dtype="float32")


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class AffineGridGenerator(keras.layers.Layer):
    """Maps affine transforms to sampling grids in normalised coordinates.

    `theta` is the row-major 2 x 3 matrix `[a, b, tx, c, d, ty]` that maps an
    output coordinate `(x, y, 1)` to the source coordinate it reads. Both
    coordinate systems span [-1, 1] with ±1 at the centres of the corner
    pixels, so the identity at the input's own size reproduces the input.

    Args:
        output_size: `(height, width)` of the grid, i.e. of the glimpse.

    Call arguments:
        theta: `(batch, 6)` or `(batch, steps, 6)`; `(..., 2, 3)` works too.

    Returns:
        `(batch, [steps,] height, width, 2)` source coordinates `(x, y)`.

    The grid is always computed in float32, whatever the dtype policy (the
    layer's own or the global one): bfloat16 coordinates would be off by
    several pixels on a 100-pixel canvas. `theta` is therefore not cast to
    the policy's compute dtype on the way in (`autocast=False`).
    """

    def __init__(self, output_size, dtype="float32", **kwargs):
        super().__init__(dtype=dtype, autocast=False, **kwargs)
        self.output_size = _check_size(output_size)

    def _theta_rank(self, theta_shape):
        shape = tuple(theta_shape)
        if shape[-2:] == (2, 3):
            shape = shape[:-2] + (6,)
        if len(shape) not in (2, 3) or shape[-1] != 6:
            raise UserError(
                f"{self.name}: theta has shape {tuple(theta_shape)}; expected "
                "(batch, 6), (batch, steps, 6) or those with a trailing (2, 3)."
            )
        return shape

    def call(self, theta):
        shape = self._theta_rank(theta.shape)
        height, width = self.output_size
        xs = normalised_coordinates(width)
        ys = normalised_coordinates(height)
        x_grid = ops.tile(xs[None, :], (height, 1))
        y_grid = ops.tile(ys[:, None], (1, width))
        # Homogeneous output coordinates, one row per output pixel.
        points = ops.stack(
            [ops.reshape(x_grid, (-1,)), ops.reshape(y_grid, (-1,)),
             ops.ones((height * width,), dtype="float32")],
            axis=0,
        )
        matrix = ops.reshape(ops.cast(theta, "float32"), (-1, 2, 3))
        source = ops.matmul(matrix, points)  # (N, 2, h * w)
        source = ops.transpose(source, (0, 2, 1))
        return ops.reshape(source, (-1,) + shape[1:-1] + (height, width, 2))

    def compute_output_shape(self, theta_shape):
        shape = self._theta_rank(theta_shape)
        return shape[:-1] + self.output_size + (2,)

    def get_config(self):
        config = super().get_config()
        config["output_size"] = list(self.output_size)
        return config
