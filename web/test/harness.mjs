// What the browser tests share: the project's binaries, processes they
// start (and always stop), free loopback ports, headless Chromium, and
// small PNG files made on the spot.

import { spawn, execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import puppeteer from "puppeteer-core";

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = resolve(WEB, "..");
/** Where the cargo-built binaries are (scripts/web.sh sets it). */
export const BIN = process.env.MPCVIT_BIN_DIR ?? join(ROOT, "target", "debug");
export const CHROMIUM = process.env.MPCVIT_CHROMIUM ?? "/usr/bin/chromium";
export const OUTPUT = join(WEB, "test-output");
export const SAMPLES = join(ROOT, "client", "samples");
export const BUNDLED_MODEL = join(ROOT, "models", "fashion-mnist-mu0.5");

export const bin = (name) => join(BIN, name);

/** Run a project command to completion; its stdout. */
export function run(name, args) {
  return execFileSync(bin(name), args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export function tempDir(label) {
  return mkdtempSync(join(tmpdir(), `mpcvit-web-${label}-`));
}

/** A free port on 127.0.0.1 (closed again; the caller binds it next). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Processes started by a test, stopped by `stopAll` (each by its own pid). */
export class Processes {
  constructor() {
    this.children = [];
  }

  /** Start `name args`; its output is kept (the last 64 KiB) for failures. */
  start(label, name, args, env = {}) {
    const child = spawn(bin(name), args, {
      env: { ...process.env, RUST_LOG: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.label = label;
    child.log = "";
    const keep = (d) => {
      child.log = (child.log + d.toString()).slice(-65536);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
    this.children.push(child);
    return child;
  }

  /** Kill one process (SIGKILL: a party that vanishes) and wait for it. */
  async kill(child) {
    child.kill("SIGKILL");
    await child.exited;
  }

  async stopAll() {
    await Promise.all(
      this.children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        c.kill("SIGTERM");
        const t = setTimeout(() => c.kill("SIGKILL"), 5000);
        await c.exited;
        clearTimeout(t);
      }),
    );
  }

  logs() {
    return this.children.map((c) => `--- ${c.label}\n${c.log}`).join("\n");
  }
}

/** The first line of a child's stdout that matches `re`, within `ms`. */
export function lineOf(child, re, ms) {
  return new Promise((res, rej) => {
    let buf = "";
    const t = setTimeout(() => rej(new Error(`${child.label}: no line matching ${re} within ${ms} ms:\n${child.log}`)), ms);
    const on = (d) => {
      buf += d.toString();
      const m = buf.split("\n").find((l) => re.test(l));
      if (m) {
        clearTimeout(t);
        child.stdout.off("data", on);
        res(m.trim());
      }
    };
    child.stdout.on("data", on);
    child.exited.then(({ code }) => rej(new Error(`${child.label} exited (${code}):\n${child.log}`)));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The SPKI hash Chromium's --ignore-certificate-errors-spki-list takes. */
export function spkiHash(pemPath) {
  const der = new X509Certificate(readFileSync(pemPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

/** Headless Chromium (Debian's), a fresh profile, no background traffic;
 * `closeChromium` closes it and removes the profile. */
export async function launchChromium(extraArgs = []) {
  const profile = tempDir("profile");
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      ...extraArgs,
    ],
  });
  browser.profileDir = profile;
  return browser;
}

export async function closeChromium(browser) {
  if (!browser) return;
  await browser.close();
  rmSync(browser.profileDir, { recursive: true, force: true });
}

/** Every request a page (and its worker) makes, with its body's bytes. */
export async function recordNetwork(page) {
  const requests = [];
  page.on("request", (r) => requests.push({ url: r.url(), method: r.method() }));
  const bodies = [];
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable", { maxPostDataSize: 64 << 20 });
  cdp.on("Network.requestWillBeSent", (e) => {
    const entries = e.request.postDataEntries ?? [];
    const bytes = Buffer.concat(entries.map((x) => Buffer.from(x.bytes ?? "", "base64")));
    bodies.push({ url: e.request.url, bytes });
  });
  return { requests, bodies };
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A PNG (8-bit gray or RGB) of `width × height` from `pixel(x, y)`, which
 * returns a gray value or an [r, g, b]. */
export function png(width, height, channels, pixel) {
  const row = 1 + width * channels;
  const raw = Buffer.alloc(row * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = pixel(x, y);
      if (channels === 1) raw[y * row + 1 + x] = v;
      else for (let c = 0; c < 3; c++) raw[y * row + 1 + 3 * x + c] = v[c];
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = channels === 1 ? 0 : 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
