import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from keras import ops

from lstm_stn_tf import cli, training
from lstm_stn_tf.data import to_model_input
from lstm_stn_tf.reproduce import README_END, README_START, readme_table, variant
from lstm_stn_tf.training import ClippedRMSprop, TrainConfig, train

# An easy setting that still exercises the whole model: one digit, no clutter.
EASY = dict(
    model="lstm_stn",
    spec={"n_digits": 1, "canvas_size": 60, "n_clutter": 0},
    train_size=4000,
    valid_size=500,
    test_size=1000,
    epochs=4,
)
TINY = dict(EASY, model_options={"units": 16}, train_size=200, valid_size=100, test_size=100, epochs=3)


def test_clipping_is_element_wise_then_global_norm():
    optimizer = ClippedRMSprop()
    small = optimizer._clip_gradients([ops.convert_to_tensor([3.0, -0.5]), ops.convert_to_tensor([0.2])])
    np.testing.assert_allclose(ops.convert_to_numpy(small[0]), [1.0, -0.5], atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(small[1]), [0.2], atol=1e-7)
    large = optimizer._clip_gradients([ops.full((100,), 2.0), None])
    # Clipped to 1 each, then the norm 10 is scaled down to 5.
    np.testing.assert_allclose(ops.convert_to_numpy(large[0]), np.full(100, 0.5), rtol=1e-6)
    assert large[1] is None
    assert ClippedRMSprop.from_config(optimizer.get_config()).clip_global_norm == 5.0


def test_a_clipping_stage_set_to_none_is_skipped():
    grads = [ops.convert_to_tensor([3.0, 4.0])]
    element_only = ClippedRMSprop(clip_value=1.0, clip_global_norm=None)._clip_gradients(grads)
    np.testing.assert_allclose(ops.convert_to_numpy(element_only[0]), [1.0, 1.0])
    norm_only = ClippedRMSprop(clip_value=None, clip_global_norm=1.0)._clip_gradients(grads)
    np.testing.assert_allclose(ops.convert_to_numpy(norm_only[0]), [0.6, 0.8], rtol=1e-6)  # norm 5 -> 1
    unclipped = ClippedRMSprop(clip_value=None, clip_global_norm=None)._clip_gradients(grads)
    np.testing.assert_allclose(ops.convert_to_numpy(unclipped[0]), [3.0, 4.0])


def test_learning_rate_schedule():
    config = TrainConfig()
    rates = [config.learning_rate_at(epoch) for epoch in (0, 29, 30, 39, 40, 50)]
    np.testing.assert_allclose(rates, [5e-4, 5e-4, 5e-4 / 1.5, 5e-4 / 1.5, 5e-4 / 1.5**2, 5e-4 / 1.5**3])
    warm = TrainConfig(warmup_epochs=4)
    np.testing.assert_allclose([warm.learning_rate_at(e) for e in (0, 3, 4, 30)], [1.25e-4, 5e-4, 5e-4, 5e-4 / 1.5])


def test_adamw_clips_like_the_protocol_and_round_trips():
    optimizer = training.ClippedAdamW(weight_decay=1e-4)
    clipped = optimizer._clip_gradients([ops.full((100,), 2.0)])
    np.testing.assert_allclose(ops.convert_to_numpy(clipped[0]), np.full(100, 0.5), rtol=1e-6)
    restored = training.ClippedAdamW.from_config(optimizer.get_config())
    assert restored.clip_value == 1.0 and restored.weight_decay == pytest.approx(1e-4)


