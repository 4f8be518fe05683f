import json
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from lstm_stn_tf import attention_model, build_model, cli, exporting
from lstm_stn_tf.predictor import Predictor
from lstm_stn_tf.evaluation import model_split
from lstm_stn_tf.strings import decode_strings

CANVAS, N_DIGITS = 60, 2
SIGNATURE = "serving_default"


def small_model(name):
    """A small untrained model whose transforms vary with the image."""
    options = dict(image_size=(CANVAS, CANVAS), n_digits=N_DIGITS, classifier_filters=8, classifier_units=16)
    if name != "cnn":
        options.update(glimpse_size=(20, 20), localisation_filters=4)
    if name == "lstm_stn":
        options.update(units=16)
    model = build_model(name, **options)
    # Untrained, every step would read the whole image (a zero transform
    # kernel); a random one moves the sampling points off the pixel grid.
    rng = np.random.default_rng(0)
    if name == "lstm_stn":
        kernel = model.get_layer("localizer").transform_kernel
        kernel.assign(rng.normal(0, 0.1, kernel.shape).astype("float32"))
    elif name == "cnn_stn":
        kernel = model.get_layer("localizer").kernel
        kernel.assign(rng.normal(0, 0.02, kernel.shape).astype("float32"))
    return model


def export_small(name, tmp_path, *flags):
    model = small_model(name)
    source = tmp_path / f"{name}.keras"
    model.save(source)
    out = tmp_path / f"{name}-export"
    assert cli.main(["export", str(source), "--out", str(out), "--eval-size", "20", *flags]) == 0
    return model, source, out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_small("lstm_stn", tmp_path_factory.mktemp("export"), "--onnx")


@pytest.fixture(scope="module")
def test_images(exported):
    model, source, _ = exported
    images, _ = model_split(source, model, "test", 20)
    return (images / np.float32(255))[..., None]


def test_saved_model_matches_keras_by_name(exported, test_images):
    model, _, out = exported
    reference = model.predict(test_images, verbose=0)
    signature = tf.saved_model.load(str(out / "saved_model" / "1")).signatures[SIGNATURE]
    (image,) = signature.structured_input_signature[1].values()
    assert (image.name, image.shape.as_list(), image.dtype) == ("image", [None, CANVAS, CANVAS, 1], tf.float32)

    outputs = {name: value.numpy() for name, value in signature(image=tf.constant(test_images)).items()}
    assert set(outputs) == {"digits", "probabilities", "transforms"}
    assert np.abs(outputs["probabilities"] - reference).max() < 1e-5
    assert outputs["digits"].dtype == np.int32
    np.testing.assert_array_equal(outputs["digits"], reference.argmax(-1))
    assert outputs["transforms"].shape == (len(test_images), N_DIGITS, 2, 3)
    assert outputs["transforms"].std(axis=0).min() > 1e-3  # the transforms differ between images


@pytest.mark.parametrize("batch", [1, 7])
def test_float_tflite_matches_keras_by_name_at_any_batch_size(exported, test_images, batch):
    model, _, out = exported
    images = test_images[:batch]
    reference = model.predict(images, verbose=0)
    runner = Interpreter(model_path=str(out / "model.tflite")).get_signature_runner(SIGNATURE)
    assert list(runner.get_input_details()["image"]["shape_signature"]) == [-1, CANVAS, CANVAS, 1]

    outputs = runner(image=images)
    assert set(outputs) == {"digits", "probabilities", "transforms"}
    assert np.abs(outputs["probabilities"] - reference).max() < 1e-4
    assert outputs["digits"].dtype == np.int32 and outputs["digits"].shape == (batch, N_DIGITS)
    assert outputs["transforms"].shape == (batch, N_DIGITS, 2, 3)


def test_float_tflite_has_builtin_operators_only(exported):
    model_content = (exported[2] / "model.tflite").read_bytes()
    operators = exporting.tflite_operators(model_content)
    assert "GATHER" in operators and "CONV_2D" in operators
    assert not [op for op in operators if op.startswith("Flex") or op == "CUSTOM"]
    # The plain LiteRT runtime has no Flex delegate: a Flex op would fail here.
    Interpreter(model_content=model_content).allocate_tensors()


