"""`lstm-stn reproduce`: the protocol for each model and seed, and the results table.

Each run lives in `<runs>/<model>-seed<seed>` (an ordinary `lstm-stn train` run
directory, so an interrupted one resumes); each finished run adds
`results/<model>-seed<seed>.json`, and `results/RESULTS.md` (and the README's
results section) is regenerated from every JSON there. Checkpoints stay in the run directories, out of git.
"""

import json
import pathlib
import statistics

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
    "train_seconds", "seconds_per_epoch", "machine", "command", "config",
    # Per step (digit position): where the errors fall and where the glimpses look.
    "digit_error_by_position", "glimpse_centre_on_digit", "digit_centre_in_glimpse", "glimpse_extent_pixels",
)


def run_name(model, seed, tag=None):
    return f"{model}-seed{seed}" + (f"-{tag}" if tag else "")


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
            result = {field: metrics.get(field) for field in RESULT_FIELDS}
            with atomic_path(results_dir / f"{name}.json") as temporary:
                temporary.write_text(json.dumps(result, indent=2))
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


def results_tables(results_dir="results"):
    """The summary (mean ± std per model and variant) and per-run tables, as markdown."""
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(pathlib.Path(results_dir).glob("*.json"))]
    variants = [variant(result["config"], result.get("stop_reason")) for result in results]
    groups = {}
    for result, changes in zip(results, variants):
        groups.setdefault((result["model"], changes), []).append(result)
    lines = [
        "Single-digit and sequence test errors (%) on the protocol's 10,000 test images, of the",
        "best-validation epoch; mean ± std over seeds. Only the *published* column is copied from papers.",
        "",
        "| model | variant | seeds | single-digit error | sequence error | published |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (model, changes), group in sorted(groups.items()):
        lines.append(
            f"| {model} | {changes} | {len(group)} | {_mean_std([r['single_digit_error'] for r in group])} "
            f"| {_mean_std([r['sequence_error'] for r in group])} | {PUBLISHED.get(model, '')} |"
        )
    lines += [
        "",
        "| model | variant | seed | best epoch | epochs run | stopped by | single-digit error | sequence error | wall time | s/epoch | machine | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result, changes in zip(results, variants):
        machine = result["machine"]
        lines.append(
            f"| {result['model']} | {changes} | {result['seed']} | {result['best_epoch']} "
            f"| {result['epochs_run']} | {(result.get('stop_reason') or '?').replace('_', ' ')} "
            f"| {100 * result['single_digit_error']:.2f} "
            f"| {100 * result['sequence_error']:.2f} | {result['train_seconds'] / 60:.0f} min "
            f"| {result['seconds_per_epoch']:.0f} | {machine['device']}, {machine['backend']} "
            f"| `{result['command']}` |"
        )
    return "\n".join(lines) + "\n"


def write_table(results_dir="results", readme=None):
    """Writes `RESULTS.md` from every result JSON, and the README's section
    between its results markers when `readme` holds them; returns the tables."""
    results_dir = pathlib.Path(results_dir)
    tables = results_tables(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(results_dir / "RESULTS.md") as temporary:
        temporary.write_text("# Results\n\nGenerated by `lstm-stn reproduce` from the JSON files beside this one.\n\n" + tables,
                             encoding="utf-8")
    if readme and pathlib.Path(readme).exists():
        _replace_section(pathlib.Path(readme), tables)
    return tables


def _replace_section(readme, tables):
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme}: no results section ({README_START} ... {README_END}); left unchanged.")
        return
    with atomic_path(readme) as temporary:
        temporary.write_text(f"{text[:start]}{README_START}\n{tables}{text[end:]}", encoding="utf-8")
