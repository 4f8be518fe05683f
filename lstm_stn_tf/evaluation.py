"""Test errors of a trained model: single-digit, sequence, confusion matrix."""

import json
import pathlib

import keras
import numpy as np

from lstm_stn_tf import layers as _custom_layers  # noqa: F401  (registers them for loading)
from lstm_stn_tf.data import make_input
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_path, model_source, shipped_model


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
    import lstm_stn_tf.training  # noqa: F401  (registers the optimizers and loss a compiled model names)

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


def model_split(source, model, split="test", size=None, data_seed=0, mnist_path=None):
    """The cluttered split a model is judged on: `(images, labels)`.

    For a run directory (or a `.keras` file with a run's `config.json` beside
    it: `best.keras`, an export, a shipped model), the data settings of that
    `config.json`; otherwise the protocol's with the model's canvas and digit count.
    """
    from lstm_stn_tf.data import ClutterSpec, load_mnist, load_split

    path = model_source(source)
    # A run directory's own settings; an exported or shipped model keeps its run's beside it.
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if "spec" in config and "data_seed" in config:
        spec, data_seed = ClutterSpec(**config["spec"]), config["data_seed"]
        mnist_path = mnist_path or config.get("mnist_path")
    else:
        spec = ClutterSpec(n_digits=model.output.shape[1], canvas_size=model.input.shape[1])
    return load_split(split, size, data_seed, spec, mnist=lambda: load_mnist(mnist_path))


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
    """Single-digit error, sequence error and the confusion matrix (true x predicted)."""
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
        "n_images": int(labels.shape[0]),
        "n_digits": int(labels.size),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_model(model, images, labels, batch_size=500):
    return error_metrics(predict_probabilities(model, images, batch_size), labels)


def format_metrics(metrics):
    """A short plain-text table."""
    lines = [
        f"images                {metrics['n_images']:>8}",
        f"digits                {metrics['n_digits']:>8}",
        f"single-digit error    {100 * metrics['single_digit_error']:>7.2f} %",
        f"sequence error        {100 * metrics['sequence_error']:>7.2f} %",
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
