"""Cluttered MNIST sequences: the RNN-SPN generator, vectorised in numpy.

See shared/protocol.md, "Cluttered sequence images". Images are uint8 (0-255);
the input pipeline divides by 255 in the graph.
"""

import dataclasses
import hashlib
import json
import typing

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.layers.arguments import is_integer
from lstm_stn_tf.strings import END_CLASS

DIGIT_SIZE = 28
NO_DIGIT = -1  # digit_corners' (y, x) at a position past a string's end
GENERATOR_VERSION = 1  # bump when the drawing changes: it keys the cache
SPLIT_SIZES = {"train": 60_000, "valid": 10_000, "test": 10_000}
_SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}
_CHUNK = 2048  # images composed at once; does not affect the result
# The fields of the protocol's benchmark: `key` always holds them. Fields added
# since appear in it only when they differ from their defaults, so the keys of
# older specs (the data cache's, recorded results' configs) stay as they were.
_PROTOCOL_FIELDS = ("n_digits", "canvas_size", "n_clutter", "clutter_size", "max_shift", "max_slope")


@dataclasses.dataclass(frozen=True)
class ClutterSpec:
    """What one cluttered sequence image looks like.

    A string of `min_digits` to `n_digits` digits (uniform; exactly `n_digits`
    when `min_digits` is None) is pasted left to right, digit i + 1 starting
    28 + g columns after digit i, g a uniform integer in [`min_gap`, `max_gap`]
    drawn per gap. The string starts centred with a horizontal jitter of
    ±`max_shift`, or anywhere it fits when `max_shift` is None (at most
    `max_start` columns from the left edge, where that is set); its rows follow
    a line of slope `±max_slope` per digit. `n_clutter` patches of
    `clutter_size` pixels cut from random digits of the same split are drawn
    first. The canvas is `canvas_size` high and `canvas_width` wide (None:
    square). The defaults are the protocol's benchmark; `STRINGS_SPEC` is the
    digit-strings one (shared/protocol.md, "Digit strings").
    """

    n_digits: int = 3
    canvas_size: int = 100
    n_clutter: int = 8
    clutter_size: int = 9
    max_shift: typing.Optional[int] = 8
    max_slope: int = 14
    canvas_width: typing.Optional[int] = None
    min_digits: typing.Optional[int] = None
    min_gap: int = 0
    max_gap: int = 0
    max_start: typing.Optional[int] = None

    def __post_init__(self):
        optional = ("max_shift", "canvas_width", "min_digits", "max_start")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("min_gap", "max_gap"):
                if not is_integer(value):
                    raise UserError(f"{field.name}={value!r}: expected an integer.")
            elif not (value is None and field.name in optional) and not (is_integer(value) and value >= 0):
                expected = "a non-negative integer" + (" or None" if field.name in optional else "")
                raise UserError(f"{field.name}={value!r}: expected {expected}.")
        if self.n_digits < 1:
            raise UserError(f"n_digits={self.n_digits}: expected at least one digit.")
        if self.min_digits is not None and not 1 <= self.min_digits <= self.n_digits:
            raise UserError(
                f"min_digits={self.min_digits}: expected 1 to n_digits={self.n_digits} (None: exactly n_digits)."
            )
        if self.max_start is not None and self.max_shift is not None:
            raise UserError(f"max_start={self.max_start} applies to strings placed anywhere (max_shift=None), "
                            f"not to centred ones (max_shift={self.max_shift}).")
        if self.min_gap > self.max_gap:
            raise UserError(f"min_gap={self.min_gap} > max_gap={self.max_gap}: expected min_gap <= max_gap.")
        if self.min_gap <= -DIGIT_SIZE:
            raise UserError(
                f"min_gap={self.min_gap}: expected more than {-DIGIT_SIZE}, so that each digit "
                "starts to the right of the one before."
            )
        height, width = self.image_size
        longest = self.n_digits * DIGIT_SIZE + (self.n_digits - 1) * self.max_gap
        if longest > width:
            raise UserError(
                f"{self.n_digits} digits of {DIGIT_SIZE} pixels with gaps up to {self.max_gap} span "
                f"{longest} columns and do not fit side by side on a canvas {width} wide; expected a "
                f"canvas width >= {longest}."
            )
        if height < DIGIT_SIZE:
            raise UserError(f"canvas_size={height}: a {DIGIT_SIZE}-pixel digit does not fit; expected >= {DIGIT_SIZE}.")
        if not 1 <= self.clutter_size <= DIGIT_SIZE and self.n_clutter:
            raise UserError(
                f"clutter_size={self.clutter_size}: expected 1 to {DIGIT_SIZE} pixels."
            )

    @property
    def image_size(self):
        """`(height, width)` of the canvas."""
        return self.canvas_size, self.canvas_size if self.canvas_width is None else self.canvas_width

    @property
    def variable_length(self):
        """Strings of several lengths: labels are padded with `END_CLASS`."""
        return self.min_digits is not None and self.min_digits < self.n_digits

    def key(self):
        """The fields as a dict (see `_PROTOCOL_FIELDS`); `ClutterSpec(**key)` is this spec."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name in _PROTOCOL_FIELDS or getattr(self, field.name) != field.default
        }


# shared/protocol.md, "Digit strings (beyond the paper)".
STRINGS_SPEC = ClutterSpec(
    n_digits=5, min_digits=1, canvas_width=180, n_clutter=14, min_gap=-4, max_gap=8, max_shift=None
)
# The benchmarks by name (`--benchmark`): the protocol's 3-digit sequences and the digit strings.
BENCHMARKS = {"protocol": ClutterSpec(), "strings": STRINGS_SPEC}


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
        images uint8 `(count, height, width)`, labels uint8 `(count, n_digits)`:
        each string's digits left to right, then `END_CLASS` up to `n_digits`
        (`lstm_stn_tf.strings.string_lengths` counts the digits).
    """
    digit_images = np.ascontiguousarray(digit_images, dtype=np.uint8)
    if digit_images.ndim != 3 or digit_images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise UserError(
            f"digit images have shape {digit_images.shape}; expected (N, 28, 28)."
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    height, width = spec.image_size
    n_clutter, patch = spec.n_clutter, spec.clutter_size
    pool = len(digit_images)

    picks, lengths, digit_y, digit_x = _draw_layout(rng, count, pool, spec)
    clutter_source = rng.integers(0, pool, size=(count, n_clutter))
    clutter_from = rng.integers(0, DIGIT_SIZE - patch + 1, size=(count, n_clutter, 2))
    clutter_to = rng.integers(0, (height - patch + 1, width - patch + 1), size=(count, n_clutter, 2))
    patches = sliding_window_view(digit_images, (patch, patch), axis=(1, 2))

    images = np.empty((count, height, width), np.uint8)
    for start in range(0, count, _CHUNK):
        rows = slice(start, min(start + _CHUNK, count))
        index = np.arange(rows.stop - rows.start)
        canvas = np.zeros((len(index), height, width), np.uint16)
        clutter_windows = _windows(canvas, patch)
        for j in range(n_clutter):
            src = clutter_source[rows, j]
            fy, fx = clutter_from[rows, j, 0], clutter_from[rows, j, 1]
            ty, tx = clutter_to[rows, j, 0], clutter_to[rows, j, 1]
            clutter_windows[index, ty, tx] += patches[src, fy, fx]
        digit_windows = _windows(canvas, DIGIT_SIZE)
        for i in range(spec.n_digits):
            drawn = index[lengths[rows] > i]
            digit_windows[drawn, digit_y[rows, i][drawn], digit_x[rows, i][drawn]] += digit_images[
                picks[rows, i][drawn]
            ]
        np.minimum(canvas, 255, out=canvas)
        images[rows] = canvas
    labels = np.asarray(digit_labels, np.uint8)[picks]
    labels[np.arange(spec.n_digits) >= lengths[:, None]] = END_CLASS
    return images, labels


def _draw_layout(rng, count, pool, spec):
    """The first draws of `generate`: digit picks, string lengths and each
    digit's top-left (y, x), also at the positions past a string's end.

    Only what varies is drawn (a fixed length, a constant gap draw nothing),
    so the protocol's spec draws what it always drew, in the same order.
    """
    n_digits = spec.n_digits
    height, width = spec.image_size
    picks = rng.integers(0, pool, size=(count, n_digits))
    if spec.variable_length:
        lengths = rng.integers(spec.min_digits, n_digits + 1, size=count)
    else:
        lengths = np.full(count, n_digits)
    if spec.min_gap < spec.max_gap:
        gaps = rng.integers(spec.min_gap, spec.max_gap + 1, size=(count, n_digits - 1))
    else:
        gaps = np.full((count, n_digits - 1), spec.min_gap)
    # Each digit's column from the string's first; the string spans up to its last digit's end.
    offsets = np.concatenate([np.zeros((count, 1), int), np.cumsum(DIGIT_SIZE + gaps, axis=1)], axis=1)
    room = width - (offsets[np.arange(count), lengths - 1] + DIGIT_SIZE)
    if spec.max_shift is None:
        x0 = rng.integers(0, room + 1 if spec.max_start is None else np.minimum(room, spec.max_start) + 1)
    else:
        centre = room // 2
        shift = np.minimum(spec.max_shift, centre)
        x0 = centre + rng.integers(-shift, shift + 1)
    y0 = rng.integers(0, height - DIGIT_SIZE + 1, size=count)
    slope = rng.integers(-spec.max_slope, spec.max_slope + 1, size=count)
    steps = np.arange(n_digits)
    digit_x = x0[:, None] + offsets
    digit_y = np.clip(y0[:, None] + slope[:, None] * steps, 0, height - DIGIT_SIZE)
    return picks, lengths, digit_y, digit_x


def narrowed(spec, fraction):
    """`spec` with its strings starting within `fraction` (0 to 1) of the
    columns where `spec` lets them start: the images of a placement warm-up
    (`TrainConfig.placement_warmup_epochs`); `spec` itself at 1. Strings that
    may start anywhere start this near the left edge, as the protocol's do, so
    that at first the k-th digit sits about the same place in every image;
    centred ones keep this fraction of their jitter."""
    if fraction >= 1:
        return spec
    if spec.max_shift is None:  # a one-digit string has the widest room
        return dataclasses.replace(spec, max_start=int(round(fraction * (spec.image_size[1] - DIGIT_SIZE))))
    return dataclasses.replace(spec, max_shift=int(round(fraction * spec.max_shift)))


def digit_corners(count, seed, pool, spec=ClutterSpec()):
    """Where `generate` puts the digits: top-left pixel `(y, x)` of each
    28 x 28 digit, int `(count, n_digits, 2)`, for the same `count`, `seed`,
    `spec` and number of source digits `pool`; `NO_DIGIT` (-1) at the
    positions past a string's end. Replays the draws; draws no image.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    _, lengths, digit_y, digit_x = _draw_layout(rng, count, pool, spec)
    corners = np.stack([digit_y, digit_x], axis=-1)
    corners[np.arange(spec.n_digits) >= lengths[:, None]] = NO_DIGIT
    return corners


def split_seed(seed, split):
    """The seed of one split: the splits' random streams never coincide."""
    return np.random.SeedSequence([int(seed), _SPLIT_STREAM[split]])


def dataset_key(split, count, seed, spec):
    """The cache key: every parameter that changes the arrays."""
    fields = dict(spec.key(), split=split, count=count, seed=int(seed), version=GENERATOR_VERSION)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{split}-{count}-seed{seed}-{digest}"
