"""`lstm-stn tune`: a KerasTuner search over the named options of `training.py`.

Each trial is a `TrainConfig` whose searched options (`SEARCH_SPACE`) the
oracle (Bayesian or Hyperband) chooses, trained with the project's own
training input and learning-rate schedule; the objective is `val_error`, the
validation split's error (single-digit, or whole-string for digit strings),
never the test split's. A search lives in `<directory>/<project_name>`:
KerasTuner's own files (`oracle.json`, `trial_*/`), `tune.json` (what is
searched, so a rerun continues the same search) and, once it ends,
`best_trials.json`. Rerunning continues it; a larger `max_trials` extends it.

Distributed, KerasTuner's chief/worker mode: the same command on every
machine, with `KERASTUNER_TUNER_ID` ("chief" on one, "tuner0", "tuner1", ...
on the others), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` (where the
chief serves its oracle) set. The chief runs no trial; it records them all and
writes `best_trials.json` when the workers are done.

`promotions` turns the best trials into full runs of `lstm-stn reproduce
--from-tune`, whose results land in `results/` beside the others.
"""

import dataclasses
import json
import os
import pathlib
import re
import sys

import keras

from lstm_stn_tf.data import BENCHMARKS, load_splits, make_input
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.models import list_models, model_options
from lstm_stn_tf.paths import atomic_path
from lstm_stn_tf.training import (OPTIMIZERS, SCHEDULES, TrainConfig, compile_model, training_input,
                                  weight_average_swap)

try:
    import keras_tuner
except ImportError:  # the `tune` extra
    keras_tuner = None

# Each searched option and the values a trial draws it from: grids of round
# values, so that trials, promoted runs and the results table name them
# legibly; the protocol's value is each one's default.
SEARCH_SPACE = {
    "learning_rate": lambda hp: hp.Choice("learning_rate", [2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3], default=5e-4),
    "warmup_epochs": lambda hp: hp.Choice("warmup_epochs", [0, 1, 2, 5]),
    "schedule": lambda hp: hp.Choice("schedule", list(SCHEDULES)),
    "fresh_clutter": lambda hp: hp.Boolean("fresh_clutter"),
    "label_smoothing": lambda hp: hp.Choice("label_smoothing", [0.0, 0.05, 0.1, 0.2]),
    "optimizer": lambda hp: hp.Choice("optimizer", list(OPTIMIZERS)),
    "weight_decay": lambda hp: hp.Choice("weight_decay", [1e-4, 1e-3, 1e-2, 5e-2]),
    # Model options (TrainConfig.model_options), for the models that take them.
    "cell_init": lambda hp: hp.Choice("cell_init", ["keras", "lasagne"]),
    "glimpse_size": lambda hp: hp.Choice("glimpse_size", [33, 40, 48]),
    "units": lambda hp: hp.Choice("units", [128, 256, 384]),
}
MODEL_OPTIONS = ("cell_init", "glimpse_size", "units")
# An option searched only where another searched option has one of these values.
CONDITIONS = {"weight_decay": ("optimizer", ["adamw"])}
DEFAULT_SEARCH = ("learning_rate", "warmup_epochs", "schedule", "fresh_clutter", "label_smoothing", "cell_init",
                  "glimpse_size")
ORACLES = ("bayesian", "hyperband")
DEFAULT_MAX_TRIALS = 10
HYPERBAND_FACTOR = 3
OBJECTIVE = "val_error"
SETTINGS_FILE = "tune.json"
BEST_TRIALS_FILE = "best_trials.json"
# The TrainConfig fields a promoted run takes from its trial: the named options
# and the images. The rest (sizes, epochs, seeds, precision) is the search's
# budget, which `reproduce` sets anew.
PROMOTED_FIELDS = ("optimizer", "learning_rate", "schedule", "weight_decay", "warmup_epochs", "label_smoothing",
                   "ema_momentum", "fresh_clutter", "clip_value", "clip_global_norm", "model_options", "spec")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ORACLE_VARIABLES = ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")


def searchable(model):
    """The options of `SEARCH_SPACE` a search of `model` can take."""
    taken = model_options(model) if model in list_models() else ()
    return tuple(name for name in SEARCH_SPACE if name not in MODEL_OPTIONS or name in taken)


