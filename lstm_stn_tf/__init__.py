"""lstm-stn-tf: recurrent spatial-transformer attention for Keras 3.

    from lstm_stn_tf import build_model, layers, data
    model = build_model("lstm_stn")          # untrained
    model = load_pretrained("lstm_stn")      # the shipped, trained one

Submodules load on first use, so `import lstm_stn_tf` stays cheap and the
command-line tool can quieten TensorFlow before it is imported.
"""

import importlib

__version__ = "0.1.0"

_ATTRIBUTES = {
    "data": "lstm_stn_tf.data",
    "layers": "lstm_stn_tf.layers",
    "models": "lstm_stn_tf.models",
    "training": "lstm_stn_tf.training",
    "evaluation": "lstm_stn_tf.evaluation",
    "visualize": "lstm_stn_tf.visualize",
    "build_model": "lstm_stn_tf.models",
    "list_models": "lstm_stn_tf.models",
    "attention_model": "lstm_stn_tf.models",
    "load_model": "lstm_stn_tf.evaluation",
    "load_pretrained": "lstm_stn_tf.evaluation",
    "UserError": "lstm_stn_tf.errors",
    "Predictor": "lstm_stn_tf.predictor",
}

__all__ = sorted(_ATTRIBUTES)


def __getattr__(name):
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module 'lstm_stn_tf' has no attribute {name!r}")
    module = importlib.import_module(_ATTRIBUTES[name])
    return module if module.__name__.endswith("." + name) else getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES))
