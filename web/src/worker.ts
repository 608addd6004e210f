// The page's worker: file → pixels → the Rust client's preprocessing → two
// shares. Decoding a large image and resizing it can take a while; here it
// never holds up the page.

import type { PrepareRequest, PrepareResponse } from "./messages.js";
import { fixedPointInput, fromRgba, imageHeader } from "./preprocess.js";
import { split } from "./shares.js";

/** Larger files are refused before reading (a phone photo is a few MB). */
export const MAX_FILE_BYTES = 64 << 20;
/** Larger images are refused before decoding: decoding alone would need
 * 4 bytes a pixel. */
export const MAX_PIXELS = 50_000_000;

async function prepare(req: PrepareRequest): Promise<PrepareResponse> {
  const { id, file, spec, fracBits } = req;
  if (file.size > MAX_FILE_BYTES) {
    throw new Error(`the file is ${(file.size / 2 ** 20).toFixed(0)} MiB; this page reads images up to ${MAX_FILE_BYTES / 2 ** 20} MiB`);
  }
  const head = new Uint8Array(await file.slice(0, 1 << 16).arrayBuffer());
  const h = imageHeader(head);
  if (!h) throw new Error("not a PNG or JPEG image (the formats the mpcvit client reads)");
  if (h.width === 0 || h.height === 0) throw new Error(`the ${h.format} image is empty (${h.width} × ${h.height})`);
  const pixels = h.width * h.height;
  if (pixels > MAX_PIXELS) {
    throw new Error(
      `the image is ${h.width} × ${h.height} pixels (${(pixels / 1e6).toFixed(0)} megapixels); this page reads images up to ${MAX_PIXELS / 1e6} megapixels: scale it down first`,
    );
  }
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`the ${h.format} image could not be decoded (damaged or truncated?)`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  if (!ctx) throw new Error("this browser gives no 2D canvas to a worker");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" }).data;
  bitmap.close();
  const decoded = fromRgba(rgba, canvas.width, canvas.height, spec.inChannels);
  const { input, fitted } = fixedPointInput(decoded, spec, fracBits);
  const shares = split(input);
  return { id, ok: true, format: h.format, width: h.width, height: h.height, fitted: fitted.data, input, shares };
}

self.onmessage = async (e: MessageEvent<PrepareRequest>) => {
  let answer: PrepareResponse;
  try {
    answer = await prepare(e.data);
  } catch (err) {
    answer = { id: e.data.id, ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  (self as unknown as Worker).postMessage(answer);
};
