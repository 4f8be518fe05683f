"""Cached cluttered splits and the input pipelines that feed `model.fit`."""

import functools
import logging

import keras
import numpy as np

from lstm_stn_tf.data.cluttered import (
    SPLIT_SIZES,
    ClutterSpec,
    dataset_key,
    digit_corners,
    generate,
    narrowed,
    split_seed,
)
from lstm_stn_tf.data.mnist import DIGITS_PER_SPLIT, load_mnist, load_verified_npz, save_verified_npz
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import cache_dir

logger = logging.getLogger(__name__)


def load_split(split, size=None, seed=0, spec=ClutterSpec(), mnist=load_mnist, cache=True):
    """The cluttered images of one split: uint8 `(N, H, W)`, labels `(N, n_digits)`.

    Args:
        split: "train", "valid" or "test"; drawn only from that split's digits.
        size: number of images; the protocol's (60k / 10k / 10k) by default.
        seed: the dataset seed (each split draws from its own stream).
        spec: a `ClutterSpec`.
        mnist: a function returning the output of `load_mnist`.
        cache: read and write `<cache>/cluttered/<key>.npz` (checksummed: a
            damaged or unverifiable file is generated again).
    """
    size = _split_size(split, size)
    path = cache_dir() / "cluttered" / f"{dataset_key(split, size, seed, spec)}.npz"
    if cache:
        try:
            cached = load_verified_npz(path)
            if cached is not None:
                return cached["images"], cached["labels"]
        except (UserError, OSError) as error:  # a flipped bit, a truncated copy
            logger.warning("%s; generating it again.", error)
    digits, labels = mnist()[split]
    images, sequence_labels = generate(digits, labels, size, split_seed(seed, split), spec)
    if cache:
        save_verified_npz(path, images=images, labels=sequence_labels)
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
    converted = np.array(images, np.float32)  # a copy, so `images` is left alone
    converted /= 255.0  # in place: a training batch converts several times faster than with a second array
    return converted[..., None]


def tf_dataset(images, labels=None, batch_size=100, shuffle=False, seed=None):
    """A `tf.data` pipeline over uint8 arrays: shuffle, batch, float in the graph, prefetch.

    The arrays are held once as uint8 tensors; the pipeline shuffles indices
    and gathers each batch, so no shuffle buffer copies the images. tf.data
    reshuffles every pass from its own count of passes, which a new pipeline
    starts again: `lstm-stn train` feeds `SequenceBatches` instead, whose order
    is a function of the epoch, so that a resumed run does not replay epoch 0's.
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
    """Batches of uint8 arrays as float model input, on every backend.

    With `shuffle`, epoch `e` reads the images in an order drawn from
    `(seed, e)` alone, so a run resumed at `first_epoch=e` sees the batches an
    uninterrupted run would have seen. Keras calls `on_epoch_end` after every
    epoch (and once before the first), which moves to the next epoch.
    """

    def __init__(self, images, labels=None, batch_size=100, shuffle=False, seed=None, first_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        # Without a seed, one drawn now: the epochs still differ, and repeat within this object.
        self._seed = tuple(np.atleast_1d(np.random.SeedSequence().entropy if seed is None else seed).tolist())
        self.epoch = first_epoch
        self._start_epoch()

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        batch = to_model_input(self.images[rows])
        if self.labels is None:
            return batch
        return batch, np.asarray(self.labels[rows], np.int32)

    def on_epoch_end(self):
        self.epoch += 1
        self._start_epoch()

    def _start_epoch(self):
        count = len(self.images)
        if self.shuffle:
            self._order = np.random.default_rng([*self._seed, self.epoch]).permutation(count)
        else:
            self._order = np.arange(count)


class FreshClutterBatches(SequenceBatches):
    """Training batches drawn anew every epoch from the same digits (the
    `fresh_clutter` option): new placements, slopes, clutter and digit triples.

    Epoch `e` draws from `SeedSequence([*seed, e])`, so a resumed run sees the
    images it would have seen. Each image draws its own digits, so the images
    come in random order already and are not shuffled. With
    `placement_warmup_epochs` K, epoch e < K draws its strings within
    (e + 1) / (K + 1) of their horizontal range (`narrowed`).
    """

    def __init__(self, digits, digit_labels, count, seed, spec=ClutterSpec(), batch_size=100, first_epoch=0,
                 placement_warmup_epochs=0, **kwargs):
        self._source = (digits, digit_labels, count, tuple(np.atleast_1d(seed).tolist()), spec)
        self.placement_warmup_epochs = placement_warmup_epochs
        super().__init__(None, None, batch_size=batch_size, first_epoch=first_epoch, **kwargs)

    def spec_at(self, epoch):
        """The images' spec in epoch `epoch` (from 0)."""
        spec, warmup = self._source[-1], self.placement_warmup_epochs
        return narrowed(spec, (epoch + 1) / (warmup + 1)) if epoch < warmup else spec

    def _draw(self):
        digits, digit_labels, count, seed, _ = self._source
        return generate(digits, digit_labels, count, np.random.SeedSequence([*seed, self.epoch]),
                        self.spec_at(self.epoch))

    def _start_epoch(self):
        self.images, self.labels = self._draw()
        super()._start_epoch()


def make_input(images, labels=None, batch_size=100, shuffle=False, seed=None, first_epoch=0):
    """Model input over uint8 arrays: `tf_dataset` on the TensorFlow backend
    when in order, `SequenceBatches` otherwise (see there for `shuffle`,
    `seed` and `first_epoch`)."""
    if keras.backend.backend() == "tensorflow" and not shuffle:
        return tf_dataset(images, labels, batch_size)
    return SequenceBatches(images, labels, batch_size, shuffle, seed, first_epoch)
