// Runs the model's model_web.tflite with LiteRT.js and reads its outputs as
// `lstm-stn predict` does: the digits up to a strings model's end class, each
// digit's probability at its step, and the steps taken with their transforms.

import {Tensor, loadAndCompile, loadLiteRt} from "@litertjs/core";

// Served by `lstm-stn web` from the installed @litertjs/core: no CDN.
const LITERT_WASM = "/node_modules/@litertjs/core/wasm/";
const MODEL_URL = "/model_web.tflite";
const SIGNATURE = "serving_default";
const END_CLASS = 10; // a strings model's class after the last digit (lstm_stn_tf/strings.py)

// Pixel corners (x, y) of one step's sampling grid, as visualize.box_corners:
// theta (2 x 3, row-major) maps the glimpse's corners in normalised
// coordinates [-1, 1] to the image; pixel centres at 0 ... W - 1.
export function boxCorners(theta, [height, width]) {
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([x, y]) => [
    (theta[0] * x + theta[1] * y + theta[2] + 1) * (width - 1) / 2,
    (theta[3] * x + theta[4] * y + theta[5] + 1) * (height - 1) / 2,
  ]);
}

// The digits as text up to the end class (strings.label_string).
function labelString(digits) {
  const end = digits.indexOf(END_CLASS);
  return (end === -1 ? digits : digits.slice(0, end)).join("");
}

export class Reader {
  constructor(model, description) {
    this.model = model;
    this.description = description;
  }

  // LiteRT.js and the model, compiled for the CPU (wasm): the same kernels
  // everywhere, where WebGPU would differ by device.
  static async load(description) {
    await loadLiteRt(LITERT_WASM);
    return new Reader(await loadAndCompile(MODEL_URL, {accelerator: "wasm"}), description);
  }

  // What the model reads in `pixels` (Float32Array H * W in [0, 1]): the
  // string, its digits and their probabilities, the per-step probabilities
  // and transforms, and the steps taken (visualize.steps_taken; `stop`: the
  // step that ended a string).
  async read(pixels) {
    const [height, width] = this.description.image_size;
    const image = new Tensor(pixels, [1, height, width, 1]);
    const outputs = {};
    try {
      const tensors = await this.model.run(SIGNATURE, {image});
      for (const [name, tensor] of Object.entries(tensors)) {
        outputs[name] = Array.from(await tensor.data());
        tensor.delete();
      }
    } finally {
      image.delete();
    }
    const steps = this.description.steps;
    const classes = this.description.strings ? END_CLASS + 1 : END_CLASS; // the digits, and a strings model's end
    const string = labelString(outputs.digits);
    const digits = Array.from(string, Number);
    const probabilities = [];
    for (let start = 0; start < outputs.probabilities.length; start += classes) {
      probabilities.push(outputs.probabilities.slice(start, start + classes));
    }
    const transforms = [];
    for (let step = 0; step < steps; step++) transforms.push(outputs.transforms.slice(6 * step, 6 * step + 6));
    const taken = Math.min(string.length + 1, steps);
    return {
      string,
      digits,
      confidence: digits.map((digit, step) => probabilities[step][digit]),
      probabilities,
      transforms,
      taken,
      stop: this.description.strings ? taken - 1 : null,
    };
  }
}
