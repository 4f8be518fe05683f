"""Digit strings of 1 to 5 digits: the benchmark, the loss, decoding, metrics, a short learning run, and
`train`, `evaluate` and the results tables on strings."""

import dataclasses
import hashlib
import json
import time

import keras
import numpy as np
import pytest
from keras import ops

from lstm_stn_tf import UserError, attention_model, build_model, cli
from lstm_stn_tf.data.cluttered import NO_DIGIT, STRINGS_SPEC, ClutterSpec, dataset_key, digit_corners, generate, split_seed
from lstm_stn_tf.evaluation import attention_metrics
from lstm_stn_tf.layers import IDENTITY_TRANSFORM, EndsFromLength, StringSteps
from lstm_stn_tf.losses import StringCrossentropy
from lstm_stn_tf.reproduce import readme_table, results_tables, run_name, variant
from lstm_stn_tf.strings import (
    END_CLASS,
    decode_strings,
    edit_distance,
    ends_string,
    read_strings,
    string_attention_metrics,
    string_lengths,
    string_accuracy,
    string_metrics,
)
from lstm_stn_tf.training import TrainConfig, train


def _sha256(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# Computed with the generator as it was before the strings' fields existed.
PROTOCOL_PINS = [
    (ClutterSpec(), "ca048f8bd370523a61184efe60210b4ca95b273915aa16c7545866e7ab0e6b6c",
     "5f172233278a167474cf35f255e09023227680145e7b30328982e7932a84ee9a"),
    (ClutterSpec(n_digits=2, canvas_size=60, n_clutter=3, clutter_size=5, max_shift=20, max_slope=3),
     "c75549bd822bd3c18b5d139ba371c84fc9b462d8813a54ccd5424d67658ad667",
     "adea4514786e6669f929b43db47fdeced9862ea0a961a25612ef93288a0e9099"),
]


@pytest.mark.parametrize("spec, images_and_labels, corners", PROTOCOL_PINS, ids=["protocol", "smaller"])
def test_protocol_specs_draw_what_they_always_drew(spec, images_and_labels, corners):
    rng = np.random.default_rng(123)
    digits = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 50).astype(np.uint8)
    assert _sha256(*generate(digits, labels, 40, 7, spec)) == images_and_labels
    assert _sha256(digit_corners(40, 7, 50, spec).astype(np.int64)) == corners


def test_protocol_keys_are_unchanged():
    # The cache's file names and the specs recorded in results' configs.
    assert ClutterSpec().key() == {"n_digits": 3, "canvas_size": 100, "n_clutter": 8, "clutter_size": 9,
                                   "max_shift": 8, "max_slope": 14}
    assert dataset_key("valid", 64, 1, ClutterSpec()) == "valid-64-seed1-3b744e4f67b6"
    assert dataset_key("train", 60_000, 0, ClutterSpec(n_clutter=4)) == "train-60000-seed0-1dafdda406d8"
    assert ClutterSpec(**STRINGS_SPEC.key()) == STRINGS_SPEC
    assert STRINGS_SPEC.key()["canvas_width"] == 180 and STRINGS_SPEC.key()["max_shift"] is None


