"""The protocol's optimizers: RMSprop (and AdamW, a named option) with two-stage clipping."""

import keras
from keras import ops


class _ProtocolClipping:
    """Clips each gradient element-wise, then by global norm; a limit of
    None skips its stage (the `--no-clipping` option skips both).

    Keras optimizers accept only one of `clipvalue` and `global_clipnorm`;
    the protocol applies both, in this order.
    """

    def __init__(self, clip_value=1.0, clip_global_norm=5.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = clip_value
        self.clip_global_norm = clip_global_norm

    def _clip_gradients(self, grads):
        if self.clip_value is not None:
            grads = [None if g is None else ops.clip(g, -self.clip_value, self.clip_value) for g in grads]
        if self.clip_global_norm is None:
            return grads
        present = [g for g in grads if g is not None]
        norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in present))
        scale = ops.minimum(1.0, self.clip_global_norm / ops.maximum(norm, 1e-12))
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]

    def get_config(self):
        config = super().get_config()
        config.update(clip_value=self.clip_value, clip_global_norm=self.clip_global_norm)
        return config


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class ClippedRMSprop(_ProtocolClipping, keras.optimizers.RMSprop):
    """The protocol's optimizer: RMSprop with its two-stage gradient clipping."""


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class ClippedAdamW(_ProtocolClipping, keras.optimizers.AdamW):
    """AdamW (a named option) with the protocol's two-stage gradient clipping."""
