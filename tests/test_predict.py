import json

import numpy as np
import pytest
from PIL import Image

from lstm_stn_tf import Predictor, UserError, build_model, cli, exporting, paths
from lstm_stn_tf.predictor import read_image

CANVAS, N_DIGITS = 60, 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One small model as .keras, SavedModel and float32 .tflite."""
    folder = tmp_path_factory.mktemp("models")
    model = build_model("lstm_stn", image_size=(CANVAS, CANVAS), n_digits=N_DIGITS, glimpse_size=(20, 20),
                        units=16, localisation_filters=4, classifier_filters=8, classifier_units=16)
    kernel = model.get_layer("localizer").transform_kernel
    kernel.assign(np.random.default_rng(0).normal(0, 0.1, kernel.shape).astype("float32"))
    model.save(folder / "model.keras")
    exporting.write_saved_model(model, folder / "saved_model")
    (folder / "model.tflite").write_bytes(exporting.convert_float(folder / "saved_model"))
    return {"keras": folder / "model.keras", "saved_model": folder / "saved_model", "tflite": folder / "model.tflite"}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (5, CANVAS, CANVAS), dtype=np.uint8)


def test_every_format_reads_the_same_digits(models, images):
    keras_digits, keras_probabilities, keras_transforms = Predictor(models["keras"]).predict(images)
    assert keras_digits.shape == (5, N_DIGITS) and keras_transforms.shape == (5, N_DIGITS, 2, 3)
    for format in ("saved_model", "tflite"):
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
    image, note = read_image(tmp_path / "wide.png", (CANVAS, CANVAS))
    assert image.shape == (CANVAS, CANVAS, 1) and image.dtype == np.float32
    assert note == "60x30 image letterboxed to 60x60"
    np.testing.assert_allclose(image[15:45, :, 0], 76 / 255, atol=1e-6)
    assert not image[:15].any() and not image[45:].any()

    np.save(tmp_path / "exact.npy", np.full((CANVAS, CANVAS, 1), 0.5, np.float32))
    image, note = read_image(tmp_path / "exact.npy", (CANVAS, CANVAS))
    assert note is None and np.all(image == 0.5)


def _write_inputs(folder, images):
    Image.fromarray(images[0]).save(folder / "grey.png")
    Image.fromarray(np.repeat(images[1][..., None], 3, axis=-1)).save(folder / "colour.jpg", quality=95)
    np.save(folder / "uint8.npy", images[2])
    np.save(folder / "float.npy", images[3] / np.float32(255))
    Image.fromarray(images[4][:28, :28]).save(folder / "small.png")
    (folder / "text.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    np.save(folder / "cube.npy", np.zeros((3, 4, 5), np.uint8))
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
        f"lstm-stn: error: {bad[3]}: array of shape (3, 4, 5); expected one grey image, (height, width) or (height, width, 1).",
        f"lstm-stn: warning: {good[4]}: 28x28 image letterboxed to 60x60.",
        "lstm-stn: error: 4 of 9 files could not be read.",
    ]


def test_predict_json(models, images, tmp_path, capsys):
    good, bad = _write_inputs(tmp_path, images)
    assert cli.main(["predict", good[0], bad[0], "--model", str(models["saved_model"]), "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert results[0]["file"] == good[0] and len(results[0]["digits"]) == N_DIGITS
    assert len(results[0]["confidence"]) == N_DIGITS
    assert results[1] == {"file": bad[0], "error": f"{bad[0]}: no such file."}


@pytest.mark.parametrize("name", ["model.keras", "model.tflite", "saved_model"])
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