def test_strings_benchmark_follows_the_protocol(mnist):
    digits, labels = mnist["test"]
    count, seed = 3000, split_seed(5, "test")
    images, string_labels = generate(digits, labels, count, seed, STRINGS_SPEC)
    again, _ = generate(digits, labels, count, seed, STRINGS_SPEC)
    other, _ = generate(digits, labels, count, split_seed(6, "test"), STRINGS_SPEC)
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    assert images.shape == (count, 100, 180) and images.dtype == np.uint8
    assert string_labels.shape == (count, 5) and string_labels.dtype == np.uint8

    lengths = string_lengths(string_labels)
    # Uniform over 1..5: each length within 4 standard deviations of 600.
    counts = np.bincount(lengths, minlength=6)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - count / 5) < 4 * np.sqrt(count * 0.2 * 0.8))
    # The digits, then the end class.
    after_end = np.arange(5) >= lengths[:, None]
    assert np.all(string_labels[after_end] == END_CLASS) and np.all(string_labels[~after_end] < 10)

    corners = digit_corners(count, seed, len(digits), STRINGS_SPEC)
    assert corners.shape == (count, 5, 2)
    assert np.all(corners[after_end] == NO_DIGIT)
    y, x = corners[..., 0][~after_end], corners[..., 1][~after_end]
    assert y.min() >= 0 and y.max() <= 100 - 28 and x.min() >= 0 and x.max() <= 180 - 28  # inside the canvas
    gaps = np.diff(corners[..., 1], axis=1)[~after_end[:, 1:]] - 28
    assert gaps.min() == -4 and gaps.max() == 8
    assert set(np.unique(gaps)) == set(range(-4, 9))
    # A string starts anywhere it fits: some at the left edge, some ending at the right one.
    ends = corners[np.arange(count), lengths - 1, 1] + 28
    assert np.any(corners[:, 0, 1] == 0) and np.any(ends == 180)
    assert np.abs(np.diff(corners[..., 0], axis=1)[~after_end[:, 1:]]).max() <= 14  # rows on a line of slope <= 14


def test_string_digits_sit_where_digit_corners_says(mnist):
    digits, labels = mnist["test"]
    spec = dataclasses.replace(STRINGS_SPEC, n_clutter=0)
    images, string_labels = generate(digits, labels, 30, 9, spec)
    corners = digit_corners(30, 9, len(digits), spec)
    for n in range(30):
        ink = images[n].astype(int)
        for label, (y, x) in zip(string_labels[n], corners[n]):
            if label == END_CLASS:
                continue
            # The source digit's ink is in its box (an overlapping neighbour only adds ink).
            candidates = digits[labels == label]
            assert np.any(np.all(ink[y : y + 28, x : x + 28] >= candidates, axis=(1, 2)))
        covered = np.zeros_like(ink, bool)
        for y, x in corners[n][string_labels[n] != END_CLASS]:
            covered[y : y + 28, x : x + 28] = True
        assert not ink[~covered].any()  # no ink outside the digits' boxes: no clutter, nothing past the end


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_digits": 6}, "6 digits of 28 pixels with gaps up to 8 span 208 columns and do not fit"),
        ({"min_digits": 0}, "min_digits=0: expected 1 to n_digits=5"),
        ({"min_digits": 6}, "min_digits=6"),
        ({"min_gap": 9}, "min_gap=9 > max_gap=8"),
        ({"min_gap": -28}, "min_gap=-28: expected more than -28"),
        ({"min_gap": 1.5}, "min_gap=1.5: expected an integer"),
        ({"canvas_size": 20}, "canvas_size=20: a 28-pixel digit does not fit"),
        ({"canvas_width": -1}, "canvas_width=-1: expected a non-negative integer or None"),
        ({"max_shift": -1}, "max_shift=-1: expected a non-negative integer or None"),
        ({"n_clutter": True}, "n_clutter=True: expected a non-negative integer"),
    ],
)
def test_impossible_string_specs(kwargs, match):
    with pytest.raises(UserError, match=match):
        dataclasses.replace(STRINGS_SPEC, **kwargs)


def _probabilities(classes, confidence=0.9):
    """Per-step probabilities whose most probable classes are `classes` (images, steps)."""
    classes = np.asarray(classes)
    probabilities = np.full(classes.shape + (11,), (1 - confidence) / 10)
    np.put_along_axis(probabilities, classes[..., None], confidence, axis=-1)
    return probabilities


# Labels (N = 3) and per-step probabilities (4 steps, 11 classes).
LABELS = np.array([[3, 10, 10], [1, 2, 4], [7, 7, 10], [0, 5, 10]])
STEP_PROBABILITIES = np.random.default_rng(0).dirichlet(np.ones(11), size=(4, 4))


