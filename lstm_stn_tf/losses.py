"""Losses beyond Keras's own."""

import keras
from keras import ops

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.strings import END_CLASS


def _sparse_crossentropy(labels, probabilities, label_smoothing):
    """Cross-entropy against integer labels, smoothed towards the uniform
    distribution (Keras's sparse cross-entropy has no label smoothing; the
    one-hot one has)."""
    one_hot = ops.one_hot(ops.cast(labels, "int32"), ops.shape(probabilities)[-1], dtype=probabilities.dtype)
    return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels smoothed towards the uniform distribution."""

    def __init__(self, label_smoothing=0.1, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return _sparse_crossentropy(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return dict(super().get_config(), label_smoothing=self.label_smoothing)


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class StringCrossentropy(keras.losses.Loss):
    """Cross-entropy of digit strings read step by step, up to and including their end.

    `y_true` holds labels `(batch, N)`: a string's n digits, then `END_CLASS`;
    `y_pred` per-step probabilities `(batch, N + 1, classes)` (`lstm_stn_tf.strings`).
    Steps k < n are scored against the digits, step n against the end class,
    and the steps after it count for nothing. The loss is the mean over the
    batch's counted steps, sum of cross-entropies / sum of (n + 1).

    For steps made from a length head and digit heads (`layers.EndsFromLength`),
    an image's steps sum to the length head's cross-entropy plus the digit
    heads' up to the length: the loss of Goodfellow et al. (2013).

    Args:
        label_smoothing: as `SmoothedSparseCrossentropy`'s, over the classes.
    """

    def __init__(self, label_smoothing=0.0, name="string_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        if None not in (y_true.shape[-1], y_pred.shape[1]) and y_pred.shape[1] != y_true.shape[-1] + 1:
            raise UserError(
                f"predictions have {y_pred.shape[1]} steps for labels of {y_true.shape[-1]} digits; "
                "expected one step more than the longest string (its end)."
            )
        labels = ops.cast(y_true, "int32")
        # The step after the last digit position ends even the longest string.
        targets = ops.concatenate([labels, ops.full_like(labels[:, :1], END_CLASS)], axis=1)
        lengths = ops.sum(ops.cast(ops.not_equal(labels, END_CLASS), "int32"), axis=1, keepdims=True)
        counted = ops.cast(ops.arange(ops.shape(targets)[1])[None, :] <= lengths, y_pred.dtype)
        per_image = ops.sum(_sparse_crossentropy(targets, y_pred, self.label_smoothing) * counted, axis=1)
        # Each image's share of that mean, for the default reduction (sum / batch), as Keras weighs masked losses.
        batch = ops.cast(ops.shape(labels)[0], y_pred.dtype)
        return per_image * batch / ops.sum(counted)

    def get_config(self):
        return dict(super().get_config(), label_smoothing=self.label_smoothing)
