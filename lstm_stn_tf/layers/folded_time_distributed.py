import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class FoldedTimeDistributed(keras.layers.Wrapper):
    """`TimeDistributed` that folds the steps into the batch.

    Keras's `TimeDistributed` calls the wrapped layer once per step; folding
    `(batch, steps, ...)` into `(batch * steps, ...)` runs it once on a larger
    batch, which is faster and exports to a single TFLite subgraph.
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build((None,) + tuple(input_shape[2:]))
        self.built = True

    def call(self, inputs, training=None):
        steps = inputs.shape[1]
        folded = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        outputs = self.layer(folded, training=training)
        return ops.reshape(outputs, (-1, steps) + tuple(outputs.shape[1:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])
