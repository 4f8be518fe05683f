import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from lstm_stn_tf import cli, training
from lstm_stn_tf.reproduce import README_END, README_START, results_tables
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


def test_learning_rate_schedule():
    config = TrainConfig()
    rates = [config.learning_rate_at(epoch) for epoch in (0, 29, 30, 39, 40, 50)]
    np.testing.assert_allclose(rates, [5e-4, 5e-4, 5e-4 / 1.5, 5e-4 / 1.5, 5e-4 / 1.5**2, 5e-4 / 1.5**3])


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
    assert "single-digit error" in capsys.readouterr().out


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
        (["train", "--resume", "no/such/run"], "not a run directory"),
        (["evaluate", "no/such/run"], "no such file or run directory"),
        (["train", "--epochs", "0"], "epochs=0"),
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
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "RESULTS.md", "lstm_stn-seed0.json", "lstm_stn-seed1.json"]
    result = json.loads((tmp_path / "results" / "lstm_stn-seed0.json").read_text())
    assert result["epochs_run"] == 3 and result["command"] == "test"
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
    assert section == results_tables(repository / "results"), "run: lstm-stn reproduce --table"


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
