"""`lstm-stn reproduce`: the protocol for each model and seed, and the results table.

Each run lives in `<runs>/<model>-seed<seed>` (an ordinary `lstm-stn train` run
directory, so an interrupted one resumes); each finished run adds
`results/<model>-seed<seed>.json` and its history, `results/histories/<run>.csv`;
`docs/results.md` (every table) and the README's results section (finished runs
only) are regenerated from every JSON there. Runs of the digit strings
(`--benchmark strings`) are named `<model>-strings-seed<seed>` and tabled apart,
by their string errors.
Checkpoints stay in the run directories, out of git.
"""

import collections
import json
import pathlib
import re
import shutil
import statistics

from lstm_stn_tf import distributed
from lstm_stn_tf.cli import portable_command
from lstm_stn_tf.data import BENCHMARKS, ClutterSpec
from lstm_stn_tf.errors import UserError
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
    "train_seconds", "seconds_per_epoch", "precision", "precision_reason", "machine", "distribution", "command", "config",
    # Per step (digit position): where the errors fall and where the glimpses look.
    "digit_error_by_position", "glimpse_centre_on_digit", "digit_centre_in_glimpse", "glimpse_extent_pixels",
    "glimpse_centre_pixels",
)
# A digit-strings result's errors (`strings.string_metrics`), in place of the digits' ones.
DIGIT_ERROR_FIELDS = ("single_digit_error", "sequence_error", "digit_error_by_position")
STRING_ERROR_FIELDS = ("string_error", "character_error_rate", "length_accuracy", "stops_on_time",
                       "string_error_by_length", "images_by_length")


def result_fields(metrics):
    """The fields a run's result keeps, of digit or string errors as its metrics hold."""
    if "string_error" not in metrics:
        return RESULT_FIELDS
    return tuple(field for field in RESULT_FIELDS if field not in DIGIT_ERROR_FIELDS) + STRING_ERROR_FIELDS


def run_name(model, seed, tag=None, benchmark="protocol"):
    """`<model>-seed<seed>[-<tag>]`, `<model>-<benchmark>-seed<seed>[-<tag>]` beyond the protocol's benchmark."""
    return f"{model}-" + ("" if benchmark == "protocol" else f"{benchmark}-") + f"seed{seed}" + (f"-{tag}" if tag else "")


def portable_result(result):
    """`result` without this machine's paths, as the results folder keeps it: its
    command portable (`cli.portable_command`) and no MNIST path (MNIST is
    checksum-verified, so its source does not change the data)."""
    command = result["command"] and portable_command(result["command"])
    return dict(result, command=command, config=dict(result["config"], mnist_path=None))


def parse_shard(text):
    """`"I/N"` (shard I of N, counted from 1) as `(I, N)`; a `UserError` for anything else."""
    match = re.fullmatch(r"(\d+)/(\d+)", str(text).strip())
    index, count = (int(match[1]), int(match[2])) if match else (0, 0)
    if not 1 <= index <= count:
        raise UserError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. 1/4 (shards count from 1).")
    return index, count


def shard_jobs(jobs, shard=None):
    """Shard `shard` = `(I, N)`'s share of `jobs`, repeats dropped (all of them for None): job k
    (from 0) goes to shard k mod N + 1, so N machines given the same list each take their own,
    with no coordinator."""
    jobs = list(dict.fromkeys(jobs))
    return jobs if shard is None else jobs[shard[0] - 1::shard[1]]


