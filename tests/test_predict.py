import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lstm_stn_tf import Predictor, UserError, _quiet_import, build_model, cli, exporting, paths
from lstm_stn_tf.predictor import light_background, read_images
from lstm_stn_tf.strings import decode_strings, label_string

CANVAS, N_DIGITS = 60, 2


FORMATS = ("saved_model", "tflite")  # besides keras
# The web file and ONNX, for the strings model (test_export reads them for a 3-digit one).
STRINGS_FORMATS = FORMATS + ("web_tflite", "onnx")


def _every_format(model, folder, formats=FORMATS):
    """`model` saved in `folder` as .keras and in `formats`, by format."""
    model.save(folder / "model.keras")
    exporting.write_saved_model(model, folder / "saved_model")
    (folder / "model.tflite").write_bytes(exporting.convert_float(folder / "saved_model"))
    files = {"keras": folder / "model.keras", "saved_model": folder / "saved_model", "tflite": folder / "model.tflite"}
    if "web_tflite" in formats:
        files["web_tflite"] = folder / "model_web.tflite"
        files["web_tflite"].write_bytes(exporting.convert_web(model)["model_web.tflite"])
    if "onnx" in formats:
        files["onnx"] = folder / "model.onnx"
        exporting.convert_onnx(folder / "saved_model", files["onnx"])
    return files


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One small model as .keras, SavedModel and float32 .tflite."""
    folder = tmp_path_factory.mktemp("models")
    model = build_model("lstm_stn", image_size=(CANVAS, CANVAS), n_digits=N_DIGITS, glimpse_size=(20, 20),
                        units=16, localisation_filters=4, classifier_filters=8, classifier_units=16)
    kernel = model.get_layer("localizer").transform_kernel
    kernel.assign(np.random.default_rng(0).normal(0, 0.1, kernel.shape).astype("float32"))
    return _every_format(model, folder)


@pytest.fixture(scope="module")
def images():
    # Noise, on the dark side as the models' images are (a light image would be inverted).
    return np.random.default_rng(1).integers(0, 128, (5, CANVAS, CANVAS), dtype=np.uint8)


@pytest.fixture(scope="module")
def strings_models(tmp_path_factory):
    """A small model that reads strings of up to 3 digits, in every format Predictor reads."""
    folder = tmp_path_factory.mktemp("strings_models")
    model = build_model("lstm_stn", image_size=(CANVAS, 2 * CANVAS), n_digits=3, variable_length=True,
                        glimpse_size=(20, 20), units=16, localisation_filters=4, classifier_filters=8,
                        classifier_units=16)
    rng = np.random.default_rng(3)
    # Moving glimpses, and an end head that ends strings after different steps in different images:
    # a steep one, centred on the median of its inputs over these images.
    for weight, scale in ((model.get_layer("localizer").transform_kernel, 0.1), (model.get_layer("end").kernel, 3.0)):
        weight.assign(rng.normal(0, scale, weight.shape).astype("float32"))
    ends = model.predict(_string_images() / np.float32(255), verbose=0)[:, :-1, 10]
    logits = np.log(ends) - np.log1p(-ends)
    end = model.get_layer("end")
    end.bias.assign(end.bias.numpy() - np.median(logits).astype("float32"))
    return _every_format(model, folder, STRINGS_FORMATS)


def test_every_format_reads_the_same_digits(models, images):
    keras_digits, keras_probabilities, keras_transforms = Predictor(models["keras"]).predict(images)
    assert keras_digits.shape == (5, N_DIGITS) and keras_transforms.shape == (5, N_DIGITS, 2, 3)
    for format in FORMATS:
        predictor = Predictor(models[format])
        assert (predictor.format, predictor.image_size) == (format, (CANVAS, CANVAS))
        digits, probabilities, transforms = predictor.predict(images)
        np.testing.assert_array_equal(digits, keras_digits)
        np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)
        np.testing.assert_allclose(transforms, keras_transforms, atol=1e-4)


def test_uint8_and_float_images_are_the_same_input(models, images):
    predictor = Predictor(models["tflite"])
    _, from_uint8, _ = predictor.predict(images)
    _, from_float, _ = predictor.predict((images / np.float32(255))[..., None])
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)
    with pytest.raises(UserError, match=r"shape \(5, 30, 30\); expected \(N, 60, 60\)"):
        predictor.predict(images[:, :30, :30])


def test_an_export_folder_uses_its_float_tflite(models, tmp_path):
    (tmp_path / "model.tflite").write_bytes(models["tflite"].read_bytes())
    assert Predictor(tmp_path).format == "tflite"


def test_a_shipped_name_finds_export_name_model_keras(models, tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "model.keras").write_bytes(models["keras"].read_bytes())
    monkeypatch.setattr(paths, "shipped_models_dir", lambda: tmp_path)
    assert Predictor("tiny").format == "keras"
    with pytest.raises(UserError, match="no shipped model of that name"):
        Predictor("other")


def test_colour_is_made_grey_and_other_sizes_are_letterboxed(tmp_path):
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[..., 0] = 255  # pure red: grey level 76 (ITU-R 601 luma)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    names, images, note = read_images(tmp_path / "wide.png", (CANVAS, CANVAS))
    assert names == [str(tmp_path / "wide.png")]
    assert images.shape == (1, CANVAS, CANVAS, 1) and images.dtype == np.float32
    assert note == "60x30 image letterboxed to 60x60"
    np.testing.assert_allclose(images[0, 15:45, :, 0], 76 / 255, atol=1e-6)
    assert not images[0, :15].any() and not images[0, 45:].any()

    np.save(tmp_path / "exact.npy", np.full((CANVAS, CANVAS, 1), 0.5, np.float32))
    names, images, note = read_images(tmp_path / "exact.npy", (CANVAS, CANVAS))
    assert names == [str(tmp_path / "exact.npy")] and note is None and np.all(images == 0.5)


def _strokes():
    """A transparent 60 x 60 canvas's opaque pixels: a bar, with a soft (half-opaque) edge."""
    alpha = np.zeros((CANVAS, CANVAS), np.uint8)
    alpha[10:50, 25:35] = 255
    alpha[10:50, 35] = 128
    return alpha