def check_search(config, names=None):
    """The options to search (`names`, or those of `DEFAULT_SEARCH` that `config.model`
    takes) in `SEARCH_SPACE` order; a `UserError` for one that cannot be searched."""
    config.build_model()  # a bad model name or fixed option fails before the search
    allowed = searchable(config.model)
    names = [name for name in DEFAULT_SEARCH if name in allowed] if names is None else list(names)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        not_taken = [name for name in unknown if name in SEARCH_SPACE]
        reason = f"model {config.model!r} does not take it" if not_taken == unknown else "unknown"
        raise UserError(f"cannot search {', '.join(unknown)} ({reason}); expected some of {', '.join(allowed)}.")
    if not names:
        raise UserError(f"nothing to search; expected some of {', '.join(allowed)}.")
    if "weight_decay" in names and "optimizer" not in names and config.optimizer != "adamw":
        raise UserError("searching weight_decay needs optimizer='adamw' (--optimizer adamw), or optimizer searched "
                        "too (RMSprop has no decoupled decay).")
    for name in (name for name in names if name in MODEL_OPTIONS):  # every value must build, or its trials fail
        for value in _grid(name):
            try:
                dataclasses.replace(config, model_options=dict(config.model_options, **{name: value})).build_model()
            except UserError as error:
                raise UserError(f"cannot search {name}: {error}") from None
    return tuple(name for name in SEARCH_SPACE if name in names)


def _grid(name):
    """The values `SEARCH_SPACE` draws option `name` from."""
    hp = keras_tuner.HyperParameters()
    SEARCH_SPACE[name](hp)
    return hp.space[0].values


class ValidationError(keras.callbacks.Callback):
    """Adds the search's objective to each epoch's logs: `val_error`, 1 - the
    validation accuracy (`compile_model`'s: per digit, or per whole string)."""

    def on_epoch_end(self, epoch, logs=None):
        logs[OBJECTIVE] = 1.0 - logs["val_accuracy"]


class OptionsHyperModel(keras_tuner.HyperModel if keras_tuner else object):
    """The `TrainConfig` `config` with the options `names` drawn by the oracle:
    `build` builds and compiles its model (`compile_model`), `fit` trains it on
    the training input of `training.train` and its learning-rate schedule,
    validating on the validation split."""

    def __init__(self, config, names):
        super().__init__(name="lstm_stn_tf")
        self.config, self.names = config, names
        self._splits = {}

    def trial_options(self, hp):
        """The searched options `hp` holds: TrainConfig fields, and `model_options`."""
        options, chosen_model_options = {}, {}
        for name in self.names:
            parent, values = CONDITIONS.get(name, (None, None))
            if parent in self.names:
                with hp.conditional_scope(parent, values):
                    value = SEARCH_SPACE[name](hp)
            else:
                value = SEARCH_SPACE[name](hp)
            if value is not None:  # None: its condition does not hold (weight decay for RMSprop)
                (chosen_model_options if name in MODEL_OPTIONS else options)[name] = value
        return dict(options, model_options=chosen_model_options) if chosen_model_options else options

    def trial_config(self, hp):
        """The `TrainConfig` of the trial `hp`: `config` with the searched options `hp` holds."""
        options = self.trial_options(hp)
        chosen_model_options = options.pop("model_options", {})
        return dataclasses.replace(self.config, **options,
                                   model_options=dict(self.config.model_options, **chosen_model_options))

    def build(self, hp):
        config = self.trial_config(hp)
        keras.utils.set_random_seed(config.seed)  # every trial starts from the same draws, as a run does
        return compile_model(config.build_model(), config)

    def fit(self, hp, model, epochs, callbacks=(), initial_epoch=0, verbose=2):
        """Trains to `epochs` from `initial_epoch` (Hyperband continues a trial); `callbacks`
        are KerasTuner's, which read `val_error`."""
        config = self.trial_config(hp)
        train_split, valid_split = self._data(config)
        weight_average = weight_average_swap(config)  # validation on the weight average, where the trial keeps one
        return model.fit(
            training_input(config, train_split, first_epoch=initial_epoch),
            validation_data=make_input(*valid_split, batch_size=500),
            epochs=epochs,
            initial_epoch=initial_epoch,
            shuffle=False,  # the pipeline shuffles
            callbacks=[ValidationError(), keras.callbacks.LearningRateScheduler(config.learning_rate_at),
                       keras.callbacks.TerminateOnNaN(), *callbacks] + ([weight_average] if weight_average else []),
            verbose=verbose,
        )

    def _data(self, config):
        """The training split (None with fresh clutter, which draws its own) and the validation split."""
        names = ["valid"] if config.fresh_clutter else ["train", "valid"]
        missing = [name for name in names if name not in self._splits]
        if missing:
            self._splits.update(load_splits(config.sizes(), config.data_seed, config.clutter_spec, config.mnist_path,
                                            names=missing))
        return self._splits.get("train"), self._splits["valid"]


