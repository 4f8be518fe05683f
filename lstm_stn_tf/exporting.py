"""Export a trained model for serving: SavedModel, TFLite float32 and int8.

    lstm-stn export runs/lstm_stn-seed0-... --out export/lstm_stn

The folder holds `model.keras` (weights, no optimizer state), `saved_model/1/`
(a SavedModel in TF Serving's versioned layout: `saved_model/` is the model's
base path), `model.tflite`, `model_int8.tflite`, `model_web.tflite` and
`model_web_int8.tflite` (batch 1: LiteRT.js takes static shapes only), with `onnx=True` also
`model.onnx`, and `export.json` (file sizes, parity with Keras, test errors);
exported from a finished run directory, also the run's `metrics.json` and
`config.json` and a `MODEL_CARD.md`. Every format has one signature, `serving_default`:
`image` float32 `(batch, H, W, 1)` in [0, 1] -> `digits` int32
`(batch, n_digits)`, `probabilities` `(batch, n_digits, 10)` and, for models
with a transformer, `transforms` `(batch, steps, 2, 3)`. A model that reads
digit strings returns `probabilities` `(batch, n_digits + 1, 11)` (class 10
ends the string) and `digits` `(batch, n_digits)`: the string read
(`strings.read_strings`), then 10 after its end. Outputs are read by name,
never by position.
"""

import importlib.metadata
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from lstm_stn_tf.data import to_model_input
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.evaluation import error_metrics, float32_model, load_model, model_split, save_inference_model, write_json
from lstm_stn_tf.layers import AffineGridGenerator, BilinearInterpolation
from lstm_stn_tf.layers.lstm_localizer import TRANSFORM_HEAD_SCOPE
from lstm_stn_tf.model_card import model_card
from lstm_stn_tf.models import attention_model
from lstm_stn_tf.paths import atomic_directory, model_source, shipped_models_dir
from lstm_stn_tf.predictor import SIGNATURE, Predictor
from lstm_stn_tf.strings import read_strings, has_end_class, string_metrics

DIGIT_ERRORS = ("single_digit_error", "sequence_error")  # the TFLite test errors export.json gives
STRING_ERRORS = ("string_error", "character_error_rate", "length_accuracy")  # ... for a strings model
CALIBRATION_SIZE = 300  # train images that set the int8 ranges
PARITY_SIZE = 100  # test images on which the formats are compared with Keras
SAVED_MODEL = "saved_model/1"  # TF Serving's layout: a base path, then a folder per version
FILES = ("model.keras", "saved_model", "model.tflite", "model_int8.tflite", "model_web.tflite", "model_web_int8.tflite")
ONNX_FILE = "model.onnx"
EXPORT_FILES = FILES + (ONNX_FILE, "export.json", "metrics.json", "config.json", "MODEL_CARD.md")  # all an export writes


def write_saved_model(model, path, batch_size=None):
    """A SavedModel whose `serving_default` signature returns named outputs,
    for batches of any size, or of `batch_size` only."""
    attention = attention_model(model)

    def serve(image):
        outputs = attention(image, training=False)
        # Glimpses are for pictures, not serving: they would multiply the output size.
        served = {name: outputs[name] for name in ("probabilities", "transforms") if name in outputs}
        probabilities = outputs["probabilities"]
        if has_end_class(probabilities):  # a string: its digits up to the end, then END_CLASS
            served["digits"] = read_strings(probabilities, argmax=tf.argmax)
        else:
            served["digits"] = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return served

    archive = keras.export.ExportArchive()
    archive.track(attention)
    image = tf.TensorSpec((batch_size,) + tuple(model.input.shape[1:]), tf.float32, name="image")
    archive.add_endpoint(SIGNATURE, serve, input_signature=[image])
    archive.write_out(str(path), verbose=False)


def _converter(saved_model):
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
    # Builtin ops only: the model runs on the plain LiteRT runtime, without Flex.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert_float(saved_model):
    """The float32 TFLite flatbuffer of a SavedModel written by `write_saved_model`."""
    return _converter(saved_model).convert()


def convert_web(model, calibration_images=None):
    """The TFLite flatbuffers of `model` for batches of one image, by file name:
    `model_web.tflite` (float32) and, given `calibration_images`,
    `model_web_int8.tflite` (calibrated as `convert_int8`), from one trace.

    LiteRT.js refuses a dynamic batch at run time; converted from a
    dynamic-batch SavedModel with its input shape patched, the file reads
    zero transforms. So the graph is traced at batch 1 from the start.
    """
    with tempfile.TemporaryDirectory() as folder:
        write_saved_model(model, folder, batch_size=1)
        converted = {"model_web.tflite": convert_float(folder)}
        if calibration_images is not None:
            converted["model_web_int8.tflite"] = convert_int8(folder, model, converted["model_web.tflite"],
                                                              calibration_images)
        return converted


