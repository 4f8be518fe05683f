"""`lstm-stn tune` (KerasTuner searches, alone and chief + workers on loopback),
promoting its best trials with `reproduce --from-tune`, and `reproduce --shard`."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import types

import keras_tuner
import pytest

from lstm_stn_tf import UserError, cli, reproduce, tuning
from lstm_stn_tf.training import TrainConfig

# One digit on a small canvas, a small LSTM: a trial is a few seconds, mostly tracing.
TINY_ARGS = ["--n-digits", "1", "--canvas-size", "60", "--n-clutter", "0", "--option", "units=16",
             "--train-size", "200", "--valid-size", "100", "--epochs", "1", "--precision", "float32"]
TINY = TrainConfig(model="lstm_stn", spec={"n_digits": 1, "canvas_size": 60, "n_clutter": 0}, model_options={"units": 16},
                   train_size=200, valid_size=100, epochs=1, precision="float32")
SEARCHED = ("learning_rate", "fresh_clutter", "cell_init")


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    """A search of one trial, rerun with max_trials=2 (one more), then again (none):
    the reports, and each run's trials trained and splits loaded."""
    directory = tmp_path_factory.mktemp("tune")
    fits, splits_loaded, reports = [], [], []
    fit, load_splits = tuning.OptionsHyperModel.fit, tuning.load_splits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuning.OptionsHyperModel, "fit",
                      lambda self, hp, *args, **kwargs: fits[-1].append(dict(hp.values)) or fit(self, hp, *args, **kwargs))
        patch.setattr(tuning, "load_splits", lambda *args, **kwargs: splits_loaded.extend(kwargs["names"])
                      or load_splits(*args, **kwargs))
        for max_trials in (1, 2, 2):
            fits.append([])
            reports.append(tuning.search(TINY, SEARCHED, max_trials=max_trials, directory=directory,
                                         project_name="tiny", verbose=0))
    return types.SimpleNamespace(project=directory / "tiny", reports=reports, fits=fits, splits_loaded=splits_loaded)


def test_a_search_records_its_best_trials_and_a_rerun_continues_it(tiny_search):
    first, second, third = tiny_search.reports
    assert [len(fits) for fits in tiny_search.fits] == [1, 1, 0]  # the rerun trained only the new trial
    assert first["trials"] == {"COMPLETED": 1} and second["trials"] == third["trials"] == {"COMPLETED": 2}
    assert json.loads((tiny_search.project / tuning.BEST_TRIALS_FILE).read_text()) == third
    best = third["best"]
    assert sorted(trial["trial_id"] for trial in best) == ["0", "1"]
    assert best[0]["val_error"] <= best[1]["val_error"] and 0 <= best[0]["val_error"] <= 1
    # Trial 0 kept the options and score it had after the first run.
    trial_0 = next(trial for trial in best if trial["trial_id"] == "0")
    assert trial_0 == first["best"][0]
    for trial, fitted in zip(sorted(best, key=lambda trial: trial["trial_id"]), tiny_search.fits[0] + tiny_search.fits[1]):
        searched = dict(trial["searched"], **trial["searched"].get("model_options", {}))
        assert {name: searched[name] for name in SEARCHED} == {name: fitted[name] for name in SEARCHED}
        # What a promoted run takes: the searched options with the fixed ones (units=16) and the images.
        assert trial["options"]["model_options"] == {"units": 16, "cell_init": fitted["cell_init"]}
        assert trial["options"]["spec"] == TINY.spec and trial["best_epoch"] == 1
    assert "test" not in tiny_search.splits_loaded and "valid" in tiny_search.splits_loaded  # never the test images
    assert third["search"] == list(SEARCHED) and third["objective"].startswith("val_error")


def test_a_rerun_with_other_settings_is_refused(tiny_search):
    with pytest.raises(UserError, match="holds a search of other settings .*search differ"):
        tuning.search(TINY, ["learning_rate"], max_trials=2, directory=tiny_search.project.parent, project_name="tiny")
    with pytest.raises(UserError, match="epochs differ"):
        tuning.search(dataclasses.replace(TINY, epochs=2), SEARCHED, max_trials=2,
                      directory=tiny_search.project.parent, project_name="tiny")


