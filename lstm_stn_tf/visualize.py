"""Figures: where a model looks, how a run trained, what it confuses.

Everything draws on Matplotlib's Agg canvas directly (no pyplot, no GUI), so
it runs headless and leaves the caller's Matplotlib backend alone. Every file
is written atomically.

    from lstm_stn_tf import visualize
    visualize.attention_figure(model, images[:16], labels[:16], "attention.png")
    visualize.glimpse_gif(model, images[0], "reading.gif", label=labels[0])
    visualize.plot_history("runs/my-run", "history.png")
    visualize.plot_confusion("runs/my-run/metrics.json", "confusion.png")
"""

import csv
import json
import math
import pathlib

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.ticker import LogFormatter

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_path
from lstm_stn_tf.strings import label_string, read_labels, has_end_class

# Matplotlib's tab10 without red and grey: red marks mistakes.
STEP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b")
MISTAKE_COLOUR = "#d62728"
# One image with its glimpses; binary fractions keep the pixel size exact.
PANEL_INCHES = (3.25, 2.75)
TITLE_INCHES = 0.5
# The output grid's corners (x, y) in normalised coordinates, in drawing order:
# top-left, top-right, bottom-right, bottom-left.
GRID_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def step_colour(step):
    return STEP_COLOURS[step % len(STEP_COLOURS)]


def box_corners(transforms, image_size):
    """Pixel corners of each step's sampling grid: `(..., 4, 2)` as (x, y).

    Args:
        transforms: `(..., 2, 3)`; theta maps an output coordinate (x, y, 1)
            in [-1, 1] to the source coordinate it reads.
        image_size: `(height, width)` of the source image.

    The corners are those of `GRID_CORNERS`, i.e. the centres of the glimpse's
    corner pixels, in the pixel coordinates `imshow` uses (pixel centres at
    0 ... W - 1).
    """
    transforms = np.asarray(transforms, np.float64)
    height, width = image_size
    homogeneous = np.concatenate([GRID_CORNERS, np.ones((4, 1))], axis=1)  # (4, 3)
    source = np.einsum("...ij,cj->...ci", transforms, homogeneous)
    return (source + 1.0) * np.array([width - 1, height - 1]) / 2.0


def check_attention(model):
    """Raises `UserError` unless `model` has a spatial transformer to show."""
    names = {layer.name for layer in model.layers}
    if not {"transforms", "glimpses"} <= names:
        raise UserError(
            f"model {model.name!r} has no spatial transformer (no 'transforms' and "
            "'glimpses' layers), so there is no attention to show; expected lstm_stn, "
            "gru_stn or cnn_stn."
        )


def attention_outputs(model, images, batch_size=100):
    """`probabilities`, `transforms` and `glimpses` (numpy) for uint8 images `(N, H, W)`.

    Runs eagerly, batch by batch: figures show few images, and a traced
    `predict` per call would cost more than it saves.
    """
    from keras import ops

    from lstm_stn_tf.data import to_model_input
    from lstm_stn_tf.models import attention_model

    check_attention(model)
    images = np.asarray(images)
    attention = attention_model(model)
    batches = [
        attention(to_model_input(images[start : start + batch_size]), training=False)
        for start in range(0, len(images), batch_size)
    ]
    return {name: np.concatenate([ops.convert_to_numpy(batch[name]) for batch in batches]) for name in batches[0]}


def _new_figure(size_inches, dpi):
    figure = Figure(figsize=size_inches, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=figure.dpi)
    return pathlib.Path(path)


def steps_taken(labels, steps):
    """The steps a model took on one image, from the labels it read (`read_labels`):
    one per digit and the step that ended the string, at most its `steps` (all of
    them for a fixed-length model, whose digits fill them)."""
    return min(len(label_string(labels)) + 1, steps)


