"""Time of one PyTorch training step of the network `examples/bench_step.rs` times.

The same CCT-layout ViT as the `search` crate (28x28x1, conv patch tokenizer, class token,
learnable positions; blocks `y = x + Proj(Attn(LN_pre(x)))`, `z = LN_1(y)`,
`out = z + Linear2(GeLU(Linear1(z)))`; final LayerNorm, class token, Linear), Softmax heads
written as the paper's code writes them (`softmax(q @ k^T * scale) @ v`), the same loss
(cross-entropy with label smoothing 0.1) and optimiser (AdamW, weight decay 0.05 on weight
matrices and the conv kernel only, lr 1e-3), on a random batch with labels `i mod 10`.

    python search/scripts/torch_step.py --threads 1 --dim 96 --mlp 192

Prints one line: the median and the minimum seconds of a step (forward, backward, AdamW)
over `--steps` steps after two warm-up steps, and the median CPU seconds of the process
per step (on a shared machine the CPU time is the steadier figure). Needs torch (CPU is enough); see
search/README.md for the pinned install command.
"""

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.pre_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, mlp)
        self.linear2 = nn.Linear(mlp, dim)

    def attention(self, x):
        b, n, c = x.shape
        h, d = self.heads, c // self.heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1) * d**-0.5).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        y = x + self.attention(self.pre_norm(x))
        z = self.norm1(y)
        return z + self.linear2(F.gelu(self.linear1(z)))


class Vit(nn.Module):
    def __init__(self, dim, depth, heads, mlp, patch, classes=10, size=28):
        super().__init__()
        n = (size // patch) ** 2 + 1
        self.conv = nn.Conv2d(1, dim, patch, stride=patch)
        self.class_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_emb = nn.Parameter(torch.randn(1, n, dim) * 0.2)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.class_emb.expand(x.shape[0], -1, -1), t], dim=1)
        t = t + self.positional_emb
        for blk in self.blocks:
            t = blk(t)
        return self.fc(self.norm(t)[:, 0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", type=int, default=128)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    net = Vit(args.dim, 4, 4, args.mlp, args.patch)
    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    rest = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.dim() >= 2)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-3,
    )
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.arange(args.batch) % 10
    times, cpu = [], []
    for i in range(args.steps + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    params = sum(p.numel() for p in net.parameters())
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
        f"dim {args.dim}, MLP {args.mlp}, patch {args.patch}, {params} parameters: "
        f"median {statistics.median(times):.3f} s, min {min(times):.3f} s per step, "
        f"CPU {statistics.median(cpu):.3f} s per step"
    )


if __name__ == "__main__":
    main()