def test_label_smoothing_loss_matches_the_one_hot_formula():
    probabilities = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]], "float32")
    labels = np.array([[0, 2]])
    loss = training.SmoothedSparseCrossentropy(0.3)
    targets = np.array([[[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]])  # 0.7 * one-hot + 0.3 / 3
    expected = np.mean(-np.sum(targets * np.log(probabilities), axis=-1))
    assert float(loss(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    assert training.SmoothedSparseCrossentropy.from_config(loss.get_config()).label_smoothing == 0.3
    # Without smoothing it is the protocol's sparse cross-entropy.
    plain = float(training.SmoothedSparseCrossentropy(0.0)(labels, probabilities))
    assert plain == pytest.approx(float(training.keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)), rel=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(optimizer="sgd"), "optimizer='sgd': expected one of rmsprop, adamw"),
        (dict(weight_decay=1e-4), "needs optimizer='adamw'"),
        (dict(label_smoothing=1.0), "label_smoothing=1.0: expected a number >= 0 and below 1"),
        (dict(ema_momentum=1.0), "ema_momentum=1.0: expected a positive number and below 1."),
        (dict(warmup_epochs=-1), "warmup_epochs=-1: expected an integer >= 0"),
        (dict(fresh_clutter="yes"), "fresh_clutter='yes': expected true or false"),
        (dict(placement_warmup_epochs=3), "placement_warmup_epochs=3 needs fresh_clutter"),
        (dict(placement_warmup_epochs=-1, fresh_clutter=True), "placement_warmup_epochs=-1: expected an integer >= 0"),
        (dict(clip_value=0), "clip_value=0: expected a positive number."),
        (dict(clip_global_norm="5"), "clip_global_norm='5': expected a positive number."),
        (dict(seed=-1), "seed=-1: expected an integer >= 0."),
        (dict(data_seed=1.5), "data_seed=1.5: expected an integer >= 0."),
    ],
)
def test_bad_recipe_options_are_refused(options, message):
    with pytest.raises(training.UserError, match=re.escape(message)):
        TrainConfig(**options)


@pytest.mark.parametrize("command", ["train", "reproduce", "tune", "demo"])
def test_batch_size_is_an_option_of_every_training_command(command):
    args = cli.build_parser(command).parse_args([command, "--batch-size", "50"])
    given = cli._config_from(args).batch_size if command in ("train", "demo") else cli._recipe_options(args)["batch_size"]
    assert given == 50
    if command == "train":
        assert cli._config_from(cli.build_parser(command).parse_args([command])).batch_size == 100
        assert variant(dict(dataclasses.asdict(cli._config_from(args)), precision="float32")) == "batch_size=50"


def test_no_clipping_flag_turns_off_both_stages():
    args = cli.build_parser().parse_args(["train", "--no-clipping"])
    config = cli._config_from(args)
    assert (config.clip_value, config.clip_global_norm) == (None, None)
    protocol = cli._config_from(cli.build_parser().parse_args(["train"]))
    assert (protocol.clip_value, protocol.clip_global_norm) == (1.0, 5.0)
    # A run records the precision it resolved "auto" to; the protocol's is float32.
    assert variant(dict(dataclasses.asdict(config), precision="float32")) == "clip_global_norm=None, clip_value=None"


def test_named_options_train_and_are_labelled_in_the_table(tmp_path, monkeypatch):
    from lstm_stn_tf.data import FreshClutterBatches
    from lstm_stn_tf.reproduce import reproduce

    epochs_drawn = []
    draw = FreshClutterBatches._draw
    monkeypatch.setattr(FreshClutterBatches, "_draw", lambda self: epochs_drawn.append(self.epoch) or draw(self))
    splits_loaded = []
    load_splits = training.load_splits
    monkeypatch.setattr(training, "load_splits", lambda *a, **k: splits_loaded.append(k["names"]) or load_splits(*a, **k))
    table = reproduce(["lstm_stn"], [0], tmp_path / "runs", tmp_path / "results", command="test", tag="options",
                      optimizer="adamw", weight_decay=1e-4, warmup_epochs=1, label_smoothing=0.1, fresh_clutter=True,
                      **{k: v for k, v in dict(TINY, epochs=2, model_options={"units": 16, "cell_init": "lasagne"}).items()
                         if k != "model"})
    result = json.loads((tmp_path / "results" / "lstm_stn-seed0-options.json").read_text())
    assert result["epochs_run"] == 2 and np.isfinite(result["single_digit_error"])
    assert epochs_drawn[:2] == [0, 1]  # fit asks for new images after each epoch
    assert splits_loaded == [["valid", "test"]]  # the fixed training images are not needed
    assert "| lstm_stn |" not in table  # a one-seed trial: in the full tables only
    full_tables = (tmp_path / "docs" / "results.md").read_text()
    row = next(line for line in full_tables.splitlines() if line.startswith("| lstm_stn |"))
    for option in ("optimizer=adamw", "weight_decay=0.0001", "warmup_epochs=1", "label_smoothing=0.1", "fresh_clutter=True",
                   "cell_init=lasagne", "units=16"):
        assert option in row


