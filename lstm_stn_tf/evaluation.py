"""Test errors of a trained model: single-digit, sequence, confusion matrix; for digit strings, `strings`' metrics."""

import dataclasses
import json
import pathlib

import keras
import numpy as np

from lstm_stn_tf.data import make_input
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_path, model_source, shipped_model
from lstm_stn_tf.strings import has_end_class, string_attention_metrics, string_metrics


def load_model(path):
    """Loads a `.keras` file, the `best.keras` of a run directory, or a shipped model by name."""
    path = model_source(path)
    if path.is_dir():
        if not (path / "best.keras").exists():
            raise UserError(f"{path}: no best.keras in this folder; expected a run directory.")
        path = path / "best.keras"
    elif not path.exists():
        raise UserError(f"{path}: no such file or run directory.")
    elif path.suffix != ".keras":
        raise UserError(f"{path}: expected a .keras file or a run directory.")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for a damaged file
        raise UserError(f"{path}: not a readable Keras model ({type(error).__name__}: {error}).") from None


def load_pretrained(name="lstm_stn"):
    """The shipped model `name` (its card: `export/<name>/MODEL_CARD.md`).

    It takes float32 images `(N, 100, 100, 1)` in [0, 1] and returns digit
    probabilities `(N, 3, 10)`; see `attention_model` for its glimpses.
    """
    return load_model(shipped_model(name))


def reads_strings(model):
    """Whether `model` reads digit strings: per-step probabilities over the digits and the end class."""
    return has_end_class(model.output)


def _model_reading(model):
    """`(image_size, steps, reads strings)` of a model, as `_spec_reading` of a spec."""
    return tuple(model.input.shape[1:3]), model.output.shape[1], reads_strings(model)


def _spec_reading(spec):
    """`(image_size, steps, strings)` that a model judged on `spec`'s images must have."""
    return spec.image_size, spec.n_digits + 1 if spec.variable_length else spec.n_digits, spec.variable_length


def _describe_reading(image_size, steps, strings):
    height, width = image_size
    read = f"strings of up to {steps - 1} digits" if strings else f"{steps} digits"
    return f"{height} x {width} images of {read}"


def _split_settings(source, model, data_seed, mnist_path):
    """`(spec, data_seed, mnist_path)` of the data a model is judged on.

    For a run directory (or a `.keras` file with a run's `config.json` beside
    it: `best.keras`, an export, a shipped model), the data settings of that
    `config.json`; otherwise the protocol's (or for a model that reads strings,
    the strings benchmark's, `STRINGS_SPEC`) with the model's canvas and digit count.
    A `data_seed` given (not None) replaces the recorded one (else 0).
    """
    from lstm_stn_tf.data import STRINGS_SPEC, ClutterSpec

    path = model_source(source)
    # A run directory's own settings; an exported or shipped model keeps its run's beside it.
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if "spec" in config and "data_seed" in config:
        # A recorded MNIST path may be another machine's, or gone: the usual sources
        # then serve, as MNIST is checksum-verified (a path given here must exist).
        recorded = config.get("mnist_path")
        if mnist_path is None and recorded and pathlib.Path(recorded).expanduser().exists():
            mnist_path = recorded
        return ClutterSpec(**config["spec"]), config["data_seed"] if data_seed is None else data_seed, mnist_path
    (height, width), steps, strings = _model_reading(model)
    shape = dict(canvas_size=height, canvas_width=None if width == height else width)
    if strings:
        spec = dataclasses.replace(STRINGS_SPEC, n_digits=steps - 1, **shape)
    else:
        spec = ClutterSpec(n_digits=steps, **shape)
    return spec, 0 if data_seed is None else data_seed, mnist_path


def model_split(source, model, split="test", size=None, data_seed=None, mnist_path=None):
    """The cluttered split a model is judged on: `(images, labels)` (see `_split_settings`)."""
    from lstm_stn_tf.data import load_mnist, load_split

    spec, data_seed, mnist_path = _split_settings(source, model, data_seed, mnist_path)
    if _model_reading(model) != _spec_reading(spec):
        raise UserError(
            f"{source}: the model reads {_describe_reading(*_model_reading(model))}, but its run's config.json "
            f"describes {_describe_reading(*_spec_reading(spec))}; the model and the config.json beside it "
            "are not of one run."
        )
    return load_split(split, size, data_seed, spec, mnist=lambda: load_mnist(mnist_path))


