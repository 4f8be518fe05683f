// An image as the model's input, by the rules of `lstm-stn predict`
// (lstm_stn_tf/predictor.py: read_images, _grey_pixels, light_background,
// letterbox), step for step, so that the page and Python read the same
// pixels: grey levels, dark digits on a light background inverted, then
// letterboxed to the model's size with Pillow's bilinear resampling in
// float32, aspect kept, centred on black.

// Grey levels (of 255): opaque pixels spread over fewer than this are one ink colour.
const STROKE_CONTRAST = 16;
// The frame of the image whose median grey level is its background.
const BORDER_FRACTION = 0.05;

// Python's round(): halves to even (round(2.5) == 2), unlike Math.round.
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

// Pillow's "L" of an RGB pixel (ITU-R 601-2 luma, in integers, as its
// Convert.c), as a float32 in [0, 1].
function luma(r, g, b) {
  return Math.fround(((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 255);
}

// Grey levels, Float32Array (height * width) in [0, 1], of RGBA pixels
// (Uint8ClampedArray, as canvas ImageData), as predictor._grey_pixels: an
// opaque image's luma; where the opaque pixels are all one colour (strokes on
// a transparent background) the alpha is the ink; else the image composited
// onto black.
export function greyPixels(rgba) {
  const count = rgba.length / 4;
  const grey = new Float32Array(count);
  const alpha = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    grey[i] = luma(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]);
    alpha[i] = Math.fround(rgba[4 * i + 3] / 255);
  }
  if (alpha.every((value) => value === 1)) return grey;
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < count; i++) {
    if (alpha[i] >= 0.5) {
      low = Math.min(low, grey[i]);
      high = Math.max(high, grey[i]);
    }
  }
  if (low === Infinity || Math.fround(Math.fround(high - low) * 255) < STROKE_CONTRAST) return alpha;
  return grey.map((value, i) => Math.fround(value * alpha[i]));
}

// predictor.light_background: the median of the outer frame (5 % of the
// shorter side, at least one pixel; its corners counted twice, as there) is
// above one half.
export function lightBackground(grey, height, width) {
  const border = Math.max(1, roundHalfEven(BORDER_FRACTION * Math.min(height, width)));
  const frame = [];
  for (const rows of [[0, border], [height - border, height]]) {
    for (let y = rows[0]; y < rows[1]; y++) for (let x = 0; x < width; x++) frame.push(grey[y * width + x]);
  }
  for (const columns of [[0, border], [width - border, width]]) {
    for (let y = 0; y < height; y++) for (let x = columns[0]; x < columns[1]; x++) frame.push(grey[y * width + x]);
  }
  frame.sort((a, b) => a - b);
  const middle = frame.length >> 1;
  // numpy's median of float32: the mean of the middle two, in float32.
  const median = frame.length % 2 ? frame[middle] : Math.fround(Math.fround(frame[middle - 1] + frame[middle]) / 2);
  return median > 0.5;
}

// Pillow's precompute_coeffs (Resample.c) for its bilinear filter: for each
// output pixel, the first input pixel it reads and the normalised weights.
function resampleCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // the bilinear filter's support is 1
  const step = 1 / filterScale;
  const coefficients = [];
  for (let out = 0; out < outSize; out++) {
    const centre = (out + 0.5) * scale;
    const first = Math.max(0, Math.trunc(centre - support + 0.5));
    const last = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const weights = [];
    let total = 0;
    for (let x = first; x < last; x++) {
      const weight = Math.max(0, 1 - Math.abs((x - centre + 0.5) * step));
      weights.push(weight);
      total += weight;
    }
    coefficients.push({first, weights: total === 0 ? weights : weights.map((weight) => weight / total)});
  }
  return coefficients;
}

// One pass of Pillow's float32 resampling along rows (`horizontal`) or
// columns: sums in double, stored as float32.
function resamplePass(pixels, height, width, outSize, horizontal) {
  const coefficients = resampleCoefficients(horizontal ? width : height, outSize);
  const [outHeight, outWidth] = horizontal ? [height, outSize] : [outSize, width];
  const out = new Float32Array(outHeight * outWidth);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const {first, weights} = coefficients[horizontal ? x : y];
      let sum = 0;
      for (let k = 0; k < weights.length; k++) {
        sum += (horizontal ? pixels[y * width + first + k] : pixels[(first + k) * width + x]) * weights[k];
      }
      out[y * outWidth + x] = sum;
    }
  }
  return out;
}

// Pillow's resize(..., BILINEAR) of a float32 ("F") image: a horizontal pass,
// then a vertical one, each only where that side changes.
function resize(pixels, height, width, outHeight, outWidth) {
  let resized = pixels;
  if (outWidth !== width) resized = resamplePass(resized, height, width, outWidth, true);
  if (outHeight !== height) resized = resamplePass(resized, height, outWidth, outHeight, false);
  return resized;
}

// predictor.letterbox: scaled to fit (height, width) `size`, its aspect kept,
// centred on black.
export function letterbox(pixels, height, width, size) {
  const [outHeight, outWidth] = size;
  const scale = Math.min(outHeight / height, outWidth / width);
  const fittedWidth = Math.max(1, roundHalfEven(width * scale));
  const fittedHeight = Math.max(1, roundHalfEven(height * scale));
  const fitted = resize(pixels, height, width, fittedHeight, fittedWidth);
  const left = (outWidth - fittedWidth) >> 1;
  const top = (outHeight - fittedHeight) >> 1;
  const canvas = new Float32Array(outHeight * outWidth);
  for (let y = 0; y < fittedHeight; y++) {
    canvas.set(fitted.subarray(y * fittedWidth, (y + 1) * fittedWidth), (top + y) * outWidth + left);
  }
  return canvas;
}

// The model input of an image: Float32Array (H * W) in [0, 1] for `size`
// [H, W], and how it was changed (`inverted`, `letterboxed`), as
// predictor.read_images with background "auto".
export function fitImage({rgba, height, width}, size) {
  let pixels = greyPixels(rgba);
  // Inverted before letterboxing, so that the margins added are the dark background.
  const inverted = lightBackground(pixels, height, width);
  if (inverted) pixels = pixels.map((value) => Math.fround(1 - value));
  const letterboxed = height !== size[0] || width !== size[1];
  if (letterboxed) pixels = letterbox(pixels, height, width, size);
  return {pixels, inverted, letterboxed};
}
