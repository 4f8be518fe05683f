"""The `export` and `predict` subcommands of `lstm-stn`."""

import json
import sys

from lstm_stn_tf.cli import _add_data_arguments, _command_line
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.predictor import BACKGROUNDS

DEFAULT_MODEL = "lstm_stn"


def add_commands(subparsers, wanted):
    export = subparsers.add_parser(
        "export", help="SavedModel, TFLite float32 and int8 files for serving",
        description="Writes OUT/model.keras, OUT/saved_model/1/ (a SavedModel in TF Serving's layout: "
        "OUT/saved_model is the model's base path), OUT/model.tflite (float32, builtin ops), "
        "OUT/model_int8.tflite (int8, calibrated on train images), OUT/model_web.tflite (float32, batch 1, "
        "for LiteRT.js and `lstm-stn web`), with --onnx OUT/model.onnx, and OUT/export.json (sizes, "
        "parity with Keras, test errors). Each takes `image` and returns `digits`, `probabilities` "
        "and `transforms` by name.",
    )
    export.add_argument("model", help="a .keras file, a run directory or a shipped model's name")
    export.add_argument("--out", required=True, metavar="DIR", help="the export folder (an earlier export there is replaced)")
    export.add_argument("--eval-size", type=int, help="test images for the errors of the TFLite models (default: all 10,000)")
    export.add_argument("--onnx", action="store_true",
                        help="also write OUT/model.onnx from the SavedModel with tf2onnx (pip install 'lstm-stn-tf[onnx]')")
    _add_data_arguments(export, judged_model=True)
    export.set_defaults(handler=cmd_export)

    predict = subparsers.add_parser(
        "predict", help="read the digits in image files",
        description="Prints the digits of each file (a strings model reads 1 to 5, up to where it "
        "stops). Images of another size are letterboxed to the model's, aspect kept; colour is made grey; "
        "dark digits on a light background are inverted to the models' light on dark; a file that cannot "
        "be read is reported and the others are still read (exit status 2 if any failed).",
    )
    predict.add_argument("files", nargs="+", metavar="FILE",
                         help="PNG or JPEG images (transparent backgrounds read as black), or .npy arrays: one "
                         "image (H, W[, 1]) or a batch (N, H, W[, 1]), reported as FILE[i]; integers in 0-255 or "
                         "floats in [0, 1]")
    predict.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                         help=f"a shipped model's name, .keras file, run directory, export folder, SavedModel "
                         f"folder (or TF Serving base path), .tflite or .onnx file (default {DEFAULT_MODEL})")
    predict.add_argument("--background", choices=BACKGROUNDS, default="auto",
                         help="auto (the default): invert an image whose border is mostly light, i.e. dark digits on "
                         "paper; light: invert every image; dark: invert none (the models read light on dark)")
    predict.add_argument("--json", action="store_true",
                         help='print a JSON list, one object per image: "string" (the digits read), "digits" and '
                         '"confidence" (each digit\'s probability)')
    predict.set_defaults(handler=cmd_predict)


def cmd_export(args):
    from lstm_stn_tf import exporting

    if args.eval_size is not None and args.eval_size < 1:
        raise UserError(f"--eval-size {args.eval_size}: expected at least one image.")
    report = exporting.export(args.model, args.out, args.eval_size, data_seed=args.data_seed,
                              mnist_path=args.mnist, command=_command_line(), onnx=args.onnx)
    print(exporting.format_report(report, args.out))


def cmd_predict(args):
    import numpy as np

    from lstm_stn_tf.predictor import Predictor, read_images
    from lstm_stn_tf.strings import label_string

    predictor = Predictor(args.model)
    results, images = [], []
    for file in args.files:
        try:
            names, file_images, note = read_images(file, predictor.image_size, args.background)
        except UserError as error:
            print(f"lstm-stn: error: {error}", file=sys.stderr)
            results.append({"file": file, "error": str(error)})
            continue
        if note:
            print(f"lstm-stn: warning: {file}: {note}.", file=sys.stderr)
        results.extend({"file": name} for name in names)
        images.append(file_images)
    read = [result for result in results if "error" not in result]
    if images:
        digits, probabilities, _ = predictor.predict(np.concatenate(images))
        for result, row, row_probabilities in zip(read, digits, probabilities):
            string = label_string(row)
            result["string"] = string
            result["digits"] = [int(digit) for digit in string]
            # A digit's probability at its step (for a strings model, among all 11 classes).
            result["confidence"] = [round(float(p[d]), 4) for p, d in zip(row_probabilities, result["digits"])]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in read:
            print(f"{result['file']}: {result['string'] or '(no digits)'}")
    failed = len(results) - len(read)
    if failed:
        raise UserError(f"{failed} of {len(args.files)} files could not be read.")
