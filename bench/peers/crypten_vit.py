#!/usr/bin/env python3
"""The MPCViT network of a model directory run under CrypTen 0.4.1, two
processes on loopback, for a side-by-side comparison with mpcvit on the same
checkpoint.

The model directory is what `mpcvit-bench export` writes: `manifest.json`
(shapes, per-head attention table, GeLU), `model.safetensors` (the paper's
state-dict names) and `reference.json` (a fixed input and the `model`
crate's plaintext logits). The script

1. builds the network in plain PyTorch (float64) from the state dict and the
   manifest's head table, and checks it reproduces the Rust plaintext logits
   (the same weights, the same per-head ReLU-Softmax / ScaleAttn mask, the
   same GeLU) before anything is timed;
2. runs it in CrypTen with `crypten.mpc.run_multiprocess(2)` (gloo over
   loopback TCP, one torch thread per process): rank 0 holds the weights
   (encrypted), rank 1 the input; each head's kind selects its operators
   (ReLU-Softmax heads batched into one tensor: ReLU, row sum, reciprocal;
   ScaleAttn heads: a public 1/N);
3. times `--runs` inferences after one warm-up, reads CrypTen's communication
   log (rounds = communication calls; bytes sent per rank = half the logged
   bytes, which count an all_reduce's sent and received elements) and
   compares the decrypted logits with the plaintext ones;
4. prints a summary and, with `--csv`, appends one row in the format of
   `mpcvit_bench::report` (`crypten.csv`).

Usage (bench/peers/run-crypten.sh does all of it):

    python crypten_vit.py MODEL_DIR [--runs 3] [--csv bench/results/crypten.csv]
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

import crypten
import crypten.mpc as mpc
from crypten.config import cfg


def load(model_dir):
    with open(os.path.join(model_dir, "manifest.json")) as f:
        manifest = json.load(f)
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    with open(os.path.join(model_dir, "reference.json")) as f:
        ref = json.load(f)
    return manifest, sd, ref


class Shapes:
    def __init__(self, m):
        self.c = m["dim"]
        self.heads = m["heads"]
        self.d = self.c // self.heads
        self.depth = m["depth"]
        self.p = m["patch_size"]
        self.s = m["image_size"]
        self.k = m["in_channels"]
        self.n = (self.s // self.p) ** 2 + 1
        self.ln_eps = m.get("layer_norm_eps", 1e-5)
        self.rs_eps = m.get("relu_softmax_eps", 1e-9)
        self.gelu = m.get("gelu", "erf")
        self.attention = m["attention"]
        if m.get("beta"):
            raise SystemExit("MPCViT+ beta masks are not ported to this script")
        for row in self.attention:
            for kind in row:
                if kind not in ("relu_softmax", "scale_attn"):
                    raise SystemExit(f"head kind {kind!r} is not ported (relu_softmax, scale_attn)")


def block(i, name):
    return f"classifier.blocks.{i}.{name}"


def forward(x, sd, sh, ops):
    """The network over an abstract backend `ops` (plain torch or CrypTen):
    the same sequence of operations in both, so the plaintext run checks the
    port and the secure run times exactly that."""
    c, n, d, heads = sh.c, sh.n, sh.d, sh.heads
    # Tokenizer: conv k=s=p with bias, 64 patches → [64, C]; class token; positions.
    t = ops.conv(x, sd["tokenizer.conv_layers.0.0.weight"], sd["tokenizer.conv_layers.0.0.bias"], sh.p)
    t = t.reshape(c, n - 1).t()
    t = ops.cat([sd["classifier.class_emb"].reshape(1, c), t])
    t = t + sd["classifier.positional_emb"].reshape(n, c)
    rs_of = lambda row: [h for h, k in enumerate(row) if k == "relu_softmax"]
    for i in range(sh.depth):
        y = ops.layer_norm(t, sd[block(i, "pre_norm.weight")], sd[block(i, "pre_norm.bias")], sh.ln_eps)
        qkv = ops.linear(y, sd[block(i, "self_attn.qkv.weight")], None)  # [N, 3C]
        q = qkv[:, 0:c].reshape(n, heads, d).permute(1, 0, 2)  # [H, N, d]
        k = qkv[:, c : 2 * c].reshape(n, heads, d).permute(1, 0, 2)
        v = qkv[:, 2 * c : 3 * c].reshape(n, heads, d).permute(1, 0, 2)
        scores = q.matmul(k.transpose(1, 2)) * (d**-0.5)  # [H, N, N]
        rs = rs_of(sh.attention[i])
        sa = [h for h in range(heads) if h not in rs]
        outs = [None] * heads
        if rs:
            s_rs = ops.index(scores, rs)
            r = s_rs.relu()
            denom = r.sum(dim=-1, keepdim=True) + sh.rs_eps
            a = r * ops.reciprocal(denom)
            o = a.matmul(ops.index(v, rs))
            for j, h in enumerate(rs):
                outs[h] = o[j]
        if sa:
            a = ops.index(scores, sa) * (1.0 / n)
            o = a.matmul(ops.index(v, sa))
            for j, h in enumerate(sa):
                outs[h] = o[j]
        concat = ops.cat(outs, dim=1)  # [N, C], head h in columns h·d..
        t = t + ops.linear(concat, sd[block(i, "self_attn.proj.weight")], sd[block(i, "self_attn.proj.bias")])
        z = ops.layer_norm(t, sd[block(i, "norm1.weight")], sd[block(i, "norm1.bias")], sh.ln_eps)
        hdn = ops.linear(z, sd[block(i, "linear1.weight")], sd[block(i, "linear1.bias")])
        hdn = ops.gelu(hdn, sh.gelu)
        t = z + ops.linear(hdn, sd[block(i, "linear2.weight")], sd[block(i, "linear2.bias")])
    t = ops.layer_norm(t, sd["classifier.norm.weight"], sd["classifier.norm.bias"], sh.ln_eps)
    return ops.linear(t[0:1], sd["classifier.fc.weight"], sd["classifier.fc.bias"]).reshape(-1)


class Plain:
    """float64 torch."""

    @staticmethod
    def conv(x, w, b, p):
        return torch.nn.functional.conv2d(x, w, b, stride=p)

    @staticmethod
    def cat(ts, dim=0):
        return torch.cat(ts, dim=dim)

    @staticmethod
    def linear(x, w, b):
        y = x.matmul(w.t())
        return y if b is None else y + b

    @staticmethod
    def layer_norm(x, w, b, eps):
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * w + b

    @staticmethod
    def index(t, idx):
        return t[idx]

    @staticmethod
    def reciprocal(x):
        return 1.0 / x

    @staticmethod
    def gelu(x, kind):
        if kind == "quad":
            return 0.125 * x * x + 0.25 * x + 0.5
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class Secure:
    """CrypTen: weights are CrypTensors (rank 0's), public constants stay
    plain (the scalings, eps)."""

    @staticmethod
    def conv(x, w, b, p):
        # [1, K, S, S] * [C, K, p, p] → [1, C, g, g], then bias per channel.
        y = x.conv2d(w, stride=p)
        return y + b.reshape(1, -1, 1, 1)

    @staticmethod
    def cat(ts, dim=0):
        return crypten.cat(ts, dim=dim)

    @staticmethod
    def linear(x, w, b):
        y = x.matmul(w.t())
        return y if b is None else y + b

    @staticmethod
    def layer_norm(x, w, b, eps):
        mean = x.mean(dim=-1, keepdim=True)
        xc = x - mean
        var = (xc * xc).mean(dim=-1, keepdim=True)
        return xc * (var + eps).inv_sqrt() * w + b

    @staticmethod
    def index(t, idx):
        return crypten.stack([t[h] for h in idx])

    @staticmethod
    def reciprocal(x):
        return x.reciprocal()

    @staticmethod
    def gelu(x, kind):
        if kind == "quad":
            return x.square() * 0.125 + x * 0.25 + 0.5
        return x * 0.5 * ((x * (1.0 / math.sqrt(2.0))).erf() + 1.0)


def secure_run(model_dir, runs, threads):
    torch.set_num_threads(threads)
    manifest, sd, ref = load(model_dir)
    sh = Shapes(manifest)
    rank = crypten.comm.get().get_rank()
    # Rank 0 is the model owner, rank 1 the client.
    sd_enc = {k: crypten.cryptensor(v.float() if rank == 0 else torch.zeros_like(v.float()), src=0) for k, v in sd.items()
              if not k.endswith(("alpha", "beta"))}
    x = torch.tensor(ref["input"], dtype=torch.float32).reshape(1, sh.k, sh.s, sh.s)
    x_enc = crypten.cryptensor(x if rank == 1 else torch.zeros_like(x), src=1)
    times, stats = [], []
    for r in range(runs + 1):
        crypten.comm.get().reset_communication_stats()
        t0 = time.perf_counter()
        logits = forward(x_enc, sd_enc, sh, Secure)
        # Opening the result is part of an inference (mpcvit's client adds
        # the two output shares).
        out = logits.get_plain_text()
        dt = time.perf_counter() - t0
        st = crypten.comm.get().get_communication_stats()
        if r > 0:  # the first run warms up
            times.append(dt)
            stats.append(st)
    return {
        "rank": rank,
        "times": times,
        "rounds": [s["rounds"] for s in stats],
        "bytes": [s["bytes"] for s in stats],
        "logits": out.tolist(),
    }


def mpcvit_row(path, mu, gelu):
    """The latest loopback (`link` none) run of vit_7_4_32 at μ with `gelu`."""
    import csv

    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f)
                if r["model"].startswith("vit_7_4_32") and abs(float(r["mu"]) - mu) < 1e-9
                and r["gelu"] == gelu and r["link"] == "none"]
    return rows[-1] if rows else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--runs", type=int, default=3, help="timed inferences after one warm-up")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--csv", help="append a row (mpcvit_bench::report's crypten.csv)")
    ap.add_argument("--machine", default="", help="machine description for the row")
    ap.add_argument("--mpcvit-csv", help="mpcvit's e2e.csv: print the ratios to its latest loopback run of this model")
    a = ap.parse_args()

    manifest, sd, ref = load(a.model_dir)
    sh = Shapes(manifest)
    sd64 = {k: v.double() for k, v in sd.items()}
    x = torch.tensor(ref["input"], dtype=torch.float64).reshape(1, sh.k, sh.s, sh.s)
    with torch.no_grad():
        plain = forward(x, sd64, sh, Plain)
    rust = torch.tensor(ref["logits"], dtype=torch.float64)
    port_err = (plain - rust).abs().max().item()
    heads = [k for row in sh.attention for k in row]
    print(f"model {manifest['name']}: {heads.count('relu_softmax')} of {len(heads)} heads ReLU-Softmax, GeLU {sh.gelu}")
    print(f"torch port vs the model crate's plaintext logits: max |Δ| = {port_err:.2e}")
    if port_err > 1e-3 * max(1.0, rust.abs().max().item()):
        raise SystemExit("the PyTorch port does not reproduce the model crate: not timing a different network")

    cfg.communicator.verbose = True
    run = mpc.run_multiprocess(world_size=2)(secure_run)
    results = run(a.model_dir, a.runs, a.threads)
    if not results or any(r is None for r in results):
        raise SystemExit("a CrypTen process failed")
    by_rank = {r["rank"]: r for r in results}
    lat = statistics.median(max(by_rank[0]["times"][i], by_rank[1]["times"][i]) for i in range(a.runs))
    rounds = by_rank[0]["rounds"][-1]
    # CrypTen's log counts an all_reduce as 2·n elements per party, what it
    # sends plus what it receives (communicator.py, `_logging`); with two
    # parties every opening is an all_reduce, so a party *sends* half of its
    # logged bytes, which is what mpcvit's "bytes sent per party" counts.
    logged0, logged1 = by_rank[0]["bytes"][-1], by_rank[1]["bytes"][-1]
    b0, b1 = logged0 / 2, logged1 / 2
    secure = torch.tensor(by_rank[0]["logits"], dtype=torch.float64)
    err = (secure - plain).abs().max().item()
    same = int(secure.argmax()) == int(plain.argmax())
    print(f"CrypTen {crypten.__version__ if hasattr(crypten, '__version__') else '0.4.1'}, torch {torch.__version__}, "
          f"2 processes on loopback (gloo), {a.threads} thread(s) each, provider {cfg.mpc.provider}")
    print(f"latency (median of {a.runs}, after a warm-up): {lat:.3f} s  (runs: "
          + ", ".join(f"{t:.3f}" for t in by_rank[0]["times"]) + ")")
    print(f"communication calls (rounds): {rounds}; bytes sent: rank 0 {b0:.0f}, rank 1 {b1:.0f} "
          f"(CrypTen's log, sent + received: {logged0:.0f} / {logged1:.0f})")
    print(f"secure vs plaintext logits: max |Δ| = {err:.2e}, same top-1: {same}")
    ours = mpcvit_row(a.mpcvit_csv, heads.count("relu_softmax") / len(heads), sh.gelu) if a.mpcvit_csv else None
    if ours:
        ours_bytes = max(int(ours["bytes_p0"]), int(ours["bytes_p1"]))
        print(f"mpcvit on the same checkpoint, loopback ({ours['date']}): {float(ours['latency_s']):.3f} s, "
              f"{ours['rounds']} rounds, {ours_bytes} bytes per party")
        print(f"ratio CrypTen / mpcvit: latency {lat / float(ours['latency_s']):.1f}×, "
              f"rounds {rounds / int(ours['rounds']):.1f}×; mpcvit's bytes are {ours_bytes / max(b0, b1):.2f}× CrypTen's")
    elif a.mpcvit_csv:
        print(f"no loopback run of vit_7_4_32 at this μ and GeLU in {a.mpcvit_csv}: no ratio")
    if a.csv:
        header = "date,machine,peer,model,mu,gelu,latency_s,rounds,bytes_p0,bytes_p1,max_logit_err,top1_same"
        mu = heads.count("relu_softmax") / len(heads)
        machine = a.machine.replace('"', "")
        row = (f"{datetime.datetime.now(datetime.timezone.utc).date().isoformat()},\"{machine}\",crypten-0.4.1,"
               f"{manifest['name']},{mu},{sh.gelu},{lat:.4f},{rounds},{b0:.0f},{b1:.0f},{err:.4e},{str(same).lower()}")
        new = not os.path.exists(a.csv)
        with open(a.csv, "a") as f:
            if new:
                f.write(header + "\n")
            f.write(row + "\n")
        print(f"row appended to {a.csv}")


if __name__ == "__main__":
    main()
