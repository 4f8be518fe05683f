"""Cached cluttered splits and the input pipelines that feed `model.fit`."""

import functools
import logging

import keras
import numpy as np

from lstm_stn_tf.data.cluttered import SPLIT_SIZES, ClutterSpec, dataset_key, digit_corners, generate, split_seed
from lstm_stn_tf.data.mnist import DIGITS_PER_SPLIT, load_mnist
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_path, cache_dir

logger = logging.getLogger(__name__)


def load_split(split, size=None, seed=0, spec=ClutterSpec(), mnist=load_mnist, cache=True):
    """The cluttered images of one split: uint8 `(N, H, W)`, labels `(N, n_digits)`.

    Args:
        split: "train", "valid" or "test"; drawn only from that split's digits.
        size: number of images; the protocol's (60k / 10k / 10k) by default.
        seed: the dataset seed (each split draws from its own stream).
        spec: a `ClutterSpec`.
        mnist: a function returning the output of `load_mnist`.
        cache: read and write `<cache>/cluttered/<key>.npz`.
    """
    size = _split_size(split, size)
    path = cache_dir() / "cluttered" / f"{dataset_key(split, size, seed, spec)}.npz"
    if cache and path.exists():
        try:
            with np.load(path) as arrays:
                return arrays["images"], arrays["labels"]
        except (OSError, ValueError, KeyError):
            logger.warning("%s is unreadable; generating it again.", path)
    digits, labels = mnist()[split]
    images, sequence_labels = generate(digits, labels, size, split_seed(seed, split), spec)
    if cache:
        with atomic_path(path) as temporary:
            np.savez(temporary, images=images, labels=sequence_labels)
    return images, sequence_labels


def _split_size(split, size):
    if split not in SPLIT_SIZES:
        raise UserError(f"split={split!r}: expected one of {', '.join(SPLIT_SIZES)}.")
    size = SPLIT_SIZES[split] if size is None else size
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise UserError(f"size={size!r}: expected a positive number of images.")
    return size


def split_digit_corners(split, size=None, seed=0, spec=ClutterSpec()):
    """Top-left `(y, x)` of every digit in the images `load_split` returns for
    the same arguments: int `(N, n_digits, 2)`, without reading MNIST."""
    size = _split_size(split, size)
    return digit_corners(size, split_seed(seed, split), DIGITS_PER_SPLIT[split], spec)


def load_splits(sizes=None, seed=0, spec=ClutterSpec(), mnist_path=None, names=tuple(SPLIT_SIZES)):
    """`{"train", "valid", "test"}` (or the splits in `names`) -> `(images, labels)`;
    `sizes` maps split -> size.

    MNIST is read only if some split is not cached yet, and then only once.
    """
    sizes = sizes or {}
    mnist = functools.cache(lambda: load_mnist(mnist_path))
    return {split: load_split(split, sizes.get(split), seed, spec, mnist=mnist) for split in names}


def to_model_input(images):
    """uint8 `(N, H, W)` -> float32 `(N, H, W, 1)` in [0, 1] (numpy)."""
    return (np.asarray(images, np.float32) / 255.0)[..., None]


def tf_dataset(images, labels=None, batch_size=100, shuffle=False, seed=None):
    """A `tf.data` pipeline over uint8 arrays: shuffle, batch, float in the graph, prefetch.

    The arrays are held once as uint8 tensors; the pipeline shuffles indices
    and gathers each batch, so no shuffle buffer copies the images.
    """
    import tensorflow as tf

    images_t = tf.constant(images)
    labels_t = None if labels is None else tf.constant(np.asarray(labels, np.int32))
    indices = tf.data.Dataset.range(len(images))
    if shuffle:
        indices = indices.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def gather(batch_indices):
        batch = tf.cast(tf.gather(images_t, batch_indices), tf.float32)[..., None] / 255.0
        if labels_t is None:
            return batch
        return batch, tf.gather(labels_t, batch_indices)

    return (
        indices.batch(batch_size)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


class SequenceBatches(keras.utils.PyDataset):
    """The numpy path for backends without TensorFlow (e.g. JAX on a GPU)."""

    def __init__(self, images, labels=None, batch_size=100, shuffle=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(images))
        self._reshuffle()

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        batch = to_model_input(self.images[rows])
        if self.labels is None:
            return batch
        return batch, np.asarray(self.labels[rows], np.int32)

    def on_epoch_end(self):
        self._reshuffle()

    def _reshuffle(self):
        if self.shuffle:
            self._rng.shuffle(self._order)


class FreshClutterBatches(SequenceBatches):
    """Training batches drawn anew every epoch from the same digits (the
    `fresh_clutter` option): new placements, slopes, clutter and digit triples.

    Epoch `e` draws from `SeedSequence([*seed, e])`, so a resumed run sees the
    images it would have seen.
    """

    def __init__(self, digits, digit_labels, count, seed, spec=ClutterSpec(), batch_size=100, first_epoch=0, **kwargs):
        self._source = (digits, digit_labels, count, tuple(np.atleast_1d(seed).tolist()), spec)
        self.epoch = first_epoch
        super().__init__(*self._draw(), batch_size=batch_size, shuffle=True, seed=self._source[3], **kwargs)

    def _draw(self):
        digits, digit_labels, count, seed, spec = self._source
        return generate(digits, digit_labels, count, np.random.SeedSequence([*seed, self.epoch]), spec)

    def on_epoch_end(self):
        self.epoch += 1
        self.images, self.labels = self._draw()
        self._reshuffle()


def make_input(images, labels=None, batch_size=100, shuffle=False, seed=None):
    """`tf_dataset` on the TensorFlow backend, `SequenceBatches` elsewhere."""
    if keras.backend.backend() == "tensorflow":
        return tf_dataset(images, labels, batch_size, shuffle, seed)
    return SequenceBatches(images, labels, batch_size, shuffle, seed)
