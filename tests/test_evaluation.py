import numpy as np
import pytest

from lstm_stn_tf.data import ClutterSpec, split_digit_corners
from lstm_stn_tf.evaluation import attention_metrics, error_metrics, format_metrics


def test_error_by_position():
    labels = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]])
    predicted = labels.copy()
    predicted[0, 2] = predicted[1, 2] = predicted[3, 0] = 9
    metrics = error_metrics(np.eye(10)[predicted], labels)
    assert metrics["digit_error_by_position"] == [0.25, 0.0, 0.5]
    assert metrics["single_digit_error"] == pytest.approx(3 / 12)
    assert metrics["sequence_error"] == 0.75
    assert "error by position          25.00 %    0.00 %   50.00 %" in format_metrics(metrics)


def _transforms(centre_x, centre_y, matrix=((0.33, 0.0), (0.0, 0.33)), size=100):
    """Transforms with this 2 x 2 part whose glimpse centres are these pixel coordinates."""
    transforms = np.zeros(centre_x.shape + (2, 3))
    transforms[..., :2] = matrix
    transforms[..., 0, 2] = 2 * centre_x / (size - 1) - 1
    transforms[..., 1, 2] = 2 * centre_y / (size - 1) - 1
    return transforms


@pytest.fixture(scope="module")
def digit_centres():
    corners = split_digit_corners("test", 200, seed=0, spec=ClutterSpec())
    return corners, corners[..., 1] + 13.5, corners[..., 0] + 13.5


def test_glimpses_centred_on_their_digits(digit_centres):
    corners, x, y = digit_centres

    def metrics(transforms):
        found = attention_metrics(transforms, corners, (100, 100))
        np.testing.assert_allclose(found.pop("glimpse_extent_pixels"), [[0.33 * 99, 0.33 * 99]] * 3)
        return found

    assert metrics(_transforms(x, y)) == {"glimpse_centre_on_digit": [1, 1, 1], "digit_centre_in_glimpse": [1, 1, 1]}
    # Just inside and just outside the digit's right edge (its last pixel ends
    # 14 pixels right of its centre); the 33-pixel-wide glimpse still sees it.
    assert metrics(_transforms(x + 13.9, y))["glimpse_centre_on_digit"] == [1, 1, 1]
    assert metrics(_transforms(x + 14.1, y)) == {"glimpse_centre_on_digit": [0, 0, 0], "digit_centre_in_glimpse": [1, 1, 1]}
    # Steps reading the digits in another order miss their own digit.
    swapped = _transforms(x, y)[:, [1, 0, 2]]
    assert metrics(swapped) == {"glimpse_centre_on_digit": [0, 0, 1], "digit_centre_in_glimpse": [0, 0, 1]}


def test_digit_in_a_rotated_glimpse(digit_centres):
    corners, x, y = digit_centres
    # Output x runs along source y (half-height 0.5 * 49.5 px), output y
    # along source x (half-width 0.2 * 49.5 = 9.9 px): a tall, narrow glimpse.
    rotated = ((0.0, -0.2), (0.5, 0.0))
    below = attention_metrics(_transforms(x, y + 20, rotated), corners, (100, 100))
    beside = attention_metrics(_transforms(x + 12, y, rotated), corners, (100, 100))
    # Its rows span 0.5 * 99 pixels of the image, its columns 0.2 * 99.
    np.testing.assert_allclose(below.pop("glimpse_extent_pixels"), [[0.5 * 99, 0.2 * 99]] * 3)
    beside.pop("glimpse_extent_pixels")
    assert below == {"glimpse_centre_on_digit": [0, 0, 0], "digit_centre_in_glimpse": [1, 1, 1]}
    assert beside == {"glimpse_centre_on_digit": [1, 1, 1], "digit_centre_in_glimpse": [0, 0, 0]}


def test_a_degenerate_glimpse_sees_nothing(digit_centres):
    corners, x, y = digit_centres
    collapsed = attention_metrics(_transforms(x, y, ((0.0, 0.0), (0.0, 0.0))), corners, (100, 100))
    assert collapsed["digit_centre_in_glimpse"] == [0, 0, 0]
    assert collapsed["glimpse_centre_on_digit"] == [1, 1, 1]