def test_weight_average_is_validated_and_kept(tmp_path, monkeypatch):
    import keras

    weights = lambda variables: [ops.convert_to_numpy(v) for v in variables]
    seen = []  # per epoch: the model's weights before and after the keeper, and the optimizer's average
    original = training.BestModelKeeper.on_epoch_end

    def recording(self, epoch, logs):
        before = weights(self.model.trainable_weights)
        original(self, epoch, logs)
        seen.append((before, weights(self.model.trainable_weights),
                     weights(self.model.optimizer._model_variables_moving_average)))

    monkeypatch.setattr(training.BestModelKeeper, "on_epoch_end", recording)
    assert cli._config_from(cli.build_parser().parse_args(["train", "--ema", "0.5"])).ema_momentum == 0.5
    run_dir, config = tmp_path / "run", TrainConfig(**TINY, ema_momentum=0.5, precision="float32")
    train(config, run_dir, verbose=0)
    best = json.loads((run_dir / "best.json").read_text())
    trained, after_keeper, average = seen[best["epoch"]]
    kept_model = keras.saving.load_model(run_dir / "best.keras")
    kept = weights(kept_model.trainable_weights)
    for kept_weight, average_weight, before, after in zip(kept, average, trained, after_keeper):
        np.testing.assert_allclose(kept_weight, average_weight, rtol=0, atol=1e-7)  # best.keras holds the average
        np.testing.assert_array_equal(before, after)  # and training goes on from its own weights
    assert max(np.abs(k - t).max() for k, t in zip(kept, trained)) > 1e-4  # the two differ
    # Validation ran on the average: the kept model's validation loss is the one that chose it.
    images, labels = training.load_splits(config.sizes(), spec=config.clutter_spec, names=["valid"])["valid"]
    probabilities = kept_model.predict(to_model_input(images), verbose=0)
    loss = -np.log(np.take_along_axis(probabilities, labels[..., None].astype(int), axis=-1)).mean()
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert "ema_momentum=0.5" in variant(json.loads((run_dir / "config.json").read_text()))


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "easy"
    metrics = train(TrainConfig(**EASY), run_dir, verbose=2)
    return run_dir, metrics


def test_short_training_learns(easy_run):
    run_dir, metrics = easy_run
    print("easy setting:", {k: metrics[k] for k in ("single_digit_error", "best_epoch", "train_seconds")})
    # Chance is 90 %.
    assert metrics["single_digit_error"] < 0.25
    for name in ("config.json", "history.csv", "best.keras", "best.json", "metrics.json", "logs"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + EASY["epochs"]


def test_evaluate_command(easy_run, capsys):
    run_dir, metrics = easy_run
    assert cli.main(["evaluate", str(run_dir), "--size", "1000"]) == 0
    written = json.loads((run_dir / "evaluation-test.json").read_text())
    assert written["single_digit_error"] == pytest.approx(metrics["single_digit_error"])
    n_digits = EASY["spec"]["n_digits"]
    for name in ("digit_error_by_position", "glimpse_centre_on_digit", "digit_centre_in_glimpse"):
        assert len(written[name]) == n_digits, name
    out = capsys.readouterr().out
    assert "single-digit error" in out and "digit seen by glimpse" in out
    # Training's own test evaluation reports the same diagnostics.
    assert len(metrics["digit_centre_in_glimpse"]) == n_digits


def test_resume_after_an_interruption(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    original = training.BestModelKeeper.on_epoch_end

    def interrupted(self, epoch, logs):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.BestModelKeeper, "on_epoch_end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), run_dir, verbose=0)
    assert (run_dir / "backup").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 1
    monkeypatch.setattr(training.BestModelKeeper, "on_epoch_end", original)
    metrics = train(None, run_dir, resume=True, verbose=0)
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]  # epoch 1 ran again, nothing else was lost
    assert metrics["epochs_run"] == 3 and metrics["stop_reason"] == "epochs"
    assert not (run_dir / "backup").exists()
    assert train(None, run_dir, resume=True)["epochs_run"] == 3  # finished: nothing to do


def test_an_interruption_while_testing_does_not_train_again(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), run_dir, verbose=0)
    history = (run_dir / "history.csv").read_text()
    monkeypatch.undo()
    metrics = train(None, run_dir, resume=True, verbose=0)
    assert (run_dir / "history.csv").read_text() == history  # no epoch ran again
    assert metrics["epochs_run"] == 3 and (run_dir / "metrics.json").exists()


