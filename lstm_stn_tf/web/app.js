// The page: a drawing pad and an image drop, the model's input with each
// step's attention box, and the digits read with their probabilities.
// `window.lstmStn` exposes the state for scripts and tests: `ready` (a promise),
// `readings` (how many so far), `lastResult` (the last, with the model input it
// read) and `error`.

import {fitImage} from "./fit.js";
import {Reader, boxCorners} from "./reader.js";

const SCALE = 3; // screen pixels per model pixel, on the pad and the view
// lstm_stn_tf/visualize.py's STEP_COLOURS: one per step.
const STEP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b"];
const DIGIT_SIZE = 28; // MNIST's digits, in model pixels: the size to write at
const STROKE = 3.2; // model pixels: about an MNIST pen stroke
const READY = "Ready: draw digits or drop an image.";

const page = {
  status: document.getElementById("status"),
  pad: document.getElementById("pad"),
  drawing: document.getElementById("drawing"),
  guides: document.getElementById("guides"),
  view: document.getElementById("view"),
  hint: document.getElementById("hint"),
  fit: document.getElementById("fit"),
  string: document.getElementById("string"),
  digits: document.getElementById("digits"),
  footer: document.getElementById("footer"),
};
const lstmStn = (window.lstmStn = {ready: null, readings: 0, lastResult: null, error: null});
let reader = null;
let description = null;
let showingFile = false; // the pad shows a dropped image, not a drawing
let reading = null; // readings run one after the other, after the start (the end of this file)

function stepColour(step) {
  return STEP_COLOURS[step % STEP_COLOURS.length];
}

function setStatus(text, isError = false) {
  page.status.textContent = text;
  page.status.classList.toggle("error", isError);
}

// Where to write: a band as tall as an MNIST digit across the middle, and for
// a fixed-length model one cell per digit, as the training images place them.
function drawGuides() {
  const [height, width] = description.image_size;
  const context = page.guides.getContext("2d");
  context.clearRect(0, 0, page.guides.width, page.guides.height);
  context.strokeStyle = "rgba(31, 119, 180, 0.35)";
  context.setLineDash([6, 6]);
  context.lineWidth = 1.5;
  const top = ((height - DIGIT_SIZE) / 2) * SCALE;
  context.strokeRect(0.75, top, width * SCALE - 1.5, DIGIT_SIZE * SCALE);
  if (!description.strings) {
    const left = (width - DIGIT_SIZE * description.n_digits) / 2;
    for (let cell = 1; cell < description.n_digits; cell++) {
      const x = (left + cell * DIGIT_SIZE) * SCALE;
      context.beginPath();
      context.moveTo(x, top);
      context.lineTo(x, top + DIGIT_SIZE * SCALE);
      context.stroke();
    }
  }
  page.hint.textContent = description.strings
    ? `Write 1 to ${description.n_digits} digits left to right in the band, about as tall as it.`
    : `Write ${description.n_digits} digits left to right, one per cell, about as tall as the band.`;
}

// The pad blank for a drawing, or showing a dropped image (without the guides).
function clearPad(forFile = false) {
  const context = page.drawing.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, page.drawing.width, page.drawing.height);
  page.guides.hidden = showingFile = forFile;
}

function clearAll() {
  clearPad();
  page.view.getContext("2d").clearRect(0, 0, page.view.width, page.view.height);
  page.string.textContent = "\u2013";
  page.digits.replaceChildren();
  page.fit.textContent = "\u00a0";
}

// The model input (grey, light digits on dark) at SCALE, and each step's box.
function drawView(pixels, result) {
  const [height, width] = description.image_size;
  const image = new ImageData(width, height);
  pixels.forEach((value, i) => {
    const level = Math.round(value * 255);
    image.data.set([level, level, level, 255], 4 * i);
  });
  const small = new OffscreenCanvas(width, height);
  small.getContext("2d").putImageData(image, 0, 0);
  const context = page.view.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(small, 0, 0, width * SCALE, height * SCALE);
  context.lineWidth = 3;
  context.font = "bold 15px system-ui, sans-serif";
  context.textBaseline = "top";
  for (let step = 0; step < result.taken; step++) {
    // Pixel centres sit at (i + 0.5) screen pixels of SCALE.
    const corners = boxCorners(result.transforms[step], description.image_size).map(([x, y]) => [
      (x + 0.5) * SCALE,
      (y + 0.5) * SCALE,
    ]);
    context.strokeStyle = context.fillStyle = stepColour(step);
    context.setLineDash(step === result.stop ? [8, 6] : []);
    context.beginPath();
    corners.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    context.closePath();
    context.stroke();
    // The number at the top-left corner, kept inside the image.
    const label = step === result.stop ? `${step + 1} end` : String(step + 1);
    const x = Math.min(Math.max(corners[0][0], 0), width * SCALE - context.measureText(label).width - 6);
    const y = Math.min(Math.max(corners[0][1], 0), height * SCALE - 20);
    context.fillRect(x, y, context.measureText(label).width + 6, 19);
    context.fillStyle = "#fff";
    context.fillText(label, x + 3, y + 2);
  }
}

function showReading(result) {
  page.string.replaceChildren(
    ...(result.digits.length ? result.digits : ["(no digits)"]).map((digit, step) => {
      const span = document.createElement("span");
      span.textContent = digit;
      if (result.digits.length) span.style.color = stepColour(step);
      return span;
    }),
  );
  page.digits.replaceChildren(
    ...result.digits.map((digit, step) => {
      const item = document.createElement("li");
      const percent = (100 * result.confidence[step]).toFixed(1);
      item.innerHTML = `<span class="step">step ${step + 1}</span><div class="digit"></div>
        <div class="bar"><div></div></div><div class="probability">${percent} %</div>`;
      item.querySelector(".digit").textContent = digit;
      item.querySelector(".digit").style.color = stepColour(step);
      item.querySelector(".bar div").style.width = `${percent}%`;
      item.querySelector(".bar div").style.background = stepColour(step);
      return item;
    }),
  );
}

