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
        found.pop("glimpse_centre_pixels")
        return found

    assert metrics(_transforms(x, y)) == {"glimpse_centre_on_digit": [1, 1, 1], "digit_centre_in_glimpse": [1, 1, 1]}
    centres = attention_metrics(_transforms(x + 5, y), corners, (100, 100))["glimpse_centre_pixels"]
    np.testing.assert_allclose(centres, np.median(np.stack([x + 5, y], axis=-1), axis=0))
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
    for found in (below, beside):
        found.pop("glimpse_centre_pixels")
    beside.pop("glimpse_extent_pixels")
    assert below == {"glimpse_centre_on_digit": [0, 0, 0], "digit_centre_in_glimpse": [1, 1, 1]}
    assert beside == {"glimpse_centre_on_digit": [1, 1, 1], "digit_centre_in_glimpse": [0, 0, 0]}


def test_a_degenerate_glimpse_sees_nothing(digit_centres):
    corners, x, y = digit_centres
    collapsed = attention_metrics(_transforms(x, y, ((0.0, 0.0), (0.0, 0.0))), corners, (100, 100))
    assert collapsed["digit_centre_in_glimpse"] == [0, 0, 0]
    assert collapsed["glimpse_centre_on_digit"] == [1, 1, 1]


SMALL_SPEC = {"n_digits": 1, "canvas_size": 60, "n_clutter": 0}


def _run_like_folder(folder, data_seed=3, canvas_size=60):
    """A folder holding an untrained small model as `best.keras` and a run's
    `config.json` (data seed `data_seed`, canvas 60) beside it."""
    import dataclasses
    import json

    from lstm_stn_tf.models import build_model
    from lstm_stn_tf.training import TrainConfig

    folder.mkdir()
    model = build_model("lstm_stn", image_size=(canvas_size, canvas_size), n_digits=1, units=16)
    model.save(folder / "best.keras")
    config = TrainConfig(model_options={"units": 16}, spec=SMALL_SPEC, data_seed=data_seed)
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return folder


def _seeds_loaded(monkeypatch):
    from lstm_stn_tf import data

    seeds, load_split = [], data.load_split
    def recorded(split, size, seed, *args, **kwargs):
        seeds.append(seed)
        return load_split(split, size, seed, *args, **kwargs)

    monkeypatch.setattr(data, "load_split", recorded)
    return seeds


@pytest.mark.parametrize("argv, seed", [([], 3), (["--data-seed", "7"], 7), (["--data-seed", "0"], 0)])
def test_an_explicit_data_seed_wins_over_the_recorded_one_and_is_recorded(tmp_path, monkeypatch, argv, seed):
    import json

    from lstm_stn_tf import cli

    run = _run_like_folder(tmp_path / "run")
    seeds = _seeds_loaded(monkeypatch)
    out = tmp_path / "evaluation.json"
    assert cli.main(["evaluate", str(run), "--size", "20", "--out", str(out)] + argv) == 0
    assert seeds == [seed]
    assert json.loads(out.read_text())["data_seed"] == seed


def test_a_model_without_a_run_defaults_to_data_seed_0(tmp_path, monkeypatch):
    import json

    from lstm_stn_tf import cli

    model = _run_like_folder(tmp_path / "run") / "best.keras"
    (tmp_path / "run" / "config.json").unlink()
    seeds = _seeds_loaded(monkeypatch)
    assert cli.main(["evaluate", str(model), "--size", "20"]) == 0
    assert seeds == [0] and json.loads((tmp_path / "run" / "best-test.json").read_text())["data_seed"] == 0


def test_a_model_and_config_json_of_different_runs_are_one_message(tmp_path, capsys):
    from lstm_stn_tf import cli

    run = _run_like_folder(tmp_path / "run", canvas_size=50)
    assert cli.main(["evaluate", str(run), "--size", "20"]) == 2
    err = capsys.readouterr().err
    assert "reads 50 x 50 images of 1 digits, but its run's config.json describes 60 x 60" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("out, reason", [("notes.txt/evaluation.json", "notes.txt is a file, not a folder"),
                                         ("folder", "Is a directory")])
def test_an_unwritable_out_is_one_message_after_the_results(tmp_path, capsys, out, reason):
    from lstm_stn_tf import cli

    run = _run_like_folder(tmp_path / "run")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    assert cli.main(["evaluate", str(run), "--size", "20", "--out", str(tmp_path / out)]) == 2
    captured = capsys.readouterr()
    assert "single-digit error" in captured.out  # the results are not lost
    assert f"cannot write {tmp_path / out}: " in captured.err and reason in captured.err
    assert "Traceback" not in captured.err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not any((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("cache", ["file", "read-only"])
def test_an_unwritable_cache_is_one_message(tmp_path, monkeypatch, capsys, package_cache, mnist, cache):
    import os
    import pathlib
    import tempfile

    from lstm_stn_tf import cli, paths
    from lstm_stn_tf.data import mnist as mnist_module

    run = _run_like_folder(tmp_path / "run")
    folder = tmp_path / "cache"
    if cache == "file":
        folder.write_text("not a folder")
        monkeypatch.setattr(mnist_module, "_from_mirror", lambda: mnist)
    else:  # MNIST there, no cluttered split yet; mkstemp answers as in a read-only folder (root may write anywhere)
        folder.mkdir()
        for name in (mnist_module.CACHE_NAME, mnist_module.CACHE_NAME + ".sha256"):
            os.link(package_cache / name, folder / name)
        mkstemp = tempfile.mkstemp

        def read_only(*args, dir=None, **kwargs):
            if pathlib.Path(dir) == folder or folder in pathlib.Path(dir).parents:
                raise PermissionError(13, "Permission denied")
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(paths.tempfile, "mkstemp", read_only)
    monkeypatch.setenv("LSTM_STN_CACHE", str(folder))
    assert cli.main(["evaluate", str(run), "--size", "20"]) == 2
    err = capsys.readouterr().err
    reason = f"{folder} is a file, not a folder" if cache == "file" else "Permission denied"
    assert f"cannot write {folder}/" in err and reason in err and "set LSTM_STN_CACHE to a writable folder" in err
    assert "Traceback" not in err
