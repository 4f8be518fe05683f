import keras
from keras import ops

from lstm_stn_tf.errors import UserError


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class SingleChannelConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` over one-channel images (stride 1, valid padding,
    channels last), whose training gradient with respect to its input is a
    matrix product.

    The glimpse classifier's first convolution reads the one-channel glimpse,
    and the gradient that reaches the glimpse (and through it the transforms)
    was the slowest kernel of a training step on every CPU measured: oneDNN's
    backward-data convolution with one input channel, 15-25 % of the step's
    oneDNN time (docs/findings.md, "The slowest kernel of a step"). Here it is
    one product of the output's gradient with the kernel, (pixels, filters) x
    (filters, 9), and 9 shifted sums. The forward pass and the kernel's and
    bias's gradients stay Keras's; so does inference (exports hold no custom
    gradient) and every backend but TensorFlow, whose oneDNN kernel is the slow one.

    Args: those of `keras.layers.Conv2D`, with `strides=1`, `padding="valid"`,
    `dilation_rate=1`, `groups=1` and `data_format="channels_last"`.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        fixed = dict(strides=(1, 1), padding="valid", dilation_rate=(1, 1), groups=1, data_format="channels_last")
        changed = {name: getattr(self, name) for name, value in fixed.items() if getattr(self, name) != value}
        if changed:
            raise UserError(f"{self.name}: {changed} are not supported; expected {fixed}.")

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise UserError(f"{self.name}: input has shape {tuple(input_shape)}; expected one channel.")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if not (training and keras.backend.backend() == "tensorflow"):
            return super().call(inputs)
        # Keras's convolution gives the kernel its gradient, `_input_gradient` the input its own.
        outputs = self.convolution_op(ops.stop_gradient(inputs), self.kernel)
        outputs = _input_gradient(outputs, inputs, ops.stop_gradient(ops.cast(self.kernel, outputs.dtype)))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs)


@ops.custom_gradient
def _input_gradient(outputs, inputs, kernel):
    """`outputs` (= conv(inputs, kernel)) unchanged; backward, the gradient
    passes through to `outputs`, and `inputs` gets the convolution's gradient:
    each output pixel's gradient spread back over its kernel window."""

    def gradient(*args, upstream=None):
        if upstream is None:  # TensorFlow passes it by position
            (upstream,) = args
        rows, columns, _, filters = kernel.shape
        height, width = upstream.shape[1:3]
        windows = ops.matmul(ops.reshape(upstream, (-1, filters)), ops.transpose(ops.reshape(kernel, (-1, filters))))
        windows = ops.reshape(windows, (-1, height, width, rows * columns))
        spread = [
            ops.pad(windows[..., row * columns + column], ((0, 0), (row, rows - 1 - row), (column, columns - 1 - column)))
            for row in range(rows)
            for column in range(columns)
        ]
        return upstream, ops.expand_dims(sum(spread[1:], spread[0]), -1), ops.zeros_like(kernel)

    return outputs, gradient
