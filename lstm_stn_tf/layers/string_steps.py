import keras
from keras import ops

from lstm_stn_tf.errors import UserError


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class StringSteps(keras.layers.Layer):
    """Per-step class probabilities of a digit string read one step at a time.

    At each step the string either ends, with probability `end`, or goes on
    with a digit: class d < 10 gets `(1 - end) * digits[d]` and the last class
    (the end class, 10) gets `end`, so every step's probabilities sum to 1 and
    a string's probability is the product over its steps up to its end.

    Call arguments:
        inputs: `[digits, end]`: digit probabilities `(batch, steps, classes)`
            and end probabilities `(batch, steps, 1)`.

    Returns:
        `(batch, steps, classes + 1)`.
    """

    def build(self, input_shape):
        if len(input_shape) != 2 or len(input_shape[0]) != 3 or tuple(input_shape[1][1:]) != (input_shape[0][1], 1):
            raise UserError(
                f"{self.name}: inputs have shapes {[tuple(shape) for shape in input_shape]}; expected "
                "[(batch, steps, classes), (batch, steps, 1)]."
            )

    def call(self, inputs):
        digits, end = inputs
        return ops.concatenate([(1.0 - end) * digits, end], axis=-1)

    def compute_output_shape(self, input_shape):
        digits = tuple(input_shape[0])
        return digits[:-1] + (digits[-1] + 1,)
