"""The `tune` subcommand of `lstm-stn`, and `reproduce --from-tune`'s promotion of its best trials."""

import os

from lstm_stn_tf.cli import (_add_benchmark_argument, _add_data_arguments, _add_recipe_arguments,
                             _add_speed_arguments, _benchmark_spec, _given_options, _recipe_options, _speed_options)
from lstm_stn_tf.errors import UserError

DEFAULT_EPOCHS = 10
# What a promoted run takes from its trial, so not from the command line.
_TRIAL_FLAGS = ("--models", "--benchmark", "--tag")


def add_commands(subparsers, wanted):
    tune = subparsers.add_parser(
        "tune", help="search the named options with KerasTuner (resumable, distributed)",
        description="Searches named options (--search) with a KerasTuner oracle; each trial trains --epochs on "
        "the training images and is judged by its validation error (never the test's). Rerunning the command "
        "continues the search in --directory/--project-name. Distributed: the same command on each machine with "
        "KERASTUNER_TUNER_ID (chief on one, tuner0, tuner1, ... on the others), KERASTUNER_ORACLE_IP and "
        "KERASTUNER_ORACLE_PORT set; the chief writes best_trials.json. Promote the best trials to full runs "
        "with `lstm-stn reproduce --from-tune DIR/PROJECT --top K`. Options given below (--learning-rate, "
        "--option, ...) are fixed for every trial.",
    )
    tune.set_defaults(handler=cmd_tune)
    if wanted("tune"):  # its defaults come from the tuner's module, which imports KerasTuner and TensorFlow
        _tune_arguments(tune)


def _tune_arguments(tune):
    from lstm_stn_tf.tuning import DEFAULT_MAX_TRIALS, DEFAULT_SEARCH, ORACLES, SEARCH_SPACE

    tune.add_argument("--model", default="lstm_stn", help="model name (lstm_stn, gru_stn, cnn_stn, cnn)")
    tune.add_argument("--search", metavar="NAMES",
                      help=f"comma-separated options to search, of {', '.join(SEARCH_SPACE)} (default "
                      f"{','.join(DEFAULT_SEARCH)}, those the model takes); weight_decay needs --optimizer adamw "
                      "or optimizer searched too")
    tune.add_argument("--oracle", default="bayesian", choices=ORACLES,
                      help="bayesian (the default: --max-trials trials) or hyperband (trials of up to --epochs, "
                      "the best third trained on)")
    tune.add_argument("--max-trials", type=int,
                      help=f"the Bayesian search's trials in all, earlier runs of it included (default "
                      f"{DEFAULT_MAX_TRIALS}); rerun with more to extend a search")
    tune.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                      help=f"epochs per trial (Hyperband: at most; default {DEFAULT_EPOCHS}); the cosine schedule "
                      "spans them")
    tune.add_argument("--directory", default="tune", metavar="DIR", help="where searches live (default tune)")
    tune.add_argument("--project-name", default="search", help="the search's folder in --directory (default search)")
    tune.add_argument("--top", type=int, default=5, help="best trials listed and kept in best_trials.json (default 5)")
    tune.add_argument("--seed", type=int, default=0, help="weight initialisation, shuffling and oracle seed")
    tune.add_argument("--train-size", type=int, default=60_000, help="training images per epoch (default 60,000)")
    tune.add_argument("--valid-size", type=int, default=10_000, help="validation images (default 10,000)")
    _add_benchmark_argument(tune)
    for flag in ("--n-digits", "--canvas-size", "--n-clutter", "--clutter-size"):
        tune.add_argument(flag, type=int, help="default: the benchmark's")
    _add_speed_arguments(tune)
    _add_recipe_arguments(tune)
    _add_data_arguments(tune)


def _search_names(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError(f"--search {text!r}: expected comma-separated option names, e.g. learning_rate,warmup_epochs.")
    return list(dict.fromkeys(names))


def cmd_tune(args):
    from lstm_stn_tf.training import TrainConfig
    from lstm_stn_tf.tuning import DEFAULT_SEARCH, format_trials, search, searchable

    if args.time_limit is not None:
        raise UserError("--time-limit is not for a search: each trial trains --epochs (choose fewer, or smaller "
                        "--train-size).")
    names = _search_names(args.search) if args.search is not None else None
    fixed = _recipe_options(args)
    given = set(fixed) - {"recipe", "model_options"} | set(fixed["model_options"])
    both = sorted(set(names or ()) & given)
    if both:
        raise UserError(f"{', '.join(both)}: both fixed (by a flag or --option) and searched; drop one.")
    config = TrainConfig.from_recipe(
        model=args.model, seed=args.seed, data_seed=args.data_seed, epochs=args.epochs,
        train_size=args.train_size, valid_size=args.valid_size, mnist_path=args.mnist,
        spec=_benchmark_spec(args, n_digits=args.n_digits, canvas_size=args.canvas_size, n_clutter=args.n_clutter,
                             clutter_size=args.clutter_size),
        **_speed_options(args), **fixed,
    )
    if names is None:  # the default search leaves out what the command fixes
        names = [name for name in DEFAULT_SEARCH if name in searchable(config.model) and name not in given]
    report = search(config, names, args.oracle, args.max_trials, args.directory, args.project_name, args.top)
    if report is None:
        print(f"\n{os.environ['KERASTUNER_TUNER_ID']}: no trials left; the chief "
              f"({os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}) writes best_trials.json.")
        return
    project = os.path.join(args.directory, args.project_name)
    print()
    print(format_trials(report))
    print(f"\nWritten to {os.path.join(project, 'best_trials.json')}")
    if report["best"]:
        print(f"Promote the best to full runs: lstm-stn reproduce --from-tune {project} --top "
              f"{min(3, len(report['best']))} --seeds 0 1 2")


def promote(args, shard, places, budget):
    """`reproduce --from-tune`: the best `args.top` trials x `args.seeds`, as `reproduce` runs
    (this shard's share of them); returns the README's table."""
    from lstm_stn_tf.reproduce import reproduce, shard_jobs, write_table
    from lstm_stn_tf.tuning import promotions

    given = [flag for flag in _TRIAL_FLAGS if any(flag.startswith(option) for option in _given_options())]
    if _recipe_options(args) != {"recipe": "protocol", "model_options": {}}:
        given.append("the recipe options")
    if given:
        raise UserError(f"--from-tune takes the model, benchmark, recipe and options of each trial; drop "
                        f"{', '.join(given)}.")
    if not args.from_tune:
        raise UserError("--top is for --from-tune DIR: how many of its best trials to promote.")
    chosen = {promotion.tag: promotion for promotion in promotions(args.from_tune, 1 if args.top is None else args.top)}
    every = [(tag, seed) for tag in chosen for seed in args.seeds]
    jobs = shard_jobs(every, shard)
    if shard:
        print(f"Shard {shard[0]}/{shard[1]}: {len(jobs)} of {len(set(every))} runs")
    for tag, seed in jobs:
        promotion = chosen[tag]
        reproduce([promotion.model], [seed], *places, tag=tag, benchmark=promotion.benchmark,
                  **promotion.overrides, **budget)
    return write_table(places[1], places[3])