def test_nan_loss_stops_and_keeps_the_best_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(TrainConfig, "learning_rate_at", lambda self, epoch: 5e-4 if epoch == 0 else 1e35)
    run_dir = tmp_path / "run"
    metrics = train(TrainConfig(**dict(TINY, epochs=5)), run_dir, verbose=0)
    assert "loss became NaN" in capsys.readouterr().err
    assert metrics["best_epoch"] == 1 and np.isfinite(metrics["single_digit_error"])
    assert metrics["stop_reason"] == "nan"
    assert not (run_dir / "backup").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "lstm_stm"], "unknown model 'lstm_stm'"),
        (["train", "--n-digits", "4"], "do not fit"),
        (["train", "--option", "glimpse_size=[200,200]"], "larger than image_size"),
        (["reproduce", "--models", "lstm_stn", "--option", "cell_init=he"], "cell_init='he': expected one of"),
        (["train", "--resume", "no/such/run"], "not a run directory"),
        (["evaluate", "no/such/run"], "no such file or run directory"),
        (["train", "--epochs", "0"], "epochs=0"),
        (["train", "--option", "classifier_units=0"], "cannot be built with classifier_units=0"),
    ],
)
def test_user_errors_exit_2_with_one_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_command_line_entry_point_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lstm_stn_tf", "evaluate", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "no such file or run directory" in result.stderr and "Traceback" not in result.stderr


def test_reproduce_writes_results_and_table(tmp_path, capsys):
    from lstm_stn_tf.reproduce import reproduce

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nold\n{README_END}\n\nMore.\n")
    table = reproduce(["lstm_stn"], [0, 1], tmp_path / "runs", tmp_path / "results", command="test", readme=readme,
                      steps_per_execution=2, **{k: v for k, v in TINY.items() if k != "model"})
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["histories", "lstm_stn-seed0.json", "lstm_stn-seed1.json"]
    assert (tmp_path / "results" / "histories" / "lstm_stn-seed1.csv").read_text().count("\n") == 1 + 3  # header, 3 epochs
    full_tables = (tmp_path / "docs" / "results.md").read_text()  # every table, beside the results folder
    assert full_tables.count("| lstm_stn |") == 3 and "| `test` |" in full_tables
    result = json.loads((tmp_path / "results" / "lstm_stn-seed0.json").read_text())
    assert result["epochs_run"] == 3 and result["command"] == "test"
    assert len(result["digit_error_by_position"]) == len(result["digit_centre_in_glimpse"]) == TINY["spec"]["n_digits"]
    summary = next(line for line in table.splitlines() if line.startswith("| lstm_stn |"))
    assert "epochs=3" in summary and "| 2 |" in summary and "±" in summary
    # Dispatching several batches per call does not change what is learned.
    assert "steps_per_execution" not in summary
    assert readme.read_text() == f"# Title\n\n{README_START}\n{table}{README_END}\n\nMore.\n"
    assert cli.main(["reproduce", "--table", "--results-dir", str(tmp_path / "results"), "--readme", str(readme)]) == 0
    assert readme.read_text().count(table) == 1


def test_readme_results_are_generated_from_results_folder():
    repository = pathlib.Path(__file__).resolve().parent.parent
    readme = (repository / "README.md").read_text()
    section = readme.split(README_START + "\n", 1)[1].split(README_END, 1)[0]
    assert section == readme_table(repository / "results"), "run: lstm-stn reproduce --table"
    # Only finished runs: none that a time limit cut.
    assert "cut at" not in section and "cut at" in (repository / "docs" / "results.md").read_text()


