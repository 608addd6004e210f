// The Rust client's preprocessing (model/src/preprocess.rs with the `image`
// crate), step by step, so that the page shares exactly the tensor
// `mpcvit-client` would:
//
//   RGBA pixels → luma (1 channel: the image crate's colour-space cast, in
//   f32: Σ (v / 255) · k_c with sRGB's luminance row, × 255, rounded) or RGB
//   → when not side × side: shorter side resized
//   to `side` with the image crate's Triangle filter (vertical pass, then
//   horizontal, in f32), centre crop → (v / 255 − mean[c]) / std[c] in f32
//   → CHW → round(x · 2^f) (ties away from zero) as a two's-complement u64.
//
// Every f32 operation of the Rust code is one `Math.fround` of the same
// operation here: an f32 +, −, ×, ÷ is the correctly rounded result of the
// exact one, and so is fround(double result) for f32 inputs (a double holds
// the exact product of two f32 and rounds sums and quotients finely enough),
// so the two agree bit for bit. The decoded pixels are the browser's: equal
// to the Rust decoder's for PNG (lossless; the page asks for no colour
// conversion); JPEG decoders may differ by a level here and there.

const f = Math.fround;

/** What a model's public manifest says about its input. */
export interface InputSpec {
  imageSize: number;
  inChannels: number;
  mean: number[];
  std: number[];
}

/** The input fields of a manifest (JSON text from ListModels). */
export function inputSpec(manifestJson: string): InputSpec {
  const m = JSON.parse(manifestJson) as {
    image_size: number;
    in_channels: number;
    mean: number[];
    std: number[];
  };
  if (m.in_channels !== 1 && m.in_channels !== 3) {
    throw new Error(`the model wants ${m.in_channels} channels; images give 1 or 3`);
  }
  return {
    imageSize: m.image_size,
    inChannels: m.in_channels,
    // serde reads an f32 as the nearest f32 of the decimal's f64
    mean: m.mean.map((v) => f(v)),
    std: m.std.map((v) => f(v)),
  };
}

/** A decoded image: `channels` interleaved 8-bit values per pixel. */
export interface Pixels {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

/** An f32 from its bits. */
function f32Bits(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

/** The luminance row of sRGB (BT.709 primaries, D65) as the image crate
 * derives it (moxcms, in f32): 0.21264784, 0.7151792, 0.07217304. */
const LUMA = [f32Bits(0x3e59c05b), f32Bits(0x3f3715fc), f32Bits(0x3d93cf75)];
const ONE_255TH = f(1 / 255);

/** The image crate's RGB(A) u8 → luma u8 cast: each channel expanded to
 * f32 (v · (1/255)), multiplied by its coefficient and summed in order,
 * then × 255, rounded half away from zero, saturated to 8 bits. */
function luma(r: number, g: number, b: number): number {
  let l = f(f(r * ONE_255TH) * LUMA[0]);
  l = f(l + f(f(g * ONE_255TH) * LUMA[1]));
  l = f(l + f(f(b * ONE_255TH) * LUMA[2]));
  return Math.min(255, Math.max(0, roundHalfAway(f(l * 255))));
}

/** RGBA (as a canvas gives it) to luma or RGB, as the image crate's
 * `to_luma8` / `to_rgb8` (alpha dropped). A gray image decodes to R = G = B,
 * and `luma(v, v, v) = v` for every v, as the Rust client's gray image
 * keeps its values. */
export function fromRgba(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number, channels: number): Pixels {
  const n = width * height;
  const data = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (channels === 1) {
      data[i] = luma(r, g, b);
    } else {
      data[3 * i] = r;
      data[3 * i + 1] = g;
      data[3 * i + 2] = b;
    }
  }
  return { width, height, channels, data };
}

/** Rust's `f32::round`: half away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Normalised weights of the Triangle filter for each output index, as
 * the image crate's `vertical_sample` / `horizontal_sample` compute them. */
function triangleWeights(len: number, newLen: number): { left: number; ws: number[] }[] {
  const ratio = f(len / newLen);
  const sratio = ratio < 1 ? 1 : ratio;
  const support = f(1 * sratio);
  const out = [];
  for (let o = 0; o < newLen; o++) {
    const centre = f(f(o + 0.5) * ratio);
    let left = Math.floor(f(centre - support));
    left = Math.min(Math.max(left, 0), len - 1);
    let right = Math.ceil(f(centre + support));
    right = Math.min(Math.max(right, left + 1), len);
    const c = f(centre - 0.5);
    const ws: number[] = [];
    let sum = 0;
    for (let i = left; i < right; i++) {
      const x = f(f(i - c) / sratio);
      const w = Math.abs(x) < 1 ? f(1 - Math.abs(x)) : 0;
      ws.push(w);
      sum = f(sum + w);
    }
    out.push({ left, ws: ws.map((w) => f(w / sum)) });
  }
  return out;
}

/** The image crate's `resize(.., FilterType::Triangle)`: columns to
 * `newHeight` in f32, then rows to `newWidth`, rounded and clamped to 8 bits. */
export function resizeTriangle(p: Pixels, newWidth: number, newHeight: number): Pixels {
  const { width, height, channels, data } = p;
  if (width === newWidth && height === newHeight) return p;
  const vert = triangleWeights(height, newHeight);
  const tmp = new Float32Array(width * newHeight * channels);
  for (let oy = 0; oy < newHeight; oy++) {
    const { left, ws } = vert[oy];
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let t = 0;
        for (let i = 0; i < ws.length; i++) {
          t = f(t + f(data[((left + i) * width + x) * channels + c] * ws[i]));
        }
        tmp[(oy * width + x) * channels + c] = t;
      }
    }
  }
  const horiz = triangleWeights(width, newWidth);
  const out = new Uint8Array(newWidth * newHeight * channels);
  for (let ox = 0; ox < newWidth; ox++) {
    const { left, ws } = horiz[ox];
    for (let y = 0; y < newHeight; y++) {
      for (let c = 0; c < channels; c++) {
        let t = 0;
        for (let i = 0; i < ws.length; i++) {
          t = f(t + f(tmp[(y * width + left + i) * channels + c] * ws[i]));
        }
        out[(y * newWidth + ox) * channels + c] = roundHalfAway(Math.min(Math.max(t, 0), 255));
      }
    }
  }
  return { width: newWidth, height: newHeight, channels, data: out };
}