def _string_crossentropy_numpy(labels, probabilities, label_smoothing=0.0):
    """The loss by hand: the mean over the steps up to each string's end."""
    total, steps = 0.0, 0
    for label, steps_probabilities in zip(labels, probabilities):
        n = int(np.sum(label != END_CLASS))
        for k in range(n + 1):
            target = np.full(11, label_smoothing / 11)
            target[label[k] if k < n else END_CLASS] += 1 - label_smoothing
            total -= np.sum(target * np.log(steps_probabilities[k]))
            steps += 1
    return total / steps


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_string_crossentropy_counts_the_steps_up_to_the_end(label_smoothing):
    loss = StringCrossentropy(label_smoothing=label_smoothing)
    value = float(loss(LABELS, STEP_PROBABILITIES.astype("float32")))
    assert value == pytest.approx(_string_crossentropy_numpy(LABELS, STEP_PROBABILITIES, label_smoothing), rel=1e-5)
    # The steps after the end count for nothing.
    changed = STEP_PROBABILITIES.copy()
    after_end = np.arange(4) > string_lengths(LABELS)[:, None]
    changed[after_end] = np.random.default_rng(1).dirichlet(np.ones(11), size=int(after_end.sum()))
    assert float(loss(LABELS, changed.astype("float32"))) == pytest.approx(value, rel=1e-6)
    changed[0, 1] = np.roll(changed[0, 1], 1)  # the first string's end step counts
    assert float(loss(LABELS, changed.astype("float32"))) != pytest.approx(value, rel=1e-3)


def test_string_crossentropy_of_heads_is_the_length_and_digit_heads_loss():
    # Goodfellow et al. (2013): -log P(L = n) - sum_{k < n} log P_k(digit k).
    rng = np.random.default_rng(2)
    length_logits = rng.normal(0, 1, (4, 3)).astype("float32")
    digits = rng.dirichlet(np.ones(10), size=(4, 3)).astype("float32")
    end = EndsFromLength()(length_logits)
    steps = np.asarray(StringSteps()([np.concatenate([digits, np.zeros((4, 1, 10), "float32")], 1), end]))
    length_probabilities = np.exp(length_logits) / np.exp(length_logits).sum(-1, keepdims=True)
    lengths = string_lengths(LABELS)
    expected = [-np.log(length_probabilities[i, n - 1]) - sum(np.log(digits[i, k, LABELS[i, k]]) for k in range(n))
                for i, n in enumerate(lengths)]
    value = float(StringCrossentropy()(LABELS, steps))
    assert value == pytest.approx(sum(expected) / np.sum(lengths + 1), rel=1e-5)


def test_string_crossentropy_round_trip_and_shape_check():
    loss = keras.losses.deserialize(keras.losses.serialize(StringCrossentropy(label_smoothing=0.1)))
    assert isinstance(loss, StringCrossentropy) and loss.label_smoothing == 0.1
    with pytest.raises(UserError, match="predictions have 3 steps for labels of 3 digits"):
        loss(LABELS, STEP_PROBABILITIES[:, :3].astype("float32"))


@pytest.mark.parametrize(
    "first, second, distance",
    [([], [], 0), ([1, 2, 3], [1, 2, 3], 0), ([1, 2], [1, 2, 3], 1), ([1, 2, 3], [1, 3], 1), ([1, 2, 3], [1, 5, 3], 1),
     ([], [4, 4, 4], 3), ([1, 2, 3], [3, 2, 1], 2), ([1, 2, 3, 4, 5], [2, 3, 4, 5, 6], 2), ([5, 5], [5], 1)],
)
def test_edit_distance(first, second, distance):
    assert edit_distance(first, second) == distance == edit_distance(second, first)


