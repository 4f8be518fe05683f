"""Every shipped model (`export/<name>/`) loads by name and does what its card says."""

import json

import pytest

from lstm_stn_tf import UserError, load_pretrained
from lstm_stn_tf.evaluation import evaluate_model, model_split, model_split_digit_corners
from lstm_stn_tf.paths import shipped_models_dir

SHIPPED = sorted(path.parent.name for path in shipped_models_dir().glob("*/model.keras"))


def test_the_default_is_the_best_shipped_model_and_the_protocol_run_ships_beside_it():
    errors = {name: json.loads((shipped_models_dir() / name / "metrics.json").read_text())["single_digit_error"]
              for name in SHIPPED}
    assert {"lstm_stn", "lstm_stn_protocol"} <= set(errors)
    assert errors["lstm_stn"] == min(errors.values())
    config = json.loads((shipped_models_dir() / "lstm_stn_protocol" / "config.json").read_text())
    assert not config["fresh_clutter"] and config["warmup_epochs"] == 0  # the protocol's recipe, unchanged


def test_a_retired_name_is_told_its_successor():
    with pytest.raises(UserError, match=r"lstm_stn_warmup_fresh_clutter: no shipped model .* use 'lstm_stn'\."):
        load_pretrained("lstm_stn_warmup_fresh_clutter")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reads_test_images_as_its_card_says(name, mnist):
    folder = shipped_models_dir() / name
    metrics = json.loads((folder / "metrics.json").read_text())
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: `{name}`")
    assert f"| {100 * metrics['single_digit_error']:.2f} % | {100 * metrics['sequence_error']:.2f} % |" in card
    for listed in ("model.keras", "model.tflite", "model_int8.tflite"):
        assert (folder / listed).exists() and f"`{listed}`" in card

    model = load_pretrained(name)
    images, labels = model_split(name, model, "test", size=300)
    corners = model_split_digit_corners(name, model, "test", size=300)
    found = evaluate_model(model, images, labels, digit_corners=corners)
    # 900 unseen digits: a model at its card's ~2 % misreads ~18; 5 % would mean a broken file.
    assert found["single_digit_error"] < 0.05
    assert min(found["digit_centre_in_glimpse"]) > 0.98


def test_the_default_model_ships_its_batch_one_web_files():
    from ai_edge_litert.interpreter import Interpreter

    folder = shipped_models_dir() / "lstm_stn"
    report = json.loads((folder / "export.json").read_text())
    parity = report["parity_max_abs_diff"]
    # Float32 rounding alone (XNNPACK against oneDNN): the batch-1 file is as close to Keras as the batch one.
    assert parity["tflite_web_vs_keras"]["probabilities"] < min(5e-4, 2 * parity["tflite_fp32_vs_keras"]["probabilities"])
    for file in ("model_web.tflite", "model_web_int8.tflite"):
        assert report["file_bytes"][file] == (folder / file).stat().st_size
        runner = Interpreter(model_path=str(folder / file)).get_signature_runner("serving_default")
        assert list(runner.get_input_details()["image"]["shape_signature"]) == [1, 100, 100, 1]
