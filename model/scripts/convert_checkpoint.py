#!/usr/bin/env python3
"""Convert an MPCViT checkpoint of the paper's code (PKU-SEC-Lab/mpcvit) to the `model`
crate's format: a directory with `model.safetensors` and `manifest.json`.

Accepted input: a `.pth` / `.pth.tar` file holding either a bare state dict or a dict with
`state_dict` (timm's CheckpointSaver; `--ema` picks `state_dict_ema`) or `model`; keys may
carry `module.` prefixes (DataParallel / DDP). The shapes (image size, patch, width, depth,
heads, MLP width, classes) are read from the tensors; the per-head attention table from
each block's `self_attn.alpha` (1 = ReLU-Softmax, 0 = ScaleAttn; a block without alpha,
as in the paper's softmax teacher, is all Softmax and then needs `--heads`); the MPCViT+
beta masks from each block's `beta` (`--linear-gelu` checkpoints).

Tensors the paper's classes hold but never use in the forward (LinFormer `self_attn.E` of an
early version; the teacher's `qkv_expand`, `proj_expand`, `dw_conv`, `W`, `kernel_s`,
`kernel_o`, `linear_expand`) are dropped with a note. Anything else unknown is an error.

Examples:

    python3 model/scripts/convert_checkpoint.py mpcvit_cifar10-0.5.pth.tar out/cifar10-0.5 \\
        --dataset cifar10
    python3 model/scripts/convert_checkpoint.py teacher.pth.tar out/teacher --dataset cifar10 --heads 4
    python3 model/scripts/convert_checkpoint.py search.pth.tar out/mu0.7 --dataset cifar10 --rs-ratio 0.7

Needs torch and safetensors (`pip install torch safetensors`).
"""

import argparse
import json
import math
import os
import re
import sys

import torch
from safetensors.torch import save_file

