"""Data-parallel training (lstm_stn_tf.distributed): settings, and 2 JAX processes on 127.0.0.1."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from lstm_stn_tf import cli, distributed
from lstm_stn_tf.distributed import Distribution, ProcessSettings, read_settings
from lstm_stn_tf.errors import UserError

# A tiny run (tests/test_training.py's TINY), 2 epochs of 2 global batches of 100, in float32:
# where `auto` takes bfloat16 (AVX-512 BF16, AMX), two halves of a batch round ~1e-3 apart from
# the whole batch; in float32 they stay ~1e-8 apart.
TINY_ARGV = ["--option", "units=16", "--n-digits", "1", "--canvas-size", "60", "--n-clutter", "0",
             "--train-size", "200", "--valid-size", "100", "--test-size", "100", "--epochs", "2",
             "--precision", "float32"]
# Runs `lstm-stn` (argv[2:]) and saves the trained model's final weights to argv[1] (outside the run
# directory, which only the chief writes). With KILL_AT_EPOCH=e it kills itself as epoch e begins.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from lstm_stn_tf import cli, training

    models = []
    compile_model = training.compile_model
    training.compile_model = lambda model, config: models.append(model) or compile_model(model, config)
    if os.environ.get("KILL_AT_EPOCH"):
        class Killed(training.BestModelKeeper):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == int(os.environ["KILL_AT_EPOCH"]):
                    os.kill(os.getpid(), signal.SIGKILL)
                super().on_epoch_begin(epoch, logs)
        training.BestModelKeeper = Killed
    code = cli.main(sys.argv[2:])
    np.savez(sys.argv[1], *models[-1].get_weights())
    sys.exit(code)
    """
)
TIMEOUT = 240  # seconds for one launch of the processes


def test_settings_come_from_flags_then_keras_then_slurm():
    assert read_settings(environ={}) == ProcessSettings()
    assert not read_settings(environ={}).multi_process
    keras_env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:2345",
                 "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1",
                 "SLURM_NTASKS": "4", "SLURM_PROCID": "3"}
    assert read_settings(environ=keras_env) == ProcessSettings("10.0.0.1:1234", 2, 1)
    slurm_env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "node1:5000", "SLURM_NTASKS": "4", "SLURM_PROCID": "3"}
    assert read_settings(environ=slurm_env) == ProcessSettings("node1:5000", 4, 3)
    assert read_settings("h:1", 3, 0, environ=keras_env) == ProcessSettings("h:1", 3, 0)  # flags first
    assert read_settings(num_processes=1, environ={}) == ProcessSettings()


@pytest.mark.parametrize(
    "flags, environ, message",
    [
        (dict(num_processes=2, process_id=0), {}, "need their coordinator's address: pass --coordinator"),
        (dict(coordinator="h:1", num_processes=2), {}, "no process id: give each process its --process-id"),
        (dict(coordinator="h:1", num_processes=2, process_id=2), {}, "--process-id 2: expected 0 to 1"),
        (dict(coordinator="h:1", num_processes=0, process_id=0), {}, "--num-processes 0: expected a positive"),
        (dict(coordinator="h", num_processes=2, process_id=0), {}, "--coordinator 'h': expected HOST:PORT"),
        (dict(coordinator="h:99999", num_processes=2, process_id=0), {}, "expected HOST:PORT"),
        (dict(process_id=1), {}, "without the number of processes"),
        ({}, {"SLURM_NTASKS": "two"}, "SLURM_NTASKS='two': expected an integer"),
    ],
)
def test_bad_settings_are_one_error(flags, environ, message):
    with pytest.raises(UserError, match=message):
        read_settings(**flags, environ=environ)


def test_several_tensorflow_processes_are_refused_with_the_reason(capsys):
    # This suite runs on TensorFlow: its multi-worker strategy does not fit in Keras 3.
    with pytest.raises(UserError, match=r"KERAS_BACKEND=jax.*keras/issues/20585"):
        distributed.setup("auto", "127.0.0.1:1234", 2, 0, environ={})
    argv = ["train", "--distribute", "off", "--coordinator", "127.0.0.1:1234", "--num-processes", "2",
            "--process-id", "0"]
    assert cli.main(argv) == 2
    assert "--distribute off with 2 processes" in capsys.readouterr().err
    with pytest.raises(UserError, match="--distribute 'mirrored': expected one of auto, off, data_parallel"):
        distributed.setup("mirrored", environ={})
    # One CPU: no distribution, training as before.
    assert distributed.setup("auto", environ={}) is distributed.SINGLE


def test_batches_must_split_evenly_over_the_devices():
    eight = Distribution("data_parallel", devices=8)
    eight.check_batches("training", 60_000, 96)
    with pytest.raises(UserError, match="a batch of 100 images does not split evenly over 8 devices"):
        eight.check_batches("training", 60_000, 100)
    with pytest.raises(UserError, match="the last batch of 20 images"):
        eight.check_batches("training", 212, 96)
    Distribution("mirrored", devices=8).check_batches("training", 60_000, 100)  # TensorFlow splits unevenly