def test_int8_model_quantises_all_but_the_sampling_coordinates(exported, test_images):
    model, _, out = exported
    interpreter = Interpreter(model_path=str(out / "model_int8.tflite"))
    outputs = interpreter.get_signature_runner(SIGNATURE)(image=test_images)
    assert set(outputs) == {"digits", "probabilities", "transforms"}
    assert np.abs(outputs["probabilities"] - model.predict(test_images, verbose=0)).max() < 0.05

    dtypes = {t["name"].split(";")[0]: t["dtype"] for t in interpreter.get_tensor_details()}
    assert {dtypes[name] for name in dtypes if "conv" in name} == {np.int8}
    coordinates = [name for name in dtypes if "/glimpses" in name or "/grid" in name or "/transform_head/" in name]
    assert coordinates and np.int8 not in {dtypes[name] for name in coordinates}
    assert (out / "model_int8.tflite").stat().st_size < (out / "model.tflite").stat().st_size


def test_export_json_records_sizes_parity_and_errors(exported):
    _, source, out = exported
    report = json.loads((out / "export.json").read_text())
    assert report["file_bytes"]["model.tflite"] == (out / "model.tflite").stat().st_size
    assert set(report["file_bytes"]) == {"model.keras", "saved_model", "model.tflite", "model_int8.tflite",
                                         "model_web.tflite", "model_web_int8.tflite", "model.onnx"}
    parity = report["parity_max_abs_diff"]
    assert parity["saved_model_vs_keras"]["probabilities"] < 1e-5
    for key in ("tflite_fp32", "tflite_web", "onnx"):
        assert parity[f"{key}_vs_keras"]["probabilities"] < 1e-4 and parity[f"{key}_vs_keras"]["transforms"] < 1e-4
    assert report["test_error"]["n_images"] == 20
    assert 0 <= report["test_error"]["tflite_int8"]["single_digit_error"] <= 1
    assert report["image_shape"] == [None, CANVAS, CANVAS, 1]
    assert "export" in report["command"] and report["model"] == str(source)


def test_model_without_transformer_exports_without_transforms(tmp_path):
    _, _, out = export_small("cnn", tmp_path)
    signature = tf.saved_model.load(str(out / "saved_model" / "1")).signatures[SIGNATURE]
    assert set(signature.structured_outputs) == {"digits", "probabilities"}
    runner = Interpreter(model_path=str(out / "model.tflite")).get_signature_runner(SIGNATURE)
    assert set(runner.get_output_details()) == {"digits", "probabilities"}
    assert not (out / "model.onnx").exists()  # written only with --onnx
    assert "model.onnx" not in json.loads((out / "export.json").read_text())["file_bytes"]


def test_web_tflite_takes_one_image_and_matches_keras(exported, test_images):
    model, _, out = exported
    runner = Interpreter(model_path=str(out / "model_web.tflite")).get_signature_runner(SIGNATURE)
    assert list(runner.get_input_details()["image"]["shape_signature"]) == [1, CANVAS, CANVAS, 1]
    reference = attention_model(model).predict(test_images[:3], verbose=0)
    for index in range(3):  # twice the same image too: a static file must not keep state between calls
        outputs = runner(image=test_images[index : index + 1])
        again = runner(image=test_images[index : index + 1])
        for name in ("probabilities", "transforms"):
            assert np.abs(outputs[name] - reference[name][index : index + 1]).max() < 1e-5
            np.testing.assert_array_equal(outputs[name], again[name])
    # Predictor reads a batch through it one image at a time.
    digits, probabilities, _ = Predictor(out / "model_web.tflite").predict(test_images[:5])
    assert np.abs(probabilities - model.predict(test_images[:5], verbose=0)).max() < 1e-5
    # The int8 web file is model_int8.tflite's graph at batch 1.
    int8 = Interpreter(model_path=str(out / "model_web_int8.tflite")).get_signature_runner(SIGNATURE)
    assert list(int8.get_input_details()["image"]["shape_signature"]) == [1, CANVAS, CANVAS, 1]
    _, int8_probabilities, _ = Predictor(out / "model_web_int8.tflite").predict(test_images[:5])
    _, batch_int8_probabilities, _ = Predictor(out / "model_int8.tflite").predict(test_images[:5])
    assert np.abs(int8_probabilities - batch_int8_probabilities).max() < 1e-5