// Fits `source` ({rgba, height, width}) to the model, reads it, shows it.
function read(source, name) {
  reading = reading.then(async () => {
    if (!reader) return; // the start failed, and said why
    const fitted = fitImage(source, description.image_size);
    const result = await reader.read(fitted.pixels);
    drawView(fitted.pixels, result);
    showReading(result);
    const [height, width] = description.image_size;
    const changes = [];
    if (fitted.inverted) changes.push("dark digits on a light background inverted to light on dark");
    if (fitted.letterboxed) changes.push(`${source.width}\u00d7${source.height} letterboxed to ${width}\u00d7${height}`);
    page.fit.textContent = `${name}: ${changes.join("; ") || "read as it is"}.`;
    setStatus(READY); // after an image that could not be decoded
    lstmStn.lastResult = {
      source: name,
      ...result,
      input: Array.from(fitted.pixels),
      inverted: fitted.inverted,
      letterboxed: fitted.letterboxed,
    };
    lstmStn.readings++;
  }).catch(report);
  return reading;
}

function padPixels() {
  const {width, height} = page.drawing;
  return {rgba: page.drawing.getContext("2d").getImageData(0, 0, width, height).data, height, width};
}

// A file's own pixels, undecorated (no colour conversion, no premultiplied
// alpha), for the model; a copy fitted onto the pad, for the eye.
async function readFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {colorSpaceConversion: "none", premultiplyAlpha: "none"});
  } catch {
    setStatus(`${file.name}: not an image the browser can decode; expected PNG or JPEG.`, true);
    return;
  }
  const {width, height} = bitmap;
  const context = new OffscreenCanvas(width, height).getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  const source = {rgba: context.getImageData(0, 0, width, height).data, height, width};
  clearPad(true);
  const scale = Math.min(page.drawing.width / width, page.drawing.height / height);
  const [shownWidth, shownHeight] = [width * scale, height * scale];
  page.drawing.getContext("2d").drawImage(
    bitmap, (page.drawing.width - shownWidth) / 2, (page.drawing.height - shownHeight) / 2, shownWidth, shownHeight);
  await read(source, file.name);
}

function enableDrawing() {
  const context = page.drawing.getContext("2d");
  let last = null;
  const point = (event) => {
    const box = page.drawing.getBoundingClientRect();
    return [(event.clientX - box.left) * (page.drawing.width / box.width),
      (event.clientY - box.top) * (page.drawing.height / box.height)];
  };
  page.drawing.addEventListener("pointerdown", (event) => {
    if (showingFile) clearPad(); // a drawing starts on a blank pad
    page.drawing.setPointerCapture(event.pointerId);
    last = point(event);
    context.fillStyle = "#111";
    context.beginPath();
    context.arc(last[0], last[1], (STROKE * SCALE) / 2, 0, 2 * Math.PI);
    context.fill();
  });
  page.drawing.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = point(event);
    Object.assign(context, {strokeStyle: "#111", lineWidth: STROKE * SCALE, lineCap: "round", lineJoin: "round"});
    context.beginPath();
    context.moveTo(...last);
    context.lineTo(...next);
    context.stroke();
    last = next;
  });
  const finish = () => {
    if (!last) return;
    last = null;
    read(padPixels(), "drawing");
  };
  page.drawing.addEventListener("pointerup", finish);
  page.drawing.addEventListener("pointercancel", finish);
}

function enableFiles() {
  const input = document.getElementById("file");
  input.addEventListener("change", () => {
    if (input.files.length) readFile(input.files[0]);
    input.value = ""; // the same file chosen again is read again
  });
  page.pad.addEventListener("dragover", (event) => {
    event.preventDefault();
    page.pad.classList.add("dropping");
  });
  page.pad.addEventListener("dragleave", () => page.pad.classList.remove("dropping"));
  page.pad.addEventListener("drop", (event) => {
    event.preventDefault();
    page.pad.classList.remove("dropping");
    if (event.dataTransfer.files.length) readFile(event.dataTransfer.files[0]);
  });
  document.getElementById("clear").addEventListener("click", clearAll);
}

function report(error) {
  lstmStn.error = String(error?.message ?? error);
  setStatus(`Error: ${lstmStn.error}`, true);
}

async function start() {
  const answer = await fetch("model.json");
  if (!answer.ok) throw new Error(`model.json: ${answer.status} ${answer.statusText}; start the page with lstm-stn web`);
  description = await answer.json();
  const [height, width] = description.image_size;
  for (const canvas of [page.drawing, page.guides, page.view]) {
    canvas.width = width * SCALE;
    canvas.height = height * SCALE;
  }
  clearAll();
  drawGuides();
  enableDrawing();
  enableFiles();
  document.title = `lstm-stn: ${description.name} in the browser`;
  reader = await Reader.load(description);
  const kind = description.strings ? `strings of 1 to ${description.n_digits} digits` : `${description.n_digits} digits`;
  page.footer.textContent = `${description.name}: ${kind} on ${width}\u00d7${height}, run by LiteRT.js on ` +
    "WebAssembly; the image and the model stay on this computer.";
  setStatus(READY);
}

lstmStn.ready = start().catch((error) => {
  report(error);
  throw error;
});
reading = lstmStn.ready.catch(() => {});