def test_a_process_part_is_its_rows_of_each_batch():
    import keras

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return np.arange(4) + 10 * index, np.arange(4)

    parts = [distributed.ProcessPart(Batches(), index, 2) for index in range(2)]
    assert [part[1][0].tolist() for part in parts] == [[10, 11], [12, 13]]
    assert len(parts[0]) == 2


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(tmp_path, name, argv, processes=2, kill_at_epoch=None):
    """Starts `processes` drivers of `lstm-stn train argv` under JAX on the CPU; returns them
    with the files their weights go to."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    port = _free_port()
    launched = []
    for process_id in range(processes):
        flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                 "--process-id", str(process_id)] if processes > 1 else []
        weights = tmp_path / f"{name}-{process_id}.npz"
        log = open(tmp_path / f"{name}-{process_id}.log", "w")
        process_env = dict(env, **({"KILL_AT_EPOCH": str(kill_at_epoch)} if kill_at_epoch and process_id else {}))
        launched.append((subprocess.Popen([sys.executable, "-c", DRIVER, str(weights), "train", *argv, *flags],
                                          stdout=log, stderr=subprocess.STDOUT, env=process_env), weights, log))
    return launched


def _logs(launched):
    return "\n".join(f"--- process {i}:\n" + pathlib.Path(log.name).read_text()[-3000:]
                     for i, (_, _, log) in enumerate(launched))


def _finish(launched, timeout=TIMEOUT):
    """Waits for every process; on a timeout kills them all and fails with their logs.
    Returns each one's final weights."""
    deadline = time.monotonic() + timeout
    try:
        for process, _, _ in launched:
            process.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill(launched)
        pytest.fail(f"the processes did not finish within {timeout} s:\n{_logs(launched)}")
    finally:
        for _, _, log in launched:
            log.close()
    codes = [process.returncode for process, _, _ in launched]
    assert codes == [0] * len(launched), _logs(launched)
    weights = []
    for _, path, _ in launched:
        with np.load(path) as arrays:
            weights.append([arrays[key] for key in sorted(arrays.files, key=lambda name: int(name.split("_")[1]))])
    return weights


def _kill(launched):
    for process, _, _ in launched:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)  # JAX's threads outlive a SIGTERM
            process.wait()


def _assert_close(first, second, atol):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """2 processes, of which the worker is killed as epoch 2 begins, then both resumed; beside
    them a run of one process with the same global batch (100). Returns the resumed processes'
    final weights, the single process's, the run directory and the folder of the logs."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    run_dir = tmp_path / "run"
    killed = _launch(tmp_path, "killed", TINY_ARGV + ["--run-dir", str(run_dir)], kill_at_epoch=1)
    single = _launch(tmp_path, "single", TINY_ARGV + ["--run-dir", str(tmp_path / "single")], processes=1)
    (_, _, _), (worker, _, _) = killed
    metadata = run_dir / "backup" / "training_metadata.json"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (worker.poll() is not None and metadata.exists()):
        time.sleep(0.5)
    # The worker killed itself; the chief waits for it in vain, until its launcher stops it.
    assert worker.poll() == -signal.SIGKILL and metadata.exists(), _logs(killed)
    _kill(killed)
    for _, _, log in killed:
        log.close()
    assert json.loads(metadata.read_text())["epoch"] == 1 and not (run_dir / "metrics.json").exists()
    single_weights = _finish(single)[0]
    resumed = _finish(_launch(tmp_path, "resumed", ["--resume", str(run_dir)]))
    return resumed, single_weights, run_dir, tmp_path


def test_two_processes_train_one_model(resumed_run):
    (chief, worker), single, run_dir, tmp_path = resumed_run
    _assert_close(chief, worker, atol=0)  # one model: the same weights in both processes
    _assert_close(chief, single, atol=1e-5)  # as one process with the same global batch computes it
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["distribution"] == {"strategy": "data_parallel", "backend": "jax", "processes": 2, "devices": 2,
                                       "global_batch": 100, "per_device_batch": 50}
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["distribution"]["strategy"] == "none"
    log = (tmp_path / "resumed-1.log").read_text()
    assert "single-digit error" in log and "Written to" not in log  # the worker tests too, writes nothing


def test_resume_after_a_worker_is_killed(resumed_run):
    _, _, run_dir, _ = resumed_run
    # The resumed run trained epoch 2 only, from the chief's backup of epoch 1 (the fixture
    # checked it), and ended as the uninterrupted single process did (the test above).
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["stop_reason"] == "epochs"
    assert not (run_dir / "backup").exists()