def _show_image(ax, image, vmax):
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_boxes(ax, transforms, image_size, current=None, linewidth=1.5, stop=None):
    """Outlines each step's sampling grid on `ax`, numbered from 1, one colour per step.

    `current`: the step drawn bold; the others are drawn faint (for animations).
    `stop`: the step that ended a string, drawn dashed and marked "end".
    Returns the polygons.
    """
    polygons = []
    for step, corners in enumerate(box_corners(transforms, image_size)):
        faint = current is not None and step != current
        alpha = 0.45 if faint else 1.0
        polygon = Polygon(
            corners, closed=True, fill=False, edgecolor=step_colour(step),
            linewidth=linewidth * (0.6 if faint else 1.0), alpha=alpha,
            linestyle="--" if step == stop else "-",
        )
        ax.add_patch(polygon)
        polygons.append(polygon)
        # The number sits at the top-left corner, kept inside the image.
        x = np.clip(corners[0, 0], 0, image_size[1] - 1)
        y = np.clip(corners[0, 1], 0, image_size[0] - 1)
        ax.text(
            x, y, f"{step + 1} end" if step == stop else str(step + 1), color="white", fontsize=7, fontweight="bold",
            ha="left", va="top", alpha=alpha, clip_on=True,
            bbox=dict(boxstyle="square,pad=0.1", facecolor=step_colour(step), edgecolor="none", alpha=alpha),
        )
    return polygons


def _draw_glimpse(ax, glimpse, step, predicted, wrong):
    _show_image(ax, glimpse, vmax=1.0)
    for spine in ax.spines.values():
        spine.set_edgecolor(step_colour(step))
        spine.set_linewidth(2)
    ax.text(
        0.04, 0.96, str(predicted), transform=ax.transAxes, color="white", fontsize=8,
        fontweight="bold", ha="left", va="top",
        bbox=dict(boxstyle="square,pad=0.15", edgecolor="none",
                  facecolor=MISTAKE_COLOUR if wrong else step_colour(step)),
    )


def _steplabel_string(digits, steps):
    """The digits each step reads: one each, or all of them from a single glimpse (cnn_stn)."""
    return [digits] if steps == 1 else [digits[step : step + 1] for step in range(steps)]


def _reading_title(predicted, label):
    """'read 123  (true 124)' and whether it is a mistake."""
    if label is None:
        return f"read {label_string(predicted)}", False
    wrong = bool(np.any(predicted != label))
    return f"read {label_string(predicted)}  (true {label_string(label)})", wrong


