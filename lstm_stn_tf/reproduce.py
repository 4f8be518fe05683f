"""`lstm-stn reproduce`: the protocol for each model and seed, and the results table.

Each run lives in `<runs>/<model>-seed<seed>` (an ordinary `lstm-stn train` run
directory, so an interrupted one resumes); each finished run adds
`results/<model>-seed<seed>.json` and its history, `results/histories/<run>.csv`;
`docs/results.md` (every table) and the README's results section (finished runs
only) are regenerated from every JSON there.
Checkpoints stay in the run directories, out of git.
"""

import json
import pathlib
import shutil
import statistics

from lstm_stn_tf.cli import portable_command
from lstm_stn_tf.paths import atomic_path
from lstm_stn_tf.training import TrainConfig, train

PUBLISHED = {  # single-digit test error, %, with the paper (shared/protocol.md)
    "lstm_stn": "1.6 (LSTM-STN)",
    "gru_stn": "1.5 (RNN-SPN)",
    "cnn_stn": "2.2 (LSTM-STN), 2.0 (RNN-SPN)",
    "cnn": "2.9 (RNN-SPN)",
}
RESULT_FIELDS = (
    "model", "seed", "best_epoch", "epochs_run", "stop_reason", "single_digit_error", "sequence_error",
    "train_seconds", "seconds_per_epoch", "precision", "precision_reason", "machine", "command", "config",
    # Per step (digit position): where the errors fall and where the glimpses look.
    "digit_error_by_position", "glimpse_centre_on_digit", "digit_centre_in_glimpse", "glimpse_extent_pixels",
)


def run_name(model, seed, tag=None):
    return f"{model}-seed{seed}" + (f"-{tag}" if tag else "")


def portable_result(result):
    """`result` without this machine's paths, as the results folder keeps it: its
    command portable (`cli.portable_command`) and no MNIST path (MNIST is
    checksum-verified, so its source does not change the data)."""
    command = result["command"] and portable_command(result["command"])
    return dict(result, command=command, config=dict(result["config"], mnist_path=None))


def reproduce(models, seeds, runs_dir="runs/reproduce", results_dir="results", command=None, readme=None, tag=None,
              **overrides):
    """Trains (or resumes) every model x seed, then regenerates the table.

    `overrides` are `TrainConfig` fields (e.g. `epochs=5` for a quick check);
    they are recorded in each result's `config`. `tag` suffixes the run names.
    """
    results_dir = pathlib.Path(results_dir)
    for model in models:  # a bad model or option fails now, not after the first runs
        TrainConfig.from_recipe(model=model, **overrides).build_model()
    for model in models:
        for seed in seeds:
            name = run_name(model, seed, tag)
            run_dir = pathlib.Path(runs_dir) / name
            resume = (run_dir / "config.json").exists()
            config = None if resume else TrainConfig.from_recipe(model=model, seed=seed, **overrides)
            print(f"\n== {name}: {'resuming' if resume else 'starting'} in {run_dir}"
                  + (" (with the options it started with)" if resume else ""))
            metrics = train(config, run_dir, resume=resume, command=command)
            metrics["config"] = json.loads((run_dir / "config.json").read_text())
            result = portable_result({field: metrics.get(field) for field in RESULT_FIELDS})
            with atomic_path(results_dir / f"{name}.json") as temporary:
                temporary.write_text(json.dumps(result, indent=2))
            with atomic_path(results_dir / "histories" / f"{name}.csv") as temporary:  # the curves, for docs
                shutil.copyfile(run_dir / "history.csv", temporary)
            write_table(results_dir, readme)
    return write_table(results_dir, readme)


def _mean_std(values):
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def variant(config, stop_reason=None):
    """What a run changed from the protocol ("protocol" if nothing), from its
    `config.json` and, for a run its time limit cut short, that."""
    recipe = config.get("recipe", "protocol")
    # The protocol computes in float32: "auto" is how a run chooses, not what it ran.
    baseline = dict(TrainConfig.from_recipe(recipe).__dict__, precision="float32")
    # steps_per_execution changes how batches are dispatched, not what is
    # learned; a time limit changes nothing unless it stopped the run.
    ignored = ("model", "seed", "mnist_path", "steps_per_execution", "time_limit_minutes", "recipe")

    def flat(values):  # model options are named one by one (glimpse_size=48), like the recipe's
        return dict({k: v for k, v in values.items() if k != "model_options"}, **values.get("model_options", {}))

    config, baseline = flat(config), flat(baseline)
    changed = [f"{k}={v}" for k, v in sorted(config.items()) if k not in ignored and v != baseline.get(k)]
    if recipe != "protocol":
        changed.insert(0, f"recipe {recipe}")
    if stop_reason == "time_limit":
        changed.append(f"cut at {config['time_limit_minutes']:g} min")
    return ", ".join(changed) or "protocol"


