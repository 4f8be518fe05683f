"""The protocol's training recipe (shared/protocol.md, "Training").

RMSprop 5e-4, batch 100; gradients clipped element-wise to [-1, 1] then to a
global norm of 5; after epoch 30 the learning rate is divided by 1.5 every 10
epochs; early stopping on validation accuracy with patience 50; the
best-validation model is kept. A run directory holds `config.json`,
`history.csv`, `best.keras`, `best.json`, `metrics.json`, TensorBoard `logs/`
(where TensorFlow is installed), the `.lock` a training process holds and,
while it runs, a `backup/` that `--resume` continues from.
"""

import contextlib
import csv
import dataclasses
import fcntl
import importlib.util
import json
import math
import pathlib
import shutil
import sys
import time
import typing
import warnings

import keras
from keras import ops

from lstm_stn_tf.data import ClutterSpec, FreshClutterBatches, load_mnist, load_splits, make_input, split_digit_corners
from lstm_stn_tf import distributed, machine
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.evaluation import evaluate_model, save_inference_model
from lstm_stn_tf.losses import SmoothedSparseCrossentropy, StringCrossentropy
from lstm_stn_tf.models import build_model, list_models, model_options
from lstm_stn_tf.optimizers import ClippedAdamW, ClippedRMSprop
from lstm_stn_tf.paths import atomic_path, stale_temporaries, writing
from lstm_stn_tf.strings import string_accuracy


