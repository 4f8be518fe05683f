"""Models apart from layers: a registry and the protocol's four models."""

from lstm_stn_tf.models import stn as _stn  # noqa: F401  (registers the models)
from lstm_stn_tf.models.registry import build_model, list_models, model_options, register_model
from lstm_stn_tf.models.stn import attention_model

__all__ = ["attention_model", "build_model", "list_models", "model_options", "register_model"]
