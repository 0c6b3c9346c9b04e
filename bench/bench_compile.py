"""Compiled specs against hand-written PyTorch: forward+backward time, in one process.

Runs alternate between the two models so that drift in machine load hits both
alike; the ratio (compiled / hand-written) of median times is what counts.

    python bench/bench_compile.py [--batch 16] [--size 112] [--repeats 15] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from bench.handwritten import ResNet18  # noqa: E402


def step_time(model, call, x) -> float:
    start = time.perf_counter()
    out = call(model, x)
    out.sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare(name, ours, reference, x, repeats):
    calls = {"dagnet": lambda m, t: m(image=t), "hand-written": lambda m, t: m(t)}
    models = {"dagnet": ours, "hand-written": reference}
    times = {k: [] for k in models}
    for k in models:                                    # warm-up
        step_time(models[k], calls[k], x)
    for _ in range(repeats):
        for k in models:
            times[k].append(step_time(models[k], calls[k], x))
    med = {k: statistics.median(v) for k, v in times.items()}
    return name, med["dagnet"] * 1e3, med["hand-written"] * 1e3, med["dagnet"] / med["hand-written"]


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    ours = dagnet.compile(ROOT / "specs" / "resnet18.yaml")
    reference = ResNet18()
    reference.load_state_dict(dict(zip(reference.state_dict(), ours.state_dict().values())))
    ours.train(), reference.train()
    rows = [compare("resnet18", ours, reference, x, args.repeats)]
    lines = [
        "## Compiled specs vs hand-written PyTorch (forward + backward, CPU)",
        "",
        f"Machine: {machine()}. Batch {args.batch}, {args.size}x{args.size} images, median of "
        f"{args.repeats} alternating runs. Produced by `python bench/bench_compile.py`.",
        "",
        "| model | dagnet (ms) | hand-written (ms) | ratio |",
        "|---|---:|---:|---:|",
    ] + [f"| {n} | {a:.1f} | {b:.1f} | {r:.3f} |" for n, a, b, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_section(args.out, "bench_compile", text)


def write_section(path: Path, name: str, text: str) -> None:
    """Replace one benchmark's section of the benchmarks page, keeping the others."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = f"{begin}\n{text}{end}"
    if begin in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


if __name__ == "__main__":
    main()
