import json

import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from lstm_stn_tf import UserError, build_model, cli, visualize
from lstm_stn_tf.layers import AffineGridGenerator
from lstm_stn_tf.strings import read_labels

CANVAS, N_DIGITS = 60, 2
# Zoom to half size on the right half, a little above the centre.
THETA = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, -0.25]])


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained LSTM-STN whose every step looks through `THETA`."""
    model = build_model("lstm_stn", image_size=(CANVAS, CANVAS), n_digits=N_DIGITS, glimpse_size=(20, 20), units=16)
    model.get_layer("localizer").transform_bias.assign(THETA.ravel())
    return model


@pytest.fixture(scope="module")
def tiny_model_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model.save(path)
    return path


def _images(n):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, CANVAS, CANVAS), dtype=np.uint8), rng.integers(0, 10, (n, N_DIGITS))


def test_box_corners_of_known_transforms():
    # The identity reads the whole image: corners on the corner pixels' centres.
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(visualize.box_corners(identity, (61, 101)), [[0, 0], [100, 0], [100, 60], [0, 60]])
    # x in 0.5 ± 0.5 and y in -0.25 ± 0.5, then (v + 1) * (size - 1) / 2.
    np.testing.assert_allclose(visualize.box_corners(THETA, (61, 101)), [[50, 7.5], [100, 7.5], [100, 37.5], [50, 37.5]])
    # A quarter turn: the output's top-left corner reads the source's bottom-left.
    turn = np.array([[0.0, -1.0, 0], [1.0, 0.0, 0]])
    np.testing.assert_allclose(visualize.box_corners(turn, (11, 11)), [[10, 0], [10, 10], [0, 10], [0, 0]])


def test_box_corners_match_the_sampling_grid():
    transforms = np.random.default_rng(0).normal(0, 0.5, (4, 3, 2, 3)).astype("float32")
    grid = np.asarray(AffineGridGenerator((20, 20))(transforms))  # (4, 3, 20, 20, 2), source (x, y)
    corners = np.stack([grid[..., 0, 0, :], grid[..., 0, -1, :], grid[..., -1, -1, :], grid[..., -1, 0, :]], axis=-2)
    height, width = 50, 80
    expected = (corners + 1) * np.array([width - 1, height - 1]) / 2
    np.testing.assert_allclose(visualize.box_corners(transforms, (height, width)), expected, atol=1e-4)


def test_boxes_are_drawn_where_the_transform_says():
    size, scale = 100, 4  # 4 figure pixels per image pixel, the axes fill the figure
    figure = Figure(figsize=(size * scale / 100,) * 2, dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.imshow(np.zeros((size, size)), cmap="gray", vmin=0, vmax=1)
    step_theta = np.array([[[0.2, 0.0, 0.5], [0.0, 0.2, -0.3]]])
    polygons = visualize.draw_boxes(ax, step_theta, (size, size))
    figure.canvas.draw()
    rendered = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)

    # Image pixel centre v lies at figure pixel (v + 0.5) * scale.
    left, right = (np.array([0.3, 0.7]) + 1) * (size - 1) / 2
    top, bottom = (np.array([-0.5, -0.1]) + 1) * (size - 1) / 2
    np.testing.assert_allclose(polygons[0].get_xy()[:4], [[left, top], [right, top], [right, bottom], [left, bottom]])
    colour = np.array(mcolors.to_rgb(visualize.step_colour(0))) * 255
    coloured = np.abs(rendered - colour).sum(-1) < 60
    rows, columns = np.nonzero(coloured)
    to_figure = lambda v: (v + 0.5) * scale  # noqa: E731
    assert abs(columns.min() - to_figure(left)) <= 3 and abs(columns.max() - to_figure(right)) <= 3
    assert abs(rows.min() - to_figure(top)) <= 3 and abs(rows.max() - to_figure(bottom)) <= 3
    # Each edge is drawn along its whole length (sampled at its middle).
    for x, y in [((left + right) / 2, top), ((left + right) / 2, bottom), (left, (top + bottom) / 2), (right, (top + bottom) / 2)]:
        assert coloured[round(to_figure(y)) - 1 : round(to_figure(y)) + 2, round(to_figure(x)) - 1 : round(to_figure(x)) + 2].any()
    # And nothing far from the box is coloured.
    assert not coloured[: int(to_figure(top)) - 4].any() and not coloured[:, : int(to_figure(left)) - 4].any()


def test_attention_outputs_follow_the_model(tiny_model):
    images, _ = _images(3)
    outputs = visualize.attention_outputs(tiny_model, images)
    assert outputs["probabilities"].shape == (3, N_DIGITS, 10)
    np.testing.assert_allclose(outputs["transforms"], np.broadcast_to(THETA, (3, N_DIGITS, 2, 3)), atol=1e-6)
    assert outputs["glimpses"].shape == (3, N_DIGITS, 20, 20, 1)


def test_attention_figure_has_the_expected_pixel_size(tiny_model, tmp_path):
    images, labels = _images(5)
    mistakes = visualize.attention_figure(tiny_model, images, labels, tmp_path / "grid.png", columns=4, dpi=40)
    # 4 columns x 2 rows of 3.25 x 2.75 inch panels, plus a 0.5 inch title.
    assert Image.open(tmp_path / "grid.png").size == (4 * 130, 2 * 110 + 20)
    predicted = np.argmax(tiny_model.predict(images[..., None] / 255.0, verbose=0), -1)
    assert mistakes == np.any(predicted != labels, axis=1).sum()
    assert not list(tmp_path.glob(".grid.*"))  # the temporary file is gone

    visualize.attention_figure(tiny_model, images[:1], None, tmp_path / "one.png", dpi=40)
    assert Image.open(tmp_path / "one.png").size == (130, 130)


def test_glimpse_gif_has_one_frame_per_step(tiny_model, tmp_path):
    images, labels = _images(1)
    visualize.glimpse_gif(tiny_model, images[0], tmp_path / "read.gif", label=labels[0], dpi=40)
    gif = Image.open(tmp_path / "read.gif")
    assert gif.format == "GIF" and gif.n_frames == N_DIGITS and gif.size == (260, 140)


def test_a_model_without_attention_is_refused(tmp_path):
    model = build_model("cnn", image_size=(CANVAS, CANVAS), n_digits=N_DIGITS, classifier_filters=4, classifier_units=8)
    with pytest.raises(UserError, match="no spatial transformer"):
        visualize.attention_figure(model, *_images(1), tmp_path / "grid.png")


def _write_run(run_dir, epochs=4, finished=True):
    run_dir.mkdir()
    rows = ["epoch,accuracy,epoch_seconds,learning_rate,loss,val_accuracy,val_loss"]
    for epoch in range(epochs):
        accuracy = 1 - 0.8 / (epoch + 1)
        rows.append(f"{epoch},{accuracy},10.0,0.0005,{2 / (epoch + 1)},{accuracy + 0.02},{1.8 / (epoch + 1)}")
    (run_dir / "history.csv").write_text("\n".join(rows) + "\n")
    if finished:
        confusion = np.diag(np.full(10, 95)) + np.eye(10, k=1, dtype=int) * 5
        metrics = {"confusion_matrix": confusion.tolist(), "single_digit_error": 0.05, "sequence_error": 0.14}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_plot_command(tmp_path, capsys):
    _write_run(tmp_path / "run")
    assert cli.main(["plot", str(tmp_path / "run")]) == 0
    assert Image.open(tmp_path / "run" / "history.png").size == (1000, 400)
    assert Image.open(tmp_path / "run" / "confusion.png").size == (650, 575)

    _write_run(tmp_path / "unfinished", finished=False)
    assert cli.main(["plot", str(tmp_path / "unfinished"), "--out-dir", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "history.png").exists()
    assert not (tmp_path / "figures" / "confusion.png").exists()
    assert "no metrics.json yet" in capsys.readouterr().out


def test_plot_sets_runs_side_by_side_by_the_training_images_they_saw(tmp_path, capsys):
    _write_run(tmp_path / "short", epochs=3)
    (tmp_path / "short" / "config.json").write_text(json.dumps({"train_size": 1000}))
    _write_run(tmp_path / "finished", epochs=4)  # as `reproduce` keeps it: results/<run>.json, histories/<run>.csv
    (tmp_path / "results" / "histories").mkdir(parents=True)
    (tmp_path / "finished" / "history.csv").rename(tmp_path / "results" / "histories" / "long.csv")
    (tmp_path / "results" / "long.json").write_text(json.dumps({"config": {"train_size": 3000}}))
    sources = [tmp_path / "short", tmp_path / "results" / "long.json"]

    curves = visualize.validation_curves(sources)
    assert list(curves) == ["short", "long"]
    np.testing.assert_array_equal(curves["short"][0], [1000, 2000, 3000])
    np.testing.assert_array_equal(curves["long"][0], [3000, 6000, 9000, 12000])
    np.testing.assert_allclose(curves["long"][1], [100 * (0.8 / n - 0.02) for n in (1, 2, 3, 4)])
    assert cli.main(["plot", *map(str, sources), "--out-dir", str(tmp_path / "figures")]) == 0
    assert Image.open(tmp_path / "figures" / "validation.png").size == (800, 450)
    assert cli.main(["plot", *map(str, sources)]) == 2
    assert "give --out-dir" in capsys.readouterr().err


def test_plot_refuses_what_is_not_a_run(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "missing")]) == 2
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no history.csv" in capsys.readouterr().err
    with pytest.raises(UserError, match="no confusion_matrix"):
        visualize.plot_confusion({"single_digit_error": 0.1}, tmp_path / "confusion.png")


def test_visualize_command(tiny_model_file, tmp_path):
    out, gif = tmp_path / "attention.png", tmp_path / "read.gif"
    command = ["visualize", str(tiny_model_file), "--n", "3", "--size", "20", "--out", str(out), "--gif", str(gif)]
    assert cli.main(command) == 0
    assert Image.open(out).size == (3 * 325, 275 + 50)
    assert Image.open(gif).n_frames == N_DIGITS

    # An untrained model misreads nearly everything: --mistakes finds enough.
    assert cli.main(command[:-2] + ["--mistakes", "--columns", "2"]) == 0
    assert Image.open(out).size == (2 * 325, 2 * 275 + 50)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--n", "0"], "--n 0"),
        (["--gif", "read.png"], "ending in .gif"),
        (["--start", "20", "--size", "20"], "only 20 images"),
    ],
)
def test_visualize_refuses_bad_arguments(tiny_model_file, arguments, message, capsys):
    assert cli.main(["visualize", str(tiny_model_file), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_visualize_refuses_a_missing_model(tmp_path, capsys):
    assert cli.main(["visualize", str(tmp_path)]) == 2
    assert "no best.keras" in capsys.readouterr().err


@pytest.mark.parametrize("end_bias, digits_read", [(10.0, 0), (-10.0, N_DIGITS)], ids=["ends-at-once", "reads-all"])
def test_a_strings_model_is_drawn_up_to_the_step_that_ended_it(tmp_path, end_bias, digits_read):
    model = build_model("lstm_stn", image_size=(CANVAS, 2 * CANVAS), n_digits=N_DIGITS, variable_length=True,
                        glimpse_size=(20, 20), units=16)
    end = model.get_layer("end")
    end.kernel.assign(np.zeros(end.kernel.shape, "float32"))
    end.bias.assign(np.full(end.bias.shape, end_bias, "float32"))
    images = np.random.default_rng(0).integers(0, 128, (2, CANVAS, 2 * CANVAS), dtype=np.uint8)
    probabilities = visualize.attention_outputs(model, images)["probabilities"]
    assert [visualize.steps_taken(row, N_DIGITS + 1) for row in read_labels(probabilities)] == [digits_read + 1] * 2
    labels = np.full((2, N_DIGITS), 10)
    mistakes = visualize.attention_figure(model, images, labels, tmp_path / "grid.png", dpi=40)
    assert mistakes == (2 if digits_read else 0)  # the true strings are empty
    visualize.glimpse_gif(model, images[0], tmp_path / "read.gif", dpi=40)
    assert Image.open(tmp_path / "read.gif").n_frames == digits_read + 1  # one frame per step taken
