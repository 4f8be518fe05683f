"""The `web` subcommand of `lstm-stn`: a page that reads digits in the browser, offline.

    lstm-stn web                           # http://127.0.0.1:8000/, the shipped lstm_stn
    lstm-stn web --model exported/my_model --port 0

The page (`lstm_stn_tf/web/`: plain HTML and ES modules, no bundler) runs an
export's `model_web.tflite`, the static batch-1 float32 TFLite that
`lstm-stn export` writes, with LiteRT.js (npm's `@litertjs/core`, pinned in the
page's `package-lock.json`) in the browser. This command serves the page,
LiteRT.js, its wasm runtimes, the model and `model.json` (what the page needs to
know of the model) on 127.0.0.1 only: the page asks nothing of any other host.
"""

import argparse
import hashlib
import http.server
import json
import pathlib
import shutil
import subprocess
import sys
import urllib.parse

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.paths import atomic_directory, cache_dir, model_source, writing

WEB_DIR = pathlib.Path(__file__).resolve().parent / "web"
WEB_MODEL = "model_web.tflite"
WEB_MODEL_INT8 = "model_web_int8.tflite"  # a quarter of the download, as model_int8.tflite is
LITERTJS = "@litertjs/core"
HOST = "127.0.0.1"  # the page and everything it loads; never another interface
DEFAULT_MODEL = "lstm_stn"
DEFAULT_PORT = 8000
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",  # browsers compile wasm streamed only with this type
    ".tflite": "application/octet-stream",
}


def add_commands(subparsers, wanted):
    web = subparsers.add_parser(
        "web", help="serve the page that reads digits in the browser (LiteRT.js, offline)",
        description="Serves a page on 127.0.0.1 where you draw digits or drop an image; the browser reads it with "
        "the model's model_web.tflite and LiteRT.js, fitting it as `lstm-stn predict` does, and shows the digits, "
        "their probabilities and each step's attention box. Nothing is fetched from another host. Ctrl-C stops it.",
    )
    web.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                     help=f"a shipped model's name, an `lstm-stn export` folder or a static batch-1 .tflite file "
                     f"(default {DEFAULT_MODEL})")
    web.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free port")
    web.add_argument("--int8", action="store_true",
                     help=f"run the export's {WEB_MODEL_INT8} (int8, a quarter of the size) instead of {WEB_MODEL}")
    web.set_defaults(handler=cmd_web)


def _port(text):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 0 (any free port) to 65535")
    return port


def web_model(text, int8=False):
    """The `model_web.tflite` (with `int8`, `model_web_int8.tflite`) that the
    model argument `text` names: a shipped model's name, an export folder or a
    `.tflite` file; a `UserError` saying how to export it if there is none."""
    path = model_source(text)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise UserError(f"{path}: no such file.")
        return path
    folder = path.parent if path.suffix == ".keras" else path
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; expected a shipped model's name, an export folder or a .tflite file.")
    file = WEB_MODEL_INT8 if int8 else WEB_MODEL
    if not (folder / file).is_file():
        raise UserError(
            f"{folder}: no {file}, the static batch-1 TFLite the page runs (exports made before it existed "
            f"lack it); export it with `lstm-stn export {text} --out DIR`, then `lstm-stn web --model DIR`."
        )
    return folder / file


def model_description(path):
    """What the page needs to know of the TFLite model at `path` (`model.json`):
    its name, image size, digits, steps and whether it reads strings. A
    `UserError` unless it takes one `image` (1, H, W, 1) and returns `digits`,
    `probabilities` and `transforms`, as `model_web.tflite` does."""
    from ai_edge_litert.interpreter import Interpreter

    from lstm_stn_tf.predictor import SIGNATURE
    from lstm_stn_tf.strings import has_end_class

    try:
        runner = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)
    except Exception as error:  # LiteRT raises ValueError or RuntimeError for a damaged file
        raise UserError(f"{path}: not a readable TFLite model with a {SIGNATURE!r} signature ({error}).") from None
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    shapes = {name: [int(size) for size in details["shape_signature"]] for name, details in outputs.items()}
    image = [int(size) for size in inputs["image"]["shape_signature"]] if "image" in inputs else None
    if (set(inputs) != {"image"} or not {"digits", "probabilities", "transforms"} <= set(outputs)
            or len(image) != 4 or image[0] != 1 or image[3] != 1 or min(image) < 1):
        found = {name: details["shape_signature"].tolist() for name, details in inputs.items()}
        raise UserError(
            f"{path}: takes {found} and returns {sorted(outputs)}; expected `image` (1, H, W, 1) -> `digits`, "
            f"`probabilities` and `transforms`, as the {WEB_MODEL} of `lstm-stn export` (LiteRT.js runs static "
            "shapes only, not the batch of model.tflite)."
        )
    return {
        "name": path.parent.name if path.name in (WEB_MODEL, WEB_MODEL_INT8) else path.stem,
        "image_size": image[1:3],
        "n_digits": shapes["digits"][1],
        "steps": shapes["transforms"][1],
        "strings": bool(has_end_class(shapes["probabilities"])),
    }


