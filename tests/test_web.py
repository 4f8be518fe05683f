"""The page of `lstm-stn web`, in a real browser: Debian's Chromium, headless,
driven by Playwright, reads as Python LiteRT reads, and asks nothing of any
host but 127.0.0.1. A browser that cannot start fails the test, with the reason."""

import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from lstm_stn_tf import web_cli
from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import shipped_models_dir
from lstm_stn_tf.predictor import Predictor, read_images
from lstm_stn_tf.strings import label_string
from lstm_stn_tf.visualize import steps_taken

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright downloads no browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MODEL = "lstm_stn"  # the shipped model the page serves
TOLERANCE = 1e-4  # LiteRT.js (wasm) against Python LiteRT, on the same input
SCREENSHOT_VARIABLE = "LSTM_STN_WEB_SCREENSHOT"  # where the docs' picture goes, when set
STRINGS_CANVAS = (48, 96)  # the small strings model's


@contextlib.contextmanager
def _serving(folder, int8=False):
    """The page of the export `folder` on 127.0.0.1, any free port; yields its URL."""
    server = web_cli.start_server(str(folder), port=0, int8=int8)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield web_cli.server_url(server)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _opened(browser, url):
    """The page at `url`, loaded and ready, with every URL it requested in `page.requested`."""
    page = browser.new_page(viewport={"width": 1180, "height": 920})
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    try:
        page.goto(url)
        page.evaluate("window.lstmStn.ready")  # raises the page's error if LiteRT.js or the model failed
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def export_folder():
    """The shipped model's export folder, with the file the page runs."""
    return web_cli.web_model(MODEL).parent


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as error:
            pytest.fail(f"Chromium ({CHROMIUM}) could not start: {error}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(export_folder):
    with _serving(export_folder) as url:
        yield url


@pytest.fixture
def page(server, browser):
    with _opened(browser, server) as opened:
        yield opened


def _readings(page, action, count=1):
    """Does `action()` and returns the page's last result once it has read `count` more times."""
    done = page.evaluate("window.lstmStn.readings")
    action()
    page.wait_for_function("count => window.lstmStn.readings >= count", arg=done + count)
    return page.evaluate("window.lstmStn.lastResult")


def _read_file(page, file):
    result = _readings(page, lambda: page.set_input_files("#file", str(file)))
    assert result["source"] == file.name
    return result


def _assert_reads_as_python(result, folder, file, model_file=web_cli.WEB_MODEL):
    """The page's `result` for `file` is what `lstm-stn predict` feeds the model
    `model_file` of the export `folder` and what Python LiteRT reads there."""
    predictor = Predictor(folder / model_file)
    _, images, _ = read_images(file, predictor.image_size)
    digits, probabilities, transforms = predictor.predict(images)
    np.testing.assert_allclose(np.reshape(result["input"], images.shape[1:3]), images[0, ..., 0], atol=1e-6)
    assert result["digits"] == [int(digit) for digit in label_string(digits[0])]
    np.testing.assert_allclose(result["transforms"], transforms[0].reshape(len(transforms[0]), 6), atol=TOLERANCE)
    np.testing.assert_allclose(result["probabilities"], probabilities[0], atol=TOLERANCE)
    assert result["taken"] == steps_taken(digits[0], len(transforms[0]))


def _test_files(folder, images):
    """One image as a photo of paper would be (RGB, dark digits on light,
    160 x 120, so letterboxed), then two at the model's size, as they are."""
    paper = 255 - np.asarray(Image.fromarray(images[0]).resize((160, 120), Image.Resampling.BILINEAR))
    tinted = np.stack([paper, np.maximum(paper, 40) - 40, paper // 2 + 120], axis=-1).astype(np.uint8)
    files = [folder / "paper.png"]
    Image.fromarray(tinted, "RGB").save(files[0])
    for index, image in enumerate(images[1:3], 1):
        files.append(folder / f"test{index}.png")
        Image.fromarray(image).save(files[-1])
    return files


def test_page_reads_files_as_python_litert_offline(page, server, export_folder, tmp_path):
    from lstm_stn_tf.data import load_split

    images, _ = load_split("test", size=3)
    for index, file in enumerate(_test_files(tmp_path, images)):
        result = _read_file(page, file)
        _assert_reads_as_python(result, export_folder, file)
        assert (result["inverted"], result["letterboxed"]) == ((True, True) if index == 0 else (False, False))
        assert (len(result["digits"]), result["stop"]) == (3, None)
        assert page.inner_text("#string") == result["string"]
    outside = [url for url in page.requested if not url.startswith((server, "data:"))]
    assert not outside, f"requests beyond {server}: {outside}"


def test_page_runs_the_int8_file_as_python_litert(browser, export_folder, tmp_path):
    from lstm_stn_tf.data import load_split

    images, _ = load_split("test", size=3)
    with _serving(export_folder, int8=True) as url, _opened(browser, url) as page:
        for file in _test_files(tmp_path, images)[1:]:
            _assert_reads_as_python(_read_file(page, file), export_folder, file, web_cli.WEB_MODEL_INT8)


def _ellipse(centre_x, centre_y, radius_x, radius_y, points=24):
    angles = np.linspace(0, 2 * math.pi, points + 1)
    return list(zip(centre_x + radius_x * np.sin(angles), centre_y - radius_y * np.cos(angles)))


# "170" in model pixels (the 100 x 100 canvas), one digit per guide cell, as tall as the band.
STROKES_170 = ([(24, 40), (22, 61)], [(42, 40), (57, 40), (48, 61)], _ellipse(78, 50, 7, 10))


def test_a_drawing_is_read_as_its_pixels_and_screenshot(page, export_folder, tmp_path):
    """Digits drawn with the mouse: dark on white, so inverted, at 3x the
    model's size, so letterboxed; read as Python reads the pad's pixels."""
    box = page.locator("#drawing").bounding_box()
    scale = box["width"] / 100

    def draw():
        for stroke in STROKES_170:
            page.mouse.move(box["x"] + stroke[0][0] * scale, box["y"] + stroke[0][1] * scale)
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=4)
            page.mouse.up()

    result = _readings(page, draw, count=len(STROKES_170))  # one reading per stroke
    assert (result["source"], result["inverted"], result["letterboxed"]) == ("drawing", True, True)
    data_url = page.evaluate("document.getElementById('drawing').toDataURL('image/png')")
    drawn = tmp_path / "drawing.png"
    drawn.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    _assert_reads_as_python(result, export_folder, drawn)
    assert result["string"] == "170"
    page.screenshot(path=tmp_path / "web.png", full_page=True)
    assert Image.open(tmp_path / "web.png").size[0] == page.viewport_size["width"]
    if os.environ.get(SCREENSHOT_VARIABLE):
        shutil.copyfile(tmp_path / "web.png", os.environ[SCREENSHOT_VARIABLE])
    page.click("#clear")
    assert page.inner_text("#string") == "\u2013"


def test_page_reads_a_strings_model_up_to_its_end(browser, tmp_path):
    """A small untrained strings model whose end head stops its strings after
    different steps in different images: the page reads each as Python does."""
    from lstm_stn_tf.exporting import convert_web
    from lstm_stn_tf.models import build_model

    model = build_model("lstm_stn", image_size=STRINGS_CANVAS, n_digits=4, variable_length=True, glimpse_size=(20, 20),
                        units=16, localisation_filters=4, classifier_filters=8, classifier_units=16)
    rng = np.random.default_rng(3)
    for weight, scale in ((model.get_layer("localizer").transform_kernel, 0.1), (model.get_layer("end").kernel, 3.0)):
        weight.assign(rng.normal(0, scale, weight.shape).astype("float32"))
    images = rng.integers(0, 128, (6,) + STRINGS_CANVAS, dtype=np.uint8)  # dark: none inverted
    ends = model.predict(images / np.float32(255), verbose=0)[:, 0, 10]
    end = model.get_layer("end")  # centred on these images' first end logits: half stop there, half go on
    end.bias.assign(end.bias.numpy() - np.median(np.log(ends) - np.log1p(-ends)).astype("float32"))
    folder = tmp_path / "strings"
    folder.mkdir()
    (folder / web_cli.WEB_MODEL).write_bytes(convert_web(model)["model_web.tflite"])  # as `lstm-stn export` converts it
    lengths = set()
    with _serving(folder) as url, _opened(browser, url) as page:
        for index, image in enumerate(images):
            file = tmp_path / f"string{index}.png"
            Image.fromarray(image).save(file)
            result = _read_file(page, file)
            _assert_reads_as_python(result, folder, file)
            assert result["stop"] == result["taken"] - 1
            lengths.add(len(result["digits"]))
    assert len(lengths) > 1, f"the test model should read strings of several lengths, read {lengths}"


def _get(url):
    """`(status, content type, body)` of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, None, b""


def test_web_command_serves_the_page_and_stops_on_ctrl_c():
    command = ["lstm-stn", "web", "--port", "0"]  # the shipped model, by default
    # Ctrl-C's signal reaches it even where this runs with SIGINT ignored (a background job).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"no URL in {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        url = match.group(0)
        status, content_type, body = _get(url + "model.json")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {"name": MODEL, "image_size": [100, 100], "n_digits": 3, "steps": 3, "strings": False}
        assert _get(url)[:2] == (200, "text/html; charset=utf-8")
        assert _get(url + "node_modules/@litertjs/core/wasm/litert_wasm_internal.wasm")[1] == "application/wasm"
        assert _get(url + "node_modules/@litertjs/core/dist/index.js")[1] == "text/javascript; charset=utf-8"
        for outside in ("../web_cli.py", "%2e%2e/web_cli.py", "node_modules/", "missing.js"):
            assert _get(url + outside)[0] == 404, outside
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    assert "Stopped." in errors


def test_web_model_is_the_static_batch_one_file(tmp_path):
    with pytest.raises(UserError, match=r"no model_web\.tflite.*lstm-stn export"):
        web_cli.web_model(str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        web_cli.web_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"\(1, H, W, 1\).*static shapes"):
        web_cli.model_description(shipped_models_dir() / MODEL / "model.tflite")  # a dynamic batch, as LiteRT.js refuses


def test_a_port_in_use_is_one_error(server):
    port = int(server.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(UserError, match=f"cannot serve on 127.0.0.1:{port}.*another --port"):
        web_cli.start_server(MODEL, port)


def _page_folder(folder):
    """The page's files without its node_modules, as an installed package may have them."""
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(web_cli.WEB_DIR / name, folder / name)
    return folder


def test_litertjs_is_installed_into_the_cache_with_npm(tmp_path, package_cache):
    modules = web_cli.litertjs_modules(_page_folder(tmp_path))
    assert package_cache in modules.parents
    assert (modules / "@litertjs/core/wasm/litert_wasm_internal.wasm").is_file()
    assert web_cli.litertjs_modules(tmp_path) == modules  # installed once


def test_litertjs_missing_without_npm_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"npm was not found.*npm ci --prefix"):
        web_cli.litertjs_modules(_page_folder(tmp_path))