@pytest.mark.parametrize("colour, background", [(0, 0), (0, 255), (255, 0), (200, 255)],
                         ids=["black-on-clear-black", "black-on-clear-white", "white-on-clear-black", "grey-on-clear-white"])
def test_strokes_on_a_transparent_background_read_as_ink(tmp_path, colour, background):
    alpha = _strokes()
    rgba = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, colour, background)
    rgba[..., 3] = alpha
    Image.fromarray(rgba).save(tmp_path / "drawn.png")
    _, images, _ = read_images(tmp_path / "drawn.png", (CANVAS, CANVAS))
    np.testing.assert_allclose(images[0, ..., 0], alpha / 255, atol=1e-6)


def test_a_transparent_margin_reads_as_black(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (CANVAS, CANVAS), dtype=np.uint8)
    opaque = np.zeros((CANVAS, CANVAS), np.uint8)
    opaque[5:55, 5:55] = 255
    Image.fromarray(np.stack([grey, opaque], axis=-1)).save(tmp_path / "margin.png")
    _, images, _ = read_images(tmp_path / "margin.png", (CANVAS, CANVAS))
    np.testing.assert_allclose(images[0, ..., 0], np.where(opaque > 0, grey / 255, 0), atol=1e-6)


def test_integer_pixels_are_scaled_and_other_values_refused(models, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, CANVAS, CANVAS), dtype=np.uint8)  # the full range
    predictor = Predictor(models["tflite"])
    _, from_uint8, _ = predictor.predict(images)
    for dtype in (np.int64, np.uint16, np.int16):
        np.testing.assert_array_equal(predictor.predict(images.astype(dtype))[1], from_uint8)
    expected = "; expected floats in [0, 1] or integers in 0-255."
    bad = {
        "float32 values from 0 to 255": images.astype(np.float32),
        "float32 values include NaN": np.where(images > 128, np.nan, 0.5).astype(np.float32),
        "int64 values from -1 to 255": images.astype(np.int64) - (images == 0),
        "uint16 values from 0 to 256": images.astype(np.uint16) + (images == 255),
        "bool values": images > 128,
    }
    for found, array in bad.items():
        with pytest.raises(UserError) as raised:
            predictor.predict(array)
        assert str(raised.value) == f"images: {found}{expected}"
    # The .npy files that `lstm-stn predict` reads are checked by the same rule.
    np.save(tmp_path / "float255.npy", images[0].astype(np.float32))
    with pytest.raises(UserError) as raised:
        read_images(tmp_path / "float255.npy", (CANVAS, CANVAS))
    assert str(raised.value) == f"{tmp_path / 'float255.npy'}: float32 values from 0 to 255{expected}"
    np.save(tmp_path / "int64.npy", images[0].astype(np.int64))
    np.testing.assert_array_equal(read_images(tmp_path / "int64.npy", (CANVAS, CANVAS))[1][0, ..., 0], images[0] / np.float32(255))


