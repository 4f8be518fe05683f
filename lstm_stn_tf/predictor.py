"""Read digits with a trained model, whatever its format.

    from lstm_stn_tf import Predictor
    digits, probabilities, transforms = Predictor("export/lstm_stn").predict(images)
    Predictor("lstm_stn_strings").read(images)  # ["40713", "8", ...]

A model is a `.keras` file, a run directory, an `lstm-stn export` folder (its
float32 `model.tflite` is used), a SavedModel folder (or a TF Serving base path,
`NAME/1/...`: its latest version), a `.tflite` or `.onnx` file, or the name of a
shipped model.
"""

import pathlib

import numpy as np

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import model_source
from lstm_stn_tf.strings import label_string, read_labels

SIGNATURE = "serving_default"
BATCH_SIZE = 256  # images per call: bounds the memory of a large predict
PIXELS_EXPECTED = "expected floats in [0, 1] or integers in 0-255"
# Grey levels (of 255): opaque pixels spread over fewer than this are one ink colour.
STROKE_CONTRAST = 16
# The models read light digits on a dark background; photos of paper are the other way round.
BACKGROUNDS = ("auto", "dark", "light")
BORDER_FRACTION = 0.05  # the frame of the image whose median grey level is its background


class _KerasRunner:
    format = "keras"

    def __init__(self, path):
        from lstm_stn_tf.evaluation import load_model
        from lstm_stn_tf.models import attention_model

        self.model = attention_model(load_model(path))
        self.input_shape = tuple(self.model.input.shape)

    def __call__(self, images):
        outputs = {name: np.asarray(value) for name, value in self.model.predict_on_batch(images).items()}
        outputs["digits"] = read_labels(outputs["probabilities"]).astype(np.int32)
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
        self.input_shape = tuple(inputs["image"].shape)

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
        self.input_shape = tuple(inputs["image"]["shape_signature"])

    def __call__(self, images):
        if self.input_shape[0] == -1 or len(images) == 1:
            return self.runner(image=images)
        # A static batch-1 file (LiteRT.js's): one image per call.
        outputs = [self.runner(image=image[None]) for image in images]
        return {name: np.concatenate([output[name] for output in outputs]) for name in outputs[0]}


class _OnnxRunner:
    format = "onnx"

    def __init__(self, path, threads=None):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"{path}: reading ONNX needs onnxruntime: pip install 'lstm-stn-tf[onnx]'.") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a damaged file
            raise UserError(f"{path}: not a readable ONNX model ({str(error).strip().splitlines()[0]}).") from None
        inputs = {node.name: node for node in self.session.get_inputs()}
        self.outputs = [node.name for node in self.session.get_outputs()]
        _check_signature(path, inputs, self.outputs)
        self.input_shape = tuple(inputs["image"].shape)

    def __call__(self, images):
        return dict(zip(self.outputs, self.session.run(self.outputs, {"image": images})))


def _check_signature(path, inputs, outputs):
    """Inputs and outputs are read by name: those of `lstm-stn export`."""
    if set(inputs) != {"image"} or not {"digits", "probabilities"} <= set(outputs):
        raise UserError(
            f"{path}: the model takes {sorted(inputs)} and returns {sorted(outputs)}; expected `image` -> "
            "`digits`, `probabilities` [, `transforms`], as written by `lstm-stn export`."
        )


def latest_version(base_path):
    """The newest version folder of a TF Serving base path (`1/`, `2/`, ...
    holding a `saved_model.pb`), as the server picks it; None if there is none."""
    versions = [child for child in base_path.iterdir() if child.name.isdigit() and (child / "saved_model.pb").exists()]
    return max(versions, key=lambda child: int(child.name), default=None)


