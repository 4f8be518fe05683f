"""lstm-stn-tf: recurrent spatial-transformer attention for Keras 3.

    from lstm_stn_tf import build_model, layers, data
    model = build_model("lstm_stn")          # untrained
    model = load_pretrained("lstm_stn")      # the shipped, trained one

`import lstm_stn_tf` imports Keras and registers the package's layers,
optimizers and loss with it, so `keras.saving.load_model` reads the package's
models; the heavier submodules (data, training, ...) load on first use.
"""

import importlib
import os
import sys

# Read when TensorFlow is first imported (by Keras, below, on its default backend):
# it hides TensorFlow's C++ info and warning logs, such as its start-up note on the
# CPU instructions it was not built for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI
# or newer; elsewhere (AVX2) it runs Eigen's, which train these models about 1.5x
# slower (docs/findings.md, issue 21). Read when TensorFlow loads; a user's own
# setting, or a TensorFlow imported earlier, is left as it is.
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from lstm_stn_tf._quiet_import import import_keras  # noqa: E402

import_keras()  # the first Keras import, without TensorFlow's start-up lines (see _quiet_import)

from lstm_stn_tf import layers, losses, optimizers  # noqa: E402, F401  (registers them with Keras)

__version__ = "0.1.0"

_ATTRIBUTES = {
    "data": "lstm_stn_tf.data",
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

__all__ = sorted([*_ATTRIBUTES, "layers"])


def __getattr__(name):
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module 'lstm_stn_tf' has no attribute {name!r}")
    module = importlib.import_module(_ATTRIBUTES[name])
    return module if module.__name__.endswith("." + name) else getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES))
