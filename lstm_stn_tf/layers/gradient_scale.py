import keras
from keras import ops

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers.arguments import is_number


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class GradientScale(keras.layers.Layer):
    """The identity forward; backward, the gradient times `scale`.

    Written `stop_gradient(x) + scale * (x - stop_gradient(x))`, so the output
    is exactly `x` in every precision. A strings model puts it between the
    recurrent cell and its end head: learning when a string ends then moves
    the cell only a little, and the cell learns where to look first
    (docs/findings.md, "Why the strings model does not learn yet").

    Args:
        scale: a number in [0, 1]; 0 stops the gradient, 1 is the identity.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if not is_number(scale) or not 0 <= scale <= 1:
            raise UserError(f"scale={scale!r}: expected a number from 0 to 1.")
        self.scale = float(scale)

    def call(self, inputs):
        held = ops.stop_gradient(inputs)
        return held + ops.cast(self.scale, inputs.dtype) * (inputs - held)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), scale=self.scale)
