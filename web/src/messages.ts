// Messages between the page and its worker (worker.ts), which decodes,
// preprocesses and shares the image off the main thread.

import type { InputSpec } from "./preprocess.js";

export interface PrepareRequest {
  id: number;
  file: Blob;
  spec: InputSpec;
  fracBits: number;
}

export type PrepareResponse =
  | {
      id: number;
      ok: true;
      format: string;
      width: number;
      height: number;
      /** Side × side × channels, what the model sees (only the browser sees it). */
      fitted: Uint8Array;
      /** The fixed-point input (tests compare it with the Rust client's). */
      input: BigUint64Array;
      /** Each party's input share, little-endian u64 words. */
      shares: [Uint8Array, Uint8Array];
    }
  | { id: number; ok: false; error: string };