def _write_inputs(folder, images):
    Image.fromarray(images[0]).save(folder / "grey.png")
    Image.fromarray(np.repeat(images[1][..., None], 3, axis=-1)).save(folder / "colour.jpg", quality=95)
    np.save(folder / "uint8.npy", images[2])
    np.save(folder / "float.npy", images[3] / np.float32(255))
    Image.fromarray(images[4][:28, :28]).save(folder / "small.png")
    (folder / "text.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    np.save(folder / "cube.npy", np.zeros((2, 4, 5, 3), np.uint8))
    good = ["grey.png", "colour.jpg", "uint8.npy", "float.npy", "small.png"]
    bad = ["missing.png", "text.png", "empty.png", "cube.npy"]
    return [str(folder / name) for name in good], [str(folder / name) for name in bad]


def test_predict_reads_every_good_file_and_names_each_bad_one(models, images, tmp_path, capsys):
    good, bad = _write_inputs(tmp_path, images)
    files = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4]]
    assert cli.main(["predict", *files, "--model", str(models["tflite"])]) == 2
    out, err = capsys.readouterr()

    digits, _, _ = Predictor(models["tflite"]).predict(images[:4])
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == good
    assert [line.split(": ")[1] for line in lines[:4]] == ["".join(map(str, row)) for row in digits]
    errors = err.splitlines()
    assert "Traceback" not in err
    assert errors == [
        f"lstm-stn: error: {bad[0]}: no such file.",
        f"lstm-stn: error: {bad[1]}: not an image; expected PNG, JPEG or .npy.",
        f"lstm-stn: error: {bad[2]}: empty file.",
        f"lstm-stn: error: {bad[3]}: array of shape (2, 4, 5, 3); expected one grey image, (height, width) or "
        "(height, width, 1), or a batch of them, (N, height, width) or (N, height, width, 1).",
        f"lstm-stn: warning: {good[4]}: 28x28 image letterboxed to 60x60.",
        "lstm-stn: error: 4 of 9 files could not be read.",
    ]


def test_predict_reads_each_image_of_a_npy_batch(models, images, tmp_path, capsys):
    np.save(tmp_path / "batch.npy", images[:3])
    np.save(tmp_path / "channel.npy", (images[3:] / np.float32(255))[..., None])
    np.save(tmp_path / "small.npy", images[:2, :28, :28])
    files = [str(tmp_path / name) for name in ("batch.npy", "channel.npy", "small.npy")]
    assert cli.main(["predict", *files, "--model", str(models["tflite"])]) == 0
    out, err = capsys.readouterr()
    digits, _, _ = Predictor(models["tflite"]).predict(images)
    names = [f"{files[0]}[{i}]" for i in range(3)] + [f"{files[1]}[{i}]" for i in range(2)]
    assert out.splitlines()[:5] == [f"{name}: {''.join(map(str, row))}" for name, row in zip(names, digits)]
    assert [line.split(": ")[0] for line in out.splitlines()[5:]] == [f"{files[2]}[0]", f"{files[2]}[1]"]
    assert err == f"lstm-stn: warning: {files[2]}: 2 28x28 images letterboxed to 60x60.\n"