def test_onnx_model_keeps_names_and_any_batch_size(exported, test_images):
    model, _, out = exported
    predictor = Predictor(out / "model.onnx")
    assert predictor.format == "onnx" and predictor.image_size == (CANVAS, CANVAS)
    reference = attention_model(model).predict(test_images, verbose=0)
    for batch in (1, 7):
        digits, probabilities, transforms = predictor.predict(test_images[:batch])
        assert np.abs(probabilities - reference["probabilities"][:batch]).max() < 1e-5
        assert np.abs(transforms - reference["transforms"][:batch]).max() < 1e-5
        np.testing.assert_array_equal(digits, reference["probabilities"][:batch].argmax(-1))


def test_onnx_export_without_its_packages_is_one_clear_error(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed: importing it raises ImportError
    assert cli.main(["export", str(exported[1]), "--out", str(tmp_path / "out"), "--onnx"]) == 2
    assert capsys.readouterr().err == "lstm-stn: error: ONNX export needs tf2onnx and onnxruntime: pip install 'lstm-stn-tf[onnx]'.\n"
    assert not (tmp_path / "out").exists()


def _tf_serving_predict(base_path, body):
    """What TF Serving's REST `:predict` does with `body`: the newest version
    folder of the base path, loaded with the `serve` tag; the request's row
    format ("instances", one object per image) stacked into one batch per
    input name; the signature called with it by name; the answer one object
    per image with every output by name."""
    version = max((child for child in base_path.iterdir() if child.name.isdigit()), key=lambda child: int(child.name))
    signature = tf.saved_model.load(str(version), tags=["serve"]).signatures[body.get("signature_name", SIGNATURE)]
    specs = signature.structured_input_signature[1]
    inputs = {name: tf.constant([instance[name] for instance in body["instances"]], spec.dtype)
              for name, spec in specs.items()}
    outputs = {name: value.numpy() for name, value in signature(**inputs).items()}
    return {"predictions": [{name: value[index].tolist() for name, value in outputs.items()}
                            for index in range(len(body["instances"]))]}


def test_saved_model_serves_the_documented_rest_request(exported, test_images):
    model, _, out = exported
    assert (out / "saved_model" / "1" / "saved_model.pb").exists()  # --model_base_path=OUT/saved_model
    # The request body of docs/serving.md, sent through JSON as a client would.
    body = json.loads(json.dumps({"signature_name": "serving_default",
                                  "instances": [{"image": image.tolist()} for image in test_images[:2]]}))
    predictions = _tf_serving_predict(out / "saved_model", body)["predictions"]
    reference = attention_model(model).predict(test_images[:2], verbose=0)
    assert [set(prediction) for prediction in predictions] == [{"digits", "probabilities", "transforms"}] * 2
    for index, prediction in enumerate(predictions):
        assert prediction["digits"] == reference["probabilities"][index].argmax(-1).tolist()
        assert np.abs(np.array(prediction["probabilities"]) - reference["probabilities"][index]).max() < 1e-5
        assert np.array(prediction["transforms"]).shape == (N_DIGITS, 2, 3)
    # Predictor reads the base path as the server does: its newest version.
    assert Predictor(out / "saved_model").format == "saved_model"


def test_unknown_shipped_model_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["export", "no_such_model", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lstm-stn: error: no_such_model:") and "export/no_such_model/model.keras" in error
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_an_export_is_left_alone(exported, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["export", str(exported[1]), "--out", str(tmp_path)]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_failed_export_leaves_the_earlier_one_whole(exported, tmp_path, monkeypatch):
    out = tmp_path / "export"
    shutil.copytree(exported[2], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*args):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(exporting, "convert_int8", fail)
    with pytest.raises(RuntimeError, match="conversion failed"):
        exporting.export(exported[1], out, eval_size=20)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary folder left


def test_a_finished_run_ships_with_its_metrics_and_a_model_card(tmp_path, monkeypatch, capsys):
    import keras

    from lstm_stn_tf import load_pretrained, paths
    from lstm_stn_tf.training import TrainConfig, train

    config = TrainConfig(model_options={"units": 16}, spec={"n_digits": 2, "canvas_size": 60, "n_clutter": 2},
                         train_size=200, valid_size=100, test_size=100, epochs=2, time_limit_minutes=1e-6,
                         precision="float32")
    metrics = train(config, tmp_path / "run", verbose=0, command="lstm-stn train ...")
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps(dict(run_config, mnist_path="/elsewhere/mnist.npz")))
    shipped = tmp_path / "shipped"
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(shipped / "tiny"), "--eval-size", "20"]) == 0
    shutil.copyfile(shipped / "tiny" / "model.keras", tmp_path / "first.keras")
    assert json.loads((shipped / "tiny" / "metrics.json").read_text()) == metrics
    assert json.loads((shipped / "tiny" / "config.json").read_text()) == dict(run_config, mnist_path=None)
    card = (shipped / "tiny" / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: `tiny`")
    assert f"| Keras, float32 as trained (`metrics.json`) | 100 | {100 * metrics['single_digit_error']:.2f} %" in card
    assert "| TFLite int8 (`model_int8.tflite`) | 20 |" in card
    assert "stopped by its time limit" in card and "cut at 1e-06 min" in card
    assert "What it cannot do" in card and "`lstm-stn train ...`" in card

    # Shipped models load by name, from Python and from the command line.
    monkeypatch.setattr(paths, "shipped_models_dir", lambda: shipped)
    trained = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert load_pretrained("tiny").count_params() == trained.count_params()
    with pytest.raises(paths.UserError, match=r"no shipped model of that name .*shipped: tiny\)"):
        load_pretrained("lstm_stn")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "tiny", "--size", "20"]) == 0
    assert json.loads((tmp_path / "tiny-test.json").read_text())["n_images"] == 20

    # Re-exported (for a format added since), a shipped model keeps its records and its
    # model.keras byte for byte: git would store the same weights twice otherwise.
    assert cli.main(["export", "tiny", "--out", str(shipped / "tiny"), "--eval-size", "20"]) == 0
    assert (shipped / "tiny" / "model.keras").read_bytes() == (tmp_path / "first.keras").read_bytes()
    assert json.loads((shipped / "tiny" / "metrics.json").read_text()) == metrics
    assert (shipped / "tiny" / "MODEL_CARD.md").read_text().startswith("# Model card: `tiny`")