def test_decoding_reads_digits_until_the_first_end():
    classes = [[3, 10, 5, 10], [1, 2, 4, 7], [10, 1, 2, 3], [7, 7, 10, 10]]
    np.testing.assert_array_equal(decode_strings(_probabilities(classes)),
                                  [[3, 10, 10], [1, 2, 4], [10, 10, 10], [7, 7, 10]])  # never ends: reads 3
    # A step ends a string when the end class outweighs all the digits together, not the likeliest digit.
    unsure = np.full((1, 2, 11), 0.06)
    unsure[0, :, END_CLASS] = 0.4  # the most probable class, but 0.6 says "a digit"
    unsure[0, :, 4] = 0.12
    assert not ends_string(unsure).any()
    np.testing.assert_array_equal(decode_strings(unsure), [[4]])


def test_string_metrics_on_hand_made_readings():
    # True strings: 3 / 124 / 77 / 05. Read: 3 (right), 12 (a deletion, ends early), 71 (a substitution), 059 (an insertion).
    classes = [[3, 10, 0, 0], [1, 2, 10, 10], [7, 1, 10, 3], [0, 5, 9, 10]]
    metrics = string_metrics(_probabilities(classes), LABELS)
    assert metrics["string_error"] == 0.75
    assert metrics["character_error_rate"] == pytest.approx(3 / 8)
    assert metrics["length_accuracy"] == 0.5
    assert metrics["stops_on_time"] == 0.75  # the second string ends at step 2 and again at step 3
    assert metrics["string_error_by_length"] == [0.0, 1.0, 1.0]
    assert metrics["images_by_length"] == [1, 2, 1]
    assert (metrics["n_images"], metrics["n_digits"]) == (4, 8)
    with pytest.raises(UserError, match="one step more than the longest string"):
        string_metrics(_probabilities(classes)[:, :3], LABELS)


def test_string_attention_counts_only_the_steps_that_read_a_digit():
    corners = np.array([[[10, 20], [NO_DIGIT, NO_DIGIT]], [[30, 5], [40, 60]]])
    labels = np.array([[4, END_CLASS], [1, 2]])
    size = (100, 180)
    # Glimpses centred on each digit (scale 0.2), then the first string's step 1 looks elsewhere.
    centre = (corners[..., ::-1] + 13.5) / ((np.array(size[::-1]) - 1) / 2) - 1
    transforms = np.zeros((2, 3, 2, 3))
    transforms[..., 0, 0] = transforms[..., 1, 1] = 0.2
    transforms[:, :2, :, 2] = centre
    transforms[0, 1, :, 2] = [0.9, 0.9]
    metrics = string_attention_metrics(transforms, corners, labels, size)
    assert metrics["glimpse_centre_on_digit"] == [1.0, 1.0] and metrics["digit_centre_in_glimpse"] == [1.0, 1.0]
    assert metrics["glimpse_extent_pixels"][1] == attention_metrics(transforms[1:, 1:2], corners[1:, 1:2], size)["glimpse_extent_pixels"][0]


