import keras
import numpy as np
import pytest

from lstm_stn_tf import UserError, attention_model, build_model, list_models
from lstm_stn_tf.data.cluttered import STRINGS_SPEC, ClutterSpec
from lstm_stn_tf.losses import StringCrossentropy
from lstm_stn_tf.models.stn import digit_box

# Pinned so that an accidental change to an architecture is noticed.
PARAMETERS = {
    "lstm_stn": 2_159_056,
    "gru_stn": 1_679_312,
    "cnn_stn": 3_622_716,
    "cnn": 17_113_870,
}
STEPS = {"lstm_stn": 3, "gru_stn": 3, "cnn_stn": 1}
# With variable_length=True, on the digit-strings benchmark (STRINGS_SPEC).
STRING_PARAMETERS = {
    "lstm_stn": 4_002_513,
    "gru_stn": 3_061_969,
    "cnn_stn": 7_448_741,
    "cnn": 33_251_895,
}
# Tiny versions for the fit step: 1 to 3 digits on 40 x 72 images.
TINY = {
    "lstm_stn": dict(units=8, localisation_filters=4, classifier_filters=4, classifier_units=8, glimpse_size=(18, 18)),
    "gru_stn": dict(units=8, localisation_filters=4, classifier_filters=4, classifier_units=8, glimpse_size=(18, 18)),
    "cnn_stn": dict(localisation_filters=4, localisation_units=8, classifier_filters=4, classifier_units=8),
    "cnn": dict(classifier_filters=4, classifier_units=8),
}


def test_registry_lists_every_model():
    assert list_models() == sorted(PARAMETERS) == sorted(STRING_PARAMETERS) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_model(name):
    model = build_model(name)
    print(f"{name}: {model.count_params():,} parameters")
    assert model.count_params() == PARAMETERS[name]
    rng = np.random.default_rng(0)
    images = rng.random((8, 100, 100, 1), dtype="float32")
    labels = rng.integers(0, 10, (8, 3))
    probabilities = np.asarray(model(images))
    assert probabilities.shape == (8, 3, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)

    outputs = attention_model(model)(images)
    if name in STEPS:
        assert tuple(outputs["transforms"].shape) == (8, STEPS[name], 2, 3)
        # Every transformer starts at the identity.
        np.testing.assert_allclose(np.asarray(outputs["transforms"])[..., :, :2], np.broadcast_to(np.eye(2), (8, STEPS[name], 2, 2)))
    else:
        assert set(outputs) == {"probabilities"}

    model.compile(optimizer=keras.optimizers.RMSprop(5e-4), loss="sparse_categorical_crossentropy")
    losses = [model.train_on_batch(images, labels) for _ in range(6)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", sorted(STRING_PARAMETERS))
def test_string_model(name, tmp_path):
    full = build_model(name, variable_length=True, image_size=STRINGS_SPEC.image_size, n_digits=STRINGS_SPEC.n_digits)
    print(f"{name}, strings: {full.count_params():,} parameters")
    assert full.count_params() == STRING_PARAMETERS[name]
    assert tuple(full.output.shape) == (None, 6, 11)  # 5 digits and the end, 10 digits and the end class

    model = build_model(name, variable_length=True, image_size=(40, 72), n_digits=3, **TINY[name])
    rng = np.random.default_rng(0)
    images = rng.random((8, 40, 72, 1), dtype="float32")
    labels = np.array([[3, 10, 10], [1, 2, 10], [4, 5, 6], [7, 10, 10]] * 2)
    outputs = attention_model(model)(images)
    probabilities = np.asarray(outputs["probabilities"])
    assert probabilities.shape == (8, 4, 11)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    if name in STEPS:
        steps = 4 if name != "cnn_stn" else 1
        # Recurrent ones start on a digit-sized box (digit_box), cnn_stn on the whole image.
        start = np.eye(2) if name == "cnn_stn" else np.reshape(digit_box((40, 72)), (2, 3))[:, :2]
        np.testing.assert_allclose(np.asarray(outputs["transforms"])[..., :2], np.broadcast_to(start, (8, steps, 2, 2)))
    if name in ("cnn", "cnn_stn"):  # from a length head over 1 to 3 digits
        np.testing.assert_array_equal(probabilities[:, 0, 10], 0.0)
        np.testing.assert_array_equal(probabilities[:, 3, 10], 1.0)

    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=StringCrossentropy())
    losses = [model.train_on_batch(images, labels) for _ in range(6)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))


def test_saved_model_gives_identical_outputs(tmp_path):
    model = build_model("lstm_stn", image_size=(60, 60), n_digits=2, glimpse_size=(20, 20))
    model.get_layer("localizer").transform_kernel.assign(np.random.default_rng(0).normal(0, 0.01, (256, 6)))
    images = np.random.default_rng(1).random((4, 60, 60, 1), dtype="float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))


@pytest.mark.parametrize("cell_init, weight_std, forget_bias", [("keras", (0.0275, 0.0395), 1.0), ("lasagne", (0.1, 0.1), 0.0)])
def test_cell_initialisation(cell_init, weight_std, forget_bias):
    localizer = build_model("lstm_stn", cell_init=cell_init).get_layer("localizer")
    # Glorot-uniform: sqrt(2 / (fan_in + fan_out)) for the 1620 x 1024 and 256 x 1024 kernels.
    for weights, std in zip((localizer.kernel, localizer.recurrent_kernel), weight_std):
        assert np.std(np.asarray(weights)) == pytest.approx(std, rel=0.02)
    i, f, g, o = np.split(np.asarray(localizer.bias), 4)
    np.testing.assert_array_equal(f, forget_bias)
    np.testing.assert_array_equal(np.concatenate([i, g, o]), 0.0)


@pytest.mark.parametrize("spec", [ClutterSpec(), STRINGS_SPEC], ids=["protocol", "strings"])
def test_mixed_precision_model(spec):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model("lstm_stn", image_size=spec.image_size, n_digits=spec.n_digits, variable_length=spec.variable_length)
        outputs = attention_model(model)(np.random.default_rng(0).random((2, *spec.image_size, 1), dtype="float32"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(outputs["probabilities"].dtype) == "float32"
    assert keras.backend.standardize_dtype(outputs["transforms"].dtype) == "float32"
    assert np.all(np.isfinite(np.asarray(outputs["probabilities"])))


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("lstm_stm", {}, "unknown model 'lstm_stm'.*Did you mean 'lstm_stn'"),
        ("lstm_stn", {"glimpse_size": (120, 120)}, "larger than image_size"),
        ("lstm_stn", {"n_digits": 0}, "n_digits"),
        ("lstm_stn", {"cell_init": "orthogonal"}, "cell_init='orthogonal': expected one of keras, lasagne"),
        ("cnn_stn", {"variable_length": "yes"}, "variable_length='yes': expected true or false"),
        ("cnn", {"image_size": (20, 20)}, "too small"),
        ("cnn", {"units": 3}, "does not take"),
    ],
)
def test_bad_model_requests(name, overrides, match):
    with pytest.raises(UserError, match=match):
        build_model(name, **overrides)