PRECISIONS = ("auto", "float32", "mixed_bfloat16")
OPTIMIZERS = {"rmsprop": ClippedRMSprop, "adamw": ClippedAdamW}
SCHEDULES = ("step", "cosine")
# Named recipes: TrainConfig values that replace the protocol's ("protocol" is
# the protocol itself). A run records its recipe, and the results table names
# the recipe and whatever the run changed beyond it.
RECIPES = {
    "protocol": {},
    # Fewer epochs to a good model: a two-epoch warm-up to twice the
    # protocol's rate, a cosine decay to zero at the last epoch, new clutter
    # every epoch and the recurrent cell's Lasagne start (both helped the
    # protocol's schedule most in its first 40 epochs); 20 epochs unless
    # --epochs says otherwise, the cosine always spanning them all.
    "fast": dict(epochs=20, learning_rate=1e-3, warmup_epochs=2, schedule="cosine", fresh_clutter=True,
                 model_options={"cell_init": "lasagne"}),
    # The best model: the protocol's schedule and early stopping with each
    # lever that lowered its validation error (docs/findings.md), a 5-epoch warm-up,
    # new clutter every epoch and the Lasagne cell start.
    "best": dict(warmup_epochs=5, fresh_clutter=True, model_options={"cell_init": "lasagne"}),
}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as `config.json` in the run dir."""

    model: str = "lstm_stn"
    model_options: dict = dataclasses.field(default_factory=dict)
    recipe: str = "protocol"  # the name of the RECIPES entry this config started from
    seed: int = 0
    data_seed: int = 0
    epochs: int = 300
    patience: int = 50
    batch_size: int = 100
    learning_rate: float = 5e-4
    decay_start: int = 30
    decay_every: int = 10
    decay_factor: float = 1.5
    schedule: str = "step"  # the protocol's step decay, or "cosine" to zero at `epochs` (named option)
    clip_value: typing.Optional[float] = 1.0  # None: no element-wise clipping (named option)
    clip_global_norm: typing.Optional[float] = 5.0  # None: no global-norm clipping (named option)
    train_size: int = 60_000
    valid_size: int = 10_000
    test_size: int = 10_000
    spec: dict = dataclasses.field(default_factory=lambda: ClutterSpec().key())
    mnist_path: str = None
    # Speed options (not in the protocol): "mixed_bfloat16" computes the CNNs
    # and the LSTM in bfloat16 (the sampler's coordinates and the transforms
    # stay float32); "auto" takes it only where the CPU computes bfloat16
    # natively (`machine.choose_precision`), and `train` records the choice;
    # steps_per_execution runs several batches per call.
    precision: str = "auto"
    steps_per_execution: int = 1
    # Budget option (not in the protocol): stop after the first epoch that
    # brings the run's total training time past this many minutes.
    time_limit_minutes: typing.Optional[float] = None
    # Named options beyond the protocol (its values are the defaults); the
    # results table names every run that changes one.
    optimizer: str = "rmsprop"  # or "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_epochs: int = 0  # linear learning-rate warm-up over this many epochs
    label_smoothing: float = 0.0
    # Polyak averaging (Keras's `use_ema`): the optimizer keeps a moving average of
    # the weights with this momentum, and validation and `best.keras` use it.
    ema_momentum: typing.Optional[float] = None
    fresh_clutter: bool = False  # new training images from the same digits every epoch
    # With fresh clutter: the training strings start near the left edge and spread
    # to the benchmark's placement over this many epochs (`FreshClutterBatches`).
    placement_warmup_epochs: int = 0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}.")
        if self.recipe not in RECIPES:
            raise UserError(f"recipe={self.recipe!r}: expected one of {', '.join(RECIPES)}.")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule={self.schedule!r}: expected one of {', '.join(SCHEDULES)}.")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer={self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}.")
        if self.weight_decay and self.optimizer != "adamw":
            raise UserError(f"weight_decay={self.weight_decay!r} needs optimizer='adamw' (RMSprop has no decoupled decay).")
        for name in ("epochs", "batch_size", "train_size", "valid_size", "test_size", "patience", "steps_per_execution"):
            _check_number(name, getattr(self, name), integer=True)
        for name in ("warmup_epochs", "placement_warmup_epochs"):
            _check_number(name, getattr(self, name), integer=True, minimum=0)
        for name in ("seed", "data_seed"):  # numpy's and Keras's generators take no negative seed
            _check_number(name, getattr(self, name), integer=True, minimum=0)
        _check_number("learning_rate", self.learning_rate)
        for name in ("clip_value", "clip_global_norm", "time_limit_minutes"):  # None: off
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name))
        _check_number("weight_decay", self.weight_decay, minimum=0)
        _check_number("label_smoothing", self.label_smoothing, minimum=0, below=1)
        if self.ema_momentum is not None:  # None: off
            _check_number("ema_momentum", self.ema_momentum, below=1)
        if not isinstance(self.fresh_clutter, bool):
            raise UserError(f"fresh_clutter={self.fresh_clutter!r}: expected true or false.")
        if self.placement_warmup_epochs and not self.fresh_clutter:
            raise UserError(f"placement_warmup_epochs={self.placement_warmup_epochs} needs fresh_clutter: "
                            "the fixed training images cannot change where their strings sit.")
        self.spec = ClutterSpec(**self.spec).key()

    @classmethod
    def from_recipe(cls, recipe="protocol", **overrides):
        """The config of a named recipe (`RECIPES`), `overrides` replacing its values."""
        if recipe not in RECIPES:
            raise UserError(f"recipe={recipe!r}: expected one of {', '.join(RECIPES)}.")
        values = dict(RECIPES[recipe], **overrides)
        # A recipe's model options reach the models that take them (the Lasagne cell start, the
        # recurrent ones); options given by the caller reach the model as given, and it refuses a wrong one.
        model = values.get("model", cls.model)
        taken = model_options(model) if model in list_models() else ()
        recipe_options = {k: v for k, v in RECIPES[recipe].get("model_options", {}).items() if k in taken}
        values["model_options"] = dict(recipe_options, **overrides.get("model_options", {}))
        return cls(recipe=recipe, **values)

    def resolved(self):
        """This config with `precision="auto"` replaced by the choice for this machine, and why."""
        precision, reason = machine.choose_precision(self.precision)
        return dataclasses.replace(self, precision=precision), reason

    @property
    def clutter_spec(self):
        return ClutterSpec(**self.spec)

    def build_model(self):
        spec = self.clutter_spec
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(machine.choose_precision(self.precision)[0])
        # Only strings pass variable_length: fixed-length models build exactly as before it existed.
        strings = {"variable_length": True} if spec.variable_length else {}
        try:
            return build_model(self.model, image_size=spec.image_size, n_digits=spec.n_digits, **strings,
                               **self.model_options)
        finally:
            keras.config.set_dtype_policy(previous)

    def learning_rate_at(self, epoch):
        """The protocol's step decay or the cosine (after the optional warm-up); `epoch` counts from 0."""
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / self.warmup_epochs
        if self.schedule == "cosine":  # from the full rate after the warm-up to 0 after the last epoch
            progress = (epoch - self.warmup_epochs) / max(1, self.epochs - self.warmup_epochs)
            return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
        if epoch < self.decay_start:
            return self.learning_rate
        return self.learning_rate / self.decay_factor ** ((epoch - self.decay_start) // self.decay_every + 1)

    def sizes(self):
        return {"train": self.train_size, "valid": self.valid_size, "test": self.test_size}


def _check_number(name, value, integer=False, minimum=None, below=None):
    """Raises `UserError` unless `value` is a number (an int if `integer`) in range.

    Without `minimum` the number must be positive."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not (
        (value > 0 if minimum is None else value >= minimum) and (below is None or value < below)
    ):
        kind = "integer" if integer else "number"
        wanted = f"a positive {kind}" if minimum is None else f"{'an' if integer else 'a'} {kind} >= {minimum}"
        raise UserError(f"{name}={value!r}: expected {wanted}" + (f" and below {below}." if below else "."))


def compile_model(model, config):
    """Compiles with the recipe's optimizer and loss, and an "accuracy" metric that
    `BestModelKeeper` follows as val_accuracy: per digit, or for digit strings per
    whole string (1 - string error, `strings.string_accuracy`)."""
    optimizer_options = {"weight_decay": config.weight_decay} if config.optimizer == "adamw" else {}
    if config.ema_momentum is not None:
        optimizer_options.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.clutter_spec.variable_length:
        loss = StringCrossentropy(config.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(string_accuracy, name="accuracy")
    else:
        loss = (SmoothedSparseCrossentropy(config.label_smoothing) if config.label_smoothing
                else keras.losses.SparseCategoricalCrossentropy())
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(
        optimizer=OPTIMIZERS[config.optimizer](
            learning_rate=config.learning_rate,
            clip_value=config.clip_value,
            clip_global_norm=config.clip_global_norm,
            **optimizer_options,
        ),
        loss=loss,
        metrics=[accuracy],
        steps_per_execution=config.steps_per_execution,
    )
    return model


def weight_average_swap(config):
    """Keras's `SwapEMAWeights` when the run averages its weights (`ema_momentum`), else None.

    In `fit`'s callbacks it puts the average in the model for each validation;
    `BestModelKeeper` uses the same object to save the average. The backup,
    written at the epoch's end, keeps the trained weights in the model and the
    average in the optimizer, so a resumed run continues exactly.
    """
    return keras.callbacks.SwapEMAWeights() if config.ema_momentum is not None else None


class BestModelKeeper(keras.callbacks.Callback):
    """Keeps the best-validation model; stops early, on NaN, and at the time limit.

    Its state lives in `best.json`, written with `best.keras`, so a resumed
    run continues the same early-stopping count; `resumed_seconds` carries
    the time already spent into the time limit.
    """

    def __init__(self, run_dir, patience, resumed_epochs=0, time_limit_seconds=None, resumed_seconds=0.0, writes=True,
                 weight_average=None):
        super().__init__()
        self.run_dir = pathlib.Path(run_dir)
        self.weight_average = weight_average  # `weight_average_swap`'s callback: best.keras holds the average
        self.writes = writes  # False in the processes of a distributed run other than the chief
        self.patience = patience
        self.time_limit_seconds = time_limit_seconds
        self.seconds = resumed_seconds
        self.best = json.loads((self.run_dir / "best.json").read_text()) if (
            self.run_dir / "best.json"
        ).exists() else {"epoch": -1, "val_accuracy": -math.inf}
        self.wait = max(0, resumed_epochs - 1 - self.best["epoch"])
        self.nan_seen = False
        self.nan_epoch = None
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_seen = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs):
        logs["epoch_seconds"] = time.perf_counter() - self._epoch_start
        self.seconds += logs["epoch_seconds"]
        logs["learning_rate"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.nan_seen:
            self.nan_epoch = epoch
            return
        accuracy = logs.get("val_accuracy")
        if accuracy is None:
            raise UserError("no validation accuracy: training needs validation data.")
        if accuracy > self.best["val_accuracy"]:
            self.best = {"epoch": epoch, "val_accuracy": float(accuracy),
                         "val_loss": float(logs.get("val_loss", math.nan))}
            if self.writes:
                with distributed.current().local(), self._averaged_weights():
                    save_inference_model(self.model, self.run_dir / "best.keras")
                with atomic_path(self.run_dir / "best.json") as temporary:
                    temporary.write_text(json.dumps(self.best, indent=2))
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                print(f"\nEarly stopping: validation accuracy has not improved for "
                      f"{self.patience} epochs (best epoch {self.best['epoch'] + 1}).")
                self.model.stop_training = True
        if self.out_of_time and not self.model.stop_training:
            print(f"\nTime limit: {self.seconds / 60:.1f} minutes of training after epoch {epoch + 1}; "
                  f"stopping (best epoch {self.best['epoch'] + 1}).")
            self.model.stop_training = True

    @contextlib.contextmanager
    def _averaged_weights(self):
        """The weight average in the model inside the block (as during validation), if the run keeps one."""
        if self.weight_average is None:
            yield
            return
        self.weight_average.on_test_begin()  # the swap its validation hooks make, and nothing else
        try:
            yield
        finally:
            self.weight_average.on_test_end()

    @property
    def out_of_time(self):
        return self.time_limit_seconds is not None and self.seconds >= self.time_limit_seconds

    @property
    def early_stopped(self):
        return self.wait >= self.patience

    def stop_reason(self, epochs_done, epochs):
        """Why training ended: "nan", "early_stopping", "time_limit" or "epochs"."""
        if self.nan_epoch is not None:
            return "nan"
        if self.early_stopped:
            return "early_stopping"
        if self.out_of_time and epochs_done < epochs:
            return "time_limit"
        return "epochs"


def _backup_epochs(backup_dir):
    metadata = backup_dir / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0


def _truncate_history(history, epochs):
    """Drops rows of epochs the backup does not hold (they will run again)."""
    if not history.exists():
        return
    lines = history.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) < epochs]
    with atomic_path(history) as temporary:
        temporary.write_text("".join(kept))


RUN_FILES = ("config.json", "history.csv", "best.keras", "best.json", "metrics.json")
VALIDATION_BATCH = 500
LOCK_NAME = ".lock"


def _check_new_run_dir(run_dir):
    """A new run goes into a new or empty folder, never over a run or the user's files."""
    if (run_dir / "config.json").exists():
        raise UserError(
            f"{run_dir} already holds a run; use --resume {run_dir} to continue it, "
            "or choose another --run-dir."
        )
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: is a file; --run-dir expects a folder (new or empty).")
    # What a run killed before writing config.json leaves is the package's own.
    own = {LOCK_NAME} | {stale.name for name in RUN_FILES for stale in stale_temporaries(run_dir / name)}
    found = sorted(entry.name for entry in run_dir.iterdir() if entry.name not in own)
    if found:
        raise UserError(
            f"{run_dir}: not a run directory (no config.json) and not empty ({', '.join(found[:5])}"
            f"{', ...' if len(found) > 5 else ''}); choose a new or empty folder for --run-dir."
        )


@contextlib.contextmanager
def _run_lock(run_dir):
    """Holds `run_dir`'s lock file: one process trains in a run directory at a time."""
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK_NAME, "a")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{run_dir}: another process is training in this run directory; "
                "wait for it to finish, or choose another --run-dir."
            ) from None
        yield  # the lock goes with the file's closing, also when the process dies


