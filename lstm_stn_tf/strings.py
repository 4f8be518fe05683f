"""Digit strings of 1 to N digits (shared/protocol.md, "Digit strings"): labels,
decoding and metrics.

A string's labels are its digits left to right, then `END_CLASS` up to N:
`(images, N)`. A model that reads strings gives per-step class probabilities
`(images, N + 1, 11)`: step k < n the string's k-th digit, step n the end class,
the steps after it anything (`layers.StringSteps`, `losses.StringCrossentropy`).
"""

import keras
import numpy as np
from keras import ops

from lstm_stn_tf.errors import UserError

END_CLASS = 10  # the class after a string's last digit


def string_lengths(labels):
    """The number of digits of each string, `(images,)`, from labels `(images, N)`."""
    return np.sum(np.asarray(labels) != END_CLASS, axis=-1)


def has_end_class(probabilities):
    """Whether per-step probabilities (an array, tensor or shape) are a strings
    model's: over the 10 digits and the end class, not the digits alone."""
    shape = getattr(probabilities, "shape", probabilities)
    return shape[-1] == END_CLASS + 1


def string_ends(probabilities):
    """Whether each step ends its string (`keras.ops`, for tensors): the end
    class is more probable than all the digits together (more than 1/2). Not
    the most probable of the 11 classes: a step unsure which digit it sees has
    not seen the end."""
    return probabilities[..., END_CLASS] > ops.sum(probabilities[..., :END_CLASS], axis=-1)


def read_strings(probabilities, argmax=ops.argmax):
    """The strings a model reads (`keras.ops`, for tensors): labels `(images, N)`
    from per-step probabilities `(images, N + 1, 11)`.

    The most probable digit of each step, up to the first step that ends the
    string (`string_ends`). A model that ends none of its first N steps reads
    N digits: its last step can only end a string, so it reads no digit.
    `argmax(x, axis)`: the backend's own for a graph that must convert to
    TFLite builtins (Keras's TensorFlow argmax adds a BitwiseAnd for -0.0).
    """
    probabilities = probabilities[:, :-1]
    ended = ops.cumsum(ops.cast(string_ends(probabilities), "int32"), axis=1) > 0
    digits = ops.cast(argmax(probabilities[..., :END_CLASS], axis=-1), "int32")
    return ops.where(ended, END_CLASS, digits)


@keras.saving.register_keras_serializable(package="lstm_stn_tf")
def string_accuracy(labels, probabilities):
    """Per image, 1 if its whole string is read right (`read_strings`), else 0:
    the training metric of strings (1 - `string_error`)."""
    right = ops.all(ops.equal(read_strings(probabilities), ops.cast(labels, "int32")), axis=1)
    return ops.cast(right, probabilities.dtype)


def ends_string(probabilities):
    """`string_ends` of a numpy array, as a numpy array."""
    return ops.convert_to_numpy(string_ends(ops.convert_to_tensor(np.asarray(probabilities))))


def decode_strings(probabilities):
    """`read_strings` of a numpy array, as uint8 labels `(images, N)`."""
    return ops.convert_to_numpy(read_strings(ops.convert_to_tensor(np.asarray(probabilities)))).astype(np.uint8)


def read_labels(probabilities):
    """The labels `(images, N)` that probabilities read, as numpy: a strings
    model's `(images, N + 1, 11)` by `decode_strings` (END_CLASS after the
    string), a fixed-length model's `(images, N, 10)` by the most probable digit."""
    probabilities = np.asarray(probabilities)
    if has_end_class(probabilities):
        return decode_strings(probabilities)
    return np.argmax(probabilities, axis=-1).astype(np.int32)


def label_string(labels):
    """The digits of one image's labels as text, up to the end class: `[4, 0, 7, 10, 10]` -> `"407"`."""
    digits = []
    for label in np.asarray(labels).tolist():
        if label == END_CLASS:
            break
        digits.append(str(label))
    return "".join(digits)


def edit_distance(first, second):
    """Levenshtein distance: the fewest insertions, deletions and substitutions
    that turn one sequence into the other."""
    previous = list(range(len(second) + 1))  # distances from first[:i] to each prefix of second
    for i, a in enumerate(first, 1):
        current = [i]
        for j, b in enumerate(second, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def string_metrics(probabilities, labels):
    """How well strings are read (shared/protocol.md, "Digit strings", metrics).

    - `string_error`: the fraction of images whose string is read wrong
      (a digit, or the length);
    - `character_error_rate`: the edit distances between the strings read and
      the true ones, summed over the images, over the number of true digits;
    - `length_accuracy`: the fraction of images read with the right length;
    - `stops_on_time`: the fraction whose step n (after the last digit) ends
      the string (`ends_string`), whatever the steps before it gave;
    - `string_error_by_length`: `string_error` among the strings of 1, 2, ...
      N digits (None where there are none), with `images_by_length`.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[:2] != (labels.shape[0], labels.shape[1] + 1):
        raise UserError(
            f"probabilities have shape {probabilities.shape} but labels {labels.shape}; expected "
            "(images, N + 1, classes) for labels (images, N): one step more than the longest string."
        )
    predicted = decode_strings(probabilities)
    lengths, predicted_lengths = string_lengths(labels), string_lengths(predicted)
    wrong = np.any(predicted != labels, axis=1)
    distance = sum(edit_distance(read[:m].tolist(), true[:n].tolist())
                   for read, m, true, n in zip(predicted, predicted_lengths, labels, lengths))
    at_end = ends_string(probabilities[np.arange(len(labels)), lengths])
    by_length = [wrong[lengths == n] for n in range(1, labels.shape[1] + 1)]
    return {
        "string_error": float(wrong.mean()),
        "character_error_rate": distance / int(lengths.sum()),
        "length_accuracy": float(np.mean(predicted_lengths == lengths)),
        "stops_on_time": float(np.mean(at_end)),
        "string_error_by_length": [float(errors.mean()) if errors.size else None for errors in by_length],
        "images_by_length": [int(errors.size) for errors in by_length],
        "n_images": int(labels.shape[0]),
        "n_digits": int(lengths.sum()),
    }


def string_attention_metrics(transforms, digit_corners, labels, image_size):
    """`evaluation.attention_metrics` of a model that reads strings: per step
    k, over the images whose string has a digit k (the steps after a
    string's end look at no digit), up to the longest string's last digit.

    Args:
        transforms: `(images, steps, 2, 3)`, steps >= the longest string.
        digit_corners: `(images, N, 2)` (`data.cluttered.digit_corners`).
        labels: `(images, N)`.
        image_size: `(height, width)`.
    """
    from lstm_stn_tf.evaluation import attention_metrics

    lengths = string_lengths(labels)
    transforms, digit_corners = np.asarray(transforms), np.asarray(digit_corners)
    metrics = {}
    for step in range(int(lengths.max())):
        reading = lengths > step
        at_step = attention_metrics(transforms[reading, step : step + 1], digit_corners[reading, step : step + 1], image_size)
        for name, (value,) in at_step.items():
            metrics.setdefault(name, []).append(value)
    return metrics
