#!/usr/bin/env python3
"""The ablation of the search: the searched mask's test accuracy against random masks
of the same μ, each retrained from the teacher's weights with the same KD budget and
seed, so that only the mask differs.

    python3 search/scripts/ablation.py search/runs/fashion-mnist

Reads RUNS/ablation-muX-searched/train.json and RUNS/ablation-muX-randomK/train.json
and prints, per μ, every run, the random masks' mean ± sd, and whether the searched
mask beats their mean by more than their spread (one sd). Exits 1 when a μ has a
searched run but fewer than three finished random runs."""

import json
import statistics
import sys
from pathlib import Path


def acc(path: Path) -> float:
    return 100.0 * json.loads(path.read_text())["test_acc"]


def main() -> int:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "search/runs/fashion-mnist")
    if not runs.is_dir():
        print(f"ablation: {runs} is not a directory", file=sys.stderr)
        return 2
    mus = sorted({p.name.split("-")[1] for p in runs.glob("ablation-mu*-*")})
    incomplete = False
    print("| μ | searched | random masks | mean ± sd | searched − mean | beats by more than sd |")
    print("|---|---|---|---|---|---|")
    for mu in mus:
        searched = runs / f"ablation-{mu}-searched" / "train.json"
        randoms = sorted(runs.glob(f"ablation-{mu}-random*/train.json"))
        if not searched.exists() or len(randoms) < 3:
            incomplete = True
            continue
        s = acc(searched)
        r = [acc(p) for p in randoms]
        mean, sd = statistics.mean(r), statistics.stdev(r)
        every = ", ".join(f"{x:.2f}" for x in r)
        verdict = "yes" if s - mean > sd else "**no**"
        print(f"| {mu[2:]} | {s:.2f}% | {every} | {mean:.2f} ± {sd:.2f} | {s - mean:+.2f} | {verdict} |")
    if incomplete:
        print("ablation: some μ lack the searched run or three random runs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