def test_a_bfloat16_model_is_exported_in_float32(tmp_path):
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = small_model("lstm_stn")
    finally:
        keras.config.set_dtype_policy("float32")
    source = tmp_path / "bf16.keras"
    model.save(source)
    # TFLite has no bfloat16 kernels: exported as is, the conversion fails.
    assert cli.main(["export", str(source), "--out", str(tmp_path / "out"), "--eval-size", "20"]) == 0
    exported = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert {layer.dtype_policy.name for layer in exported.layers} == {"float32"}
    images = np.random.default_rng(0).random((8, CANVAS, CANVAS, 1), dtype=np.float32)
    np.testing.assert_allclose(exported.predict(images, verbose=0), model.predict(images, verbose=0), atol=0.02)


def test_model_card_names_the_options_beyond_the_protocol():
    import dataclasses

    from lstm_stn_tf.model_card import model_card
    from lstm_stn_tf.training import TrainConfig

    config = dataclasses.asdict(TrainConfig(fresh_clutter=True, optimizer="adamw", weight_decay=1e-4, precision="float32"))
    errors = {"single_digit_error": 0.015, "sequence_error": 0.045}
    metrics = dict(errors, n_images=10_000, stop_reason="early_stopping", epochs_run=150, best_epoch=100,
                   train_seconds=6000.0, seconds_per_epoch=40.0, command="lstm-stn reproduce ...",
                   machine={"device": "CPU", "cpu_count": 2, "backend": "tensorflow", "keras": "3"})
    report = {"test_error": {"n_images": 10_000, "tflite_fp32": errors, "tflite_int8": errors},
              "file_bytes": {"model.keras": 8e6}, "parity_max_abs_diff": {"saved_model_vs_keras": {}}}
    card = model_card("lstm_stn_fresh", metrics, config, report)
    assert "60,000 generated training images, drawn anew every epoch" in card
    assert "recipe: AdamW 0.0005" in card
    assert "changes from the protocol: fresh_clutter=True, optimizer=adamw, weight_decay=0.0001" in card
    assert "gradients clipped element-wise to 1 then to global norm 5" in card
    unclipped = dict(config, clip_value=None, clip_global_norm=None)
    assert "gradients not clipped" in model_card("lstm_stn_unclipped", metrics, unclipped, report)
    assert "learning rate / 1.5 every 10 epochs after epoch 30" in card
    fast = dataclasses.asdict(TrainConfig.from_recipe("fast", precision="float32"))
    fast_card = model_card("lstm_stn_fast", metrics, fast, report)
    assert "a 2-epoch linear warm-up, then a cosine decay to zero over the 20 epochs" in fast_card
    assert "changes from the protocol: recipe fast;" in fast_card

    from lstm_stn_tf.data import STRINGS_SPEC

    strings = dataclasses.asdict(TrainConfig.from_recipe("fast", spec=STRINGS_SPEC.key(), precision="float32"))
    string_errors = {"string_error": 0.12, "character_error_rate": 0.04, "length_accuracy": 0.97}
    string_report = dict(report, test_error=dict(report["test_error"], tflite_fp32=string_errors, tflite_int8=string_errors))
    card = model_card("lstm_stn_strings", dict(metrics, **string_errors), strings, string_report)
    assert "reads a string of 1 to 5 handwritten digits" in card and "in a 100 x 180 grey image" in card
    assert "| format | test images | string error | character error rate | length accuracy |" in card
    assert "| TFLite int8 (`model_int8.tflite`) | 10,000 | 12.00 % | 4.00 % | 97.00 % |" in card
    assert "`(N, 6, 11)` (class 10: the string has ended)" in card and "1 to 5 per image" in card