def distributed_role():
    """This process's part in KerasTuner's chief/worker mode, from the variables KerasTuner
    reads: "chief", "worker", or None (a search of its own)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [name for name in _ORACLE_VARIABLES if not os.environ.get(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} {verb} not: a distributed search "
                        "needs all three (KERASTUNER_TUNER_ID: chief on one machine, tuner0, tuner1, ... on the others).")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _check_name(name, what):
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{what}={name!r}: expected letters, digits, '.', '_' or '-' (it names folders and runs).")


def _check_settings(project, settings):
    """Records what `project` searches; a rerun must search the same (its trials continue)."""
    path = project / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # as the file keeps them: tuples as lists
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != settings:
            changed = sorted(key for key in settings if recorded.get(key) != settings[key])
            changed += sorted(key for key in settings["config"] if recorded["config"].get(key) != settings["config"][key])
            raise UserError(f"{project} holds a search of other settings ({', '.join(changed)} differ); rerun it "
                            f"with the settings of its {SETTINGS_FILE} to continue it, or choose another --project-name.")
        return
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(settings, indent=2))


def make_tuner(config, names, oracle="bayesian", max_trials=DEFAULT_MAX_TRIALS, directory="tune",
               project_name="search"):
    """The KerasTuner tuner of a search (resuming the one in `directory/project_name`, if any)."""
    hypermodel = OptionsHyperModel(config, names)
    # KerasTuner draws a random seed for 0, so the oracle's is the run's plus one.
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, direction="min"), seed=config.seed + 1,
                  directory=str(directory), project_name=project_name)
    if oracle == "hyperband":  # its brackets set the trials: up to `epochs` each, a third kept per round
        return keras_tuner.Hyperband(hypermodel, max_epochs=config.epochs, factor=HYPERBAND_FACTOR, **common)
    return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)


def search(config, names=None, oracle="bayesian", max_trials=None, directory="tune", project_name="search",
           top=5, verbose=None):
    """Searches the options `names` (default: `DEFAULT_SEARCH`'s, as the model takes them) around `config`.

    Args:
        config: the `TrainConfig` every trial starts from: its model, fixed options,
            sizes, and `epochs` per trial (Hyperband: at most).
        oracle: "bayesian" or "hyperband" (which sets its own number of trials).
        max_trials: the Bayesian search's trials in all, those of earlier runs of it included
            (default `DEFAULT_MAX_TRIALS`).
        directory, project_name: where the search lives; rerunning it continues it.
        top: how many of the best trials `best_trials.json` keeps.
        verbose: `model.fit`'s; default: a progress bar on a terminal, a line per epoch otherwise.

    Returns:
        The report `best_trials.json` holds; None on a worker of a distributed search (the chief writes it).
    """
    if keras_tuner is None:
        raise UserError("the search needs KerasTuner: pip install 'lstm-stn-tf[tune]' (or keras-tuner[bayesian]).")
    if oracle not in ORACLES:
        raise UserError(f"oracle={oracle!r}: expected one of {', '.join(ORACLES)}.")
    if oracle == "hyperband" and max_trials is not None:
        raise UserError(f"max_trials={max_trials!r}: Hyperband sets its own trials from the epochs (at most --epochs "
                        f"each, a 1/{HYPERBAND_FACTOR} of the trials kept per round); max_trials is for bayesian.")
    max_trials = DEFAULT_MAX_TRIALS if max_trials is None else max_trials
    for name, value in (("max_trials", max_trials), ("top", top)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name}={value!r}: expected a positive integer.")
    _check_name(project_name, "project_name")
    names = check_search(config, names)
    role = distributed_role()
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    project = pathlib.Path(directory) / project_name
    if role != "worker":  # a worker may have no copy of the chief's folder
        settings = dict(oracle=oracle, search=list(names), config=dict(dataclasses.asdict(config), mnist_path=None))
        _check_settings(project, settings)
    resolved, reason = config.resolved()
    print(f"Precision: {resolved.precision} ({reason})")
    print(f"Searching {', '.join(names)} of {config.model} with the {oracle} oracle in {project}"
          + (f" (distributed, KERASTUNER_TUNER_ID={os.environ['KERASTUNER_TUNER_ID']})" if role else ""))
    tuner = make_tuner(resolved, names, oracle, max_trials, directory, project_name)
    tuner.search(epochs=resolved.epochs, verbose=verbose)
    if role == "worker":
        return None
    report = best_trials(tuner, config, names, oracle, project_name, top)
    with atomic_path(project / BEST_TRIALS_FILE) as temporary:
        temporary.write_text(json.dumps(report, indent=2))
    return report


def best_trials(tuner, config, names, oracle, project_name, top):
    """The report of a finished search: what it searched and its `top` best trials, the best first;
    each trial's `options` are what a promoted run takes (`PROMOTED_FIELDS`)."""
    oracle_trials = tuner.oracle.trials.values()
    finished = tuner.oracle.get_best_trials(len(oracle_trials))
    baseline = TrainConfig.from_recipe(config.recipe, model=config.model)
    best, seen = [], []
    for trial in finished:
        trial_config = tuner.hypermodel.trial_config(trial.hyperparameters)
        options = {field: getattr(trial_config, field) for field in PROMOTED_FIELDS
                   if getattr(trial_config, field) != getattr(baseline, field)}
        if options in seen:  # Hyperband trains the same options again, longer: the best of them counts
            continue
        seen.append(options)
        values = trial.hyperparameters.values  # Hyperband's continue a trial at its initial epoch
        best.append(dict(trial_id=trial.trial_id, val_error=trial.score,
                         best_epoch=values.get("tuner/initial_epoch", 0) + trial.best_step + 1,
                         epochs=values.get("tuner/epochs", config.epochs),
                         searched=tuner.hypermodel.trial_options(trial.hyperparameters), options=options))
    statuses = [trial.status for trial in oracle_trials]
    return dict(
        project=project_name, oracle=oracle, objective=f"{OBJECTIVE} (validation split)", search=list(names),
        model=config.model, recipe=config.recipe, epochs=config.epochs,
        sizes={"train": config.train_size, "valid": config.valid_size}, seed=config.seed,
        trials={status: statuses.count(status) for status in sorted(set(statuses))}, best=best[:top],
    )


def _format_options(options):
    flat = dict({k: v for k, v in options.items() if k != "model_options"}, **options.get("model_options", {}))
    return ", ".join(f"{key}={value}" for key, value in sorted(flat.items())) or "(the recipe's)"


def format_trials(report):
    """The best trials of a report as a markdown table."""
    counts = ", ".join(f"{count} {status.lower()}" for status, count in report["trials"].items())
    lines = [f"{report['model']}, {report['oracle']} search of {', '.join(report['search'])} ({counts}); "
             f"{OBJECTIVE} on the validation split:", "",
             "| rank | trial | val error (%) | best epoch | searched options |", "| --- | --- | --- | --- | --- |"]
    for rank, trial in enumerate(report["best"], 1):
        lines.append(f"| {rank} | {trial['trial_id']} | {100 * trial['val_error']:.2f} | {trial['best_epoch']} "
                     f"| {_format_options(trial['searched'])} |")
    return "\n".join(lines)


@dataclasses.dataclass
class Promotion:
    """One trial as `reproduce` takes it: `reproduce([model], seeds, ..., tag=tag, benchmark=benchmark, **overrides)`."""

    model: str
    benchmark: str
    tag: str
    overrides: dict


def promotions(source, top):
    """The `top` best trials of the search in `source` (its folder, or its `best_trials.json`)."""
    path = pathlib.Path(source)
    path = path / BEST_TRIALS_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{source}: no {BEST_TRIALS_FILE}; expected the folder of a finished `lstm-stn tune` "
                        "(<directory>/<project-name>) or its best_trials.json.")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise UserError(f"top={top!r}: expected a positive integer.")
    try:
        report = json.loads(path.read_text())
        model, recipe, trials = report["model"], report["recipe"], report["best"][:top]
        chosen = [(trial["trial_id"], dict(trial["options"])) for trial in trials]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a best_trials.json of `lstm-stn tune` ({error}).") from None
    if not chosen:
        raise UserError(f"{path}: the search finished no trial; nothing to promote.")
    result = []
    for trial_id, overrides in chosen:
        spec = overrides.get("spec", BENCHMARKS["protocol"].key())
        benchmark = next((name for name, known in BENCHMARKS.items() if known.key() == spec), "protocol")
        result.append(Promotion(model, benchmark, f"tune-{report['project']}-{trial_id}", dict(overrides, recipe=recipe)))
    return result
