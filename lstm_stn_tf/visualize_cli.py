"""The `visualize` and `plot` subcommands of `lstm-stn`."""

import pathlib

from lstm_stn_tf.cli import _add_data_arguments
from lstm_stn_tf.errors import UserError

MISTAKE_SEARCH_CHUNK = 500


def add_commands(subparsers, wanted):
    visualize = subparsers.add_parser(
        "visualize", help="draw where a model looks: attention boxes, glimpses, predictions",
        description="A grid of images with each step's attention box, the glimpses and the "
        "digits read (mistakes in red); optionally an animated GIF of one image being read.",
    )
    visualize.add_argument("model", help="a run directory, a .keras file or a shipped model's name (lstm_stn)")
    visualize.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    visualize.add_argument("--split", default="test", choices=["train", "valid", "test"])
    visualize.add_argument("--start", type=int, default=0, help="index of the first image in the split (default 0)")
    visualize.add_argument("--mistakes", action="store_true", help="show only misread images, from --start on")
    visualize.add_argument("--size", type=int, help="images in the split (default: the protocol's)")
    visualize.add_argument("--columns", type=int, default=4, help="images per row (default 4)")
    visualize.add_argument("--out", help="the grid image (default attention.png; not written for --gif alone)")
    visualize.add_argument("--gif", metavar="PATH", help="also animate the first image shown, step by step, as a GIF")
    _add_data_arguments(visualize, judged_model=True)
    visualize.set_defaults(handler=cmd_visualize)

    plot = subparsers.add_parser(
        "plot", help="training curves and the confusion matrix of a run; several runs' curves side by side",
        description="For one run, writes history.png (loss and error per epoch, from history.csv) and "
        "confusion.png (from metrics.json, once the run has finished). For several, writes "
        "validation.png: each one's validation error against the training images it had seen.",
    )
    plot.add_argument("run_dir", nargs="+", metavar="RUN",
                      help="a run directory of `lstm-stn train`; with several, also a results/<run>.json of "
                      "`lstm-stn reproduce` (its history is results/histories/<run>.csv)")
    plot.add_argument("--out-dir", help="where the PNGs go (default: the run directory; required for several)")
    plot.set_defaults(handler=cmd_plot)


def _select(args, model, images, labels):
    """The indices of the images to show."""
    import numpy as np

    from lstm_stn_tf.evaluation import predict_probabilities
    from lstm_stn_tf.strings import read_labels

    if args.start >= len(images):
        raise UserError(f"--start {args.start}: the {args.split} split has only {len(images)} images.")
    if not args.mistakes:
        return np.arange(args.start, min(args.start + args.n, len(images)))
    # Predict in chunks and stop once enough mistakes are found: a good model
    # needs only a few hundred images, not the whole split.
    found = []
    for begin in range(args.start, len(images), MISTAKE_SEARCH_CHUNK):
        chunk = slice(begin, begin + MISTAKE_SEARCH_CHUNK)
        wrong = np.any(read_labels(predict_probabilities(model, images[chunk])) != labels[chunk], axis=1)
        found.extend(begin + np.flatnonzero(wrong))
        if len(found) >= args.n:
            return np.array(found[: args.n])
    if not found:
        raise UserError(f"no misread image among {args.split} images {args.start}-{len(images) - 1}.")
    return np.array(found)


def cmd_visualize(args):
    from lstm_stn_tf import visualize
    from lstm_stn_tf.evaluation import load_model, model_split

    if args.n < 1:
        raise UserError(f"--n {args.n}: expected at least one image.")
    if args.columns < 1:
        raise UserError(f"--columns {args.columns}: expected at least one column.")
    if args.start < 0:
        raise UserError(f"--start {args.start}: expected an index >= 0.")
    if args.gif and pathlib.Path(args.gif).suffix.lower() != ".gif":
        raise UserError(f"--gif {args.gif}: expected a file name ending in .gif.")
    model = load_model(args.model)
    visualize.check_attention(model)
    images, labels = model_split(args.model, model, args.split, args.size, args.data_seed, args.mnist)
    indices = _select(args, model, images, labels)
    out = args.out or (None if args.gif else "attention.png")
    if out:
        name = pathlib.Path(args.model).name
        if args.mistakes:
            title = f"{name}: the first {len(indices)} misread {args.split} images from index {args.start}"
        else:
            title = f"{name}: {args.split} images {indices[0]}-{indices[-1]}"
        mistakes = visualize.attention_figure(model, images[indices], labels[indices], out,
                                              columns=args.columns, title=title)
        print(f"Written to {out} ({len(indices)} {args.split} images, {mistakes} misread)")
    if args.gif:
        first = indices[0]
        visualize.glimpse_gif(model, images[first], args.gif, label=labels[first])
        print(f"Written to {args.gif} ({args.split} image {first})")


def cmd_plot(args):
    from lstm_stn_tf import visualize

    if len(args.run_dir) > 1:
        if not args.out_dir:
            raise UserError("several runs: give --out-dir, the folder for validation.png.")
        sources = [pathlib.Path(source).expanduser() for source in args.run_dir]
        print(f"Written to {visualize.plot_validation_curves(sources, pathlib.Path(args.out_dir) / 'validation.png')}")
        return
    run_dir = pathlib.Path(args.run_dir[0]).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory.")
    out_dir = pathlib.Path(args.out_dir) if args.out_dir else run_dir
    history = visualize.plot_history(run_dir, out_dir / "history.png")
    print(f"Written to {history}")
    if (run_dir / "metrics.json").exists():
        confusion = visualize.plot_confusion(run_dir / "metrics.json", out_dir / "confusion.png")
        print(f"Written to {confusion}")
    else:
        print(f"{run_dir} has no metrics.json yet (training unfinished?); no confusion matrix.")
