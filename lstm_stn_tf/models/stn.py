"""The protocol's four models (shared/protocol.md, "Models").

All convolutions are 3 x 3, valid padding, ReLU; pools are 2 x 2. Every model
maps an image `(batch, H, W, 1)` in [0, 1] to per-digit class probabilities
`(batch, n_digits, 10)`; with `variable_length=True`, it reads strings of 1 to
`n_digits` digits (shared/protocol.md, "Digit strings") and gives per-step
probabilities `(batch, n_digits + 1, 11)`: step k < n the k-th digit, step n
the end class (`layers.StringSteps`, `lstm_stn_tf.strings`). Models with a
transformer also have a layer named `transforms` whose output is
`(batch, steps, 2, 3)` and one named `glimpses`; `attention_model` exposes them.
"""

import inspect

import keras
from keras import layers

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers import (
    IDENTITY_TRANSFORM,
    AffineGridGenerator,
    BilinearInterpolation,
    EndsFromLength,
    FoldedTimeDistributed,
    GradientScale,
    LSTMLocalizer,
    SingleChannelConv2D,
    StringSteps,
)
from lstm_stn_tf.models.registry import register_model

N_CLASSES = 10
# How the recurrent cell starts. "keras": Glorot-uniform weights and a forget
# bias of 1 (Keras's LSTM). "lasagne": every gate weight from a normal of
# standard deviation 0.1 and all biases 0 (Lasagne's defaults, which the
# RNN-SPN code trained with).
_LASAGNE_NORMAL = {"class_name": "RandomNormal", "config": {"stddev": 0.1}}
CELL_INITS = {
    "keras": dict(kernel_initializer="glorot_uniform", recurrent_initializer="glorot_uniform", unit_forget_bias=True),
    "lasagne": dict(kernel_initializer=_LASAGNE_NORMAL, recurrent_initializer=_LASAGNE_NORMAL, unit_forget_bias=False),
}
# Where a strings model's steps first look: a box the size of one MNIST digit (28 pixels) with a
# margin, (rows, columns), at the canvas's centre. Starting from the whole 180-column canvas, the
# glimpses stayed two digits wide and learnt three times slower (docs/findings.md).
DIGIT_BOX_PIXELS = (40, 36)


def digit_box(image_size):
    """The affine transform `[a, b, tx, c, d, ty]` of a `DIGIT_BOX_PIXELS` box at the centre of
    an `image_size` canvas (at most the whole canvas)."""
    (height, width), (box_height, box_width) = image_size, DIGIT_BOX_PIXELS
    return (min(1.0, box_width / width), 0.0, 0.0, 0.0, min(1.0, box_height / height), 0.0)


def _conv_stack_size(size, pool_first):
    """Spatial size after [pool] conv pool conv pool conv (3 x 3 valid, 2 x 2)."""
    stages = ["pool", "conv", "pool", "conv", "pool", "conv"]
    for stage in stages if pool_first else stages[1:]:
        size = size // 2 if stage == "pool" else size - 2
        if size < 1:
            return 0
    return size


def _check_sizes(image_size, n_digits, variable_length, glimpse_size=None):
    image_size = _pair("image_size", image_size)
    if not isinstance(n_digits, int) or n_digits < 1:
        raise UserError(f"n_digits={n_digits!r}: expected a positive integer.")
    if not isinstance(variable_length, bool):
        raise UserError(f"variable_length={variable_length!r}: expected true or false.")
    if _conv_stack_size(min(image_size), pool_first=True) < 1:
        raise UserError(
            f"image_size={image_size} is too small for the localisation network "
            "(pool, 3 conv + pool stages); expected at least 36 x 36."
        )
    if glimpse_size is None:
        return image_size, None
    glimpse_size = _pair("glimpse_size", glimpse_size)
    if glimpse_size[0] > image_size[0] or glimpse_size[1] > image_size[1]:
        raise UserError(
            f"glimpse_size={glimpse_size} is larger than image_size={image_size}; "
            "a glimpse must fit in the canvas."
        )
    if _conv_stack_size(min(glimpse_size), pool_first=False) < 1:
        raise UserError(
            f"glimpse_size={glimpse_size} is too small for the classifier "
            "(3 conv stages, 2 pools); expected at least 18 x 18."
        )
    return image_size, glimpse_size


def _pair(name, value):
    if isinstance(value, int):
        value = (value, value)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise UserError(f"{name}={value!r}: expected a positive int or (height, width).")
    return tuple(value)


def _conv(filters, name):
    return layers.Conv2D(filters, 3, activation="relu", name=name)


