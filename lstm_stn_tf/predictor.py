"""Read digits with a trained model, whatever its format.

    from lstm_stn_tf import Predictor
    digits, probabilities, transforms = Predictor("export/lstm_stn").predict(images)

A model is a `.keras` file, a run directory, an `lstm-stn export` folder (its
float32 `model.tflite` is used), a SavedModel folder, a `.tflite` file, or the
name of a shipped model.
"""

import pathlib

import numpy as np

from lstm_stn_tf.data import to_model_input
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import model_source

SIGNATURE = "serving_default"
BATCH_SIZE = 256  # images per call: bounds the memory of a large predict


class _KerasRunner:
    format = "keras"

    def __init__(self, path):
        from lstm_stn_tf.evaluation import load_model
        from lstm_stn_tf.models import attention_model

        self.model = attention_model(load_model(path))
        self.input_shape = tuple(self.model.input.shape[1:])

    def __call__(self, images):
        outputs = {name: np.asarray(value) for name, value in self.model.predict_on_batch(images).items()}
        outputs["digits"] = np.argmax(outputs["probabilities"], axis=-1).astype(np.int32)
        return outputs


class _SavedModelRunner:
    format = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        try:
            self.function = tf.saved_model.load(str(path)).signatures[SIGNATURE]
        except Exception as error:  # TensorFlow raises many types for a damaged folder
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"{path}: not a readable SavedModel with a {SIGNATURE!r} signature ({reason}).") from None
        inputs = self.function.structured_input_signature[1]
        _check_signature(path, inputs, self.function.structured_outputs)
        self.input_shape = tuple(inputs["image"].shape[1:])

    def __call__(self, images):
        return {name: value.numpy() for name, value in self.function(image=images).items()}


class _TFLiteRunner:
    format = "tflite"

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.runner = interpreter.get_signature_runner(SIGNATURE)
        except Exception as error:  # LiteRT raises ValueError or RuntimeError for a damaged file
            raise UserError(f"{path}: not a readable TFLite model with a {SIGNATURE!r} signature ({error}).") from None
        inputs = self.runner.get_input_details()
        _check_signature(path, inputs, self.runner.get_output_details())
        self.input_shape = tuple(inputs["image"]["shape_signature"][1:])

    def __call__(self, images):
        return self.runner(image=images)


def _check_signature(path, inputs, outputs):
    """Inputs and outputs are read by name: those of `lstm-stn export`."""
    if set(inputs) != {"image"} or not {"digits", "probabilities"} <= set(outputs):
        raise UserError(
            f"{path}: the model takes {sorted(inputs)} and returns {sorted(outputs)}; expected `image` -> "
            "`digits`, `probabilities` [, `transforms`], as written by `lstm-stn export`."
        )


def _open(path, threads):
    """The runner for the model at `path`."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return _SavedModelRunner(path)
        if (path / "model.tflite").exists():  # an `lstm-stn export` folder
            return _TFLiteRunner(path / "model.tflite", threads)
        if (path / "best.keras").exists():
            return _KerasRunner(path)
        raise UserError(f"{path}: no saved_model.pb, model.tflite or best.keras in this folder; "
                        "expected a SavedModel, an export folder or a run directory.")
    if path.suffix == ".tflite":
        if not path.exists():
            raise UserError(f"{path}: no such file.")
        return _TFLiteRunner(path, threads)
    return _KerasRunner(path)


class Predictor:
    """Reads the digits of images with a model in any exported format.

    Args:
        path: a `.keras` file, run directory, export folder, SavedModel
            folder, `.tflite` file or shipped model name.
        threads: CPU threads of a TFLite interpreter (default: its own
            choice). TensorFlow's threads are set process-wide, with
            `tf.config.threading`, before TensorFlow first runs.
    """

    def __init__(self, path, threads=None):
        self.path = model_source(path)
        self._run = _open(self.path, threads)
        self.format = self._run.format
        self.image_size = tuple(int(size) for size in self._run.input_shape[:2])

    def predict(self, images, batch_size=BATCH_SIZE):
        """`(digits, probabilities, transforms)` for a batch of images.

        Args:
            images: `(N, H, W)` or `(N, H, W, 1)`; uint8 in [0, 255] or float
                in [0, 1].

        Returns:
            digits int32 `(N, n_digits)`, probabilities float32
            `(N, n_digits, 10)` and transforms float32 `(N, steps, 2, 3)`,
            or None for a model without a transformer.
        """
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3 or images.shape[1:] != self.image_size:
            height, width = self.image_size
            raise UserError(f"images have shape {images.shape}; expected (N, {height}, {width}) or (N, {height}, {width}, 1).")
        if images.dtype == np.uint8:
            images = to_model_input(images)
        else:
            images = images.astype(np.float32)[..., None]
        if len(images) == 0:
            raise UserError("no images to read.")
        chunks = [self._run(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        outputs = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
        return outputs["digits"], outputs["probabilities"], outputs.get("transforms")


def letterbox(picture, size):
    """A PIL image scaled to fit `size` (height, width), its aspect kept, centred on black."""
    from PIL import Image

    height, width = size
    scale = min(height / picture.height, width / picture.width)
    fitted = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    canvas = Image.new(picture.mode, (width, height), 0)
    canvas.paste(picture.resize(fitted, Image.Resampling.BILINEAR), ((width - fitted[0]) // 2, (height - fitted[1]) // 2))
    return canvas


def _picture_from_array(array, path):
    """A PIL image (mode L or F) from a `.npy` array: uint8, or float in [0, 1]."""
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(f"{path}: array of shape {array.shape}; expected one grey image, (height, width) or (height, width, 1).")
    if array.dtype == np.uint8:
        return Image.fromarray(array, mode="L")
    if array.dtype.kind != "f" or not np.all((array >= 0) & (array <= 1)):
        raise UserError(f"{path}: {array.dtype} values; expected uint8, or floats in [0, 1].")
    return Image.fromarray(array.astype(np.float32), mode="F")


def read_image(path, size):
    """One image as model input: float32 `(height, width, 1)` in [0, 1].

    PNG, JPEG (or another format Pillow reads) in colour or grey, or a `.npy`
    array. Returns `(image, note)`; `note` says how the image was changed to
    fit `size` (letterboxed), else None. Raises `UserError` for a file that
    is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file.")
    if not path.is_file():
        raise UserError(f"{path}: not a file.")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file.")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: not a readable .npy array ({error}).") from None
        picture = _picture_from_array(array, path)
    else:
        try:
            with Image.open(path) as opened:
                picture = opened.convert("L")
        except UnidentifiedImageError:
            raise UserError(f"{path}: not an image; expected PNG, JPEG or .npy.") from None
        except OSError as error:  # a truncated or damaged image
            raise UserError(f"{path}: unreadable image ({error}).") from None
    note = None
    if (picture.height, picture.width) != tuple(size):
        note = f"{picture.width}x{picture.height} image letterboxed to {size[1]}x{size[0]}"
        picture = letterbox(picture, size)
    array = np.asarray(picture)
    image = to_model_input(array) if picture.mode == "L" else array.astype(np.float32)[..., None]
    return image, note
