"""Data-parallel training: one model over several devices and processes.

`setup` reads how a run is spread (flags, else the launcher's environment),
checks it, and starts the engine the backend ships:

- JAX: `keras.distribution.DataParallel`, over the devices of one process or,
  with `keras.distribution.initialize`, of several processes (one per host or
  per GPU; the first is the coordinator and the chief);
- TensorFlow: `tf.distribute.MirroredStrategy`, over the GPUs of one host.
  Several TensorFlow processes would need `MultiWorkerMirroredStrategy`, whose
  `model.fit` fails in Keras 3 (keras-team/keras#20585), so they are refused.

Every process runs the same recipe: it generates the same data from the seeds,
builds the same weights from `seed`, and reads whole global batches, of which
Keras computes each device's part; only the chief (process 0) writes the run
directory. `train` asks `current()` for the distribution `setup` started; by
default it is `SINGLE` (one process, no distribution: training as without this
module).
"""

import contextlib
import dataclasses
import os
import re

import keras
import numpy as np

from lstm_stn_tf.errors import UserError

MODES = ("auto", "off", "data_parallel")
# The environment variables a launcher sets, in the order they are read: Keras's own
# (keras.distribution.initialize reads them too), then SLURM's (srun sets them per task).
COORDINATOR_VARIABLE = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES_VARIABLES = ("KERAS_DISTRIBUTION_NUM_PROCESSES", "SLURM_NTASKS")
PROCESS_ID_VARIABLES = ("KERAS_DISTRIBUTION_PROCESS_ID", "SLURM_PROCID")
MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """Which process of how many this one is, and where their coordinator listens."""

    coordinator: str = None  # HOST:PORT of process 0
    num_processes: int = 1
    process_id: int = 0

    @property
    def multi_process(self):
        return self.num_processes > 1


def read_settings(coordinator=None, num_processes=None, process_id=None, environ=None):
    """The `ProcessSettings` of the flags given (not None), else of the environment.

    Each value comes from its flag, else from `KERAS_DISTRIBUTION_JOB_ADDRESSES`
    (its first address is the coordinator's), `KERAS_DISTRIBUTION_NUM_PROCESSES`
    and `KERAS_DISTRIBUTION_PROCESS_ID`, else from SLURM's `SLURM_NTASKS` and
    `SLURM_PROCID`. Without any, one process. A bad value is a `UserError`.
    """
    environ = os.environ if environ is None else environ
    if coordinator is None and environ.get(COORDINATOR_VARIABLE):
        coordinator = environ[COORDINATOR_VARIABLE].split(",")[0].strip()
    num_processes = _integer("--num-processes", num_processes, NUM_PROCESSES_VARIABLES, environ)
    process_id = _integer("--process-id", process_id, PROCESS_ID_VARIABLES, environ)
    if num_processes is None:
        if process_id not in (None, 0) or coordinator:
            raise UserError("a process id or coordinator was given without the number of processes: "
                            "pass --num-processes N (or set KERAS_DISTRIBUTION_NUM_PROCESSES).")
        return ProcessSettings()
    if num_processes < 1:
        raise UserError(f"--num-processes {num_processes}: expected a positive number of processes.")
    if num_processes == 1:
        if process_id not in (None, 0):
            raise UserError(f"--process-id {process_id}: expected 0 in a run of 1 process.")
        return ProcessSettings()
    if process_id is None:
        raise UserError(f"{num_processes} processes but no process id: give each process its --process-id "
                        f"(0 to {num_processes - 1}; or set KERAS_DISTRIBUTION_PROCESS_ID).")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process-id {process_id}: expected 0 to {num_processes - 1} "
                        f"in a run of {num_processes} processes.")
    if coordinator is None:
        raise UserError(f"{num_processes} processes need their coordinator's address: pass --coordinator HOST:PORT "
                        f"(process 0's host and a free port, the same in every process; or set {COORDINATOR_VARIABLE}).")
    _check_address(coordinator)
    return ProcessSettings(coordinator, num_processes, process_id)