def test_a_small_string_reader_learns_to_read_and_to_stop(mnist):
    # Easy: 1 to 3 digits, centred, on a clean 36 x 84 canvas; a tiny LSTM-STN.
    # The only training in this file: about 35-50 s on 2 shared cores; 10 epochs were not
    # enough to learn on every run (string error 0.22-0.58 on one AVX-512 CPU), 20 are (0.17-0.22).
    spec = ClutterSpec(n_digits=3, min_digits=1, canvas_size=36, canvas_width=84, n_clutter=0, max_shift=0, max_slope=0)
    images, labels = generate(*mnist["train"], 2000, 1, spec)
    test_images, test_labels = generate(*mnist["valid"], 500, 2, spec)
    # On this clean canvas the glimpses may move at full speed from the whole image; at the
    # benchmark's 0.1 (the strings default) they had not reached their digits after 20 epochs
    # (0.68, 1.0, 0.0 centred), and from the default digit-sized start one step in 4 runs missed.
    model = build_model("lstm_stn", variable_length=True, image_size=spec.image_size, n_digits=3, units=32,
                        localisation_filters=8, classifier_filters=32, classifier_units=128, glimpse_size=(18, 18),
                        transform_rate=1.0, initial_transform=IDENTITY_TRANSFORM)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0), loss=StringCrossentropy())
    start = time.perf_counter()
    model.fit(images[..., None] / np.float32(255), labels, batch_size=32, epochs=20, verbose=0)
    outputs = attention_model(model).predict(test_images[..., None] / np.float32(255), verbose=0)
    metrics = string_metrics(outputs["probabilities"], test_labels)
    attention = string_attention_metrics(outputs["transforms"], digit_corners(500, 2, len(mnist["valid"][0]), spec),
                                         test_labels, spec.image_size)
    print(f"trained in {time.perf_counter() - start:.0f} s:", metrics, attention)
    # Chance is about 96 % (the length known, the digits guessed).
    assert metrics["string_error"] < 0.5
    assert metrics["length_accuracy"] > 0.9 and metrics["stops_on_time"] > 0.9
    assert min(attention["glimpse_centre_on_digit"]) > 0.8


def test_the_end_head_moves_the_cell_by_a_tenth_of_its_gradient():
    # Without the scale, learning the lengths swamped learning where to look (docs/findings.md).
    import tensorflow as tf

    images = np.random.default_rng(0).random((4, 36, 84, 1), dtype="float32")
    options = dict(variable_length=True, image_size=(36, 84), n_digits=3, units=8, localisation_filters=4,
                   classifier_filters=4, classifier_units=8, glimpse_size=(18, 18))
    gradients = {}
    for scale in (1.0, 0.1):
        keras.utils.set_random_seed(0)
        model = build_model("lstm_stn", end_gradient=scale, **options)
        with tf.GradientTape() as tape:
            total_end = tf.reduce_sum(model(images)[..., END_CLASS])  # the cell reaches it only through the end head
        paths = [variable.path for variable in model.trainable_variables]
        every = tape.gradient(total_end, model.trainable_variables)
        gradients[scale] = np.asarray(every[paths.index("localizer/kernel")])
    assert np.abs(gradients[1.0]).max() > 0
    np.testing.assert_allclose(gradients[0.1], 0.1 * gradients[1.0], rtol=1e-4, atol=1e-9)


def test_strings_glimpses_start_on_one_digit_and_move_at_a_tenth_of_the_rate_by_default():
    # From the whole 180-column canvas, or faster, they learnt slower or left it (docs/findings.md).
    options = dict(image_size=(100, 180), n_digits=3, units=8, localisation_filters=4, classifier_filters=4,
                   classifier_units=8, glimpse_size=(18, 18))
    localizers = {strings: build_model("lstm_stn", variable_length=strings, **options).get_layer("localizer")
                  for strings in (True, False)}
    assert {strings: layer.transform_rate for strings, layer in localizers.items()} == {True: 0.1, False: 1.0}
    # 36 x 40 pixels, an MNIST digit and a margin, at the centre; the paper's model sees the whole image.
    assert localizers[True].initial_transform == pytest.approx((0.2, 0, 0, 0, 0.4, 0))
    assert localizers[False].initial_transform == (1, 0, 0, 0, 1, 0)