def localisation_features(image, filters=20):
    """pool, conv, pool, conv, pool, conv, flatten: 1620 features at 100 x 100."""
    x = layers.MaxPooling2D(2, name="loc_pool1")(image)
    x = _conv(filters, "loc_conv1")(x)
    x = layers.MaxPooling2D(2, name="loc_pool2")(x)
    x = _conv(filters, "loc_conv2")(x)
    x = layers.MaxPooling2D(2, name="loc_pool3")(x)
    x = _conv(filters, "loc_conv3")(x)
    return layers.Flatten(name="loc_flatten")(x)


def classifier_trunk(filters, units, name):
    """conv, pool, conv, pool, conv, flatten, dense (ReLU); the first
    convolution reads the one-channel glimpse or image (`SingleChannelConv2D`:
    its input's gradient is faster to train)."""
    return keras.Sequential(
        [
            SingleChannelConv2D(filters, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            _conv(filters, "conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            _conv(filters, "conv3"),
            layers.Flatten(name="flatten"),
            layers.Dense(units, activation="relu", name="dense"),
        ],
        name=name,
    )


def _softmax_head(name):
    # float32 under mixed precision: the loss needs accurate probabilities.
    return layers.Dense(N_CLASSES, activation="softmax", dtype="float32", name=name)


def _image_input(image_size):
    return keras.Input(shape=image_size + (1,), name="image")


def _string_steps(digits, end):
    # float32 under mixed precision, as the softmax heads.
    return StringSteps(dtype="float32", name="probabilities")([digits, end])


@register_model
def lstm_stn(
    image_size=(100, 100),
    n_digits=3,
    glimpse_size=(33, 33),
    units=256,
    cell="lstm",
    cell_init="keras",
    localisation_filters=20,
    classifier_filters=32,
    classifier_units=400,
    variable_length=False,
    end_gradient=0.1,
    initial_transform=None,
    transform_rate=None,
    name="lstm_stn",
):
    """LSTM-STN (Feng, Chen & Sun 2019): one glimpse per digit, top-down.

    With `variable_length`, one step more than `n_digits`, and at each step
    the cell's state says whether the string has ended (a sigmoid head, `end`)
    while the glimpse's classifier reads the digit: the LSTM decides where to
    look and when to stop. `end_gradient` scales the end head's gradient
    into the cell (`layers.GradientScale`): at 1, learning the strings'
    lengths moved the cell so much that it never learnt where the digits are.
    `initial_transform` is where every step first looks and `transform_rate`
    slows the transform head (`LSTMLocalizer`). With `variable_length` they
    default to a digit-sized box at the centre (`digit_box`) and 0.1: faster
    glimpses left the 180-column canvas before the classifier could read.
    Otherwise to the whole image and 1, the paper's model.
    """
    image_size, glimpse_size = _check_sizes(image_size, n_digits, variable_length, glimpse_size)
    if cell_init not in CELL_INITS:
        raise UserError(f"cell_init={cell_init!r}: expected one of {', '.join(CELL_INITS)}.")
    steps = n_digits + 1 if variable_length else n_digits
    if transform_rate is None:
        transform_rate = 0.1 if variable_length else 1.0
    if initial_transform is None:
        initial_transform = digit_box(image_size) if variable_length else IDENTITY_TRANSFORM
    image = _image_input(image_size)
    features = localisation_features(image, localisation_filters)
    localizer = LSTMLocalizer(
        units, steps=steps, cell=cell, return_states=variable_length, initial_transform=initial_transform,
        transform_rate=transform_rate, name="localizer", **CELL_INITS[cell_init]
    )
    theta, states = localizer(features) if variable_length else (localizer(features), None)
    transforms = layers.Reshape((steps, 2, 3), dtype="float32", name="transforms")(theta)
    grid = AffineGridGenerator(glimpse_size, name="grid")(transforms)
    glimpses = BilinearInterpolation(name="glimpses")([image, grid])
    classifier = keras.Sequential(
        [
            classifier_trunk(classifier_filters, classifier_units, "glimpse_features"),
            _softmax_head("digit"),
        ],
        name="glimpse_classifier",
    )
    digits = FoldedTimeDistributed(classifier, name="digits" if variable_length else "probabilities")(glimpses)
    if not variable_length:
        return keras.Model(image, digits, name=name)
    states = GradientScale(end_gradient, name="end_gradient")(states)
    end = layers.Dense(1, activation="sigmoid", dtype="float32", name="end")(states)
    return keras.Model(image, _string_steps(digits, end), name=name)


@register_model
def gru_stn(**overrides):
    """RNN-SPN (Sønderby et al. 2015): LSTM-STN with a GRU."""
    overrides.setdefault("name", "gru_stn")
    return lstm_stn(cell="gru", **overrides)


# Its options are LSTM-STN's but the cell: `model_options`, and so the recipes and the
# tuner, see them through the `**overrides`.
gru_stn.__signature__ = inspect.signature(lstm_stn).replace(parameters=[
    parameter.replace(default="gru_stn") if name == "name" else parameter
    for name, parameter in inspect.signature(lstm_stn).parameters.items() if name != "cell"
])


def _digit_heads(features, n_digits, variable_length):
    """One softmax head per digit, `(batch, n_digits, 10)`; with `variable_length`,
    also a head over the lengths 1 to `n_digits` (Goodfellow et al. 2013), the
    two as per-step probabilities `(batch, n_digits + 1, 11)` (`StringSteps`)."""
    heads = [_softmax_head(f"digit_{i}")(features) for i in range(n_digits)]
    heads = [layers.Reshape((1, N_CLASSES), name=f"digit_{i}_step")(h) for i, h in enumerate(heads)]
    name = "digits" if variable_length else "probabilities"
    digits = layers.Identity(name=name)(heads[0]) if n_digits == 1 else layers.Concatenate(axis=1, name=name)(heads)
    if not variable_length:
        return digits
    length = layers.Dense(n_digits, dtype="float32", name="length")(features)  # logits
    end = EndsFromLength(dtype="float32", name="end")(length)
    # The step after the last digit only ends a string: its digit probabilities weigh nothing.
    digits = layers.ZeroPadding1D((0, 1), name="digits_then_end")(digits)
    return _string_steps(digits, end)


@register_model
def cnn_stn(
    image_size=(100, 100),
    n_digits=3,
    glimpse_size=None,
    localisation_filters=20,
    localisation_units=200,
    classifier_filters=96,
    classifier_units=400,
    variable_length=False,
    name="cnn_stn",
):
    """CNN + one spatial transformer (FFN-SPN): one glimpse for all digits.

    `glimpse_size` None: half the image in each dimension (50 x 50 on the
    protocol's canvas). With `variable_length`, a length head beside the
    digit heads.
    """
    image_size = _pair("image_size", image_size)
    if glimpse_size is None:
        glimpse_size = tuple(side // 2 for side in image_size)
    image_size, glimpse_size = _check_sizes(image_size, n_digits, variable_length, glimpse_size)
    image = _image_input(image_size)
    features = localisation_features(image, localisation_filters)
    hidden = layers.Dense(localisation_units, activation="relu", name="loc_dense")(features)
    theta = layers.Dense(
        6,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(IDENTITY_TRANSFORM),
        dtype="float32",
        name="localizer",
    )(hidden)
    transforms = layers.Reshape((1, 2, 3), dtype="float32", name="transforms")(theta)
    grid = AffineGridGenerator(glimpse_size, name="grid")(transforms)
    glimpses = BilinearInterpolation(name="glimpses")([image, grid])
    glimpse = layers.Reshape(glimpse_size + (1,), name="glimpse")(glimpses)
    features = classifier_trunk(classifier_filters, classifier_units, "classifier")(glimpse)
    return keras.Model(image, _digit_heads(features, n_digits, variable_length), name=name)


@register_model
def cnn(
    image_size=(100, 100),
    n_digits=3,
    classifier_filters=96,
    classifier_units=400,
    variable_length=False,
    name="cnn",
):
    """The FFN-SPN classifier on the whole image, no transformer. With
    `variable_length`, a length head beside the digit heads: the non-attentive
    multi-digit reader of Goodfellow et al. (2013)."""
    image_size, _ = _check_sizes(image_size, n_digits, variable_length)
    image = _image_input(image_size)
    features = classifier_trunk(classifier_filters, classifier_units, "classifier")(image)
    return keras.Model(image, _digit_heads(features, n_digits, variable_length), name=name)


def attention_model(model):
    """A model with named outputs `probabilities`, `transforms` and `glimpses`.

    `transforms` is `(batch, steps, 2, 3)`; for a model without a transformer
    (`cnn`) only `probabilities` is returned.
    """
    outputs = {"probabilities": model.output}
    names = {layer.name for layer in model.layers}
    for name in ("transforms", "glimpses"):
        if name in names:
            outputs[name] = model.get_layer(name).output
    return keras.Model(model.input, outputs, name=f"{model.name}_attention")
