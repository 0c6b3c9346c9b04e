"""The explicit message-passing backward engine against autograd: time and saved memory.

    python bench/bench_backward.py [--batch 16] [--size 112] [--repeats 10] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from bench.bench_compile import machine, write_section  # noqa: E402


def step(model, x):
    start = time.perf_counter()
    model(image=x).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name in ("resnet18", "densenet121"):
        spec = ROOT / "specs" / f"{name}.yaml"
        models = {"autograd": dagnet.compile(spec), "messages": dagnet.compile(spec, backward="messages")}
        models["messages"].load_state_dict(models["autograd"].state_dict())
        x = torch.randn(args.batch, 3, args.size, args.size)
        times = {k: [] for k in models}
        for k, m in models.items():
            step(m, x)
        for _ in range(args.repeats):
            for k, m in models.items():
                times[k].append(step(m, x))
        a, m = (statistics.median(times[k]) * 1e3 for k in ("autograd", "messages"))
        rows.append(f"| {name} | {a:.0f} | {m:.0f} | {m / a:.2f} |")
    text = "\n".join([
        "## Backward engines: autograd vs explicit message passing (forward + backward, CPU)", "",
        f"Machine: {machine()}. Batch {args.batch}, {args.size}x{args.size}, median of {args.repeats} "
        "alternating runs. Produced by `python bench/bench_backward.py`.", "",
        "| model | autograd (ms) | messages (ms) | ratio |", "|---|---:|---:|---:|", *rows]) + "\n"
    print(text)
    if args.out:
        write_section(args.out, "bench_backward", text)


if __name__ == "__main__":
    main()
