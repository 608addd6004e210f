// The page in a real browser (Debian's headless Chromium, puppeteer-core)
// against the real processes:
//
// 1. deployed shape: `mpcvit-server certs --web-host`, `split`, `web-token`,
//    the dealer and two `mpcvit-server --party` processes with TLS web
//    listeners, `mpcvit-client page`: the ankle boot classified as the
//    native client classifies it, only the page's origin and the two
//    parties contacted, no request body holding the image's bytes or pixel
//    values; the page's preprocessing equal to the Rust client's on every
//    sample (and on resized RGB images); a wrong token, a file that is no
//    image, a very large image and a large one; party 1 killed.
// 2. `mpcvit-client web`: the one command, its URL, the same answer, and
//    the time from image chosen to result (printed, not asserted).
//
// Screenshots: web/test-output/*.png. Binaries: MPCVIT_BIN_DIR (default
// target/debug); Chromium: MPCVIT_CHROMIUM (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  BUNDLED_MODEL, OUTPUT, Processes, SAMPLES, closeChromium, freePort, launchChromium, lineOf, png, recordNetwork, run,
  sleep, spkiHash, tempDir,
} from "./harness.mjs";

const ANKLE_BOOT = join(SAMPLES, "fashion-mnist-test-0-ankle-boot.png");
const SAMPLE_FILES = readdirSync(SAMPLES).filter((f) => f.endsWith(".png")).map((f) => join(SAMPLES, f));
const MANIFEST = JSON.parse(readFileSync(join(BUNDLED_MODEL, "manifest.json"), "utf8"));
const FRAC_BITS = 16;
mkdirSync(OUTPUT, { recursive: true });

/** Open the page and wait until it has talked to the parties. */
async function openPage(browser, url) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 940 });
  const net = await recordNetwork(page);
  await page.goto(url);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), { timeout: 60_000 });
  return { page, net };
}

/** Give the page a file and wait for its answer (or its error). */
async function choose(page, file) {
  await page.evaluate(() => {
    document.body.dataset.state = "chosen";
  });
  const input = await page.$("#file");
  await input.uploadFile(file);
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), { timeout: 120_000 });
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    top: [...document.querySelectorAll("#top li")].map((li) => ({ label: li.dataset.label, p: Number(li.dataset.probability) })),
    ms: Number(document.getElementById("stats").dataset.ms),
  }));
}

/** The page's worker (its own code, in this browser) on `bytes`: the
 * fixed-point input as decimal i64 strings, and the pixels it fitted. */
async function pagePreprocess(page, bytes) {
  return page.evaluate(
    async (b64, manifest, fracBits) => {
      const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const spec = {
        imageSize: manifest.image_size,
        inChannels: manifest.in_channels,
        mean: manifest.mean.map(Math.fround),
        std: manifest.std.map(Math.fround),
      };
      const w = new Worker("worker.js");
      const r = await new Promise((res) => {
        w.onmessage = (e) => res(e.data);
        w.postMessage({ id: 1, file: new Blob([data]), spec, fracBits });
      });
      w.terminate();
      if (!r.ok) return { error: r.error };
      return { input: Array.from(r.input, (v) => BigInt.asIntN(64, v).toString()), fitted: Array.from(r.fitted) };
    },
    Buffer.from(bytes).toString("base64"),
    MANIFEST,
    FRAC_BITS,
  );
}

/** The Rust client's fixed-point input for a file (`mpcvit-client preprocess`). */
function rustPreprocess(file) {
  const out = JSON.parse(run("mpcvit-client", ["preprocess", file, "--model-dir", BUNDLED_MODEL]));
  assert.equal(out.frac_bits, FRAC_BITS);
  return out.input.map(String);
}

/** Little-endian u64 bytes of decimal i64 strings. */
function wordBytes(values) {
  const b = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => b.writeBigInt64LE(BigInt(v), 8 * i));
  return b;
}

/** Every origin contacted is allowed and both parties were; no body holds
 * the file, a row of its pixels or a row of its fixed-point input. */
function assertPrivate(net, { pageOrigin, parties, file, fitted, input, side }) {
  const allowed = new Set([pageOrigin, ...parties.map((u) => new URL(u).origin)]);
  const origins = new Set(net.requests.map((r) => new URL(r.url).origin));
  for (const o of origins) assert.ok(allowed.has(o), `the page contacted ${o}, not the page or a party`);
  for (const p of parties) {
    const o = new URL(p).origin;
    assert.ok(net.requests.some((r) => new URL(r.url).origin === o && r.method === "POST"), `no call to ${o}`);
  }
  const sent = net.bodies.filter((b) => b.bytes.length > 0);
  assert.ok(sent.some((b) => b.bytes.length >= 8 * side * side), "the shares were sent");
  const fileBytes = readFileSync(file);
  const pixels = Buffer.from(fitted);
  const words = wordBytes(input);
  const needles = [fileBytes];
  for (let y = 0; y < side; y++) {
    const row = pixels.subarray(y * side, (y + 1) * side);
    if (row.filter((v) => v !== 0).length >= 8) needles.push(row);
    const wrow = words.subarray(8 * y * side, 8 * (y + 1) * side);
    needles.push(wrow);
  }
  for (const b of sent) {
    for (const n of needles) assert.equal(b.bytes.indexOf(n), -1, `a request to ${b.url} carries the image's bytes or pixel values`);
  }
}