def _integer(flag, value, variables, environ):
    """`value`, else the first of `variables` set in `environ`, as an int (None if none)."""
    if value is not None:
        return value
    for variable in variables:
        text = environ.get(variable, "").strip()
        if text:
            try:
                return int(text)
            except ValueError:
                raise UserError(f"{variable}={text!r}: expected an integer (it stands for {flag}).") from None
    return None


def _check_address(address):
    host, separator, port = address.rpartition(":")
    if not separator or not host or not re.fullmatch(r"[0-9]+", port) or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator {address!r}: expected HOST:PORT, e.g. 10.0.0.1:12345 "
                        "(process 0's host and a free port from 1 to 65535).")


@dataclasses.dataclass
class Distribution:
    """How `train` spreads a run: `strategy` "none" (one device, as without this
    module), "data_parallel" (`keras.distribution.DataParallel`, JAX) or "mirrored"
    (`tf.distribute.MirroredStrategy`, TensorFlow); over `devices` devices in all,
    in `processes` processes, of which this is `process_id`."""

    strategy: str = "none"
    devices: int = 1
    processes: int = 1
    process_id: int = 0
    engine: object = None  # the Keras distribution or the tf.distribute strategy

    @property
    def is_chief(self):
        """Whether this process writes the run: process 0."""
        return self.process_id == 0

    @property
    def multi_process(self):
        return self.processes > 1

    def scope(self):
        """The context in which to build, compile and fit the model."""
        return self.engine.scope() if self.engine is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def local(self):
        """A context without the distribution, for what one process computes alone
        (the chief saving the best model during `fit`): under `DataParallel` new
        variables are placed on every process's devices, which all must join."""
        if self.strategy != "data_parallel":
            yield
            return
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)

    def check_batches(self, what, size, batch_size):
        """A `UserError` unless each batch of `size` images (the last one too)
        splits evenly over the devices, as `DataParallel` needs."""
        if self.strategy != "data_parallel":
            return  # MirroredStrategy splits a batch unevenly where it must
        last = size % batch_size
        for images, where in ((batch_size, "a batch"), (last, "the last batch")):
            if images and images % self.devices:
                raise UserError(
                    f"{what}: {where} of {images} images does not split evenly over {self.devices} devices; "
                    f"choose sizes whose batches are multiples of {self.devices}, or pass --distribute off.")

    def shard(self, batches):
        """This process's part of each of `batches`' global batches (a `PyDataset`):
        all of them in one process. Keras shards only a `tf.data.Dataset` across
        processes by itself, and the run's batches are a `PyDataset`, whose order is
        a function of the epoch (see `data.SequenceBatches`)."""
        return ProcessPart(batches, self.process_id, self.processes) if self.multi_process else batches

    def barrier(self, name):
        """Waits until every process arrives here (nothing to wait for in one process)."""
        if self.multi_process:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def chief_decides(self, value):
        """The chief's `value` (a bool), in every process."""
        if not self.multi_process:
            return value
        from jax.experimental import multihost_utils

        return bool(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))

    def describe(self, batch_size):
        """For `metrics.json` and the log: the strategy, processes, devices and batches."""
        per_device = batch_size // self.devices if batch_size % self.devices == 0 else batch_size / self.devices
        return {"strategy": self.strategy, "backend": keras.backend.backend(), "processes": self.processes,
                "devices": self.devices, "global_batch": batch_size, "per_device_batch": per_device}


SINGLE = Distribution()
_current = SINGLE


def current():
    """The distribution `setup` started in this process (`SINGLE` before)."""
    return _current


