"""Where the package keeps downloaded and generated data."""

import contextlib
import glob
import os
import pathlib
import shutil
import tempfile

from lstm_stn_tf.errors import UserError


def cache_dir():
    """`$LSTM_STN_CACHE`, else `$XDG_CACHE_HOME/lstm_stn_tf`, else `~/.cache/lstm_stn_tf`."""
    explicit = os.environ.get("LSTM_STN_CACHE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "lstm_stn_tf"


def shipped_models_dir():
    """Where shipped models live: `lstm_stn_tf/pretrained/` in an installed
    package (setup.py maps the repository's `export/` there), the repository's
    `export/` in a source checkout."""
    package = pathlib.Path(__file__).resolve().parent
    installed = package / "pretrained"
    return installed if installed.is_dir() else package.parent / "export"


# Names earlier releases shipped under, and the model that now stands in their place,
# so that old code is told the new name rather than only the list.
RETIRED_NAMES = {
    "lstm_stn_warmup_fresh_clutter": "lstm_stn",  # renamed: the best recipe's model is the default
    "lstm_stn_fresh_clutter": "lstm_stn",  # retired: the default is that recipe plus a warm-up
}


def shipped_model(name):
    """The `model.keras` of the shipped model `name`; a `UserError` naming the
    shipped models if there is none."""
    folder = shipped_models_dir()
    path = folder / name / "model.keras"
    if not path.exists():
        names = sorted(found.parent.name for found in folder.glob("*/model.keras"))
        successor = RETIRED_NAMES.get(name)
        hint = f" It is no longer shipped under that name: use {successor!r}." if successor in names else ""
        raise UserError(
            f"{name}: no shipped model of that name ({path} does not exist; shipped: "
            f"{', '.join(names) or 'none'}).{hint}"
        )
    return path


def model_source(text):
    """The path a model argument names: a path as given, or for a bare name
    (`lstm_stn`) the shipped `export/<name>/model.keras`."""
    path = pathlib.Path(text).expanduser()
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    try:
        return shipped_model(text)
    except UserError as error:
        raise UserError(
            f"{error} Nor is it a file or folder here: pass a .keras file, a run directory, "
            "an export folder, a SavedModel folder or a .tflite file."
        ) from None


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _unwritable(path, error):
    """The `UserError` for an `OSError` writing `path` (a file where a folder
    must be, a missing permission, a folder where the file goes)."""
    path = pathlib.Path(path)
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        reason = f"{blocking} is a file, not a folder"
    else:
        reason = error.strerror or str(error)
    if cache_dir() == path or cache_dir() in path.parents:
        reason += "; the data cache is there: make it writable or set LSTM_STN_CACHE to a writable folder"
    return UserError(f"cannot write {path}: {reason}.")


@contextlib.contextmanager
def writing(path):
    """Turns an `OSError` from creating or moving files at `path` into one `UserError` naming it."""
    try:
        yield
    except OSError as error:
        raise _unwritable(path, error) from None


def _temporary_affixes(path):
    # Keep the suffix: Keras and numpy choose the format from it.
    return f".{path.stem}.", path.suffix


def stale_temporaries(path):
    """Temporary files `atomic_path` left beside `path`: a killed process
    (SIGKILL, a power cut) never removes its own."""
    path = pathlib.Path(path)
    prefix, suffix = _temporary_affixes(path)
    return sorted(path.parent.glob(glob.escape(prefix) + "*" + glob.escape(suffix)))


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary folder beside `path`; on success it replaces `path`.

    A crash or an exception leaves `path` as it was. The caller decides
    whether an existing `path` may be replaced.
    """
    path = pathlib.Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        if path.exists():
            previous = temporary.with_name(temporary.name + ".previous")
            os.replace(path, previous)
            try:
                os.replace(temporary, path)
            except OSError:
                os.replace(previous, path)
                raise
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; moves it into place on success.

    A crash or an exception leaves nothing half-written at `path` (a killed
    process may leave its temporary file: `stale_temporaries`). A place that
    cannot be written is a `UserError`.
    """
    path = pathlib.Path(path)
    prefix, suffix = _temporary_affixes(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        yield temporary
        # mkstemp makes the file private (0600); give it the user's usual mode.
        os.chmod(temporary, 0o666 & ~_umask())
        with writing(path):
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