def _open(path, threads):
    """The runner for the model at `path`."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return _SavedModelRunner(path)
        if latest_version(path):
            return _SavedModelRunner(latest_version(path))
        if (path / "model.tflite").exists():  # an `lstm-stn export` folder
            return _TFLiteRunner(path / "model.tflite", threads)
        if (path / "best.keras").exists():
            return _KerasRunner(path)
        raise UserError(f"{path}: no saved_model.pb (nor a version folder with one), model.tflite or best.keras "
                        "in this folder; expected a SavedModel, an export folder or a run directory.")
    if path.suffix in (".tflite", ".onnx"):
        if not path.exists():
            raise UserError(f"{path}: no such file.")
        return (_TFLiteRunner if path.suffix == ".tflite" else _OnnxRunner)(path, threads)
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
        self.image_size = tuple(int(size) for size in self._run.input_shape[1:3])

    def predict(self, images, batch_size=BATCH_SIZE):
        """`(digits, probabilities, transforms)` for a batch of images.

        Args:
            images: `(N, H, W)` or `(N, H, W, 1)`; integers in 0-255 (uint8
                or another integer dtype) or floats in [0, 1].

        Returns:
            digits int32 `(N, n_digits)`, probabilities float32
            `(N, n_digits, 10)` and transforms float32 `(N, steps, 2, 3)`,
            or None for a model without a transformer. A model that reads
            digit strings gives probabilities `(N, n_digits + 1, 11)`, class
            10 the end, and digits padded with 10 after the string's end.
        """
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3 or images.shape[1:] != self.image_size:
            height, width = self.image_size
            raise UserError(f"images have shape {images.shape}; expected (N, {height}, {width}) or (N, {height}, {width}, 1).")
        images = unit_pixels(images, "images")[..., None]
        if len(images) == 0:
            raise UserError("no images to read.")
        chunks = [self._run(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        outputs = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
        return outputs["digits"], outputs["probabilities"], outputs.get("transforms")

    def read(self, images, batch_size=BATCH_SIZE):
        """The digits each image shows, as strings (`"407"`); images as for `predict`."""
        return [label_string(row) for row in self.predict(images, batch_size)[0]]


def unit_pixels(array, source):
    """`array` as float32 in [0, 1], its shape kept.

    Integers (uint8 or any other integer dtype) in 0-255 are divided by 255;
    floats must be finite and in [0, 1] already. Anything else raises
    `UserError`, its message starting with `source`.
    """
    array = np.asarray(array)
    if array.dtype.kind in "ui":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"{source}: {array.dtype} values from {array.min()} to {array.max()}; {PIXELS_EXPECTED}.")
        return array.astype(np.float32) / np.float32(255)
    if array.dtype.kind != "f":
        raise UserError(f"{source}: {array.dtype} values; {PIXELS_EXPECTED}.")
    if not np.all(np.isfinite(array)):
        found = "NaN" if np.isnan(array).any() else "infinite values"
        raise UserError(f"{source}: {array.dtype} values include {found}; {PIXELS_EXPECTED}.")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise UserError(f"{source}: {array.dtype} values from {array.min():g} to {array.max():g}; {PIXELS_EXPECTED}.")
    return array.astype(np.float32)


def letterbox(picture, size):
    """A PIL image scaled to fit `size` (height, width), its aspect kept, centred on black."""
    from PIL import Image

    height, width = size
    scale = min(height / picture.height, width / picture.width)
    fitted = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    canvas = Image.new(picture.mode, (width, height), 0)
    canvas.paste(picture.resize(fitted, Image.Resampling.BILINEAR), ((width - fitted[0]) // 2, (height - fitted[1]) // 2))
    return canvas


def _grey_pixels(picture):
    """A PIL image's grey levels: float32 `(height, width)` in [0, 1].

    An alpha channel is resolved for the models' white digits on black.
    Where the opaque pixels are all one colour (drawing tools save strokes so,
    on a transparent background), the alpha is the drawing and becomes the
    ink: the colour alone would read blank for black strokes, and a white
    background behind them would give dark digits on light. Otherwise the
    image is composited onto black: transparent reads as no ink.
    """
    if "transparency" not in picture.info and not {"A", "a"} & set(picture.getbands()):  # no alpha
        return np.asarray(picture.convert("L"), np.float32) / np.float32(255)
    grey, alpha = np.moveaxis(np.asarray(picture.convert("RGBA").convert("LA"), np.float32), -1, 0) / np.float32(255)
    if alpha.min() == 1:
        return grey
    strokes = grey[alpha >= 0.5]
    if strokes.size == 0 or np.ptp(strokes) * 255 < STROKE_CONTRAST:
        return alpha
    return grey * alpha


def _file_images(path):
    """The images of a file, float32 `(n, height, width)` in [0, 1], and
    whether the file is a batch (a `.npy` of N images)."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: not a readable .npy array ({error}).") from None
        # A trailing axis of 1 is the grey channel: (H, W, 1) is one image, (N, H, W) a batch.
        grey = array[..., 0] if array.ndim in (3, 4) and array.shape[-1] == 1 else array
        if grey.ndim not in (2, 3) or 0 in grey.shape:
            raise UserError(f"{path}: array of shape {array.shape}; expected one grey image, (height, width) or "
                            "(height, width, 1), or a batch of them, (N, height, width) or (N, height, width, 1).")
        return unit_pixels(grey.reshape((-1,) + grey.shape[-2:]), path), grey.ndim == 3
    try:
        with Image.open(path) as opened:
            return _grey_pixels(opened)[None], False
    except Image.DecompressionBombError as error:  # Pillow's message gives its size and the limit
        raise UserError(f"{path}: image too large to read ({str(error).rstrip('.')}).") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image; expected PNG, JPEG or .npy.") from None
    except OSError as error:  # a truncated or damaged image
        raise UserError(f"{path}: unreadable image ({error}).") from None