def test_the_training_metric_reads_strings_as_string_metrics_does():
    # One rule, in keras.ops: decode_strings and ends_string are read_strings and string_ends on arrays.
    rng = np.random.default_rng(3)
    labels = np.where(np.arange(3) < rng.integers(1, 4, (200, 1)), rng.integers(0, 10, (200, 3)), END_CLASS)
    probabilities = rng.dirichlet(np.full(11, 0.2), size=(200, 4)).astype("float32")
    probabilities[:100, :3] = _probabilities(np.where(labels[:100] == END_CLASS, END_CLASS, labels[:100]))[:, :3]
    accuracy = keras.metrics.MeanMetricWrapper(string_accuracy)
    accuracy.update_state(labels, probabilities)
    assert float(accuracy.result()) == pytest.approx(1 - string_metrics(probabilities, labels)["string_error"], abs=1e-6)
    assert 0.4 < float(accuracy.result()) < 0.6  # the first half read right, the rest hardly
    np.testing.assert_array_equal(decode_strings(probabilities), ops.convert_to_numpy(read_strings(probabilities)))


# An easy strings benchmark: 1 or 2 centred digits on a clean 36 x 60 canvas; a tiny LSTM-STN.
EASY_STRINGS = dict(model="lstm_stn", model_options={"units": 16}, train_size=300, valid_size=100, test_size=100,
                    epochs=2, spec=dict(n_digits=2, min_digits=1, canvas_size=36, canvas_width=60, n_clutter=0,
                                        max_shift=0, max_slope=0))


@pytest.fixture(scope="module")
def strings_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "strings"
    return run_dir, train(TrainConfig(**EASY_STRINGS), run_dir, verbose=0)


def test_training_on_strings_writes_string_metrics(strings_run):
    run_dir, metrics = strings_run
    assert metrics["epochs_run"] == 2 and 0 <= metrics["string_error"] <= 1
    written = json.loads((run_dir / "metrics.json").read_text())
    for name in ("character_error_rate", "length_accuracy", "stops_on_time"):
        assert 0 <= written[name] <= 2, name  # a character error rate may pass 1 (insertions)
    assert len(written["string_error_by_length"]) == 2 and sum(written["images_by_length"]) == 100
    assert 1 <= len(written["glimpse_centre_on_digit"]) <= 2  # per step, up to the longest string
    assert "single_digit_error" not in written and "confusion_matrix" not in written
    history = (run_dir / "history.csv").read_text().splitlines()
    assert "val_accuracy" in history[0].split(",") and len(history) == 3
    best = json.loads((run_dir / "best.json").read_text())
    assert best["val_accuracy"] == pytest.approx(max(float(row.split(",")[history[0].split(",").index("val_accuracy")])
                                                     for row in history[1:]))


def test_evaluate_command_on_a_strings_run(strings_run, capsys):
    run_dir, _ = strings_run
    assert cli.main(["evaluate", str(run_dir), "--size", "50"]) == 0
    out = capsys.readouterr().out
    for line in ("string error", "character error rate", "length accuracy", "stops on time", "string error by length",
                 "glimpse centred on digit"):
        assert line in out, line
    assert "confusion" not in out
    assert json.loads((run_dir / "evaluation-test.json").read_text())["n_images"] == 50


def test_a_string_model_without_its_run_is_judged_on_the_strings_benchmark(tmp_path):
    from lstm_stn_tf.evaluation import _split_settings, model_split

    model = build_model("cnn", variable_length=True, image_size=STRINGS_SPEC.image_size, n_digits=5,
                        classifier_filters=4, classifier_units=8)
    assert _split_settings(str(tmp_path / "model.keras"), model, None, None)[0] == STRINGS_SPEC
    (tmp_path / "config.json").write_text(json.dumps({"spec": ClutterSpec().key(), "data_seed": 0}))
    with pytest.raises(UserError, match="reads 100 x 180 images of strings of up to 5 digits, but its run's config.json "
                                        "describes 100 x 100 images of 3 digits"):
        model_split(str(tmp_path / "model.keras"), model)