def model_split_digit_corners(source, model, split="test", size=None, data_seed=None):
    """Where the digits of `model_split`'s images are: `(N, n_digits, 2)` top-left (y, x)."""
    from lstm_stn_tf.data import split_digit_corners

    spec, data_seed, _ = _split_settings(source, model, data_seed, None)
    return split_digit_corners(split, size, data_seed, spec)


def _rebuilt(model, config):
    clean = keras.Model.from_config(config)
    clean.set_weights(model.get_weights())
    return clean


def save_inference_model(model, path):
    """Saves `model`'s architecture and weights, without optimizer state, atomically."""
    with atomic_path(path) as temporary:
        _rebuilt(model, model.get_config()).save(temporary)


def _float32_config(node):
    """A model config with every mixed dtype policy (and the tensors between them) made float32."""
    if isinstance(node, list):
        return [_float32_config(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "DTypePolicy" and node["config"]["name"].startswith("mixed_"):
        return {**node, "config": {**node["config"], "name": "float32"}}
    if node.get("class_name") == "__keras_tensor__" and node["config"].get("dtype") in ("bfloat16", "float16"):
        return {**node, "config": {**node["config"], "dtype": "float32"}}
    return {key: _float32_config(value) for key, value in node.items()}


def float32_model(model):
    """A copy of `model` that computes in float32 throughout, with the same
    weights: for export (TFLite has no bfloat16 kernels) and serving of a
    model trained with `precision="mixed_bfloat16"`."""
    return _rebuilt(model, _float32_config(model.get_config()))


def predict_probabilities(model, images, batch_size=500):
    """Class probabilities `(N, n_digits, 10)` for uint8 images `(N, H, W)`."""
    return model.predict(make_input(images, batch_size=batch_size), verbose=0)


def error_metrics(probabilities, labels):
    """Single-digit error (overall and per position), sequence error and the
    confusion matrix (true x predicted)."""
    predicted = np.argmax(probabilities, axis=-1)
    labels = np.asarray(labels)
    if predicted.shape != labels.shape:
        raise UserError(
            f"predictions have shape {predicted.shape} but labels {labels.shape}; "
            "the model and the data disagree on the number of digits."
        )
    wrong = predicted != labels
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (labels.ravel(), predicted.ravel()), 1)
    return {
        "single_digit_error": float(wrong.mean()),
        "sequence_error": float(wrong.any(axis=1).mean()),
        "digit_error_by_position": wrong.mean(axis=0).tolist(),
        "n_images": int(labels.shape[0]),
        "n_digits": int(labels.size),
        "confusion_matrix": confusion.tolist(),
    }


def attention_metrics(transforms, digit_corners, image_size):
    """Are the steps reading the digits, in order? Per step, the fraction of images where

    - `glimpse_centre_on_digit`: the glimpse's centre lies inside that step's
      digit (its 28 x 28 box), i.e. the glimpse is centred on it;
    - `digit_centre_in_glimpse`: that step's digit's centre lies inside the
      glimpse (the parallelogram the transform samples), i.e. the glimpse sees it;

    and `glimpse_extent_pixels`, the median `[width, height]` in image pixels
    that the glimpse's rows and columns span (33 x 33 at scale 33/100), and
    `glimpse_centre_pixels`, the median `[x, y]` of its centre (off the
    canvas when the glimpse has left it).

    Args:
        transforms: `(N, steps, 2, 3)` from output coordinates in [-1, 1] to
            source coordinates in [-1, 1] (pixel centres, as the grid generator).
        digit_corners: int `(N, steps, 2)` top-left `(y, x)` of each digit.
        image_size: `(height, width)`.
    """
    from lstm_stn_tf.data.cluttered import DIGIT_SIZE

    transforms = np.asarray(transforms, np.float64)
    pixels_per_unit = (np.array(image_size[::-1], np.float64) - 1.0) / 2.0  # (x, y)
    digit_centre = np.asarray(digit_corners, np.float64)[..., ::-1] + (DIGIT_SIZE - 1) / 2.0
    glimpse_centre = (transforms[..., 2] + 1.0) * pixels_per_unit
    # The box spans its pixels' outer edges: half a digit either side of its centre.
    centred = np.all(np.abs(glimpse_centre - digit_centre) <= DIGIT_SIZE / 2.0, axis=-1)
    # The digit's centre in the glimpse's own coordinates: the 2 x 2 part inverted
    # (Cramer's rule); a degenerate glimpse gives inf or nan there, i.e. unseen.
    (a, b), (c, d) = np.moveaxis(transforms[..., :2], (-2, -1), (0, 1))
    offset_x, offset_y = np.moveaxis(digit_centre / pixels_per_unit - 1.0 - transforms[..., 2], -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        determinant = a * d - b * c
        glimpse_x = (d * offset_x - b * offset_y) / determinant
        glimpse_y = (a * offset_y - c * offset_x) / determinant
    seen = (np.abs(glimpse_x) <= 1.0) & (np.abs(glimpse_y) <= 1.0)
    # Each output axis (a column of the 2 x 2 part) spans 2 units of the output.
    extent = 2.0 * np.linalg.norm(transforms[..., :2] * pixels_per_unit[:, None], axis=-2)
    return {"glimpse_centre_on_digit": centred.mean(axis=0).tolist(),
            "digit_centre_in_glimpse": seen.mean(axis=0).tolist(),
            "glimpse_extent_pixels": np.median(extent, axis=0).tolist(),
            "glimpse_centre_pixels": np.median(glimpse_centre, axis=0).tolist()}


def _reads_one_glimpse_per_digit(model):
    names = {layer.name for layer in model.layers}
    return "transforms" in names and model.get_layer("transforms").output.shape[1] == model.output.shape[1]


def evaluate_model(model, images, labels, batch_size=500, digit_corners=None):
    """`error_metrics`, or for a model that reads strings `strings.string_metrics`;
    with the digits' `digit_corners` and a model that takes one glimpse per step,
    also its `attention_metrics` (`strings.string_attention_metrics`)."""
    strings = reads_strings(model)
    scores = string_metrics if strings else error_metrics
    if digit_corners is None or not _reads_one_glimpse_per_digit(model):
        return scores(predict_probabilities(model, images, batch_size), labels)
    with_transforms = keras.Model(model.input, [model.output, model.get_layer("transforms").output])
    probabilities, transforms = with_transforms.predict(make_input(images, batch_size=batch_size), verbose=0)
    if strings:
        attention = string_attention_metrics(transforms, digit_corners, labels, images.shape[1:3])
    else:
        attention = attention_metrics(transforms, digit_corners, images.shape[1:3])
    return {**scores(probabilities, labels), **attention}


def _percentages(values):
    return "".join(" " * 9 + "-" if value is None else f" {100 * value:>7.2f} %" for value in values)


def format_metrics(metrics):
    """A short plain-text table, of digit or string metrics."""
    lines = [
        f"images                   {metrics['n_images']:>8}",
        f"digits                   {metrics['n_digits']:>8}",
    ]
    strings = "string_error" in metrics
    if strings:
        lines += [
            f"string error             {100 * metrics['string_error']:>7.2f} %",
            f"character error rate     {100 * metrics['character_error_rate']:>7.2f} %",
            f"length accuracy          {100 * metrics['length_accuracy']:>7.2f} %",
            f"stops on time            {100 * metrics['stops_on_time']:>7.2f} %",
            f"{'digits in the string':<24}" + "".join(f" {n:>9}" for n in range(1, len(metrics["string_error_by_length"]) + 1)),
            f"{'string error by length':<24}" + _percentages(metrics["string_error_by_length"]),
        ]
    else:
        lines += [
            f"single-digit error       {100 * metrics['single_digit_error']:>7.2f} %",
            f"sequence error           {100 * metrics['sequence_error']:>7.2f} %",
        ]
    by_step = {"error by position": metrics.get("digit_error_by_position"),
               "glimpse centred on digit": metrics.get("glimpse_centre_on_digit"),
               "digit seen by glimpse": metrics.get("digit_centre_in_glimpse")}
    lines += [f"{label:<24}" + _percentages(values) for label, values in by_step.items() if values]
    pairs = {"glimpse_extent_pixels": ("glimpse w x h (pixels)", "{:.0f} x {:.0f}"),
             "glimpse_centre_pixels": ("glimpse centre x, y", "{:.0f}, {:.0f}")}
    lines += [f"{label:<24}" + "".join(f" {form.format(*pair):>9}" for pair in metrics[key])
              for key, (label, form) in pairs.items() if key in metrics]
    if strings:
        return "\n".join(lines)
    lines += [
        "",
        "confusion (rows: true digit, columns: predicted)",
        "      " + "".join(f"{d:>6}" for d in range(10)),
    ]
    for digit, row in enumerate(metrics["confusion_matrix"]):
        lines.append(f"{digit:>6}" + "".join(f"{count:>6}" for count in row))
    return "\n".join(lines)


def write_json(metrics, path):
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(metrics, indent=2))