def light_background(image):
    """Whether a grey image `(height, width)` in [0, 1] has a light background:
    the median of its outer frame (5 % of the shorter side, at least one
    pixel) is above one half. Digits rarely fill the frame; paper does."""
    image = np.asarray(image)
    width = max(1, round(BORDER_FRACTION * min(image.shape)))
    frame = np.concatenate([image[:width].ravel(), image[-width:].ravel(),
                            image[:, :width].ravel(), image[:, -width:].ravel()])
    return bool(np.median(frame) > 0.5)


def read_images(path, size, background="auto"):
    """The images of one file as model input.

    PNG, JPEG (or another format Pillow reads) in colour or grey, or a `.npy`
    array: one image `(height, width[, 1])` or a batch `(N, height, width[, 1])`,
    integers in 0-255 or floats in [0, 1].

    `background`: "auto" inverts each image whose background is light
    (`light_background`: dark digits on paper) into the models' light digits
    on dark; "light" inverts every image, "dark" none.

    Returns `(names, images, note)`: `names` is `[path]` for one image and
    `path[i]` for each image of a batch; `images` float32 `(n, *size, 1)` in
    [0, 1]; `note` says how the images were changed (inverted, letterboxed to
    `size`), else None. Raises `UserError` for a file that is not a
    readable image.
    """
    from PIL import Image

    if background not in BACKGROUNDS:
        raise UserError(f"background={background!r}: expected one of {', '.join(BACKGROUNDS)}.")
    name, path = str(path), pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file.")
    if not path.is_file():
        raise UserError(f"{path}: not a file.")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file.")
    images, batch = _file_images(path)
    names = [f"{name}[{index}]" for index in range(len(images))] if batch else [name]
    count, height, width = images.shape
    notes = []
    # Inverted before letterboxing, so that the margins added are the dark background.
    inverted = np.array([background == "light" or (background == "auto" and light_background(image))
                         for image in images])
    if inverted.any():
        images = np.where(inverted[:, None, None], 1 - images, images)
        what = f"{inverted.sum()} of {count} images" if batch else "dark digits on a light background"
        notes.append(f"{what} inverted to light on dark" + (" (--background light)" if background == "light" else ""))
    if (height, width) != tuple(size):
        what = f"{count} {width}x{height} images" if batch else f"{width}x{height} image"
        notes.append(f"{what} letterboxed to {size[1]}x{size[0]}")
        images = np.stack([np.asarray(letterbox(Image.fromarray(image), size)) for image in images])
    return names, images[..., None], "; ".join(notes) or None
