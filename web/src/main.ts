// The page: picks an image, has the worker preprocess and share it, sends
// one share to each party, adds the two output shares and shows the top 5,
// the costs, and what each party received.

import type { PrepareResponse } from "./messages.js";
import { connect, infer, models, type Model, type Parties } from "./parties.js";
import { inputSpec } from "./preprocess.js";
import { reconstruct } from "./shares.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

type State = "connecting" | "ready" | "working" | "done" | "error";

function status(state: State, text: string) {
  document.body.dataset.state = state;
  const s = $("status");
  s.textContent = text;
  s.className = state === "error" ? "error" : "";
}

/** The token from the URL's fragment (`#token=...`), moved to this tab's
 * session storage and out of the address bar. */
function takeToken(): string {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("mpcvit-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("mpcvit-token") ?? "";
}

const worker = new Worker("worker.js");
let nextId = 1;
function prepare(file: Blob, model: Model): Promise<PrepareResponse> {
  const id = nextId++;
  return new Promise((resolve) => {
    const onMessage = (e: MessageEvent<PrepareResponse>) => {
      if (e.data.id !== id) return;
      worker.removeEventListener("message", onMessage);
      resolve(e.data);
    };
    worker.addEventListener("message", onMessage);
    worker.postMessage({ id, file, spec: inputSpec(model.manifestJson), fracBits: model.fracBits });
  });
}

let parties: Parties | null = null;
let model: Model | null = null;
let partyUrls: string[] = [];

async function connectParties(token: string) {
  model = null;
  parties = connect(partyUrls, token);
  $("parties").textContent = partyUrls.map((u, i) => `party ${i}: ${u}`).join(" · ");
  if (!token) {
    status("error", "No web token: paste the one you were given above (or open the link `mpcvit-client web` printed).");
    return;
  }
  status("connecting", "Asking both parties for their models…");
  try {
    const list = await models(parties);
    if (list.length === 0) throw new Error("the two parties serve no model in common");
    model = list[0];
    const spec = inputSpec(model.manifestJson);
    $("model").textContent = `${model.name} · ${spec.inChannels === 1 ? "grayscale" : "RGB"} ${spec.imageSize}×${spec.imageSize}`;
    status("ready", model.ready ? "Both parties are ready: choose or drop an image." : "The parties are still pairing; an image chosen now waits for them.");
  } catch (err) {
    status("error", err instanceof Error ? err.message : String(err));
  }
}

/** An image of uniform-looking noise from a share: each pixel is the top
 * byte of one ring element (what a party holds looks like this whatever the
 * picture was). */
function drawShare(canvas: HTMLCanvasElement, share: Uint8Array, side: number, channels: number) {
  const plane = side * side;
  const img = new ImageData(side, side);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const element = channels === 1 ? i : c * plane + i;
      img.data[4 * i + c] = share[8 * element + 7];
    }
    img.data[4 * i + 3] = 255;
  }
  draw(canvas, img);
}

function drawInput(canvas: HTMLCanvasElement, pixels: Uint8Array, side: number, channels: number) {
  const img = new ImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    for (let c = 0; c < 3; c++) img.data[4 * i + c] = pixels[i * channels + (channels === 1 ? 0 : c)];
    img.data[4 * i + 3] = 255;
  }
  draw(canvas, img);
}

function draw(canvas: HTMLCanvasElement, img: ImageData) {
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.getContext("2d")!.putImageData(img, 0, 0);
}

function softmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

const fmtBytes = (b: number) => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);

function showTop(labels: string[], logits: number[]) {
  const probs = softmax(logits);
  const order = probs.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0]).slice(0, 5);
  const list = $("top");
  list.replaceChildren(
    ...order.map(([p, i]) => {
      const li = document.createElement("li");
      li.dataset.label = labels[i] ?? `class ${i}`;
      li.dataset.probability = String(p);
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = labels[i] ?? `class ${i}`;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = p.toFixed(3);
      li.append(name, bar, value);
      return li;
    }),
  );
}

async function classify(file: File) {
  const t0 = performance.now();
  if (!parties || !model) {
    await connectParties(($("token") as HTMLInputElement).value.trim());
    if (!parties || !model) return;
  }
  const m = model;
  $("results").hidden = true;
  status("working", `Preprocessing and splitting ${file.name || "the image"} in this browser…`);
  const prep = await prepare(file, m);
  if (!prep.ok) {
    status("error", `${file.name || "The file"}: ${prep.error}`);
    return;
  }
  const spec = inputSpec(m.manifestJson);
  drawInput($("seen"), prep.fitted, spec.imageSize, spec.inChannels);
  drawShare($("share0"), prep.shares[0], spec.imageSize, spec.inChannels);
  drawShare($("share1"), prep.shares[1], spec.imageSize, spec.inChannels);
  $("seen-caption").textContent = `${prep.format} ${prep.width}×${prep.height} → ${spec.imageSize}×${spec.imageSize}`;
  status("working", "Each party computes on its share…");
  try {
    const [a, b] = await infer(parties, m, prep.shares);
    const logits = reconstruct(a.outputShare, b.outputShare, m.fracBits);
    const labels = (JSON.parse(m.manifestJson) as { labels?: string[] }).labels ?? [];
    showTop(labels, logits);
    const elapsed = performance.now() - t0;
    const s0 = a.stats, s1 = b.stats;
    const stats = $("stats");
    stats.dataset.ms = elapsed.toFixed(1);
    stats.textContent =
      `${(elapsed / 1000).toFixed(2)} s from image to answer · sent to each party ${fmtBytes(prep.shares[0].length)} · ` +
      `between the parties ${fmtBytes(Number(s0?.bytesSent ?? 0n))} + ${fmtBytes(Number(s1?.bytesSent ?? 0n))} in ${s0?.rounds ?? "?"} rounds`;
    $("results").hidden = false;
    status("done", "Done: the answer was put together in this browser from the two parties' shares.");
  } catch (err) {
    status("error", err instanceof Error ? err.message : String(err));
  }
}

async function main() {
  const token = takeToken();
  const tokenInput = $("token") as HTMLInputElement;
  tokenInput.value = token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("mpcvit-token", tokenInput.value.trim());
    void connectParties(tokenInput.value.trim());
  });
  const input = $("file") as HTMLInputElement;
  input.addEventListener("change", () => {
    const f = input.files?.[0];
    if (f) void classify(f);
    input.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer?.files[0];
    if (f) void classify(f);
  });
  try {
    const config = (await (await fetch("config.json")).json()) as { parties: string[] };
    partyUrls = config.parties;
  } catch {
    status("error", "config.json (the parties' addresses) could not be read from this page's server");
    return;
  }
  await connectParties(token);
}

void main();
