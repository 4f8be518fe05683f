import keras
import numpy as np
from keras import ops

from lstm_stn_tf.errors import UserError


def _pixel_coordinate(normalised, size):
    """[-1, 1] -> [0, size - 1], landing exactly on pixel centres.

    float32 rounding leaves a pixel-centre coordinate up to 0.25 ulp(size)
    off the integer, which would mix in a neighbour by ~1e-6. Values that
    close to an integer are snapped onto it; the gradient passes straight
    through.
    """
    half = 0.5 * (size - 1)
    pixel = normalised * half + half
    nearest = ops.round(pixel)
    tolerance = float(np.finfo(np.float32).eps) * max(size - 1, 1)
    snap = ops.where(ops.abs(nearest - pixel) <= tolerance, nearest - pixel, 0.0)
    return pixel + ops.stop_gradient(snap)


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class BilinearInterpolation(keras.layers.Layer):
    """Samples an image at the points of one or several sampling grids.

    Call arguments:
        inputs: `(image, grid)`; `image` is `(batch, H, W, C)`; `grid` holds
            source coordinates `(x, y)` in [-1, 1] (±1 at the centres of the
            corner pixels) and is `(batch, h, w, 2)` or `(batch, T, h, w, 2)`.

    Returns:
        `(batch, [T,] h, w, C)`. Points outside the image read zero, exactly
        like `keras.ops.image.map_coordinates(order=1, fill_mode="constant")`.

    All T glimpses are gathered from the one image through flat indices, so
    the image is never repeated per step. Gradients reach both the image and
    the grid. Coordinates are computed in float32 whatever the dtype policy
    (the layer's own or the global one): the inputs are not cast to the
    policy's compute dtype on the way in (`autocast=False`): bfloat16
    coordinates would be off by several pixels on a 100-pixel canvas.

    On TensorFlow, training runs the sampling as one XLA-compiled function:
    XLA fuses its few dozen small element-wise ops and the 4 gathers (forward
    and backward 2.8x faster on a 2-core AVX2 CPU, docs/findings.md). Inference
    keeps plain ops, so SavedModel and TFLite graphs hold no XLA cluster.
    """

    def __init__(self, dtype="float32", **kwargs):
        super().__init__(dtype=dtype, autocast=False, **kwargs)
        self._compiled_sample = None  # the XLA-compiled `_sample`, made on the first training call

    def _check_shapes(self, image_shape, grid_shape):
        image_shape, grid_shape = tuple(image_shape), tuple(grid_shape)
        if len(image_shape) != 4:
            raise UserError(
                f"{self.name}: image has shape {image_shape}; expected "
                "(batch, height, width, channels)."
            )
        if len(grid_shape) not in (4, 5) or grid_shape[-1] != 2:
            raise UserError(
                f"{self.name}: grid has shape {grid_shape}; expected "
                "(batch, h, w, 2) or (batch, steps, h, w, 2)."
            )
        if None in image_shape[1:]:
            raise UserError(
                f"{self.name}: image has shape {image_shape}; height, width "
                "and channels must be known."
            )
        if None not in (image_shape[0], grid_shape[0]) and image_shape[0] != grid_shape[0]:
            raise UserError(
                f"{self.name}: image has shape {image_shape} and grid {grid_shape}; "
                "expected the same batch size, one grid per image."
            )
        return image_shape, grid_shape

    def call(self, inputs, training=None):
        image, grid = inputs
        image_shape, grid_shape = self._check_shapes(image.shape, grid.shape)
        if grid_shape[0] == 0:  # JAX's take cannot gather from an empty batch
            return ops.zeros(grid_shape[:-1] + (image_shape[-1],), "float32")
        if training and keras.backend.backend() == "tensorflow":
            if self._compiled_sample is None:
                import tensorflow as tf

                self._compiled_sample = tf.function(self._sample, jit_compile=True)
            return self._compiled_sample(image, grid)
        return self._sample(image, grid)

    def _sample(self, image, grid):
        image_shape, grid_shape = tuple(image.shape), tuple(grid.shape)
        _, height, width, channels = image_shape
        image = ops.cast(image, "float32")
        grid = ops.cast(grid, "float32")
        batch = ops.shape(image)[0]

        # A one-pixel frame of zeros: every corner that falls outside the
        # image is clipped onto the frame and reads zero.
        padded = ops.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
        padded_height, padded_width = height + 2, width + 2
        flat_image = ops.reshape(padded, (-1, channels))

        x = _pixel_coordinate(grid[..., 0], width)
        y = _pixel_coordinate(grid[..., 1], height)
        x0 = ops.floor(x)
        y0 = ops.floor(y)
        wx1 = x - x0
        wy1 = y - y0
        wx0 = 1.0 - wx1
        wy0 = 1.0 - wy1

        # Clipping in float before the cast keeps huge coordinates safe; a
        # NaN coordinate (a diverged transform) reads the zero frame instead
        # of an undefined index, so the NaN shows in the loss, not as a crash.
        def index(coordinate, limit):
            coordinate = ops.where(ops.isnan(coordinate), 0.0, coordinate)
            return ops.cast(ops.clip(coordinate, 0.0, limit), "int32")

        # Indices in the padded image.
        x0i = index(x0 + 1.0, padded_width - 1)
        x1i = index(x0 + 2.0, padded_width - 1)
        y0i = index(y0 + 1.0, padded_height - 1)
        y1i = index(y0 + 2.0, padded_height - 1)

        base_shape = (-1,) + (1,) * (len(grid_shape) - 2)
        base = ops.reshape(
            ops.arange(batch, dtype="int32") * (padded_height * padded_width),
            base_shape,
        )
        row0 = base + y0i * padded_width
        row1 = base + y1i * padded_width

        def read(flat_index):
            return ops.take(flat_image, flat_index, axis=0)

        return (
            read(row0 + x0i) * (wy0 * wx0)[..., None]
            + read(row0 + x1i) * (wy0 * wx1)[..., None]
            + read(row1 + x0i) * (wy1 * wx0)[..., None]
            + read(row1 + x1i) * (wy1 * wx1)[..., None]
        )

    def compute_output_shape(self, input_shape):
        image_shape, grid_shape = self._check_shapes(*input_shape)
        return tuple(grid_shape[:-1]) + (image_shape[-1],)