def test_weight_decay_is_searched_only_for_adamw():
    hypermodel = tuning.OptionsHyperModel(TINY, tuning.check_search(TINY, ["weight_decay", "optimizer"]))
    hp = keras_tuner.HyperParameters()
    assert hypermodel.trial_options(hp) == {"optimizer": "rmsprop"}  # the defaults: no decay for RMSprop
    hp.values.update(optimizer="adamw", weight_decay=1e-2)  # as the oracle chooses them
    assert hypermodel.trial_options(hp) == {"optimizer": "adamw", "weight_decay": 1e-2}
    config = hypermodel.trial_config(hp)
    assert (config.optimizer, config.weight_decay, config.model_options) == ("adamw", 1e-2, {"units": 16})


def test_hyperband_trains_trials_of_up_to_the_searchs_epochs(tmp_path):
    tuner = tuning.make_tuner(dataclasses.replace(TINY, epochs=9), ("learning_rate",), "hyperband", directory=tmp_path)
    assert (tuner.oracle.max_epochs, tuner.oracle.factor) == (9, tuning.HYPERBAND_FACTOR)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_chief_and_two_workers_on_loopback_share_the_trials(tmp_path):
    port = _free_port()
    argv = [sys.executable, "-m", "lstm_stn_tf", "tune", *TINY_ARGS, "--max-trials", "2", "--search",
            "learning_rate,cell_init", "--directory", str(tmp_path / "tune"), "--project-name", "loopback"]
    # One thread each: three processes share two cores; unbuffered, so the logs show progress.
    environment = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port),
                       TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1",
                       PYTHONUNBUFFERED="1")
    logs, processes = {}, {}
    deadline = time.monotonic() + 240
    try:
        # Started together, the workers ask for trials within a second or two of each other, well
        # within a trial's time (~8 s): each gets one. The chief ends up to 20 s after the workers
        # (KerasTuner's chief polls for their end every 20 s).
        for tuner_id in ("tuner0", "tuner1", "chief"):
            logs[tuner_id] = tmp_path / f"{tuner_id}.log"
            with open(logs[tuner_id], "w") as log:
                processes[tuner_id] = subprocess.Popen(argv, env=dict(environment, KERASTUNER_TUNER_ID=tuner_id),
                                                       stdout=log, stderr=subprocess.STDOUT)
        for tuner_id, process in processes.items():
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    text = {tuner_id: log.read_text() for tuner_id, log in logs.items()}
    assert all(process.returncode == 0 for process in processes.values()), text
    for worker in ("tuner0", "tuner1"):
        assert text[worker].count("- val_error:") == 1, text[worker]  # one trial of one epoch each
        assert "no trials left; the chief" in text[worker]
    report = json.loads((tmp_path / "tune" / "loopback" / tuning.BEST_TRIALS_FILE).read_text())
    assert report["trials"] == {"COMPLETED": 2} and len(report["best"]) == 2
    assert "val error (%)" in text["chief"] and "- val_error:" not in text["chief"]  # the chief trains nothing


def _fake_train(configs):
    """`reproduce`'s `train`, recording each config and writing a finished run's records."""

    def train(config, run_dir, resume, command):
        configs.append(config)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(dict(dataclasses.asdict(config), precision="float32")))
        (run_dir / "history.csv").write_text("epoch,accuracy\n0,0.9\n")
        return dict(model=config.model, seed=config.seed, best_epoch=1, epochs_run=1, stop_reason="epochs",
                    single_digit_error=0.1, sequence_error=0.3, train_seconds=60.0, seconds_per_epoch=60.0,
                    machine={"device": "CPU", "backend": "tensorflow"}, command=command)

    return train