def reproduce(models, seeds, runs_dir="runs/reproduce", results_dir="results", command=None, readme=None, tag=None,
              benchmark="protocol", shard=None, **overrides):
    """Trains (or resumes) every model x seed, then regenerates the table.

    `benchmark` names the images (`data.BENCHMARKS`: "protocol" or "strings") and the run names;
    `overrides` are other `TrainConfig` fields (e.g. `epochs=5` for a quick check);
    they are recorded in each result's `config`. `tag` suffixes the run names. `shard` = `(I, N)`
    trains only shard I of N's share of the models x seeds (`shard_jobs`, each model's seeds in
    turn); the tables are regenerated from every result there is.
    """
    if benchmark not in BENCHMARKS:
        raise UserError(f"benchmark={benchmark!r}: expected one of {', '.join(BENCHMARKS)}.")
    overrides = {"spec": BENCHMARKS[benchmark].key(), **overrides}  # a `spec` given replaces the benchmark's
    results_dir = pathlib.Path(results_dir)
    for model in models:  # a bad model or option fails now, not after the first runs
        TrainConfig.from_recipe(model=model, **overrides).build_model()
    every = [(model, seed) for model in models for seed in seeds]
    jobs = shard_jobs(every, shard)
    if shard:
        print(f"Shard {shard[0]}/{shard[1]}: {len(jobs)} of {len(set(every))} runs"
              + "".join(f"\n  {run_name(model, seed, tag, benchmark)}" for model, seed in jobs))
    for model in dict.fromkeys(model for model, _ in jobs):
        for seed in [seed for job_model, seed in jobs if job_model == model]:
            name = run_name(model, seed, tag, benchmark)
            run_dir = pathlib.Path(runs_dir) / name
            # As the chief sees it: in a distributed run it may have started the run before another process looks.
            resume = distributed.current().chief_decides((run_dir / "config.json").exists())
            config = None if resume else TrainConfig.from_recipe(model=model, seed=seed, **overrides)
            print(f"\n== {name}: {'resuming' if resume else 'starting'} in {run_dir}"
                  + (" (with the options it started with)" if resume else ""))
            metrics = train(config, run_dir, resume=resume, command=command)
            if not distributed.is_chief():
                continue  # the chief writes the results
            metrics["config"] = json.loads((run_dir / "config.json").read_text())
            result = portable_result({field: metrics.get(field) for field in result_fields(metrics)})
            with atomic_path(results_dir / f"{name}.json") as temporary:
                temporary.write_text(json.dumps(result, indent=2))
            with atomic_path(results_dir / "histories" / f"{name}.csv") as temporary:  # the curves, for docs
                shutil.copyfile(run_dir / "history.csv", temporary)
            write_table(results_dir, readme)
    return write_table(results_dir, readme) if distributed.is_chief() else readme_table(results_dir)


def _mean_std(values):
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def benchmark_of(config):
    """The name of the benchmark (`data.BENCHMARKS`) whose images a run's `config.json` names, or None."""
    spec = ClutterSpec(**config.get("spec", {})).key()
    return next((name for name, benchmark in BENCHMARKS.items() if benchmark.key() == spec), None)


def variant(config, stop_reason=None):
    """What a run changed from the protocol ("protocol" if nothing), from its
    `config.json` and, for a run its time limit cut short, that; a run of
    another benchmark (`BENCHMARKS`) is named by it first, and compared with
    the protocol's recipe on that benchmark's images."""
    recipe = config.get("recipe", "protocol")
    benchmark = benchmark_of(config)
    # The protocol computes in float32: "auto" is how a run chooses, not what it ran.
    baseline = dict(TrainConfig.from_recipe(recipe, spec=BENCHMARKS[benchmark or "protocol"].key()).__dict__,
                    precision="float32")
    # steps_per_execution changes how batches are dispatched, not what is
    # learned; a time limit changes nothing unless it stopped the run.
    ignored = ("model", "seed", "mnist_path", "steps_per_execution", "time_limit_minutes", "recipe")

    def flat(values):  # model options are named one by one (glimpse_size=48), like the recipe's
        return dict({k: v for k, v in values.items() if k != "model_options"}, **values.get("model_options", {}))

    config, baseline = flat(config), flat(baseline)
    changed = [f"{k}={v}" for k, v in sorted(config.items()) if k not in ignored and v != baseline.get(k)]
    if recipe != "protocol":
        changed.insert(0, f"recipe {recipe}")
    if benchmark not in (None, "protocol"):
        changed.insert(0, benchmark)
    if stop_reason == "time_limit":
        changed.append(f"cut at {config['time_limit_minutes']:g} min")
    return ", ".join(changed) or "protocol"


README_START = "<!-- results: generated from results/ by `lstm-stn reproduce --table`; do not edit -->"
README_END = "<!-- /results -->"
FULL_TABLES = "docs/results.md"
FINISHED = ("early_stopping", "epochs")  # the stop reasons of runs the README's table counts


# The error columns of each kind of result: `(header, field)`.
DIGIT_COLUMNS = (("single-digit error", "single_digit_error"), ("sequence error", "sequence_error"))
STRING_COLUMNS = (("string error", "string_error"), ("character error rate", "character_error_rate"),
                  ("length accuracy", "length_accuracy"))
STRINGS_HEADING = ("Digit strings of 1 to 5 digits (`--benchmark strings`; shared/protocol.md, \"Digit strings\"): "
                   "whole-string test error, character error rate and length accuracy (%):")