/** Shorter side to `side` (aspect kept), then the centre `side × side`. */
export function fit(p: Pixels, side: number): Pixels {
  const { width: w, height: h } = p;
  if (w === side && h === side) return p;
  const scale = (long: number, short: number) => Math.max(Math.floor((side * long) / short), side);
  const [nw, nh] = w <= h ? [side, scale(h, w)] : [scale(w, h), side];
  const r = resizeTriangle(p, nw, nh);
  const left = roundHalfAway((nw - side) / 2);
  const top = roundHalfAway((nh - side) / 2);
  const ch = p.channels;
  const data = new Uint8Array(side * side * ch);
  for (let y = 0; y < side; y++) {
    const from = ((top + y) * nw + left) * ch;
    data.set(r.data.subarray(from, from + side * ch), y * side * ch);
  }
  return { width: side, height: side, channels: ch, data };
}

/** `(v / 255 − mean[c]) / std[c]` in f32, channel-major (CHW). */
export function normalise(p: Pixels, spec: InputSpec): Float32Array {
  const plane = p.width * p.height;
  const out = new Float32Array(p.channels * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < p.channels; c++) {
      const v = p.data[i * p.channels + c];
      out[c * plane + i] = f(f(f(v / 255) - spec.mean[c]) / spec.std[c]);
    }
  }
  return out;
}

/** `round(x · 2^fracBits)` (ties away from zero) as a two's-complement u64. */
export function encodeFixed(x: number, fracBits: number): bigint {
  const v = roundHalfAway(x * 2 ** fracBits);
  return BigInt.asUintN(64, BigInt(v));
}

/** The ring elements the Rust client shares for these pixels. */
export function fixedPointInput(p: Pixels, spec: InputSpec, fracBits: number): {
  input: BigUint64Array;
  fitted: Pixels;
} {
  const fitted = fit(p, spec.imageSize);
  const xs = normalise(fitted, spec);
  const input = new BigUint64Array(xs.length);
  for (let i = 0; i < xs.length; i++) input[i] = encodeFixed(xs[i], fracBits);
  return { input, fitted };
}

/** The formats the Rust client reads, and their size from the header. */
export function imageHeader(bytes: Uint8Array): { format: "PNG" | "JPEG"; width: number; height: number } | null {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length >= 24 && png.every((b, i) => bytes[i] === b)) {
    return { format: "PNG", width: dv.getUint32(16), height: dv.getUint32(20) };
  }
  if (bytes.length >= 4 && bytes[0] === 0xff && bytes[1] === 0xd8) {
    // Walk the segments to the first start-of-frame (SOF0..SOF15 but DHT,
    // JPG and DAC), which holds the size.
    let i = 2;
    while (i + 9 < bytes.length) {
      if (bytes[i] !== 0xff) return null;
      const marker = bytes[i + 1];
      if (marker === 0xff) {
        i += 1;
        continue;
      }
      const len = dv.getUint16(i + 2);
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { format: "JPEG", width: dv.getUint16(i + 7), height: dv.getUint16(i + 5) };
      }
      i += 2 + len;
    }
  }
  return null;
}
