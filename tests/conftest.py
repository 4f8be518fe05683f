import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST splits (verified; fetched once into the user cache)."""
    from lstm_stn_tf.data import load_mnist

    return load_mnist()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh, empty cache directory for tests that write or corrupt it."""
    monkeypatch.setenv("LSTM_STN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
