"""Where the package keeps downloaded and generated data."""

import contextlib
import os
import pathlib
import tempfile


def cache_dir():
    """`$LSTM_STN_CACHE`, else `$XDG_CACHE_HOME/lstm_stn_tf`, else `~/.cache/lstm_stn_tf`."""
    explicit = os.environ.get("LSTM_STN_CACHE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "lstm_stn_tf"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; moves it into place on success.

    A crash or an exception leaves nothing half-written at `path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: Keras and numpy choose the format from it.
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        yield temporary
        # mkstemp makes the file private (0600); give it the user's usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