def test_the_strings_benchmark_from_the_command_line():
    args = cli.build_parser("train").parse_args(["train", "--benchmark", "strings"])
    assert cli._config_from(args).clutter_spec == STRINGS_SPEC
    args = cli.build_parser("train").parse_args(["train", "--benchmark", "strings", "--n-digits", "4", "--n-clutter", "0"])
    assert cli._config_from(args).clutter_spec == dataclasses.replace(STRINGS_SPEC, n_digits=4, n_clutter=0)
    assert cli._config_from(cli.build_parser("train").parse_args(["train"])).spec == ClutterSpec().key()
    args = cli.build_parser("reproduce").parse_args(["reproduce", "--benchmark", "strings"])
    assert args.benchmark == "strings"
    assert run_name("cnn", 1, benchmark="strings") == "cnn-strings-seed1" and run_name("cnn", 1, "x") == "cnn-seed1-x"


def _result(model, config, **errors):
    machine = {"device": "cpu", "cpu": None, "backend": "tensorflow"}
    return dict(model=model, seed=0, best_epoch=1, epochs_run=1, stop_reason="epochs", train_seconds=60,
                seconds_per_epoch=60, machine=machine, command="test", config=config, **errors)


def test_strings_results_are_named_and_tabled_apart(tmp_path):
    # As config.json records them: the precision chosen, not "auto".
    strings = dataclasses.asdict(TrainConfig(spec=STRINGS_SPEC.key(), precision="float32"))
    protocol = dataclasses.asdict(TrainConfig(precision="float32"))
    assert variant(strings) == "strings" and variant(protocol) == "protocol"
    assert variant(dict(strings, label_smoothing=0.1)) == "strings, label_smoothing=0.1"
    other = dataclasses.replace(STRINGS_SPEC, n_clutter=0).key()
    assert variant(dict(strings, spec=other)).startswith("spec=")  # neither benchmark: the spec is named
    results = tmp_path / "results"
    results.mkdir()
    (results / "cnn-seed0.json").write_text(json.dumps(_result("cnn", protocol, single_digit_error=0.05,
                                                                sequence_error=0.15)))
    without_strings = readme_table(results), results_tables(results)
    (results / "cnn-strings-seed0.json").write_text(json.dumps(_result(
        "cnn", strings, string_error=0.2, character_error_rate=0.1, length_accuracy=0.9)))
    readme, full = readme_table(results), results_tables(results)
    for table, before in ((readme, without_strings[0]), (full, without_strings[1])):
        digits_part, strings_part = table.split("Digit strings", 1)
        assert digits_part.rstrip("\n") == before.rstrip("\n")  # the digits' tables as they were
        assert "| cnn | strings | 1 | 20.00 | 10.00 | 90.00 |" in strings_part
    assert "| cnn | strings | 0 | 1 | 1 | epochs | 20.00 | 10.00 | 90.00 | 1 min |" in full


def test_the_readme_table_keeps_protocols_and_variants_of_several_seeds(tmp_path):
    protocol = dataclasses.asdict(TrainConfig(precision="mixed_bfloat16"))
    trial = dict(protocol, label_smoothing=0.1)
    warmup = dict(protocol, warmup_epochs=5)
    results = tmp_path / "results"
    results.mkdir()
    for name, model, config, seed in (("cnn-seed0", "cnn", protocol, 0), ("lstm_stn-seed0-ls", "lstm_stn", trial, 0),
                                      ("lstm_stn-seed0-wu", "lstm_stn", warmup, 0),
                                      ("lstm_stn-seed1-wu", "lstm_stn", warmup, 1)):
        (results / f"{name}.json").write_text(json.dumps(dict(
            _result(model, config, single_digit_error=0.02, sequence_error=0.06), seed=seed)))
    readme, full = readme_table(results), results_tables(results)
    assert "| cnn | precision=mixed_bfloat16 | 1 |" in readme  # a protocol, whatever its precision
    assert "| lstm_stn | precision=mixed_bfloat16, warmup_epochs=5 | 2 |" in readme
    assert "label_smoothing" not in readme and "| lstm_stn | label_smoothing=0.1, precision=mixed_bfloat16 | 1 |" in full
