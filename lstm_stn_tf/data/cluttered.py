"""Cluttered MNIST sequences: the RNN-SPN generator, vectorised in numpy.

See shared/protocol.md, "Cluttered sequence images". Images are uint8 (0-255);
the input pipeline divides by 255 in the graph.
"""

import dataclasses
import hashlib
import json

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from lstm_stn_tf.errors import UserError

DIGIT_SIZE = 28
GENERATOR_VERSION = 1  # bump when the drawing changes: it keys the cache
SPLIT_SIZES = {"train": 60_000, "valid": 10_000, "test": 10_000}
_SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}
_CHUNK = 2048  # images composed at once; does not affect the result


@dataclasses.dataclass(frozen=True)
class ClutterSpec:
    """What one cluttered sequence image looks like.

    Digits are pasted left to right in adjacent 28-pixel columns, centred
    with a horizontal jitter of ±`max_shift`, rows along a line of slope
    `±max_slope` per digit; `n_clutter` patches of `clutter_size` pixels cut
    from random digits of the same split are drawn first.
    """

    n_digits: int = 3
    canvas_size: int = 100
    n_clutter: int = 8
    clutter_size: int = 9
    max_shift: int = 8
    max_slope: int = 14

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise UserError(f"{field.name}={value!r}: expected a non-negative integer.")
        if self.n_digits < 1:
            raise UserError(f"n_digits={self.n_digits}: expected at least one digit.")
        if self.n_digits * DIGIT_SIZE > self.canvas_size:
            raise UserError(
                f"{self.n_digits} digits of {DIGIT_SIZE} pixels do not fit side by "
                f"side on a canvas of {self.canvas_size}; expected canvas_size >= "
                f"{self.n_digits * DIGIT_SIZE}."
            )
        if not 1 <= self.clutter_size <= DIGIT_SIZE and self.n_clutter:
            raise UserError(
                f"clutter_size={self.clutter_size}: expected 1 to {DIGIT_SIZE} pixels."
            )

    def key(self):
        return dataclasses.asdict(self)


def _windows(canvas, size):
    """A writable (n, rows, cols, size, size) view of every size x size window."""
    n, height, width = canvas.shape
    s0, s1, s2 = canvas.strides
    return as_strided(
        canvas,
        shape=(n, height - size + 1, width - size + 1, size, size),
        strides=(s0, s1, s2, s1, s2),
        writeable=True,
    )


def generate(digit_images, digit_labels, count, seed, spec=ClutterSpec()):
    """`count` cluttered sequence images from the digits of one split.

    Args:
        digit_images: uint8 `(N, 28, 28)`; also the source of the clutter.
        digit_labels: `(N,)` labels.
        count: number of images.
        seed: an int or a `numpy.random.SeedSequence`; same seed, same arrays
            on every machine (PCG64, every draw made up front in fixed order).
        spec: a `ClutterSpec`.

    Returns:
        images uint8 `(count, canvas, canvas)`, labels uint8 `(count, n_digits)`.
    """
    digit_images = np.ascontiguousarray(digit_images, dtype=np.uint8)
    if digit_images.ndim != 3 or digit_images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise UserError(
            f"digit images have shape {digit_images.shape}; expected (N, 28, 28)."
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    n_digits, size = spec.n_digits, spec.canvas_size
    n_clutter, patch = spec.n_clutter, spec.clutter_size
    pool = len(digit_images)

    picks, digit_y, digit_x = _draw_layout(rng, count, pool, spec)
    clutter_source = rng.integers(0, pool, size=(count, n_clutter))
    clutter_from = rng.integers(0, DIGIT_SIZE - patch + 1, size=(count, n_clutter, 2))
    clutter_to = rng.integers(0, size - patch + 1, size=(count, n_clutter, 2))
    patches = sliding_window_view(digit_images, (patch, patch), axis=(1, 2))

    images = np.empty((count, size, size), np.uint8)
    for start in range(0, count, _CHUNK):
        rows = slice(start, min(start + _CHUNK, count))
        index = np.arange(rows.stop - rows.start)
        canvas = np.zeros((len(index), size, size), np.uint16)
        clutter_windows = _windows(canvas, patch)
        for j in range(n_clutter):
            src = clutter_source[rows, j]
            fy, fx = clutter_from[rows, j, 0], clutter_from[rows, j, 1]
            ty, tx = clutter_to[rows, j, 0], clutter_to[rows, j, 1]
            clutter_windows[index, ty, tx] += patches[src, fy, fx]
        digit_windows = _windows(canvas, DIGIT_SIZE)
        for i in range(n_digits):
            digit_windows[index, digit_y[rows, i], digit_x[rows, i]] += digit_images[
                picks[rows, i]
            ]
        np.minimum(canvas, 255, out=canvas)
        images[rows] = canvas
    labels = np.asarray(digit_labels, np.uint8)[picks]
    return images, labels


def _draw_layout(rng, count, pool, spec):
    """The first draws of `generate`: digit picks and each digit's top-left (y, x)."""
    n_digits, size = spec.n_digits, spec.canvas_size
    picks = rng.integers(0, pool, size=(count, n_digits))
    centre = (size - n_digits * DIGIT_SIZE) // 2
    shift = min(spec.max_shift, centre)
    x0 = centre + rng.integers(-shift, shift + 1, size=count)
    y0 = rng.integers(0, size - DIGIT_SIZE + 1, size=count)
    slope = rng.integers(-spec.max_slope, spec.max_slope + 1, size=count)
    steps = np.arange(n_digits)
    digit_x = x0[:, None] + DIGIT_SIZE * steps
    digit_y = np.clip(y0[:, None] + slope[:, None] * steps, 0, size - DIGIT_SIZE)
    return picks, digit_y, digit_x


def digit_corners(count, seed, pool, spec=ClutterSpec()):
    """Where `generate` puts the digits: top-left pixel `(y, x)` of each
    28 x 28 digit, int `(count, n_digits, 2)`, for the same `count`, `seed`,
    `spec` and number of source digits `pool`. Replays the draws; draws no image.
    """
    _, digit_y, digit_x = _draw_layout(np.random.Generator(np.random.PCG64(seed)), count, pool, spec)
    return np.stack([digit_y, digit_x], axis=-1)


def split_seed(seed, split):
    """The seed of one split: the splits' random streams never coincide."""
    return np.random.SeedSequence([int(seed), _SPLIT_STREAM[split]])


def dataset_key(split, count, seed, spec):
    """The cache key: every parameter that changes the arrays."""
    fields = dict(spec.key(), split=split, count=count, seed=int(seed), version=GENERATOR_VERSION)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{split}-{count}-seed{seed}-{digest}"
