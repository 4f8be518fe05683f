"""lstm-stn-tf: recurrent spatial-transformer attention for Keras 3."""

__version__ = "0.1.0"

from lstm_stn_tf import layers  # noqa: E402
from lstm_stn_tf.errors import UserError  # noqa: E402
from lstm_stn_tf.models import attention_model, build_model, list_models  # noqa: E402


def __getattr__(name):
    # `data` imports numpy-heavy helpers and, on demand, TensorFlow: load lazily.
    if name == "data":
        import importlib

        return importlib.import_module("lstm_stn_tf.data")
    raise AttributeError(f"module 'lstm_stn_tf' has no attribute {name!r}")


__all__ = ["UserError", "attention_model", "build_model", "data", "layers", "list_models"]