def attention_figure(model, images, labels, path, columns=4, title=None, dpi=100):
    """A grid of images with their attention boxes, glimpses and predictions.

    Each panel shows an input image with the outline of each step's sampling
    grid (numbered, one colour per step), the glimpses beside it in step
    order with the digit read from each, and "read ... (true ...)" above; a
    misread image has a red title and red labels on its wrong glimpses.

    Args:
        model: a model with a spatial transformer (see `attention_model`).
        images: uint8 `(N, H, W)`.
        labels: `(N, n_digits)`, or None to show predictions only.
        path: the image file (PNG, or any format Matplotlib writes).
        columns: panels per row.
        title: a line above the grid.
        dpi: pixels per inch; the figure is `columns * PANEL_INCHES[0]` by
            `rows * PANEL_INCHES[1] + TITLE_INCHES` inches.

    Returns:
        The number of misread images.
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(images) < 1:
        raise UserError(f"images have shape {images.shape}; expected (N, height, width) with N >= 1.")
    if labels is not None and len(labels) != len(images):
        raise UserError(f"{len(images)} images but {len(labels)} labels.")
    if not isinstance(columns, int) or columns < 1:
        raise UserError(f"columns={columns!r}: expected a positive integer.")
    outputs = attention_outputs(model, images)
    predicted = read_labels(outputs["probabilities"])
    steps = outputs["transforms"].shape[1]
    strings = has_end_class(outputs["probabilities"])
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    size = (columns * PANEL_INCHES[0], rows * PANEL_INCHES[1] + TITLE_INCHES)
    figure = _new_figure(size, dpi)
    grid = figure.add_gridspec(
        rows, columns, left=0.02, right=0.98, bottom=0.02,
        top=1 - TITLE_INCHES / size[1], wspace=0.12, hspace=0.25,
    )
    mistakes = 0
    for index, image in enumerate(images):
        label = None if labels is None else np.asarray(labels[index])
        panel = grid[index // columns, index % columns].subgridspec(
            steps, 2, width_ratios=[max(steps, 1.5), 1], wspace=0.06, hspace=0.08
        )
        ax = figure.add_subplot(panel[:, 0])
        _show_image(ax, image, vmax=255)
        taken = steps_taken(predicted[index], steps)
        stop = taken - 1 if strings else None
        draw_boxes(ax, outputs["transforms"][index, :taken], image.shape, stop=stop)
        text, wrong = _reading_title(predicted[index], label)
        mistakes += wrong
        ax.set_title(text, fontsize=9, color=MISTAKE_COLOUR if wrong else "black",
                     fontweight="bold" if wrong else "normal")
        reads = _steplabel_string(predicted[index], steps)
        truths = [None] * steps if label is None else _steplabel_string(label, steps)
        for step, (digits, truth) in enumerate(zip(reads[:taken], truths)):
            _draw_glimpse(
                figure.add_subplot(panel[step, 1]), outputs["glimpses"][index, step, ..., 0],
                step, "end" if step == stop else label_string(digits), truth is not None and bool(np.any(digits != truth)),
            )
    figure.suptitle(title or f"{len(images)} images, {mistakes} misread", fontsize=11,
                    y=1 - 0.15 * TITLE_INCHES / size[1], va="top")
    _save(figure, path)
    return mistakes


def glimpse_gif(model, image, path, label=None, frame_ms=900, last_frame_ms=2500, dpi=100):
    """An animated GIF of one image read step by step.

    Frame k shows the image with the boxes of steps 1 ... k (step k bold)
    and, beside it, the glimpse of step k enlarged with the digit read; the
    title spells out the digits read so far.

    Args:
        model: a model with a spatial transformer.
        image: uint8 `(H, W)`.
        path: the `.gif` file.
        label: the true digits, shown on the last frame.
        frame_ms, last_frame_ms: how long each frame, and the last, stays.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 2:
        raise UserError(f"image has shape {image.shape}; expected one (height, width) image.")
    outputs = attention_outputs(model, image[None])
    transforms, glimpses = outputs["transforms"][0], outputs["glimpses"][0, ..., 0]
    predicted = read_labels(outputs["probabilities"])[0]
    steps = steps_taken(predicted, len(transforms))
    stop = steps - 1 if has_end_class(outputs["probabilities"]) else None
    reads = _steplabel_string(predicted, len(transforms))
    frames = []
    for step in range(steps):
        figure = _new_figure((6.5, 3.5), dpi)
        left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
        _show_image(left, image, vmax=255)
        draw_boxes(left, transforms[: step + 1], image.shape, current=step, linewidth=2.5, stop=stop)
        if step == steps - 1:
            text, wrong = _reading_title(predicted, label)
        elif stop is not None:  # a string's length is known only when it ends
            text, wrong = "read " + label_string(predicted[: step + 1]) + " ...", False
        else:
            text, wrong = "read " + label_string(predicted[: step + 1]) + " _" * (steps - step - 1), False
        left.set_title(text, fontsize=12, color=MISTAKE_COLOUR if wrong else "black")
        _show_image(right, glimpses[step], vmax=1.0)
        for spine in right.spines.values():
            spine.set_edgecolor(step_colour(step))
            spine.set_linewidth(4)
        what = "the string ends" if step == stop else f"glimpse reads {label_string(reads[step])}"
        right.set_title(f"step {step + 1} of {steps}: {what}", fontsize=12, color=step_colour(step))
        figure.subplots_adjust(left=0.03, right=0.97, bottom=0.04, top=0.86, wspace=0.12)
        figure.canvas.draw()
        frames.append(Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB"))
    with atomic_path(path) as temporary:
        frames[0].save(
            temporary, save_all=True, append_images=frames[1:], loop=0,
            duration=[frame_ms] * (steps - 1) + [last_frame_ms],
        )
    return pathlib.Path(path)


def _history_file(source):
    """A run directory's `history.csv`, or for a finished run's results JSON
    (`results/<run>.json`) the copy `reproduce` keeps, `results/histories/<run>.csv`."""
    source = pathlib.Path(source)
    if source.suffix == ".json":
        return source.parent / "histories" / f"{source.stem}.csv"
    return source / "history.csv"


def read_history(run_dir):
    """The rows of a run's history (`_history_file`) as `{column: float array}`."""
    history = _history_file(run_dir)
    if not history.exists():
        raise UserError(f"{run_dir}: no {history.name}; expected a run directory of `lstm-stn train` "
                        "or a results/<run>.json beside histories/<run>.csv.")
    with open(history) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise UserError(f"{history}: no finished epoch yet; nothing to plot.")
    return {column: np.array([float(row[column] or "nan") for row in rows]) for column in rows[0]}


def _log_error_axis(ax):
    """Errors fall by orders of magnitude; a log axis keeps the late epochs readable, with
    plain numbers (20, 30, 60) rather than 2 x 10^1 and minor ticks labelled where there is room."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def plot_history(run_dir, out, dpi=100):
    """Training and validation loss and single-digit error per epoch, from `history.csv`.

    A dashed line marks the best-validation epoch (the one `best.keras` keeps).
    """
    history = read_history(run_dir)
    epochs = history["epoch"] + 1
    figure = _new_figure((10, 4), dpi)
    loss_ax, error_ax = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for ax, key, name in ((loss_ax, "loss", "loss (cross-entropy)"), (error_ax, "accuracy", "single-digit error (%)")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key not in history:
                continue
            values = history[prefix + key]
            values = 100 * (1 - values) if key == "accuracy" else values
            ax.plot(epochs, values, style, marker="o", markersize=3,
                    label="validation" if prefix else "training")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(epochs) > 1:
            ax.set_xlim(epochs[0], epochs[-1])
    _log_error_axis(error_ax)
    if "val_accuracy" in history:
        best = int(np.nanargmax(history["val_accuracy"]))
        for ax in (loss_ax, error_ax):
            ax.axvline(epochs[best], color="grey", linestyle=":", linewidth=1)
        error_ax.set_title(f"best validation error {100 * (1 - history['val_accuracy'][best]):.2f} % "
                           f"(epoch {int(epochs[best])})", fontsize=10)
    loss_ax.set_title(f"{pathlib.Path(run_dir).resolve().name}: {len(epochs)} epochs", fontsize=10)
    loss_ax.legend()
    figure.tight_layout()
    return _save(figure, out)


def _train_size(source):
    """The training images per epoch of a run directory or a results JSON."""
    source = pathlib.Path(source)
    config_file = source if source.suffix == ".json" else source / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{source}: cannot read its config ({error}).") from None
    return config.get("config", config)["train_size"]  # a results JSON nests the run's config


def validation_curves(sources):
    """`{run name: (training images seen after each epoch, validation single-digit
    error in %)}` of run directories or results JSONs."""
    curves = {}
    for source in sources:
        history = read_history(source)
        if "val_accuracy" not in history:
            raise UserError(f"{source}: its history has no validation accuracy to plot.")
        name = pathlib.Path(source).resolve().with_suffix("").name
        curves[name] = ((history["epoch"] + 1) * _train_size(source), 100 * (1 - history["val_accuracy"]))
    return curves


def plot_validation_curves(sources, out, dpi=100):
    """The validation error of several runs against the training images each had
    seen (`validation_curves`), so that recipes of different epochs and epoch
    sizes compare on one axis."""
    figure = _new_figure((8, 4.5), dpi)
    ax = figure.add_subplot(1, 1, 1)
    for name, (images, errors) in validation_curves(sources).items():
        ax.plot(images / 1e6, errors, marker="o", markersize=2, label=f"{name} (best {np.nanmin(errors):.2f} %)")
    ax.set_xlabel("training images seen (millions)")
    ax.set_ylabel("validation single-digit error (%)")
    _log_error_axis(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    figure.tight_layout()
    return _save(figure, out)


def plot_confusion(metrics, out, dpi=100):
    """The confusion matrix (true digit x predicted digit) with counts.

    Args:
        metrics: a dict with `confusion_matrix` (as in `metrics.json`), or the
            path of such a JSON file.
        out: the image file.

    Colours are on a log scale so that the few confusions stay visible next
    to the large diagonal; empty cells are white.
    """
    if not isinstance(metrics, dict):
        path = pathlib.Path(metrics)
        if not path.is_file():
            raise UserError(f"{path}: no such metrics file.")
        metrics = json.loads(path.read_text())
    if "confusion_matrix" not in metrics:
        raise UserError("these metrics have no confusion_matrix; expected metrics.json of a finished run.")
    confusion = np.asarray(metrics["confusion_matrix"])
    figure = _new_figure((6.5, 5.75), dpi)
    ax = figure.add_subplot(1, 1, 1)
    shown = np.ma.masked_equal(confusion, 0)
    norm = mcolors.LogNorm(vmin=1, vmax=max(int(confusion.max()), 2))
    image = ax.imshow(shown, cmap="Blues", norm=norm)
    for (row, column), count in np.ndenumerate(confusion):
        if count:
            ax.text(column, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if norm(count) > 0.6 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    title = "confusion matrix"
    if "single_digit_error" in metrics:
        title += f": single-digit error {100 * metrics['single_digit_error']:.2f} %"
    if "sequence_error" in metrics:
        title += f", sequence error {100 * metrics['sequence_error']:.2f} %"
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, label="count (log scale)", fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _save(figure, out)