def test_variant_names_a_time_limit_only_where_it_cut_the_run():
    from lstm_stn_tf.reproduce import variant

    config = dict(TrainConfig(time_limit_minutes=60, steps_per_execution=10, precision="float32").__dict__)
    assert variant(config, "early_stopping") == "protocol"
    assert variant(config, "time_limit") == "cut at 60 min"
    assert variant(dict(config, precision="mixed_bfloat16"), "time_limit") == "precision=mixed_bfloat16, cut at 60 min"


def test_variant_names_each_model_option():
    config = dataclasses.asdict(TrainConfig(model_options={"glimpse_size": 48, "cell_init": "lasagne"}, precision="float32"))
    assert variant(config) == "cell_init=lasagne, glimpse_size=48"


def test_time_limit_stops_after_the_epoch_that_passes_it(tmp_path, capsys):
    with pytest.raises(training.UserError, match="time_limit_minutes=0: expected a positive number"):
        TrainConfig(time_limit_minutes=0)
    with pytest.raises(training.UserError, match="learning_rate=None: expected a positive number"):
        TrainConfig(learning_rate=None)
    metrics = train(TrainConfig(**dict(TINY, time_limit_minutes=1e-6)), tmp_path / "run", verbose=0)
    assert metrics["epochs_run"] == 1 and metrics["stop_reason"] == "time_limit"
    assert "Time limit" in capsys.readouterr().out


def test_demo_command_trains_evaluates_and_draws(tmp_path, capsys):
    picture = tmp_path / "attention.png"
    argv = ["demo", "--epochs", "1", "--train-size", "200", "--valid-size", "100", "--test-size", "100",
            "--run-dir", str(tmp_path / "demo"), "--attention", str(picture)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "single-digit error" in out and str(picture) in out
    assert (tmp_path / "demo" / "metrics.json").exists()
    assert (tmp_path / "demo" / "export" / "model.tflite").exists()
    assert picture.stat().st_size > 10_000


def test_bfloat16_fast_path_trains(tmp_path):
    config = TrainConfig(**dict(TINY, epochs=1, precision="mixed_bfloat16", steps_per_execution=2))
    metrics = train(config, tmp_path / "run", verbose=0)
    assert np.isfinite(metrics["single_digit_error"])
    import keras

    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert model.get_layer("loc_conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("glimpses").dtype_policy.name == "float32"


# The command line of a tiny run (TINY's settings).
TINY_ARGV = ["--option", "units=16", "--n-digits", "1", "--canvas-size", "60", "--n-clutter", "0",
             "--train-size", "200", "--valid-size", "100", "--test-size", "100", "--epochs", "3"]


def _finished_run(run_dir):
    """A run directory as a finished run leaves it (config.json, metrics.json), without training."""
    from lstm_stn_tf.evaluation import error_metrics

    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig(**TINY))))
    (run_dir / "metrics.json").write_text(json.dumps(error_metrics(np.eye(10)[[[3]]], [[3]])))
    return run_dir


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_process_training_in_a_run_directory_is_refused(tmp_path, capsys, resume):
    import fcntl

    run_dir = _finished_run(tmp_path / "run") if resume else tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    before = sorted(p.name for p in run_dir.iterdir())
    with open(run_dir / training.LOCK_NAME, "a") as lock:  # as the process training there holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = ["train", "--resume", str(run_dir)] if resume else ["train", "--run-dir", str(run_dir)] + TINY_ARGV
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run_dir}: another process is training in this run directory" in err and "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(before + [training.LOCK_NAME])
    if resume:  # the lock is released with the process: the run goes on
        assert train(None, run_dir, resume=True)["n_images"] == 1


@pytest.mark.parametrize("existing", ["a folder of the user's", "a file"])
def test_a_new_run_goes_only_into_a_new_or_empty_folder(tmp_path, capsys, existing):
    run_dir = tmp_path / "mine"
    if existing == "a file":
        run_dir.write_text("notes")
        files = None
    else:
        run_dir.mkdir()
        (run_dir / "best.keras").write_text("the user's own model")
        (run_dir / "history.csv").write_text("epoch,mine\n")
        files = {p.name: p.read_text() for p in run_dir.iterdir()}
    assert cli.main(["train", "--run-dir", str(run_dir)] + TINY_ARGV) == 2
    err = capsys.readouterr().err
    message = "not a run directory (no config.json) and not empty (best.keras, history.csv)" if files else "is a file"
    assert message in err and "Traceback" not in err
    if files:
        assert {p.name: p.read_text() for p in run_dir.iterdir()} == files  # not even a lock file added
    else:
        assert run_dir.read_text() == "notes"