def _installed(modules, lock):
    """Whether `modules` (a node_modules folder) holds the LiteRT.js version that `lock` pins."""
    wanted = lock["packages"][f"node_modules/{LITERTJS}"]["version"]
    installed = modules / LITERTJS / "package.json"
    return installed.is_file() and json.loads(installed.read_text())["version"] == wanted


def litertjs_modules(web_dir=WEB_DIR):
    """The `node_modules` folder that holds LiteRT.js for the page in `web_dir`.

    The page's own (`npm ci --prefix web_dir`, as CI and a source checkout do),
    else one in the cache, installed with `npm ci` from the page's lock file on
    first use (an installed package's folder may not be writable). Without npm,
    a `UserError` with the command to run.
    """
    lock_file = web_dir / "package-lock.json"
    lock = json.loads(lock_file.read_text())
    if _installed(web_dir / "node_modules", lock):
        return web_dir / "node_modules"
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:16]
    folder = cache_dir() / "web" / f"litertjs-{digest}"
    if _installed(folder / "node_modules", lock):
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"LiteRT.js ({LITERTJS}) is not installed for the page and npm was not found: install Node.js's npm "
            f"(e.g. `apt-get install npm`), or run `npm ci --prefix {web_dir}` where npm is."
        )
    print(f"Installing LiteRT.js with `npm ci` into {folder} (once) ...", file=sys.stderr, flush=True)
    with atomic_directory(folder) as temporary:
        with writing(temporary):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(web_dir / name, temporary / name)
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=temporary,
                              capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip() or f"status {done.returncode}").splitlines()[-1]
            raise UserError(f"`npm ci` could not install LiteRT.js for the page ({reason}); "
                            f"run `npm ci --prefix {web_dir}` to see why.")
    return folder / "node_modules"


class Site:
    """What the server answers: the page's files, LiteRT.js's (`/node_modules/`),
    the model (`/model_web.tflite`) and its description (`/model.json`)."""

    def __init__(self, model_path, modules, web_dir=WEB_DIR):
        self.model_path = pathlib.Path(model_path)
        self.description = model_description(self.model_path)
        self.roots = {"/node_modules/": pathlib.Path(modules).resolve(), "/": web_dir.resolve()}

    def find(self, url_path):
        """`(content, content type)` for a URL path, or None where there is nothing to serve."""
        if url_path == "/model.json":
            return json.dumps(self.description).encode(), CONTENT_TYPES[".json"]
        if url_path == f"/{WEB_MODEL}":
            return self.model_path.read_bytes(), CONTENT_TYPES[".tflite"]
        for prefix, root in self.roots.items():
            if url_path.startswith(prefix):
                file = (root / (url_path[len(prefix):] or "index.html")).resolve()
                # Only files inside the root, of the known types: no `..`, no listings.
                if root in file.parents and file.is_file() and file.suffix in CONTENT_TYPES:
                    return file.read_bytes(), CONTENT_TYPES[file.suffix]
                return None
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lstm-stn"

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body):
        found = self.server.site.find(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        if found is None:
            self.send_error(404)
            return
        content, content_type = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-cache")  # a new export is read on the next load
        self.end_headers()
        if send_body:
            self.wfile.write(content)

    def log_message(self, format, *args):
        pass  # the terminal shows the URL; a line per file would bury it


def start_server(model=DEFAULT_MODEL, port=DEFAULT_PORT, web_dir=WEB_DIR, int8=False):
    """A server of the page for `model` (as `--model`, and `--int8`), bound to 127.0.0.1:`port`
    (0: any free port), not yet serving: call its `serve_forever()`; its URL is
    `server_url(server)`."""
    site = Site(web_model(model, int8), litertjs_modules(web_dir), web_dir)
    try:
        server = http.server.ThreadingHTTPServer((HOST, port), _Handler)
    except OSError as error:
        raise UserError(f"cannot serve on {HOST}:{port} ({error.strerror or error}); choose another --port "
                        "(0: any free port).") from None
    server.site = site
    return server


def server_url(server):
    return f"http://{HOST}:{server.server_address[1]}/"


def cmd_web(args):
    server = start_server(args.model, args.port, int8=args.int8)
    description = server.site.description
    print(f"Serving {description['name']} ({server.site.model_path}) at {server_url(server)}  (Ctrl-C stops it)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # the way a server is stopped: not a failure
        print("\nStopped.", file=sys.stderr)
    finally:
        server.server_close()
