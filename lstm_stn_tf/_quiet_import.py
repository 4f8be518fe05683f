"""Imports Keras without TensorFlow's start-up lines on the terminal.

TensorFlow's C++ code writes a few lines to file descriptor 2 when it loads
(`oneDNN custom operations are on`, `cudart_stub.cc ... Could not find cuda
drivers`) and when it first looks for devices (`failed call to cuInit`). They
go through absl before `absl::InitializeLog`, so `TF_CPP_MIN_LOG_LEVEL` does
not reach them. This module uses only the standard library: it must run before
anything imports Keras.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def stderr_captured():
    """File descriptor 2 writes to a temporary file inside the block.

    What was written there is dropped when the block succeeds and shown when
    it raises, so a failed import still says why.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not succeeded:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))


def import_keras():
    """`import keras`; the first time, TensorFlow's start-up lines are dropped.

    Once TensorFlow is loaded its later messages (warnings, errors) show as
    usual.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with stderr_captured():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Where cuInit is first called, and fails on a machine without a
            # GPU driver. Listing devices does not start TensorFlow's runtime:
            # threads and visible devices can still be set after it.
            tf.config.list_physical_devices()
    return keras