def _load_results(results_dir):
    """`(digit results, their variants), (string results, their variants)`: the results of
    digit sequences and of digit strings (`strings.string_metrics`), kept apart."""
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(pathlib.Path(results_dir).glob("*.json"))]
    kinds = {False: ([], []), True: ([], [])}
    for result in results:
        kind = kinds["string_error" in result]
        kind[0].append(result)
        kind[1].append(variant(result["config"], result.get("stop_reason")))
    return kinds[False], kinds[True]


def _summary(results, variants, columns=DIGIT_COLUMNS):
    """Mean ± std per model and variant, as markdown rows under a header; for
    the digits (`DIGIT_COLUMNS`), with the published errors."""
    published = columns == DIGIT_COLUMNS
    groups = {}
    for result, changes in zip(results, variants):
        groups.setdefault((result["model"], changes), []).append(result)
    headers = ["model", "recipe and options", "seeds", *(header for header, _ in columns)] + ["published"] * published
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(["---"] * len(headers)) + " |"]
    for (model, changes), group in sorted(groups.items()):
        cells = [model, changes, str(len(group)), *(_mean_std([r[field] for r in group]) for _, field in columns)]
        lines.append("| " + " | ".join(cells + [PUBLISHED.get(model, "")] * published) + " |")
    return lines


def _is_protocol(changes):
    """Whether a variant (`variant`) is its benchmark's protocol, in whichever precision it ran."""
    return all(part in BENCHMARKS or part.startswith("precision=") for part in changes.split(", ") if part != "protocol")


def _headline(results, variants):
    """The README's runs: finished ones (early stopping or their epoch budget) of each model's
    protocol and of every variant run on 2 seeds or more; one-seed trials stay in `FULL_TABLES`."""
    finished = [(result, changes) for result, changes in zip(results, variants) if result.get("stop_reason") in FINISHED]
    seeds = collections.Counter((result["model"], changes) for result, changes in finished)
    kept = [(result, changes) for result, changes in finished if _is_protocol(changes) or seeds[result["model"], changes] >= 2]
    return [result for result, _ in kept], [changes for _, changes in kept]


def readme_table(results_dir="results"):
    """The README's tables (`_headline`), mean ± std; the digit strings' in a table of their own,
    where there are any."""
    digits, strings = _load_results(results_dir)
    lines = [
        "Test errors (%) on the protocol's 10,000 test images at the best-validation epoch, mean ± std over",
        "seeds: each model's protocol and the variants run on 2 seeds or more, ended by early stopping or",
        "their epoch budget. One-seed trials, runs cut by a time limit, and every run's command, machine and",
        f"cost are in [{FULL_TABLES}]({FULL_TABLES}).",
        "",
        *_summary(*_headline(*digits)),
    ]
    strings = _headline(*strings)
    if strings[0]:
        lines += ["", STRINGS_HEADING, "", *_summary(*strings, STRING_COLUMNS)]
    return "\n".join(lines) + "\n"


def _run_rows(results, variants, columns):
    """Every run, as markdown rows under a header."""
    headers = ["model", "variant", "seed", "best epoch", "epochs run", "stopped by", *(h for h, _ in columns),
               "wall time", "s/epoch", "machine", "command"]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(["---"] * len(headers)) + " |"]
    for result, changes in zip(results, variants):
        machine = result["machine"]
        where = ", ".join(str(part) for part in (machine["device"], machine.get("cpu"), machine["backend"]) if part)
        cells = [result["model"], changes, str(result["seed"]), str(result["best_epoch"]), str(result["epochs_run"]),
                 (result.get("stop_reason") or "?").replace("_", " "),
                 *(f"{100 * result[field]:.2f}" for _, field in columns),
                 f"{result['train_seconds'] / 60:.0f} min", f"{result['seconds_per_epoch']:.0f}", where,
                 f"`{result['command']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_tables(results_dir="results"):
    """The full tables, as markdown: every model and variant (time-limited runs too), and every run;
    the digit strings' in tables of their own, where there are any."""
    digits, strings = _load_results(results_dir)
    lines = [
        "Single-digit and sequence test errors (%) on the protocol's 10,000 test images, of the",
        "best-validation epoch; mean ± std over seeds. Only the *published* column is copied from papers.",
        "",
        *_summary(*digits),
        "",
        *_run_rows(*digits, DIGIT_COLUMNS),
    ]
    if strings[0]:
        lines += ["", STRINGS_HEADING, "", *_summary(*strings, STRING_COLUMNS), "", *_run_rows(*strings, STRING_COLUMNS)]
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
