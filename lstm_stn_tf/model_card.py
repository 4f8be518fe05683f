"""`MODEL_CARD.md` for an exported run: what the model is, how it was made, how
well it does, and what it cannot do. Every number comes from the run's
`metrics.json` and `config.json` and the export's report."""

import lstm_stn_tf
from lstm_stn_tf.data import ClutterSpec
from lstm_stn_tf.reproduce import PUBLISHED, variant

DESCRIPTIONS = {
    "lstm_stn": "An LSTM spatial transformer network (Feng, Chen & Sun, arXiv 1901.02273). A CNN looks at the "
    "whole image once; an LSTM emits one affine transform per digit; a bilinear sampler cuts a glimpse there; "
    "one CNN classifies each glimpse.",
    "gru_stn": "A recurrent spatial transformer network with a GRU (RNN-SPN, Sønderby et al., arXiv 1509.05329). "
    "A CNN looks at the whole image once; a GRU emits one affine transform per digit; a bilinear sampler cuts a "
    "glimpse there; one CNN classifies each glimpse.",
    "cnn_stn": "A CNN with one spatial transformer (FFN-SPN): one affine transform for the whole image, one "
    "glimpse, and a CNN with one softmax head per digit.",
    "cnn": "A CNN without a transformer, one softmax head per digit.",
}
OPTIMIZER_NAMES = {"rmsprop": "RMSprop", "adamw": "AdamW"}
STOPPED = {
    "early_stopping": "stopped early (no better validation accuracy for {patience} epochs)",
    "time_limit": "stopped by its time limit ({time_limit:g} min of training)",
    "nan": "stopped by a NaN loss",
    "epochs": "ran all its epochs",
}


# The test errors a card tables: of the digits of a fixed-length model, or of the strings a strings model reads.
ERROR_COLUMNS = {
    False: (("single_digit_error", "single-digit error"), ("sequence_error", "sequence error")),
    True: (("string_error", "string error"), ("character_error_rate", "character error rate"),
           ("length_accuracy", "length accuracy")),
}


def _percent(value):
    return f"{100 * value:.2f} %"


def _schedule(config):
    """The run's learning-rate schedule in words (results written before `schedule` existed used the step decay)."""
    warmup = config.get("warmup_epochs", 0)
    start = f"a {warmup}-epoch linear warm-up, then " if warmup else ""
    if config.get("schedule", "step") == "cosine":
        return f"{start}a cosine decay to zero over the {config['epochs']} epochs"
    return (f"{start}learning rate / {config['decay_factor']:g} every {config['decay_every']} epochs after epoch "
            f"{config['decay_start']}")


def _clipping(config):
    """The run's gradient clipping in words (either stage may be off)."""
    stages = []
    if config["clip_value"] is not None:
        stages.append(f"element-wise to {config['clip_value']:g}")
    if config["clip_global_norm"] is not None:
        stages.append(f"to global norm {config['clip_global_norm']:g}")
    return "gradients clipped " + " then ".join(stages) if stages else "gradients not clipped"


def _stop_reason(metrics, config):
    reason = metrics.get("stop_reason")
    if reason is None:  # runs from before stop_reason was recorded
        limited = config.get("time_limit_minutes") and metrics["epochs_run"] < config["epochs"]
        reason = "time_limit" if limited else "epochs"
    return STOPPED[reason].format(patience=config["patience"], time_limit=config.get("time_limit_minutes") or 0)


