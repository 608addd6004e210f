// Additive sharing over Z_2^64, as the Rust client's `model::split_input`
// (mpc-core's `share_secret`): share 0 is uniformly random, share 1 = x − share 0
// (mod 2^64); each party gets one and learns nothing from it. The random
// words come from `crypto.getRandomValues` (the Rust client expands a seed
// from the operating system with its PRG; only the shares travel, so both
// are the same protocol). Wire form: little-endian u64 words.

const MASK = (1n << 64n) - 1n;

/** Two shares of `input`, as the bytes of each party's `input_share`. */
export function split(input: BigUint64Array): [Uint8Array, Uint8Array] {
  const r = new BigUint64Array(input.length);
  // getRandomValues fills at most 65536 bytes per call.
  for (let i = 0; i < r.length; i += 8192) {
    crypto.getRandomValues(r.subarray(i, Math.min(i + 8192, r.length)));
  }
  const a = new Uint8Array(8 * input.length);
  const b = new Uint8Array(8 * input.length);
  const da = new DataView(a.buffer);
  const db = new DataView(b.buffer);
  for (let i = 0; i < input.length; i++) {
    da.setBigUint64(8 * i, r[i], true);
    db.setBigUint64(8 * i, (input[i] - r[i]) & MASK, true);
  }
  r.fill(0n);
  return [a, b];
}

/** The little-endian u64 words of a share. */
export function words(bytes: Uint8Array): BigUint64Array {
  if (bytes.length % 8 !== 0) throw new Error(`a share of ${bytes.length} bytes is not whole words`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new BigUint64Array(bytes.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = dv.getBigUint64(8 * i, true);
  return out;
}

/** Add two output shares and decode them at `fracBits` fractional bits. */
export function reconstruct(a: Uint8Array, b: Uint8Array, fracBits: number): number[] {
  const wa = words(a);
  const wb = words(b);
  if (wa.length !== wb.length) throw new Error("the parties' output shares differ in length");
  const scale = 2 ** fracBits;
  return Array.from(wa, (v, i) => Number(BigInt.asIntN(64, v + wb[i])) / scale);
}
