import keras
from keras import ops

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers.arguments import is_integer, is_number

IDENTITY_TRANSFORM = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
TRANSFORM_HEAD_SCOPE = "transform_head"
_GATES = {"lstm": 4, "gru": 3}


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
class LSTMLocalizer(keras.layers.Layer):
    """A recurrent localisation network: one affine transform per step.

    The same feature vector is fed to the recurrent cell at each of `steps`
    steps (top-down attention); a dense layer shared by all steps maps the
    cell's state to the 6 affine parameters `[a, b, tx, c, d, ty]`. That
    layer starts with a zero kernel and the identity bias, so every step first
    looks at the whole image (or at `initial_transform`); `transform_rate`
    scales how far the head moves from there, which under RMSprop or Adam is
    how fast it learns.

    Because the input is the same at every step, its projection onto the
    gates is computed once, and the steps are unrolled (few, fixed, and
    converted by TFLite to builtin ops only).

    Args:
        units: size of the recurrent state.
        steps: number of transforms (glimpses) to emit.
        cell: `"lstm"` (the LSTM-STN paper) or `"gru"` (RNN-SPN). The GRU uses
            Keras's `reset_after=True` formulation.
        kernel_initializer, recurrent_initializer: for the cell's weights.
        unit_forget_bias: the LSTM's forget-gate bias starts at 1 (Keras's
            default) rather than 0 (Lasagne's). The other biases, and all of
            the GRU's, start at 0.
        return_states: also return the cell's state after each step, for
            heads that read what the cell knows (when a digit string ends).
        initial_transform: the 6 parameters every step starts with (the
            transform head's bias); default the identity, the whole image.
        transform_rate: a number in (0, 1]; the transforms are
            `rate * (states @ kernel + bias) + (1 - rate) * initial_transform`. An
            adaptive optimizer's steps do not depend on the gradient's scale,
            so at 0.1 the glimpses move a tenth as fast and the classifier
            learns to read before they wander (the strings benchmark).

    Call arguments:
        features: `(batch, features)`.

    Returns:
        `(batch, steps, 6)` transforms, in float32 whatever the policy; with
        `return_states`, `[transforms, states]`, states `(batch, steps, units)`.
    """

    def __init__(
        self,
        units=256,
        steps=3,
        cell="lstm",
        kernel_initializer="glorot_uniform",
        recurrent_initializer="glorot_uniform",
        unit_forget_bias=True,
        return_states=False,
        initial_transform=IDENTITY_TRANSFORM,
        transform_rate=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not is_integer(units) or units < 1:
            raise UserError(f"units={units!r}: expected a positive integer.")
        if not is_integer(steps) or steps < 1:
            raise UserError(f"steps={steps!r}: expected a positive integer.")
        if cell not in _GATES:
            raise UserError(f"cell={cell!r}: expected one of {sorted(_GATES)}.")
        if not isinstance(unit_forget_bias, bool):
            raise UserError(f"unit_forget_bias={unit_forget_bias!r}: expected true or false.")
        if not isinstance(return_states, bool):
            raise UserError(f"return_states={return_states!r}: expected true or false.")
        if (not isinstance(initial_transform, (list, tuple)) or len(initial_transform) != 6
                or not all(is_number(v) for v in initial_transform)):
            raise UserError(f"initial_transform={initial_transform!r}: expected 6 numbers [a, b, tx, c, d, ty].")
        if not is_number(transform_rate) or not 0 < transform_rate <= 1:
            raise UserError(f"transform_rate={transform_rate!r}: expected a number in (0, 1].")
        self.units = int(units)  # plain ints: the config is JSON
        self.steps = int(steps)
        self.cell = cell
        self.unit_forget_bias = unit_forget_bias
        self.return_states = return_states
        self.initial_transform = tuple(float(v) for v in initial_transform)
        self.transform_rate = float(transform_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)

    def build(self, features_shape):
        if len(features_shape) != 2 or features_shape[-1] is None:
            raise UserError(
                f"{self.name}: features have shape {tuple(features_shape)}; "
                "expected (batch, features) with a known feature size."
            )
        gates = _GATES[self.cell] * self.units
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features_shape[-1], gates),
            initializer=self.kernel_initializer,
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.units, gates),
            initializer=self.recurrent_initializer,
        )
        if self.cell == "lstm":
            forget = 1.0 if self.unit_forget_bias else 0.0

            def bias_initializer(shape, dtype=None):
                return ops.concatenate(
                    [ops.zeros((self.units,)), ops.full((self.units,), forget),
                     ops.zeros((2 * self.units,))]
                )

            self.bias = self.add_weight(
                name="bias", shape=(gates,), initializer=bias_initializer
            )
        else:
            self.bias = self.add_weight(name="bias", shape=(gates,), initializer="zeros")
            self.recurrent_bias = self.add_weight(
                name="recurrent_bias", shape=(gates,), initializer="zeros"
            )
        self.transform_kernel = self.add_weight(
            name="transform_kernel",
            shape=(self.units, 6),
            initializer="zeros",
            autocast=False,
        )
        self.transform_bias = self.add_weight(
            name="transform_bias",
            shape=(6,),
            initializer=keras.initializers.Constant(self.initial_transform),
            autocast=False,
        )

    def _lstm_step(self, projected_input, state):
        hidden, carry = state
        z = projected_input + ops.matmul(hidden, self.recurrent_kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        carry = ops.sigmoid(f) * carry + ops.sigmoid(i) * ops.tanh(g)
        hidden = ops.sigmoid(o) * ops.tanh(carry)
        return hidden, (hidden, carry)

    def _gru_step(self, projected_input, state):
        (hidden,) = state
        recurrent = ops.matmul(hidden, self.recurrent_kernel) + self.recurrent_bias
        x_z, x_r, x_h = ops.split(projected_input, 3, axis=-1)
        h_z, h_r, h_h = ops.split(recurrent, 3, axis=-1)
        update = ops.sigmoid(x_z + h_z)
        reset = ops.sigmoid(x_r + h_r)
        candidate = ops.tanh(x_h + reset * h_h)
        hidden = update * hidden + (1.0 - update) * candidate
        return hidden, (hidden,)

    def _unroll(self, features):
        projected = ops.matmul(features, self.kernel) + self.bias
        zeros = ops.zeros_like(projected[:, : self.units])
        if self.cell == "lstm":
            step, state = self._lstm_step, (zeros, zeros)
        else:
            step, state = self._gru_step, (zeros,)
        hiddens = []
        for _ in range(self.steps):
            hidden, state = step(projected, state)
            hiddens.append(hidden)
        return hiddens

    def hidden_states(self, features):
        """The cell's state after each step, `(batch, steps, units)`: what the
        transform head reads."""
        return ops.stack(self._unroll(features), axis=1)

    def call(self, features):
        hiddens = self._unroll(features)  # stacked below, inside the head's scope
        # The transform head runs in float32: a bfloat16 translation would be
        # quantised to ~0.4 pixel on a 100-pixel canvas. Its name scope lets
        # the int8 export keep it in float for the same reason.
        with keras.name_scope(TRANSFORM_HEAD_SCOPE):
            states = ops.stack(hiddens, axis=1)
            transforms = ops.matmul(ops.cast(states, "float32"), self.transform_kernel) + self.transform_bias
            if self.transform_rate != 1:
                start = ops.convert_to_tensor(self.initial_transform, "float32")
                transforms = self.transform_rate * transforms + (1 - self.transform_rate) * start
        return [transforms, states] if self.return_states else transforms

    def compute_output_shape(self, features_shape):
        transforms = (features_shape[0], self.steps, 6)
        return [transforms, (features_shape[0], self.steps, self.units)] if self.return_states else transforms

    def compute_output_spec(self, features):
        transforms = keras.KerasTensor((features.shape[0], self.steps, 6), dtype="float32")
        if not self.return_states:
            return transforms
        return [transforms, keras.KerasTensor((features.shape[0], self.steps, self.units), dtype=self.compute_dtype)]

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            steps=self.steps,
            cell=self.cell,
            unit_forget_bias=self.unit_forget_bias,
            return_states=self.return_states,
            initial_transform=list(self.initial_transform),
            transform_rate=self.transform_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            recurrent_initializer=keras.initializers.serialize(
                self.recurrent_initializer
            ),
        )
        return config