describe("deployed parties: TLS web listeners, web tokens, mpcvit-client page", () => {
  const procs = new Processes();
  let browser, dir, token, pageUrl, parties, native, party1;

  before(async () => {
    dir = tempDir("deployed");
    const certs = join(dir, "certs");
    run("mpcvit-server", ["certs", "--out", certs, "--web-host", "127.0.0.1"]);
    run("mpcvit-server", ["split", "--model", BUNDLED_MODEL, "--out", join(dir, "model")]);
    const tokens = join(dir, "web-tokens.txt");
    token = run("mpcvit-server", ["web-token", "--tokens", tokens, "--label", "browser test"]).trim();
    assert.match(token, /^mpcvit_[0-9a-f]{64}$/);
    assert.ok(!readFileSync(tokens, "utf8").includes(token), "the token file holds hashes only");
    const [dealer, api0, api1, peer, web0, web1, pagePort] = await Promise.all(Array.from({ length: 7 }, freePort));
    const a = (p) => `127.0.0.1:${p}`;
    const origin = `http://127.0.0.1:${pagePort}`;
    const web = (p) => ["--web-listen", a(p), "--web-tokens", tokens, "--web-origin", origin];
    const common = ["--model", join(dir, "model"), "--certs", certs, "--dealer", a(dealer)];
    procs.start("dealer", "mpcvit-dealer", ["--listen", a(dealer), "--certs", certs]);
    party1 = procs.start("party 1", "mpcvit-server", ["--party", "1", ...common, "--listen", a(api1), "--peer-listen", a(peer), ...web(web1)]);
    procs.start("party 0", "mpcvit-server", ["--party", "0", ...common, "--listen", a(api0), "--peer", a(peer), ...web(web0)]);
    parties = [`https://127.0.0.1:${web0}`, `https://127.0.0.1:${web1}`];
    procs.start("page", "mpcvit-client", ["page", "--listen", a(pagePort), "--party0", parties[0], "--party1", parties[1]]);
    pageUrl = `${origin}/`;
    const nativeArgs = ["--party0", a(api0), "--party1", a(api1), "--certs", certs];
    for (let i = 0; ; i++) {
      try {
        if (/ready=true/.test(run("mpcvit-client", ["models", ...nativeArgs]))) break;
      } catch {
        // not up yet
      }
      assert.ok(i < 600, `the parties did not pair:\n${procs.logs()}`);
      await sleep(200);
    }
    native = JSON.parse(run("mpcvit-client", ["infer", ANKLE_BOOT, "--json", ...nativeArgs]));
    assert.equal(native.top[0].label, "Ankle boot");
    // The browser trusts the parties' certificates (signed by the test's own CA) by their keys.
    const spki = ["party0", "party1"].map((r) => spkiHash(join(certs, `${r}.pem`))).join(",");
    browser = await launchChromium([`--ignore-certificate-errors-spki-list=${spki}`]);
  });

  after(async () => {
    await closeChromium(browser);
    await procs.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  test("classifies the ankle boot as the native client does; only shares leave the browser", async () => {
    const { page, net } = await openPage(browser, `${pageUrl}#token=${token}`);
    assert.equal(await page.evaluate(() => location.hash), "", "the token leaves the address bar");
    const r = await choose(page, ANKLE_BOOT);
    assert.equal(r.state, "done", r.status);
    assert.equal(r.top.length, 5);
    assert.equal(r.top[0].label, "Ankle boot");
    const diff = Math.abs(r.top[0].p - native.top[0].score);
    assert.ok(diff <= 1e-3, `probability ${r.top[0].p} against the native client's ${native.top[0].score}`);
    await page.screenshot({ path: join(OUTPUT, "deployed-ankle-boot.png"), fullPage: true });
    const prep = await pagePreprocess(page, readFileSync(ANKLE_BOOT));
    assertPrivate(net, {
      pageOrigin: new URL(pageUrl).origin, parties, file: ANKLE_BOOT, fitted: prep.fitted,
      input: prep.input, side: MANIFEST.image_size,
    });
    await page.close();
  });

  test("the page's fixed-point input equals the Rust client's (samples, resized RGB images)", async () => {
    const { page } = await openPage(browser, `${pageUrl}#token=${token}`);
    const boot = readFileSync(ANKLE_BOOT);
    const made = join(dir, "made");
    mkdirSync(made, { recursive: true });
    // RGB, not square, down- and up-scaled: the luma, the Triangle filter and the crop.
    const rgb = (w, h, seed) =>
      png(w, h, 3, (x, y) => {
        const v = boot[(x * 7 + y * 13 + seed) % boot.length];
        return [v, (x * 255) / w, (y * 255) / h];
      });
    const files = [...SAMPLE_FILES];
    for (const [w, h, s] of [[61, 47, 1], [300, 200, 2], [20, 13, 3], [28, 90, 4]]) {
      const f = join(made, `rgb-${w}x${h}.png`);
      writeFileSync(f, rgb(w, h, s));
      files.push(f);
    }
    for (const f of files) {
      const ours = await pagePreprocess(page, readFileSync(f));
      assert.ok(!ours.error, `${f}: ${ours.error}`);
      assert.deepEqual(ours.input, rustPreprocess(f), `${f}: the page's input differs from the Rust client's`);
    }
    await page.close();
  });

  test("a wrong token is refused with a clear message", async () => {
    const { page } = await openPage(browser, `${pageUrl}#token=mpcvit_${"0".repeat(64)}`);
    const state = await page.evaluate(() => [document.body.dataset.state, document.getElementById("status").textContent]);
    assert.equal(state[0], "error");
    assert.match(state[1], /refused the web token/);
    assert.match(state[1], /not valid/);
    await page.screenshot({ path: join(OUTPUT, "wrong-token.png") });
    await page.close();
  });

  test("a file that is not an image, a very large image and a large one", async () => {
    const { page } = await openPage(browser, `${pageUrl}#token=${token}`);
    const text = join(dir, "notes.png");
    writeFileSync(text, "these are notes, not a picture\n".repeat(20));
    let r = await choose(page, text);
    assert.equal(r.state, "error");
    assert.match(r.status, /not a PNG or JPEG image/);
    // 64 megapixels, a 60 KB file: refused before decoding, with its size.
    const huge = join(dir, "huge.png");
    writeFileSync(huge, png(8000, 8000, 1, (x, y) => ((x ^ y) & 64 ? 255 : 0)));
    r = await choose(page, huge);
    assert.equal(r.state, "error");
    assert.match(r.status, /8000 × 8000 pixels .* up to 50 megapixels/);
    // 12 megapixels: decoded and resized in the worker; the page keeps
    // answering meanwhile (the longest pause of its main thread is printed).
    const large = join(dir, "large.png");
    writeFileSync(large, png(4000, 3000, 3, (x, y) => [(x * 7) & 255, (y * 5) & 255, ((x + y) * 3) & 255]));
    await page.evaluate(() => {
      window.__longest = 0;
      let last = performance.now();
      window.__beat = setInterval(() => {
        const now = performance.now();
        window.__longest = Math.max(window.__longest, now - last);
        last = now;
      }, 10);
    });
    r = await choose(page, large);
    assert.equal(r.state, "done", r.status);
    const longest = await page.evaluate(() => (clearInterval(window.__beat), window.__longest));
    console.log(`# a 4000 × 3000 image: ${r.ms.toFixed(0)} ms from image to answer; longest main-thread pause ${longest.toFixed(0)} ms`);
    await page.close();
  });

  test("party 1 down: the message names party 1", async () => {
    const { page } = await openPage(browser, `${pageUrl}#token=${token}`);
    await procs.kill(party1);
    const r = await choose(page, ANKLE_BOOT);
    assert.equal(r.state, "error");
    assert.match(r.status, /party 1/);
    assert.doesNotMatch(r.status, /party 0/);
    await page.screenshot({ path: join(OUTPUT, "party-1-down.png") });
    await page.close();
  });
});

describe("mpcvit-client web: one command", () => {
  const procs = new Processes();
  let browser, url, native;

  before(async () => {
    const child = procs.start("mpcvit-client web", "mpcvit-client", ["web"]);
    url = await lineOf(child, /^http:\/\/127\.0\.0\.1:\d+\/#token=mpcvit_[0-9a-f]{64}$/, 300_000);
    native = JSON.parse(run("mpcvit-client", ["infer", ANKLE_BOOT, "--json"]));
    browser = await launchChromium();
  });

  after(async () => {
    await closeChromium(browser);
    await procs.stopAll();
  });

  test("prints a URL whose page classifies the ankle boot", async () => {
    const { page, net } = await openPage(browser, url);
    const origin = new URL(url).origin;
    const { parties } = await page.evaluate(async () => (await fetch("config.json")).json());
    const times = [];
    let r;
    for (let i = 0; i < 5; i++) {
      r = await choose(page, ANKLE_BOOT);
      assert.equal(r.state, "done", r.status);
      times.push(r.ms);
    }
    assert.equal(r.top[0].label, "Ankle boot");
    const diff = Math.abs(r.top[0].p - native.top[0].score);
    assert.ok(diff <= 1e-3, `probability ${r.top[0].p} against the native client's ${native.top[0].score}`);
    times.sort((a, b) => a - b);
    console.log(`# image chosen → result, 5 runs: ${times.map((t) => t.toFixed(0)).join(", ")} ms (median ${times[2].toFixed(0)} ms)`);
    await page.screenshot({ path: join(OUTPUT, "local-ankle-boot.png"), fullPage: true });
    const prep = await pagePreprocess(page, readFileSync(ANKLE_BOOT));
    assertPrivate(net, { pageOrigin: origin, parties, file: ANKLE_BOOT, fitted: prep.fitted, input: prep.input, side: MANIFEST.image_size });
    await page.close();
  });
});
