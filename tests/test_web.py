"""The page of `lstm-stn web`, in a real browser: Debian's Chromium, headless,
driven by Playwright, reads as Python LiteRT reads, and asks nothing of any
host but 127.0.0.1. A browser that cannot start fails the test, with the reason."""

import base64
import json
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

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright downloads no browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MODEL = "lstm_stn"  # the shipped model the page serves
TOLERANCE = 1e-4  # LiteRT.js (wasm) against Python LiteRT, on the same input
SCREENSHOT_VARIABLE = "LSTM_STN_WEB_SCREENSHOT"  # where the docs' picture goes, when set


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory):
    """An export folder of the shipped model with the file the page runs,
    converted as `lstm-stn export` converts it."""
    from lstm_stn_tf.evaluation import float32_model, load_model
    from lstm_stn_tf.exporting import convert_web

    folder = tmp_path_factory.mktemp("exports") / MODEL
    folder.mkdir()
    (folder / web_cli.WEB_MODEL).write_bytes(convert_web(float32_model(load_model(MODEL))))
    return folder


@pytest.fixture(scope="module")
def server(export_folder):
    """The page of `export_folder` on 127.0.0.1, any free port; yields its URL."""
    served = web_cli.start_server(str(export_folder), port=0)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield web_cli.server_url(served)
    served.shutdown()
    served.server_close()


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


@pytest.fixture
def page(server, browser):
    """The page, loaded and ready, with every URL it requested in `page.requested`."""
    opened = browser.new_page(viewport={"width": 1180, "height": 920})
    opened.requested = []
    opened.on("request", lambda request: opened.requested.append(request.url))
    opened.goto(server)
    opened.evaluate("window.lstmStn.ready")  # raises the page's error if LiteRT.js or the model failed
    yield opened
    opened.close()


def _readings(page, action, count=1):
    """Does `action()` and returns the page's last result once it has read `count` more times."""
    done = page.evaluate("window.lstmStn.readings")
    action()
    page.wait_for_function("count => window.lstmStn.readings >= count", arg=done + count)
    return page.evaluate("window.lstmStn.lastResult")


def _python_reading(model, path):
    """The model input `lstm-stn predict` makes of a file, and Python LiteRT's reading of it with `model`."""
    predictor = Predictor(model)
    _, images, _ = read_images(path, predictor.image_size)
    return images[0, ..., 0], predictor.predict(images)


def _assert_reads_as_python(result, model, path):
    model_input, (digits, probabilities, transforms) = _python_reading(model, path)
    np.testing.assert_allclose(np.reshape(result["input"], model_input.shape), model_input, atol=1e-6)
    assert result["digits"] == digits[0].tolist()
    np.testing.assert_allclose(result["transforms"], transforms[0].reshape(len(transforms[0]), 6), atol=TOLERANCE)
    np.testing.assert_allclose(result["probabilities"], probabilities[0], atol=TOLERANCE)


def _test_files(folder, mnist_images):
    """Two test images at the model's size, as they are; one as a photo of
    paper would be: RGB, dark digits on light, 160 x 120 (letterboxed)."""
    files = []
    for index, image in enumerate(mnist_images[:2]):
        files.append(folder / f"test{index}.png")
        Image.fromarray(image).save(files[-1])
    paper = 255 - np.asarray(Image.fromarray(mnist_images[2]).resize((160, 120), Image.Resampling.BILINEAR))
    tinted = np.stack([paper, np.maximum(paper, 40) - 40, paper // 2 + 120], axis=-1).astype(np.uint8)
    files.append(folder / "paper.png")
    Image.fromarray(tinted, "RGB").save(files[-1])
    return files


def test_page_reads_files_as_python_litert_offline(page, server, export_folder, tmp_path):
    from lstm_stn_tf.data import load_split

    images, labels = load_split("test", size=3)
    files = _test_files(tmp_path, images)
    for file in files:
        result = _readings(page, lambda: page.set_input_files("#file", str(file)))
        assert result["source"] == file.name
        _assert_reads_as_python(result, export_folder / web_cli.WEB_MODEL, file)
        assert page.inner_text("#string") == result["string"]
    assert (result["inverted"], result["letterboxed"]) == (True, True)  # the paper image
    assert [len(result["digits"]), result["taken"], result["stop"]] == [3, 3, None]
    outside = [url for url in page.requested if not url.startswith((server, "data:"))]
    assert not outside, f"requests beyond {server}: {outside}"
    page.screenshot(path=tmp_path / "web.png", full_page=True)
    assert Image.open(tmp_path / "web.png").size[0] == page.viewport_size["width"]
    if os.environ.get(SCREENSHOT_VARIABLE):
        shutil.copyfile(tmp_path / "web.png", os.environ[SCREENSHOT_VARIABLE])


def test_drawing_is_read_as_its_pixels(page, export_folder, tmp_path):
    """Strokes drawn with the mouse: dark on white, so inverted, and 3x the
    model's size, so letterboxed; read as Python reads the pad's pixels."""
    box = page.locator("#drawing").bounding_box()
    strokes = (((0.2, 0.38), (0.22, 0.62)), ((0.45, 0.4), (0.55, 0.6)), ((0.75, 0.38), (0.8, 0.62)))

    def draw():
        for start, end in strokes:
            page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=8)
            page.mouse.up()

    result = _readings(page, draw, count=len(strokes))  # one reading per stroke
    assert result["source"] == "drawing"
    data_url = page.evaluate("document.getElementById('drawing').toDataURL('image/png')")
    drawn = tmp_path / "drawing.png"
    drawn.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    assert (result["inverted"], result["letterboxed"]) == (True, True)
    _assert_reads_as_python(result, export_folder / web_cli.WEB_MODEL, drawn)
    page.click("#clear")
    assert page.inner_text("#string") == "\u2013"



def _get(url):
    """`(status, content type, body)` of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, None, b""


def test_web_command_serves_the_page_and_stops_on_ctrl_c(export_folder):
    command = ["lstm-stn", "web", "--model", str(export_folder), "--port", "0"]
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
    with pytest.raises(UserError, match=r"\(1, H, W, 1\).*static shapes"):
        web_cli.model_description(shipped_models_dir() / MODEL / "model.tflite")  # a dynamic batch, as LiteRT.js refuses


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
