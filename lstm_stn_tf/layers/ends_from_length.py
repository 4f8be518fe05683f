import keras
from keras import ops

from lstm_stn_tf.errors import UserError


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class EndsFromLength(keras.layers.Layer):
    """A length distribution as step-by-step end probabilities (for `StringSteps`).

    For a string of L = 1 to N digits, the probability that it ends at
    position k given that it reached k, P(L = k) / P(L >= k), for k = 0 to N:
    0 at position 0 (a string has a digit) and 1 at position N. The product
    of the steps, prod_{k < n} (1 - end_k) * end_n, is P(L = n) again.
    Computed as sigmoid(l_k - logsumexp(l_{k+1..N})) from the logits: finite
    where the ratio of probabilities would be 0 / 0.

    Call arguments:
        length_logits: `(batch, N)`, logits over the lengths 1 to N.

    Returns:
        `(batch, N + 1, 1)`.
    """

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise UserError(
                f"{self.name}: length logits have shape {tuple(input_shape)}; expected "
                "(batch, N) with a known number of lengths N."
            )

    def call(self, length_logits):
        never = ops.zeros_like(length_logits[:, :1])
        ends = [never]
        for k in range(1, length_logits.shape[-1]):  # the logit of length k is at index k - 1
            longer = ops.logsumexp(length_logits[:, k:], axis=-1, keepdims=True)
            ends.append(ops.sigmoid(length_logits[:, k - 1 : k] - longer))
        ends.append(never + 1.0)
        return ops.expand_dims(ops.concatenate(ends, axis=-1), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] + 1, 1)
