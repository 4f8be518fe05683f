"""What `import lstm_stn_tf` does, each in a fresh interpreter."""

import importlib.util
import os
import subprocess
import sys

import pytest

from lstm_stn_tf.paths import shipped_model


def _python(code, **environment):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, **environment))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_package_lets_keras_load_its_models():
    code = ("import keras, lstm_stn_tf\n"
            f"model = keras.saving.load_model({str(shipped_model('lstm_stn'))!r})\n"
            "print(*(type(layer).__name__ for layer in model.layers))")
    assert "LSTMLocalizer" in _python(code).split()


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_importing_the_package_on_jax_leaves_tensorflow_unimported():
    code = "import sys, keras, lstm_stn_tf; print(keras.backend.backend(), 'tensorflow' in sys.modules)"
    assert _python(code, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu").split() == ["jax", "False"]
