"""The layers and models also run on JAX (the backend used on GPUs)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import keras
    import numpy as np

    assert keras.backend.backend() == "jax"
    from lstm_stn_tf import attention_model, build_model
    from lstm_stn_tf.data import make_input
    from lstm_stn_tf.layers import AffineGridGenerator, BilinearInterpolation
    from lstm_stn_tf.training import ClippedRMSprop

    rng = np.random.default_rng(0)
    image = rng.random((2, 30, 30, 1), dtype="float32")
    identity = np.array([[1, 0, 0, 0, 1, 0]] * 2, "float32")
    sampled = BilinearInterpolation()([image, AffineGridGenerator((30, 30))(identity)])
    assert np.max(np.abs(np.asarray(sampled) - image)) < 1e-6

    model = build_model("lstm_stn", image_size=(60, 60), n_digits=1, glimpse_size=(20, 20), units=16)
    model.compile(ClippedRMSprop(learning_rate=5e-4), "sparse_categorical_crossentropy")
    images = rng.integers(0, 256, (40, 60, 60), dtype=np.uint8)
    labels = rng.integers(0, 10, (40, 1))
    batches = make_input(images, labels, batch_size=20, shuffle=True, seed=0)
    assert type(batches).__name__ == "SequenceBatches"
    history = model.fit(batches, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save_weights("{weights}")
    model.save("{saved}")
    np.savez("{expected}", images=images[:4, :, :, None] / 255.0, probabilities=model.predict(images[:4, :, :, None] / 255.0, verbose=0))
    outputs = attention_model(model)(images[:2, :, :, None] / 255.0)
    assert outputs["transforms"].shape == (2, 1, 2, 3)
    print("jax ok")
    """
)


EMPTY_BATCH_SCRIPT = textwrap.dedent(
    """
    import keras
    import numpy as np

    assert keras.backend.backend() == "jax"
    from lstm_stn_tf.layers import AffineGridGenerator, BilinearInterpolation

    grid = AffineGridGenerator((4, 4))(np.zeros((0, 3, 6), "float32"))
    sampled = BilinearInterpolation()([np.zeros((0, 10, 10, 2), "float32"), grid])
    assert sampled.shape == (0, 3, 4, 4, 2), sampled.shape
    print("jax ok")
    """
)


def run_under_jax(script):
    """Runs `script` in a fresh Python whose Keras backend is JAX (on the CPU); it must print "jax ok"."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout


def test_jax_backend_trains_and_saves(tmp_path):
    weights, saved, expected = tmp_path / "model.weights.h5", tmp_path / "model.keras", tmp_path / "expected.npz"
    run_under_jax(SCRIPT.format(weights=weights, saved=saved, expected=expected))
    assert weights.stat().st_size > 0

    # What a GPU trains with JAX, this backend loads and computes alike (for export).
    import numpy as np

    from lstm_stn_tf import load_model

    model = load_model(saved)
    with np.load(expected) as arrays:
        np.testing.assert_allclose(model.predict(arrays["images"], verbose=0), arrays["probabilities"], atol=1e-5)


def test_jax_samples_an_empty_batch():
    run_under_jax(EMPTY_BATCH_SCRIPT)