def _read_config(config_path):
    """The `TrainConfig` of a run's `config.json`; a `UserError` if it was edited into another shape."""
    try:
        values = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{config_path}: not valid JSON ({error}); restore the file the run started with.") from None
    fields = sorted(field.name for field in dataclasses.fields(TrainConfig))
    if not isinstance(values, dict):
        raise UserError(f"{config_path}: holds a JSON {type(values).__name__}; "
                        f"expected an object of {', '.join(fields)}.")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{config_path}: unknown keys {', '.join(unknown)}; expected only {', '.join(fields)}.")
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as error:  # UserError too: a bad value, or a bad key in `spec`
        raise UserError(f"{config_path}: {error}") from None


class _RunBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose failure to restore (a model or optimizer that
    `config.json` no longer describes) is one `UserError`.

    In a distributed run every process restores the chief's backup (together:
    placing the weights is collective), so all continue from the same epoch with
    the same weights, and only the chief saves it.
    """

    def __init__(self, backup_dir, config_path, distribution=distributed.SINGLE):
        super().__init__(str(backup_dir), double_checkpoint=True, delete_checkpoint=False)
        self.config_path = config_path
        self.distribution = distribution

    def on_train_begin(self, logs=None):
        try:
            with warnings.catch_warnings():
                # Keras warns and loads on when the backup lacks a layer's weights; that layer would
                # continue from fresh weights, so it is a mismatch like the others.
                warnings.filterwarnings("error", message="Skipping nested container", category=UserWarning)
                super().on_train_begin(logs)
        except (ValueError, KeyError, UserWarning):  # Keras's message lists whole weight arrays
            raise UserError(
                f"{self.config_path} does not match the run's backup in {self.backup_dir}: its weights do not "
                "fit the model config.json describes; restore the config.json the run started with."
            ) from None

    def on_epoch_end(self, epoch, logs=None):
        if self.distribution.is_chief:
            with self.distribution.local():  # saving creates variables (Keras's), which only the chief makes
                super().on_epoch_end(epoch, logs)


def train(config, run_dir, resume=False, verbose=None, command=None):
    """Runs (or resumes) the recipe in `run_dir`; returns the test metrics.

    Args:
        config: a `TrainConfig` (ignored when resuming: the run's is used).
        run_dir: the run directory: new or empty, or with `resume`, a run's.
            A second process training in it is refused.
        resume: continue a run from its last finished epoch.
        verbose: passed to `model.fit`; default: a progress bar on a
            terminal, one line per epoch otherwise (logs, CI).
        command: the command line recorded in `metrics.json`.

    Under a distributed run (`distributed.setup`) every process calls it alike;
    the chief writes `run_dir`, which the others only read (when resuming).
    """
    run_dir = pathlib.Path(run_dir)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    # Checked before the lock is taken, so a refused folder is left untouched.
    if resume and not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir}: not a run directory (no config.json); nothing to resume.")
    if not distributed.is_chief():  # the chief checks the folder, holds its lock and writes it
        return _train_locked(config, run_dir, resume, verbose, command)
    if not resume:
        _check_new_run_dir(run_dir)
    with _run_lock(run_dir):
        if not resume:
            _check_new_run_dir(run_dir)  # again: another process may have run in it meanwhile
        for name in RUN_FILES:  # no other process writes here now
            for stale in stale_temporaries(run_dir / name):
                stale.unlink()
        return _train_locked(config, run_dir, resume, verbose, command)


def _train_locked(config, run_dir, resume, verbose, command):
    config_path = run_dir / "config.json"
    if resume:
        if (run_dir / "metrics.json").exists():
            print(f"{run_dir}: this run has finished; its metrics are in metrics.json.")
            return json.loads((run_dir / "metrics.json").read_text())
        config = _read_config(config_path)
    config, precision_reason = config.resolved()  # config.json keeps the choice, so a resumed run keeps it
    if resume:
        precision_reason = "the run's config.json" if precision_reason == "as asked" else precision_reason
    print(f"Precision: {config.precision} ({precision_reason})")
    # With fresh clutter the fixed training images are never read: not loaded, generated or cached.
    names = [split for split in config.sizes() if not (config.fresh_clutter and split == "train")]
    splits = load_splits(config.sizes(), config.data_seed, config.clutter_spec, config.mnist_path, names=names)
    distribution = distributed.current()
    for what, size, batch_size in (("training", config.train_size, config.batch_size),
                                   ("validation", config.valid_size, VALIDATION_BATCH)):
        distribution.check_batches(f"{what} ({size} images in batches of {batch_size})", size, batch_size)
    if distribution.strategy != "none":
        print("Distribution: {strategy} over {devices} devices in {processes} processes, a global batch of "
              "{global_batch} ({per_device_batch:g} per device)".format(**distribution.describe(config.batch_size)))
    keras.utils.set_random_seed(config.seed)  # the same weights in every process
    with distribution.scope():
        model = compile_model(config.build_model(), config)
    if not resume and distribution.is_chief:
        with atomic_path(config_path) as temporary:
            temporary.write_text(json.dumps(dataclasses.asdict(config), indent=2))

    backup_dir = run_dir / "backup"
    done = _backup_epochs(backup_dir)
    history = run_dir / "history.csv"
    if distribution.is_chief:
        _truncate_history(history, done)
    keeper = BestModelKeeper(
        run_dir,
        config.patience,
        resumed_epochs=done,
        time_limit_seconds=None if config.time_limit_minutes is None else 60 * config.time_limit_minutes,
        resumed_seconds=sum(_epoch_seconds(_history_rows(history))),
        writes=distribution.is_chief,
        weight_average=weight_average_swap(config),
    )
    if done and keeper.early_stopped or done >= config.epochs or keeper.out_of_time:
        print(f"{run_dir}: training had already finished after {done} epochs.")
    else:
        callbacks = [keeper, keras.callbacks.LearningRateScheduler(config.learning_rate_at)]
        if keeper.weight_average is not None:
            callbacks.insert(0, keeper.weight_average)
        if distribution.multi_process:  # after the keeper, whose stop it makes everyone's
            callbacks.insert(1, distributed.StopTogether(distribution))
        if distribution.is_chief:  # its row before the backup's epoch: a resumed run drops the rows after that
            callbacks.append(keras.callbacks.CSVLogger(str(history), append=True))
        # Kept until metrics.json is written: an interruption during the
        # final test evaluation must not start the training again.
        callbacks.append(_RunBackup(backup_dir, config_path, distribution))
        if distribution.is_chief and importlib.util.find_spec("tensorflow"):  # Keras writes its logs with tf.summary
            callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
        valid_images, valid_labels = splits["valid"]
        with distribution.scope():
            model.fit(
                distribution.shard(training_input(config, splits.get("train"), first_epoch=done)),
                validation_data=distribution.shard(make_input(valid_images, valid_labels, batch_size=VALIDATION_BATCH)),
                epochs=config.epochs,
                shuffle=False,  # the pipeline shuffles
                callbacks=callbacks,
                verbose=verbose,
            )
        distribution.barrier("trained")  # the chief's best.keras and history.csv are complete
        if keeper.nan_epoch is not None and distribution.is_chief:
            # The backup holds the NaN weights: resuming from it is pointless.
            shutil.rmtree(backup_dir, ignore_errors=True)
            print(
                f"\nThe loss became NaN in epoch {keeper.nan_epoch + 1}; training stopped. "
                f"The best model (epoch {keeper.best['epoch'] + 1}) is kept in {run_dir / 'best.keras'}.",
                file=sys.stderr,
            )
            if keeper.best["epoch"] < 0:
                raise UserError("the loss became NaN before any epoch finished; no model was kept.")
    epochs_done = len(_history_rows(history))
    run = dict(command=command, stop_reason=keeper.stop_reason(epochs_done, config.epochs),
               precision_reason=precision_reason, distribution=distribution.describe(config.batch_size))
    if not distribution.is_chief:  # every process tests the same best.keras; the chief records it
        return run_metrics(run_dir, config, splits["test"], **run)
    metrics = write_metrics(run_dir, config, splits["test"], **run)
    shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


def training_input(config, train_split, first_epoch=0):
    """The shuffled training batches from epoch `first_epoch` on: the
    protocol's fixed images, or with `fresh_clutter` new images from the same
    training digits every epoch; either way epoch `e`'s batches depend on `e`
    alone, so a resumed run sees what an uninterrupted one would have."""
    if config.fresh_clutter:
        digits, digit_labels = load_mnist(config.mnist_path)["train"]
        return FreshClutterBatches(digits, digit_labels, config.train_size, seed=(config.data_seed, config.seed),
                                   spec=config.clutter_spec, batch_size=config.batch_size, first_epoch=first_epoch,
                                   placement_warmup_epochs=config.placement_warmup_epochs)
    images, labels = train_split
    return make_input(images, labels, config.batch_size, shuffle=True, seed=config.seed, first_epoch=first_epoch)


def _history_rows(history):
    if not history.exists():
        return []
    with open(history) as handle:
        return list(csv.DictReader(handle))


def _epoch_seconds(rows):
    """The seconds of each `history.csv` row that has them."""
    seconds = []
    for row in rows:
        try:
            seconds.append(float(row.get("epoch_seconds") or "nan"))
        except ValueError:  # CSVLogger writes "NA" for a missing value
            continue
    return [value for value in seconds if math.isfinite(value)]


def run_metrics(run_dir, config, test_split, command=None, stop_reason=None, precision_reason=None,
                distribution=None):
    """The metrics of `best.keras` on the test split (`evaluate_model`: digit or
    string metrics, as the model reads) and of the run, as `metrics.json` holds them."""
    run_dir = pathlib.Path(run_dir)
    model = keras.saving.load_model(run_dir / "best.keras")
    corners = split_digit_corners("test", config.test_size, config.data_seed, config.clutter_spec)
    metrics = evaluate_model(model, *test_split, digit_corners=corners)
    rows = _history_rows(run_dir / "history.csv")
    best = json.loads((run_dir / "best.json").read_text())
    seconds = _epoch_seconds(rows)
    metrics.update(
        model=config.model,
        seed=config.seed,
        best_epoch=best["epoch"] + 1,
        best_val_accuracy=best["val_accuracy"],
        epochs_run=len(rows),
        stop_reason=stop_reason,
        train_seconds=sum(seconds),
        seconds_per_epoch=sorted(seconds)[len(seconds) // 2] if seconds else None,
        precision=config.precision,
        precision_reason=precision_reason,
        machine=machine.describe(),
        distribution=distribution or distributed.SINGLE.describe(config.batch_size),
        command=command,
    )
    return metrics


def write_metrics(run_dir, config, test_split, **run):
    """Writes `metrics.json` (`run_metrics`, of which `run` are the keyword arguments); returns the metrics."""
    metrics = run_metrics(run_dir, config, test_split, **run)
    with atomic_path(pathlib.Path(run_dir) / "metrics.json") as temporary:
        temporary.write_text(json.dumps(metrics, indent=2))
    return metrics