def model_card(name, metrics, config, report, shipped=True):
    """The card's markdown text.

    Args:
        name: the export folder's name (`lstm_stn`).
        metrics: the run's `metrics.json` (test errors of the best epoch).
        config: the run's `config.json`.
        report: `exporting.export`'s report (TFLite errors and sizes).
        shipped: whether the folder is a shipped model, loaded by name.
    """
    spec = config["spec"]
    clutter = ClutterSpec(**spec)
    strings = clutter.variable_length
    height, width = clutter.image_size
    columns = ERROR_COLUMNS[strings]
    lengths = f"{clutter.min_digits} to {spec['n_digits']}" if strings else spec["n_digits"]
    reads = (f"a string of {clutter.min_digits} to {clutter.n_digits} handwritten digits, left to right, and stops "
             f"after the last (an end class, 10, after step n)" if strings
             else f"the {spec['n_digits']} handwritten digits, left to right")
    outputs = (f"per-step probabilities `(N, {spec['n_digits'] + 1}, 11)` (class 10: the string has ended); the "
               f"SavedModel and TFLite files also return `digits` `(N, {spec['n_digits']})`, the string read, then 10"
               if strings else f"digit probabilities `(N, {spec['n_digits']}, 10)`; the SavedModel and TFLite files "
               f"also return `digits` `(N, {spec['n_digits']})`")
    machine = metrics["machine"]
    errors = report["test_error"]
    sizes = report["file_bytes"]
    has_transforms = "transforms" in report["parity_max_abs_diff"]["saved_model_vs_keras"]
    usage = (
        f'model = lstm_stn_tf.load_pretrained("{name}")   # or: lstm-stn predict image.png --model {name}'
        if shipped
        else f'model = lstm_stn_tf.load_model("{name}/model.keras")   # or: lstm-stn predict image.png --model {name}'
    )
    changes = variant(config, metrics.get("stop_reason"))
    changes = "none" if changes == "protocol" else changes
    stopped = _stop_reason(metrics, config)
    lines = [
        f"# Model card: `{name}`",
        "",
        f"{DESCRIPTIONS.get(config['model'], config['model'])} It reads {reads}, in a {height} x {width} grey "
        "image of a cluttered MNIST sequence.",
        "",
        "```python",
        "import lstm_stn_tf",
        usage,
        "```",
        "",
        "## Input and output",
        "",
        f"- input `image`: float32 `(N, {height}, {width}, 1)`, pixels in [0, 1], "
        "white digits on a black background (MNIST's polarity)",
        f"- outputs: {outputs}"
        + (" and the attention `transforms` `(N, steps, 2, 3)`" if has_transforms else ""),
        "",
        "## Data and training",
        "",
        f"- data: the project's {'digit strings benchmark' if strings else 'protocol'} (`shared/protocol.md`): MNIST digits (train: first 50,000 of the "
        f"official training set; test: the official 10,000), {lengths} per image with "
        f"{spec['n_clutter']} clutter patches of {spec['clutter_size']} x {spec['clutter_size']}; "
        f"{config['train_size']:,} generated training images"
        + (", drawn anew every epoch" if config.get("fresh_clutter") else "")
        + f", data seed {config['data_seed']}",
        f"- recipe: {OPTIMIZER_NAMES.get(config.get('optimizer', 'rmsprop'), config.get('optimizer'))} {config['learning_rate']:g}, "
        f"batch {config['batch_size']}, {_clipping(config)}, {_schedule(config)}, best validation epoch kept",
        f"- this run: seed {config['seed']}; changes from the protocol: {changes}; {stopped} after "
        f"{metrics['epochs_run']} epochs; best epoch "
        f"{metrics['best_epoch']}; {metrics['train_seconds'] / 60:.0f} min of training, "
        f"{metrics['seconds_per_epoch']:.0f} s per epoch on {machine['device']} "
        f"({machine['cpu_count']} cores, {machine['backend']} backend, Keras {machine['keras']})",
        f"- command: `{metrics['command'] or 'training.train from Python'}`",
        "",
        "## Test errors",
        "",
        "| format | test images | " + " | ".join(label for _, label in columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
        f"| Keras, {config['precision']} as trained (`metrics.json`) | {metrics['n_images']:,} | "
        + " | ".join(_percent(metrics[key]) for key, _ in columns) + " |",
    ]
    for key, label in (("tflite_fp32", "TFLite float32 (`model.tflite`)"), ("tflite_int8", "TFLite int8 (`model_int8.tflite`)")):
        lines.append(f"| {label} | {errors['n_images']:,} | " + " | ".join(_percent(errors[key][name]) for name, _ in columns) + " |")
    lines += [
        "",
        *(["`model.keras` and the TFLite files compute in float32 with the trained weights.", ""]
          if config["precision"] != "float32" else []),
        f"Published single-digit error of this model (%, paper in brackets): {PUBLISHED.get(config['model'], 'none')}. "
        "Other seeds and the baselines are in the README's results table.",
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{file}`: {size / 1e6:.1f} MB" for file, size in sizes.items() if file != "saved_model"]
    lines += [
        "- `metrics.json`: the run's test errors, confusion matrix, seed and command; `export.json`: the export's "
        "parity with Keras and its sizes. `lstm-stn export "
        f"{name} --out DIR` regenerates the SavedModel.",
        "",
        "## What it cannot do",
        "",
        (f"- It knows only this synthetic task: {clutter.min_digits} to {spec['n_digits']} MNIST-style digits on "
         "one row, left to right, each about 28 pixels tall. It reads at most "
         f"{spec['n_digits']} digits and at least none; longer strings, several rows or empty images were never seen."
         if strings else
         f"- It knows only this synthetic task: exactly {spec['n_digits']} MNIST-style digits, roughly on a line, "
         "left to right, each about 28 pixels tall. It always answers with "
         f"{spec['n_digits']} digits, whatever the image holds."),
        "- Real photographs (house numbers, receipts, forms), printed digits, other digit counts and other sizes "
        "(`lstm-stn predict` letterboxes them, which shrinks the digits) are outside what it was trained on; expect "
        "it to fail there without a warning. Dark digits on a light background are inverted by `lstm-stn predict` "
        "(`--background`); the model itself reads light on dark only.",
        "- Its probabilities are not calibrated for inputs unlike the training data.",
        "",
        f"Made by lstm-stn-tf {lstm_stn_tf.__version__}.",
    ]
    return "\n".join(lines) + "\n"