def test_an_earlier_export_with_the_users_files_in_it_is_left_alone(exported, tmp_path, capsys):
    out = tmp_path / "export"
    shutil.copytree(exported[2], out)
    (out / "notes.txt").write_text("mine")
    (out / "pictures").mkdir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert cli.main(["export", str(exported[1]), "--out", str(out), "--eval-size", "20"]) == 2
    err = capsys.readouterr().err
    assert "an earlier export, but also notes.txt, pictures, which the export did not write" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_an_export_never_replaces_the_folder_it_runs_in(exported, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    shutil.copytree(exported[2], out)
    (out / "inside").mkdir()
    for here, argument in ((out, "."), (out / "inside", "..")):
        monkeypatch.chdir(here)
        assert cli.main(["export", str(exported[1]), "--out", argument, "--eval-size", "20"]) == 2
        assert "would replace the folder this command runs in" in capsys.readouterr().err
    assert (out / "inside").is_dir() and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_an_unwritable_out_is_one_message(exported, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["export", str(exported[1]), "--out", str(tmp_path / "notes.txt" / "out"), "--eval-size", "20"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'notes.txt' / 'out'}: {tmp_path / 'notes.txt'} is a file, not a folder" in err
    assert "Traceback" not in err


def test_a_strings_model_exports_with_its_string_errors(tmp_path, capsys):
    from lstm_stn_tf import Predictor

    model = build_model("lstm_stn", image_size=(CANVAS, 2 * CANVAS), n_digits=N_DIGITS, variable_length=True,
                        glimpse_size=(20, 20), localisation_filters=4, classifier_filters=8, classifier_units=16,
                        units=16)
    kernel = model.get_layer("localizer").transform_kernel
    kernel.assign(np.random.default_rng(0).normal(0, 0.1, kernel.shape).astype("float32"))
    model.save(tmp_path / "strings.keras")
    out = tmp_path / "strings-export"
    assert cli.main(["export", str(tmp_path / "strings.keras"), "--out", str(out), "--eval-size", "20"]) == 0
    assert "test errors on 20 images (string error / character error rate / length accuracy)" in capsys.readouterr().out
    report = json.loads((out / "export.json").read_text())
    for key in ("tflite_fp32", "tflite_int8"):
        assert set(report["test_error"][key]) == {"string_error", "character_error_rate", "length_accuracy"}
    assert report["parity_max_abs_diff"]["tflite_fp32_vs_keras"]["probabilities"] < 1e-4
    images, _ = model_split(tmp_path / "strings.keras", model, "test", 20)
    for file in ("model.tflite", "model_int8.tflite"):  # the digits served are the string read, then the end class
        digits, probabilities, _ = Predictor(out / file).predict(images)
        assert probabilities.shape == (20, N_DIGITS + 1, 11)
        np.testing.assert_array_equal(digits, decode_strings(probabilities))