def test_the_best_trials_are_promoted_to_full_runs_in_the_results(tiny_search, tmp_path, monkeypatch, capsys):
    configs = []
    monkeypatch.setattr(reproduce, "train", _fake_train(configs))
    places = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--readme", "none"]
    for shard in ("1/2", "2/2"):  # two machines, each its share of the trials x seeds
        capsys.readouterr()  # each prints the table of every result so far: the last one has them all
        assert cli.main(["reproduce", "--from-tune", str(tiny_search.project), "--top", "2", "--seeds", "0", "1",
                         "--shard", shard, *places]) == 0
        assert len(configs) == 2 * int(shard[0])
    best = tiny_search.reports[-1]["best"]
    names = sorted(path.name for path in (tmp_path / "results").glob("*.json"))
    assert names == sorted(f"lstm_stn-seed{seed}-tune-tiny-{trial['trial_id']}.json" for trial in best for seed in (0, 1))
    for config in configs:  # each trial's options, on the protocol's sizes and the recipe's epochs
        assert any(all(getattr(config, key) == value for key, value in trial["options"].items()) for trial in best)
        assert (config.spec, config.train_size, config.epochs) == (TINY.spec, 60_000, 300)
    assert len({json.dumps(dataclasses.asdict(config), sort_keys=True) for config in configs}) == 4
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| lstm_stn |")]
    assert len(rows) == 2 and all("| 2 |" in row for row in rows)  # a variant per trial, of two seeds each


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tune", "--search", "learning_rate,colour"], "cannot search colour (unknown); expected some of"),
        (["tune", "--model", "cnn", "--search", "cell_init"], "cannot search cell_init (model 'cnn' does not take it)"),
        (["tune", "--search", "learning_rate", "--learning-rate", "1e-3"], "learning_rate: both fixed"),
        (["tune", "--search", "weight_decay"], "searching weight_decay needs optimizer='adamw'"),
        (["tune", "--max-trials", "0"], "max_trials=0: expected a positive integer"),
        (["tune", "--oracle", "hyperband", "--max-trials", "3"], "Hyperband sets its own trials"),
        (["tune", "--project-name", "a/b"], "project_name='a/b': expected letters"),
        (["tune", "--time-limit", "5"], "--time-limit is not for a search"),
        (["tune", "--search", ","], "expected comma-separated option names"),
        (["tune", "--search", "glimpse_size", "--canvas-size", "40"], "cannot search glimpse_size: glimpse_size=(48, 48)"),
        (["reproduce", "--shard", "3/2"], "--shard 3/2: expected I/N with 1 <= I <= N"),
        (["reproduce", "--shard", "0/0"], "--shard 0/0: expected I/N"),
        (["reproduce", "--shard", "x"], "--shard x: expected I/N"),
        (["reproduce", "--from-tune", "no/such/search"], "no/such/search: no best_trials.json"),
        (["reproduce", "--top", "2"], "--top is for --from-tune DIR"),
        (["reproduce", "--from-tune", "tune/search", "--models", "cnn"], "--from-tune takes the model"),
        (["reproduce", "--from-tune", "tune/search", "--learning-rate", "1e-3"], "drop the recipe options"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = TINY_ARGS if argv[0] == "tune" and "--model" not in argv else []
    assert cli.main(argv[:1] + tiny + argv[1:]) == 2  # the case's own flags after the tiny ones, which they replace
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "tune").exists() and not (tmp_path / "results").exists()  # nothing written


def test_a_distributed_search_needs_all_of_kerastuners_variables(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    assert cli.main(["tune", *TINY_ARGS, "--directory", str(tmp_path)]) == 2
    assert "KERASTUNER_ORACLE_PORT is not" in capsys.readouterr().err


def test_shards_split_the_models_and_seeds_with_no_coordinator(tmp_path, monkeypatch, capsys):
    configs = []
    monkeypatch.setattr(reproduce, "train", _fake_train(configs))
    runs = ["lstm_stn-seed0", "lstm_stn-seed1", "lstm_stn-seed2", "cnn-seed0", "cnn-seed1", "cnn-seed2"]
    argv = ["reproduce", "--models", "lstm_stn", "cnn", "--seeds", "0", "1", "2", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--readme", "none"]
    assert cli.main(argv + ["--shard", "2/4"]) == 0
    assert sorted(path.stem for path in (tmp_path / "results").glob("*.json")) == sorted([runs[1], runs[5]])
    assert "| cnn | protocol | 1 |" in capsys.readouterr().out  # the table of what exists
    for shard in ("1/4", "3/4", "4/4"):
        assert cli.main(argv + ["--shard", shard]) == 0
    assert [f"{config.model}-seed{config.seed}" for config in configs] == [runs[k] for k in (1, 5, 0, 4, 2, 3)]
    assert "| cnn | protocol | 3 |" in capsys.readouterr().out
    assert reproduce.shard_jobs(range(5), (1, 1)) == list(range(5)) and reproduce.parse_shard(" 2/3 ") == (2, 3)