DATASETS = {
    "cifar10": {
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
        "labels": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
    "cifar100": {"mean": [0.5071, 0.4867, 0.4408], "std": [0.2675, 0.2565, 0.2761], "labels": []},
    "tiny_imagenet": {"mean": [0.480, 0.448, 0.397], "std": [0.272, 0.265, 0.274], "labels": []},
}

UNUSED = [
    r"classifier\.blocks\.\d+\.self_attn\.E",
    r"classifier\.blocks\.\d+\.self_attn\.(qkv_expand|proj_expand)\.\d+\.(weight|bias)",
    r"classifier\.blocks\.\d+\.self_attn\.dw_conv\.weight",
    r"classifier\.blocks\.\d+\.self_attn\.(W|kernel_s|kernel_o)",
    r"classifier\.blocks\.\d+\.linear_expand\.\d+\.(weight|bias)",
]

BLOCK_KEYS = [
    "pre_norm.weight", "pre_norm.bias", "self_attn.qkv.weight", "self_attn.proj.weight",
    "self_attn.proj.bias", "self_attn.alpha", "linear1.weight", "linear1.bias", "norm1.weight",
    "norm1.bias", "linear2.weight", "linear2.bias", "beta",
]
TOP_KEYS = [
    "tokenizer.conv_layers.0.0.weight", "tokenizer.conv_layers.0.0.bias", "classifier.class_emb",
    "classifier.positional_emb", "classifier.norm.weight", "classifier.norm.bias",
    "classifier.fc.weight", "classifier.fc.bias",
]


def fail(msg):
    sys.exit(f"convert_checkpoint: {msg}")


def load_checkpoint(path, ema):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # timm checkpoints also pickle the argparse Namespace
        print(f"note: weights-only load failed ({type(e).__name__}); loading with full unpickling, "
              "only do this for checkpoints you trust", file=sys.stderr)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict):
        for key in (["state_dict_ema"] if ema else []) + ["state_dict", "model"]:
            if key in ckpt and isinstance(ckpt[key], dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        fail("no state dict found (expected a dict of tensors, or one under 'state_dict' / 'model')")
    out = {}
    for k, v in ckpt.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def binary(t):
    """The values of `t` as booleans if all are 0 or 1, else (None, (index, value))."""
    vals = t.detach().double().flatten().tolist()
    for i, v in enumerate(vals):
        if v not in (0.0, 1.0):
            return None, (i, v)
    return [v == 1.0 for v in vals], None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--dataset", choices=sorted(DATASETS), help="mean/std (and labels) preset")
    ap.add_argument("--mean", type=float, nargs="+")
    ap.add_argument("--std", type=float, nargs="+")
    ap.add_argument("--labels", help="file with one class name per line")
    ap.add_argument("--name", help="model name in the manifest (default: derived from shapes)")
    ap.add_argument("--heads", type=int, help="heads per block (needed when no block has alpha)")
    ap.add_argument("--gelu", choices=["erf", "quad"], default="erf")
    ap.add_argument("--relu-softmax-eps", type=float, default=1e-5,
                    help="1e-5 in PKU-SEC-Lab/mpcvit; 1e-8 in an earlier version of the code")
    ap.add_argument("--layer-norm-eps", type=float, default=1e-5)
    ap.add_argument("--rs-ratio", type=float,
                    help="binarise a searched (fractional) alpha like train.py --retrain-mode: "
                         "the top rs_ratio of all heads become ReLU-Softmax")
    ap.add_argument("--ema", action="store_true", help="use state_dict_ema when present")
    ap.add_argument("--drop-unknown", action="store_true", help="drop unknown tensors instead of failing")
    args = ap.parse_args()

    sd = load_checkpoint(args.checkpoint, args.ema)

    # Drop tensors the forward never reads.
    kept = {}
    for k, v in sd.items():
        if any(re.fullmatch(p, k) for p in UNUSED):
            print(f"note: dropping {k} {list(v.shape)} (unused by the forward)", file=sys.stderr)
            continue
        kept[k] = v
    sd = kept

    if "classifier.attention_pool.weight" in sd:
        fail("sequence-pooling CCT checkpoints are not the paper's ViT (class token) layout")
    for k in TOP_KEYS:
        if k not in sd:
            fail(f"tensor {k} is missing")

    conv = sd["tokenizer.conv_layers.0.0.weight"]
    dim, in_ch, patch, patch2 = conv.shape
    if patch != patch2:
        fail(f"non-square patch {list(conv.shape)}")
    tokens = sd["classifier.positional_emb"].shape[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        fail(f"positional_emb has {tokens} tokens, not a square grid plus a class token")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"classifier\.blocks\.(\d+)\.", k))), default=-1)
    if depth == 0:
        fail("no classifier.blocks.* tensors")
    mlp = sd["classifier.blocks.0.linear1.weight"].shape[0]
    classes = sd["classifier.fc.weight"].shape[0]

    alphas = [sd.get(f"classifier.blocks.{i}.self_attn.alpha") for i in range(depth)]
    heads = args.heads
    for a in alphas:
        if a is not None:
            if heads is not None and heads != a.shape[1]:
                fail(f"--heads {heads} but alpha has {a.shape[1]} heads")
            heads = a.shape[1]
    if heads is None:
        fail("no block has self_attn.alpha (softmax teacher?): pass --heads")

    if args.rs_ratio is not None:
        # train.py: argsort all alphas, the top (1 - floor((1 - r)·L·H)) become 1, the rest 0.
        flat = torch.cat([a.detach().double().flatten() for a in alphas if a is not None])
        order = torch.argsort(flat)
        flags = torch.zeros_like(flat)
        flags[order[int((1 - args.rs_ratio) * flat.numel()):]] = 1.0
        pos = 0
        for i, a in enumerate(alphas):
            if a is not None:
                alphas[i] = flags[pos:pos + heads].view(1, heads, 1, 1).float()
                sd[f"classifier.blocks.{i}.self_attn.alpha"] = alphas[i]
                pos += heads

    attention = []
    for i, a in enumerate(alphas):
        name = f"classifier.blocks.{i}.self_attn.alpha"
        if a is None:
            attention.append(["softmax"] * heads)
            continue
        if list(a.shape) != [1, heads, 1, 1]:
            fail(f"tensor {name} has shape {list(a.shape)}, expected [1, {heads}, 1, 1]")
        flags, bad = binary(a)
        if flags is None:
            fail(f"tensor {name}: head {bad[0]} has alpha {bad[1]}, not 0 or 1 "
                 "(a search checkpoint? binarise with --rs-ratio)")
        attention.append(["relu_softmax" if f else "scale_attn" for f in flags])

    beta = []
    for i in range(depth):
        name = f"classifier.blocks.{i}.beta"
        b = sd.get(name)
        if b is None:
            beta.append(None)
            continue
        if list(b.shape) != [1, tokens, 1]:
            fail(f"tensor {name} has shape {list(b.shape)}, expected [1, {tokens}, 1]")
        flags, bad = binary(b)
        if flags is None:
            fail(f"tensor {name}: token {bad[0]} has beta {bad[1]}, not 0 or 1")
        beta.append(flags)

    expected = set(TOP_KEYS) | {f"classifier.blocks.{i}.{s}" for i in range(depth) for s in BLOCK_KEYS}
    for k in sorted(set(sd) - expected):
        if args.drop_unknown:
            print(f"note: dropping unknown tensor {k}", file=sys.stderr)
            del sd[k]
        else:
            fail(f"unexpected tensor {k} (use --drop-unknown to drop it)")

    preset = DATASETS.get(args.dataset, {})
    mean = args.mean or preset.get("mean")
    std = args.std or preset.get("std")
    if mean is None or std is None:
        fail("give --dataset or both --mean and --std")
    labels = preset.get("labels", [])
    if args.labels:
        with open(args.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
    if labels and len(labels) != classes:
        labels = []

    manifest = {
        "format_version": 1,
        "name": args.name or f"vit_{depth}_{patch}_{grid * patch}",
        "image_size": grid * patch,
        "in_channels": in_ch,
        "patch_size": patch,
        "dim": dim,
        "depth": depth,
        "heads": heads,
        "mlp_hidden": mlp,
        "num_classes": classes,
        "layer_norm_eps": args.layer_norm_eps,
        "relu_softmax_eps": args.relu_softmax_eps,
        "mean": mean,
        "std": std,
        "labels": labels,
        "gelu": args.gelu,
        "attention": attention,
    }
    if any(b is not None for b in beta):
        manifest["beta"] = beta

    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            fail(f"tensor {k} holds NaN or Inf")
    os.makedirs(args.out_dir, exist_ok=True)
    save_file(tensors, os.path.join(args.out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    rs = sum(k == "relu_softmax" for row in attention for k in row)
    print(f"wrote {args.out_dir}: {manifest['name']}, {depth} blocks x {heads} heads "
          f"({rs} ReLU-Softmax of {depth * heads}), {tokens} tokens, dim {dim}, "
          f"{sum(b is not None for b in beta)} blocks with beta")


if __name__ == "__main__":
    main()
