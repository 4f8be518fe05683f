"""Every test runs against a temporary cache of its own, never the user's."""

import os
import shutil

import numpy as np
import pytest


def _mnist_cache_files():
    from lstm_stn_tf.data import mnist

    return mnist.CACHE_NAME, mnist.CACHE_NAME + ".sha256"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """The session's cache, for fixtures wider than one test: MNIST is fetched
    into it once, from the offline mirror. Yields `(folder, MNIST splits)`."""
    from lstm_stn_tf.data import load_mnist

    folder = tmp_path_factory.mktemp("session_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTM_STN_CACHE", str(folder))
        yield folder, load_mnist()


@pytest.fixture(scope="session")
def mnist(_session_cache):
    """The real MNIST splits (verified)."""
    return _session_cache[1]


@pytest.fixture(autouse=True)
def package_cache(_session_cache, tmp_path_factory, monkeypatch):
    """This test's own cache (outside `tmp_path`, which some tests list), with the
    session's MNIST in it, hard-linked: the package replaces cache files and never
    writes into them. A test that damages the cache's MNIST takes `isolated_cache`.
    Subprocesses inherit it through the environment."""
    folder = tmp_path_factory.mktemp("cache")
    for name in _mnist_cache_files():
        try:
            os.link(_session_cache[0] / name, folder / name)
        except OSError:  # a file system without hard links
            shutil.copy2(_session_cache[0] / name, folder / name)
    monkeypatch.setenv("LSTM_STN_CACHE", str(folder))
    return folder


@pytest.fixture
def isolated_cache(package_cache):
    """This test's cache without MNIST, for tests that write or corrupt it."""
    for name in _mnist_cache_files():
        (package_cache / name).unlink()
    return package_cache


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