def _check_onnx_installed():
    try:
        import onnxruntime  # noqa: F401 -- the parity check runs the file
        import tf2onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs tf2onnx and onnxruntime: pip install 'lstm-stn-tf[onnx]'.") from None


def convert_onnx(saved_model, out):
    """Writes `out`, the ONNX model of a SavedModel written by `write_saved_model`,
    with tf2onnx's own converter (dynamic batch kept; inputs and outputs keep their
    signature names). tf2onnx's Keras path does not take Keras 3 models."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
               "--signature_def", SIGNATURE, "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"tf2onnx failed on {saved_model}:\n{result.stderr[-4000:]}")


def coordinate_scopes(model):
    """Name scopes of the ops that compute where the glimpses are read.

    int8 would give each coordinate 256 levels, steps of ~0.4 pixel on a
    100-pixel canvas: on the 6-epoch demo model the single-digit error rose
    from 8.6 % to 14.0 % with them quantised, and to 8.7 % without.
    """
    scopes = {TRANSFORM_HEAD_SCOPE, "transforms"}
    for layer in model.layers:
        if isinstance(layer, (AffineGridGenerator, BilinearInterpolation)):
            scopes.add(layer.name)
        elif isinstance(layer, keras.layers.Dense) and layer.name == "localizer":
            scopes.add(layer.name)  # cnn_stn's localiser is a 6-unit transform head
    return scopes


def _flatbuffer(model_content):
    from ai_edge_litert import schema_py_generated as schema

    return schema, schema.Model.GetRootAs(model_content, 0)


def tflite_tensor_names(model_content):
    _, model = _flatbuffer(model_content)
    graph = model.Subgraphs(0)
    return [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]


def tflite_operators(model_content):
    """The sorted operator names of a TFLite model; a Flex op shows as e.g. `FlexConv2D`."""
    schema, model = _flatbuffer(model_content)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    operators = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in BuiltinCode; the deprecated field holds the rest.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        operators.add(code.CustomCode().decode() if code.CustomCode() else names[builtin])
    return sorted(operators)


def convert_int8(saved_model, model, float_model, calibration_images):
    """Integer-quantised TFLite, calibrated on `calibration_images` (float32 model input).

    Weights and activations are int8 except in `coordinate_scopes`; the
    signature still takes and returns float32 (and int32 digits).
    """
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def calibration():
        for image in calibration_images:
            yield [image[None]]

    converter.representative_dataset = calibration
    pattern = re.compile(r"(^|/)(" + "|".join(map(re.escape, coordinate_scopes(model))) + r")(_\d+)?/")
    float_nodes = [name for name in tflite_tensor_names(float_model) if pattern.search(name)]
    if not float_nodes:
        return converter.convert()
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes)
    with warnings.catch_warnings():
        # The debugger runs TensorFlow's own, deprecated, interpreter inside.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=calibration, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def _size(path):
    path = pathlib.Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _max_differences(predicted, reference):
    """Max |difference| of the probabilities and transforms of two `Predictor.predict` results."""
    _, probabilities, transforms = predicted
    _, reference_probabilities, reference_transforms = reference
    differences = {"probabilities": float(np.max(np.abs(probabilities - reference_probabilities)))}
    if reference_transforms is not None:
        differences["transforms"] = float(np.max(np.abs(transforms - reference_transforms)))
    return differences


def compare_formats(folder, images, labels, parity_size=PARITY_SIZE):
    """Parity with Keras on the first `parity_size` images, and the TFLite test errors."""
    folder = pathlib.Path(folder)
    reference = Predictor(folder / "model.keras").predict(images[:parity_size])
    parity = {"n_images": int(min(parity_size, len(images)))}
    errors = {"n_images": int(len(images))}
    formats = [("saved_model", "saved_model"), ("tflite_fp32", "model.tflite"), ("tflite_int8", "model_int8.tflite"),
               ("tflite_web", "model_web.tflite"), ("tflite_web_int8", "model_web_int8.tflite"), ("onnx", ONNX_FILE)]
    for key, file in formats:
        if not (folder / file).exists():  # model.onnx is written only when asked for
            continue
        predictor = Predictor(folder / file)
        parity[f"{key}_vs_keras"] = _max_differences(predictor.predict(images[:parity_size]), reference)
        if key in ("tflite_fp32", "tflite_int8"):  # the web files are the same graphs at batch 1
            probabilities = predictor.predict(images)[1]
            strings = has_end_class(probabilities)
            metrics = (string_metrics if strings else error_metrics)(probabilities, labels)
            errors[key] = {name: metrics[name] for name in (STRING_ERRORS if strings else DIGIT_ERRORS)}
    return parity, errors


def _check_out(out):
    """An export replaces the whole folder: an earlier export, never other
    files, nor the folder the command runs in."""
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / "export.json").exists()):
        raise UserError(f"{out}: exists and is not an earlier export; choose a new or empty folder for --out.")
    here = pathlib.Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise UserError(f"{out}: the export would replace the folder this command runs in; run it from elsewhere.")
    others = sorted(entry.name for entry in out.iterdir() if entry.name not in EXPORT_FILES)
    if others:
        raise UserError(
            f"{out}: an earlier export, but also {', '.join(others)}, which the export did not write and would "
            "delete; move them out, or choose another --out."
        )


def export(source, out, eval_size=None, calibration_size=CALIBRATION_SIZE, data_seed=None, mnist_path=None, command=None,
           onnx=False):
    """Writes the export folder `out` for the model `source`; returns its report.

    Args:
        source: a `.keras` file, run directory or shipped model name.
        out: the folder, written whole or not at all.
        eval_size: test images for the TFLite errors (default: the whole split).
        calibration_size: train images that calibrate the int8 model.
        data_seed, mnist_path: the data, as for `lstm-stn evaluate` (None: the run's recorded seed, else 0).
        command: the command line, recorded in `export.json`.
        onnx: also write `model.onnx` (needs the `onnx` extra).
    """
    out = pathlib.Path(out)
    _check_out(out)
    if onnx:
        _check_onnx_installed()
    path = model_source(source)
    model = float32_model(load_model(path))  # a bfloat16-trained model is served in float32
    # A run directory keeps its records in itself; a model file (a shipped model's, an
    # earlier export's, a run's best.keras) beside them.
    records = path if path.is_dir() else path.parent
    earlier_export = path.name == "model.keras" and (records / "export.json").exists()
    calibration, _ = model_split(path, model, "train", calibration_size, data_seed, mnist_path)
    images, labels = model_split(path, model, "test", eval_size, data_seed, mnist_path)
    with atomic_directory(out) as folder:
        if earlier_export:
            # Already the float32 inference model: copied, so that re-exporting a shipped
            # model does not add a second copy of the same weights to git.
            shutil.copyfile(path, folder / "model.keras")
        else:
            save_inference_model(model, folder / "model.keras")
        write_saved_model(model, folder / SAVED_MODEL)
        float_model = convert_float(folder / SAVED_MODEL)
        (folder / "model.tflite").write_bytes(float_model)
        calibration = to_model_input(calibration)
        int8_model = convert_int8(folder / SAVED_MODEL, model, float_model, calibration)
        (folder / "model_int8.tflite").write_bytes(int8_model)
        for file, content in convert_web(model, calibration).items():
            (folder / file).write_bytes(content)
        if onnx:
            convert_onnx(folder / SAVED_MODEL, folder / ONNX_FILE)
        parity, test_error = compare_formats(folder, images, labels)
        report = {
            "model": str(source),
            "name": model.name,
            "image_shape": [None] + list(model.input.shape[1:]),
            "file_bytes": {file: _size(folder / file) for file in FILES + (ONNX_FILE,) if (folder / file).exists()},
            "tflite_operators": tflite_operators(float_model),
            "calibration_images": int(len(calibration)),
            "parity_max_abs_diff": parity,
            "test_error": test_error,
            "versions": {package: importlib.metadata.version(package) for package in ("tensorflow", "keras", "ai-edge-litert")},
            "command": command,
        }
        write_json(report, folder / "export.json")
        if (records / "metrics.json").exists():  # a finished run: ship its errors, settings and a card
            metrics = json.loads((records / "metrics.json").read_text())
            config = json.loads((records / "config.json").read_text())
            shutil.copyfile(records / "metrics.json", folder / "metrics.json")
            # The run's MNIST file is a path on the machine it ran on; elsewhere
            # the data comes from the cache or the mirror.
            write_json(dict(config, mnist_path=None), folder / "config.json")
            shipped = out.resolve().parent == shipped_models_dir().resolve()
            (folder / "MODEL_CARD.md").write_text(model_card(out.name, metrics, config, report, shipped))
    return report


def format_report(report, out):
    """A short plain-text summary of `export`'s report."""
    lines = [f"Exported {report['model']} to {out}:"]
    lines += [f"  {file:<22} {size / 1e6:6.2f} MB" for file, size in report["file_bytes"].items()]
    parity = report["parity_max_abs_diff"]
    lines.append(f"max |difference| from Keras on {parity['n_images']} test images:")
    for key, differences in parity.items():
        if key != "n_images":
            lines.append(f"  {key[: -len('_vs_keras')]:<20} " + ", ".join(f"{name} {value:.2e}" for name, value in differences.items()))
    errors = report["test_error"]
    names = STRING_ERRORS if "string_error" in errors["tflite_fp32"] else DIGIT_ERRORS
    lines.append(f"test errors on {errors['n_images']} images ({' / '.join(name.replace('_', ' ') for name in names)}):")
    for key in ("tflite_fp32", "tflite_int8"):
        lines.append(f"  {key:<20} " + " / ".join(f"{100 * errors[key][name]:6.2f} %" for name in names))
    return "\n".join(lines)