@pytest.mark.parametrize("run_dir, reason", [("notes.txt", "is a file"),
                                             ("notes.txt/run", "notes.txt is a file, not a folder"),
                                             ("locked/run", "Permission denied")])
def test_an_unwritable_run_dir_is_one_message(tmp_path, monkeypatch, capsys, run_dir, reason):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "locked").mkdir()
    mkdir = pathlib.Path.mkdir

    def read_only(path, *args, **kwargs):  # as a read-only folder answers (root, running the tests, may write anywhere)
        if "locked" in path.parts:
            raise PermissionError(13, "Permission denied", str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert cli.main(["train", "--run-dir", run_dir] + TINY_ARGV) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "notes.txt"]


def test_an_edited_config_json_is_one_message_on_resume(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    original = training.BestModelKeeper.on_epoch_end

    def interrupted(self, epoch, logs):
        original(self, epoch, logs)
        if epoch == 1:  # the backup holds epoch 0
            raise KeyboardInterrupt

    monkeypatch.setattr(training.BestModelKeeper, "on_epoch_end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), run_dir, verbose=0)
    monkeypatch.undo()
    config_text = (run_dir / "config.json").read_text()
    config = json.loads(config_text)
    edits = {
        "{not json": "not valid JSON",
        json.dumps(dict(config, units=16)): "unknown keys units; expected only ",
        json.dumps([config]): "holds a JSON list",
        json.dumps(dict(config, spec=dict(config["spec"], canvas=60))): "unexpected keyword argument 'canvas'",
        json.dumps(dict(config, model_options={"units": 8})): "does not match the run's backup",
    }
    for text, message in edits.items():
        (run_dir / "config.json").write_text(text)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli.main(["train", "--resume", str(run_dir)]) == 2, message
        err = capsys.readouterr().err
        assert message in err and f"{run_dir / 'config.json'}" in err and "Traceback" not in err, err
        assert not [w for w in caught if "freshly-initialized" in str(w.message)], message  # one message, no more
    (run_dir / "config.json").write_text(config_text)
    assert train(None, run_dir, resume=True, verbose=0)["epochs_run"] == 3


def test_resume_says_which_given_options_it_ignores(tmp_path, capsys):
    run_dir = _finished_run(tmp_path / "run")
    assert cli.main(["train", "--res", str(run_dir), "--epochs", "9", "--seed=2"]) == 0
    err = capsys.readouterr().err
    assert "--resume continues the run with the options of its config.json; ignored: --epochs, --seed." in err
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert "ignored" not in capsys.readouterr().err


def test_a_killed_runs_temporary_files_are_removed(tmp_path):
    run_dir = _finished_run(tmp_path / "run")
    stale = [run_dir / ".best.k1ll3d00.keras", run_dir / ".history.k1ll3d00.csv"]
    kept = [run_dir / ".best.keras.mine", run_dir / "notes.best.keras"]
    for path in stale + kept:
        path.write_text("")
    train(None, run_dir, resume=True)
    assert [path.exists() for path in stale + kept] == [False, False, True, True]


def test_a_recipes_model_options_reach_only_the_models_that_take_them():
    from lstm_stn_tf.errors import UserError

    for recurrent in ("lstm_stn", "gru_stn"):  # gru_stn takes LSTM-STN's options through **overrides
        assert TrainConfig.from_recipe("fast", model=recurrent).model_options == {"cell_init": "lasagne"}
    assert TrainConfig.from_recipe("fast", model="cnn").model_options == {}
    small = dict(spec={"n_digits": 2, "canvas_size": 60}, model_options={"classifier_filters": 4})
    TrainConfig.from_recipe("fast", model="cnn", **small).build_model()
    # An option the caller names is passed as given, and a model that does not take it says so.
    refused = TrainConfig.from_recipe("fast", model="cnn", model_options={"cell_init": "lasagne"})
    with pytest.raises(UserError, match=r"model 'cnn' does not take cell_init; it accepts image_size, "):
        refused.build_model()