README_START = "<!-- results: generated from results/ by `lstm-stn reproduce --table`; do not edit -->"
README_END = "<!-- /results -->"
FULL_TABLES = "docs/results.md"
FINISHED = ("early_stopping", "epochs")  # the stop reasons of runs the README's table counts


def _load_results(results_dir):
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(pathlib.Path(results_dir).glob("*.json"))]
    return results, [variant(result["config"], result.get("stop_reason")) for result in results]


def _summary(results, variants):
    """Mean ± std per model and variant, as markdown rows under a header."""
    groups = {}
    for result, changes in zip(results, variants):
        groups.setdefault((result["model"], changes), []).append(result)
    lines = [
        "| model | recipe and options | seeds | single-digit error | sequence error | published |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (model, changes), group in sorted(groups.items()):
        lines.append(
            f"| {model} | {changes} | {len(group)} | {_mean_std([r['single_digit_error'] for r in group])} "
            f"| {_mean_std([r['sequence_error'] for r in group])} | {PUBLISHED.get(model, '')} |"
        )
    return lines


def readme_table(results_dir="results"):
    """The README's one table: finished runs only (early stopping or their epoch budget), mean ± std."""
    results, variants = _load_results(results_dir)
    finished = [index for index, result in enumerate(results) if result.get("stop_reason") in FINISHED]
    lines = [
        "Test errors (%) on the protocol's 10,000 test images at the best-validation epoch, mean ± std over",
        "seeds, of runs that ended by early stopping or their stated epoch budget; runs cut by a time limit",
        f"and every run's command, machine and cost are in [{FULL_TABLES}]({FULL_TABLES}).",
        "",
        *_summary([results[i] for i in finished], [variants[i] for i in finished]),
    ]
    return "\n".join(lines) + "\n"


def results_tables(results_dir="results"):
    """The full tables, as markdown: every model and variant (time-limited runs too), and every run."""
    results, variants = _load_results(results_dir)
    lines = [
        "Single-digit and sequence test errors (%) on the protocol's 10,000 test images, of the",
        "best-validation epoch; mean ± std over seeds. Only the *published* column is copied from papers.",
        "",
        *_summary(results, variants),
        "",
        "| model | variant | seed | best epoch | epochs run | stopped by | single-digit error | sequence error | wall time | s/epoch | machine | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result, changes in zip(results, variants):
        machine = result["machine"]
        where = ", ".join(str(part) for part in (machine["device"], machine.get("cpu"), machine["backend"]) if part)
        lines.append(
            f"| {result['model']} | {changes} | {result['seed']} | {result['best_epoch']} "
            f"| {result['epochs_run']} | {(result.get('stop_reason') or '?').replace('_', ' ')} "
            f"| {100 * result['single_digit_error']:.2f} "
            f"| {100 * result['sequence_error']:.2f} | {result['train_seconds'] / 60:.0f} min "
            f"| {result['seconds_per_epoch']:.0f} | {where} "
            f"| `{result['command']}` |"
        )
    return "\n".join(lines) + "\n"


def write_table(results_dir="results", readme=None):
    """Writes the full tables from every result JSON to `docs/results.md` beside the results
    folder, and the README's table between its results markers when `readme` holds them;
    returns the README's table."""
    full_tables = pathlib.Path(results_dir).resolve().parent / FULL_TABLES
    full_tables.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(full_tables) as temporary:
        temporary.write_text("# Results\n\nGenerated by `lstm-stn reproduce --table` from the JSON files in `results/`; "
                             "do not edit.\n\n" + results_tables(results_dir), encoding="utf-8")
    table = readme_table(results_dir)
    if readme and pathlib.Path(readme).exists():
        _replace_section(pathlib.Path(readme), table)
    return table


def _replace_section(readme, tables):
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme}: no results section ({README_START} ... {README_END}); left unchanged.")
        return
    with atomic_path(readme) as temporary:
        temporary.write_text(f"{text[:start]}{README_START}\n{tables}{text[end:]}", encoding="utf-8")