def setup(mode="auto", coordinator=None, num_processes=None, process_id=None, environ=None):
    """Starts the distribution a run asks for, before anything computes; returns it.

    Args:
        mode: "off" (one device, as without this module), "data_parallel" (over every
            device, of every process), or "auto": data parallel where there are
            several processes or several accelerators (GPUs, TPUs), else off.
        coordinator, num_processes, process_id: the processes (`read_settings`:
            these flags, else the launcher's environment).
    """
    global _current
    if mode not in MODES:
        raise UserError(f"--distribute {mode!r}: expected one of {', '.join(MODES)}.")
    settings = read_settings(coordinator, num_processes, process_id, environ)
    backend = keras.backend.backend()
    if settings.multi_process:
        if mode == "off":
            raise UserError(f"--distribute off with {settings.num_processes} processes: one process trains alone; "
                            "drop --distribute off, or start one process.")
        if backend == "tensorflow":
            raise UserError(
                f"{settings.num_processes} processes need the JAX backend: run with KERAS_BACKEND=jax. With TensorFlow "
                f"they would need MultiWorkerMirroredStrategy, whose model.fit fails in Keras 3 ({MULTI_WORKER_ISSUE}).")
    if backend not in ("jax", "tensorflow"):
        if mode == "data_parallel" or settings.multi_process:
            raise UserError(f"data-parallel training runs on the JAX or TensorFlow backend, not {backend}: "
                            "set KERAS_BACKEND=jax (or tensorflow).")
        return _current
    if _current is not SINGLE:
        return _current  # a process joins its cluster once (reproduce trains several runs in it)
    if settings.multi_process:
        # Before JAX computes anything: it joins the cluster, whose devices then make up jax.devices().
        keras.distribution.initialize(settings.coordinator, settings.num_processes, settings.process_id)
    devices = _devices(backend)
    accelerators = [device for device in devices if not device.lower().startswith("cpu")]
    if mode == "off" or mode == "auto" and not settings.multi_process and len(accelerators) < 2:
        return _current
    if backend == "jax":
        # The processes' rows of each batch are sent apart (`shard`); Keras spreads them over the devices.
        engine = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not settings.multi_process)
        strategy = "data_parallel"
    else:
        import tensorflow as tf

        engine, strategy = tf.distribute.MirroredStrategy(devices=[_tf_name(d) for d in devices]), "mirrored"
    _current = Distribution(strategy, len(devices), settings.num_processes, settings.process_id, engine)
    return _current


def _devices(backend):
    """The devices a distribution spans: every process's accelerators, else its CPUs (Keras's names, "gpu:0")."""
    if backend == "jax":
        return keras.distribution.list_devices()
    import tensorflow as tf

    # TensorFlow's logical devices, so that CPUs split by set_logical_device_configuration count apart.
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [f"{device.device_type.lower()}:{device.name.rpartition(':')[2]}" for device in devices]


def _tf_name(device):
    kind, _, index = device.partition(":")
    return f"/{kind.upper()}:{index}"


def is_chief():
    """Whether this process writes the run directory and results (process 0)."""
    return current().is_chief


class ProcessPart(keras.utils.PyDataset):
    """Process `index`'s rows of each batch of `batches` (a `PyDataset`), one
    `count`-th of it, in order: the processes' parts, joined in process order,
    are the global batch (as `jax.make_array_from_process_local_data` joins them)."""

    def __init__(self, batches, index, count):
        super().__init__()
        self.batches, self.index, self.count = batches, index, count

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, batch):
        arrays = self.batches[batch]
        rows = len(arrays[0] if isinstance(arrays, tuple) else arrays) // self.count
        part = slice(self.index * rows, (self.index + 1) * rows)
        return tuple(array[part] for array in arrays) if isinstance(arrays, tuple) else arrays[part]

    def on_epoch_begin(self):
        self.batches.on_epoch_begin()

    def on_epoch_end(self):
        self.batches.on_epoch_end()


class StopTogether(keras.callbacks.Callback):
    """Ends training in every process when the chief's callbacks end it: its time
    limit counts its own clock. Goes after the callbacks that stop training."""

    def __init__(self, distribution):
        super().__init__()
        self.distribution = distribution

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = self.distribution.chief_decides(self.model.stop_training)