def test_an_image_too_large_to_decode_is_one_error(models, images, tmp_path, capsys, monkeypatch):
    Image.fromarray(images[0]).save(tmp_path / "huge.png")
    np.save(tmp_path / "fine.npy", images[1])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", CANVAS * CANVAS // 4)  # huge.png is twice Pillow's bomb limit
    files = [str(tmp_path / "huge.png"), str(tmp_path / "fine.npy")]
    assert cli.main(["predict", *files, "--model", str(models["tflite"])]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{files[1]}: ") and len(out.splitlines()) == 1
    assert err.splitlines() == [
        f"lstm-stn: error: {files[0]}: image too large to read (Image size (3600 pixels) exceeds limit of 1800 "
        "pixels, could be decompression bomb DOS attack).",
        "lstm-stn: error: 1 of 2 files could not be read.",
    ]


def test_predict_json(models, images, tmp_path, capsys):
    good, bad = _write_inputs(tmp_path, images)
    assert cli.main(["predict", good[0], bad[0], "--model", str(models["saved_model"]), "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert results[0]["file"] == good[0] and len(results[0]["digits"]) == N_DIGITS
    assert len(results[0]["confidence"]) == N_DIGITS
    assert results[1] == {"file": bad[0], "error": f"{bad[0]}: no such file."}


@pytest.mark.parametrize("name", ["model.keras", "model.tflite", "model.onnx", "saved_model"])
def test_a_corrupt_model_is_one_clear_error(models, images, tmp_path, capsys, name):
    corrupt = tmp_path / name
    if name == "saved_model":
        corrupt.mkdir()
        (corrupt / "saved_model.pb").write_bytes(b"\x00garbage")
    else:
        corrupt.write_bytes(b"\x00garbage" * 100)
    np.save(tmp_path / "image.npy", images[0])
    assert cli.main(["predict", str(tmp_path / "image.npy"), "--model", str(corrupt)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"lstm-stn: error: {corrupt}: not a readable")


def test_the_command_line_shows_its_errors_but_not_tensorflows_start_up(models, images, tmp_path):
    np.save(tmp_path / "image.npy", images[0])
    missing = tmp_path / "missing.png"
    result = subprocess.run(
        [sys.executable, "-m", "lstm_stn_tf", "predict", str(tmp_path / "image.npy"), str(missing), "--model", str(models["keras"])],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, KERAS_BACKEND="tensorflow"),
    )
    assert result.returncode == 2 and result.stdout.startswith(f"{tmp_path / 'image.npy'}: ")
    assert result.stderr.splitlines() == [f"lstm-stn: error: {missing}: no such file.", "lstm-stn: error: 1 of 2 files could not be read."]


def test_help_and_other_commands_do_not_build_the_training_options(monkeypatch, capsys):
    def training_defaults(*args, **kwargs):
        raise AssertionError("imports lstm_stn_tf.training, and with it TensorFlow")

    import importlib

    # Also where a command module (tune's) took them by name from cli.
    for module in [cli] + [importlib.import_module(name) for name in cli.COMMAND_MODULES]:
        for name in ("_train_arguments", "_add_speed_arguments", "_add_recipe_arguments"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, training_defaults)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0 and {"reproduce", "tune", "web"} <= set(capsys.readouterr().out.split())
    assert cli.build_parser("predict").parse_args(["predict", "x.png"]).files == ["x.png"]
    monkeypatch.undo()
    assert cli.build_parser("train").parse_args(["train", "--precision", "float32"]).precision == "float32"


def test_start_up_output_is_dropped_unless_the_import_fails(capfd):
    with _quiet_import.stderr_captured():
        os.write(2, b"start-up line\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError), _quiet_import.stderr_captured():
        os.write(2, b"why it failed\n")
        raise ImportError("no module")
    assert capfd.readouterr().err == "why it failed\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def _string_images():
    return np.random.default_rng(4).integers(0, 128, (64, CANVAS, 2 * CANVAS), dtype=np.uint8)


def test_every_format_reads_the_same_strings(strings_models):
    images = _string_images()
    reference = Predictor(strings_models["keras"])
    digits, probabilities, _ = reference.predict(images)
    assert probabilities.shape == (64, 4, 11) and digits.shape == (64, 3)
    expected = decode_strings(probabilities)
    np.testing.assert_array_equal(digits, expected)
    strings = reference.read(images)
    assert strings == [label_string(row) for row in expected]
    assert len(set(map(len, strings))) > 1, "the test model should read strings of several lengths"
    for format in STRINGS_FORMATS:
        predictor = Predictor(strings_models[format])
        assert predictor.format == format.replace("web_", "") and predictor.read(images) == strings, format


def test_predict_json_gives_the_string_read(strings_models, tmp_path, capsys):
    image = np.random.default_rng(5).integers(0, 128, (CANVAS, 2 * CANVAS), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "string.png")
    assert cli.main(["predict", str(tmp_path / "string.png"), "--model", str(strings_models["tflite"]), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    digits, probabilities, _ = Predictor(strings_models["tflite"]).predict(image[None])
    string = label_string(digits[0])
    assert result["string"] == string and result["digits"] == [int(d) for d in string]
    assert result["confidence"] == [round(float(probabilities[0, step, int(d)]), 4) for step, d in enumerate(string)]


def test_dark_digits_on_light_paper_are_inverted(models, images, tmp_path, capsys):
    Image.fromarray(255 - images[0]).save(tmp_path / "paper.png")  # as photographed: dark ink, light paper
    file = str(tmp_path / "paper.png")
    digits = {background: Predictor(models["tflite"]).predict(pixels[None])[0][0]
              for background, pixels in (("dark", 255 - images[0]), ("auto", images[0]))}
    assert cli.main(["predict", file, "--model", str(models["tflite"])]) == 0
    out, err = capsys.readouterr()
    assert out == f"{file}: {''.join(map(str, digits['auto']))}\n"
    assert err == f"lstm-stn: warning: {file}: dark digits on a light background inverted to light on dark.\n"
    assert cli.main(["predict", file, "--model", str(models["tflite"]), "--background", "dark"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{file}: {''.join(map(str, digits['dark']))}\n" and err == ""
    _, forced, note = read_images(tmp_path / "paper.png", (CANVAS, CANVAS), background="light")
    np.testing.assert_allclose(forced[0, ..., 0], images[0] / 255, atol=1e-6)
    assert note == "dark digits on a light background inverted to light on dark (--background light)"


def test_a_light_background_is_told_by_the_frame_not_the_ink():
    paper = np.ones((50, 90), np.float32)
    paper[10:40, 20:70] = 0  # a large dark digit in the middle of the paper
    assert light_background(paper)
    assert not light_background(1 - paper)
    with pytest.raises(UserError, match="background='grey': expected one of auto, dark, light"):
        read_images("any.png", (CANVAS, CANVAS), background="grey")
