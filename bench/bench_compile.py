"""Compiled specs against hand-written PyTorch, in one process, and compile-time scaling.

Forward+backward time (median of alternating runs, so drift in machine load
hits both alike), activation memory (the bytes autograd saves for the
backward pass), the same under torch.compile, and the time to check and
compile specs of 1,000 to 10,000 nodes.

    python bench/bench_compile.py [--batch 16] [--size 112] [--repeats 15] [--quick] [--out docs/benchmarks.md]
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
from bench.handwritten import FCN8s, DenseNet121, ResNet18, ResNet50  # noqa: E402

MODELS = {  # spec, overrides, hand-written reference
    "resnet18": ("resnet18", {}, ResNet18),
    "resnet50": ("resnet50", {}, ResNet50),
    "densenet121": ("densenet121", {}, DenseNet121),
    "fcn8s (width 32, fc 1024)": ("fcn8s", {"width": 32, "fc": 1024}, lambda: FCN8s(width=32, fc=1024)),
}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def pair(name):
    spec, overrides, reference = MODELS[name]
    ours = dagnet.compile(ROOT / "specs" / f"{spec}.yaml", overrides=overrides)
    ref = reference()
    ref.load_state_dict(dict(zip(ref.state_dict(), ours.state_dict().values())))
    return ours, ref


def step_time(call, x) -> float:
    start = time.perf_counter()
    call(x).sum().backward()
    return time.perf_counter() - start


def timing(calls: dict, x, repeats: int) -> dict:
    times = {k: [] for k in calls}
    for call in calls.values():                         # warm-up
        step_time(call, x)
    for r in range(repeats):                            # alternate, and swap who goes first
        for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            times[k].append(step_time(calls[k], x))
    return {k: statistics.median(v) for k, v in times.items()}


def saved_bytes(call, x, weights) -> int:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call(x)
    out.sum().backward()
    return sum(v for k, v in storages.items() if k not in weights)


def model_rows(names, x, repeats, compiled: bool):
    rows = []
    for name in names:
        ours, ref = pair(name)
        calls = {"dagnet": lambda t, m=ours: m(image=t), "hand": lambda t, m=ref: m(t)}
        if compiled:
            calls = {k: torch.compile(c) for k, c in calls.items()}
        med = timing(calls, x, repeats)
        weights = {p.untyped_storage().data_ptr() for m in (ours, ref) for p in [*m.parameters(), *m.buffers()]}
        memory = [saved_bytes(calls[k], x, weights) for k in ("dagnet", "hand")]
        rows.append(f"| {name} | {med['dagnet'] * 1e3:.0f} | {med['hand'] * 1e3:.0f} | "
                    f"{med['dagnet'] / med['hand']:.3f} | {memory[0] / 2**20:.0f} | {memory[1] / 2**20:.0f} | "
                    f"{memory[0] / memory[1]:.3f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def checkpoint_rows(x):
    """Activation memory and step time of resnet50 with and without `--checkpoint blocks`."""
    ir = dagnet.load(ROOT / "specs" / "resnet50.yaml")
    plain, ckpt = dagnet.compile(ir), dagnet.compile(ir, checkpoint="blocks")
    ckpt.load_state_dict(plain.state_dict())
    weights = {p.untyped_storage().data_ptr() for m in (plain, ckpt) for p in [*m.parameters(), *m.buffers()]}
    calls = {"plain": lambda t: plain(image=t), "checkpointed": lambda t: ckpt(image=t)}
    memory = {k: saved_bytes(c, x, weights) for k, c in calls.items()}
    med = timing(calls, x, 3)
    row = (f"| resnet50 | {memory['plain'] / 2**20:.0f} | {memory['checkpointed'] / 2**20:.0f} | "
           f"{1 - memory['checkpointed'] / memory['plain']:.0%} | {med['checkpointed'] / med['plain']:.2f} |")
    print(row, file=sys.stderr, flush=True)
    return [row]


def scaling_rows(sizes):
    rows = []
    for n in sizes:
        text = ("dagnet: 1\nname: chain\ninputs:\n  x: {shape: [16, H]}\nnodes:\n  body:\n    in: x\n"
                "    seq: conv1d(16, 3, padding=1) -> batch_norm -> relu -> conv1d(16, 1)\n"
                f"    repeat: {n // 5}\n    connect: residual\noutputs: [body]\n")
        start = time.perf_counter()
        ir = dagnet.load(text)
        checked = time.perf_counter()
        dagnet.compile(ir)
        done = time.perf_counter()
        rows.append(f"| {len(ir.graph) - 1:,} | {checked - start:.2f} | {done - checked:.2f} | {done - start:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


HEADER = ["| model | dagnet (ms) | hand-written (ms) | time ratio | dagnet saved (MiB) | "
          "hand-written saved (MiB) | memory ratio |", "|---|---:|---:|---:|---:|---:|---:|"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="resnet18 only, no torch.compile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    names = ["resnet18"] if args.quick else list(MODELS)
    lines = ["## Compiled specs vs hand-written PyTorch (CPU)", "",
             f"Machine: {machine()}. Forward + backward in training mode, batch {args.batch}, "
             f"{args.size}x{args.size} images, median of {args.repeats} alternating runs; memory is the "
             "activation memory autograd saves for the backward pass. Produced by "
             "`python bench/bench_compile.py` (`make bench`).", "", *HEADER, *model_rows(names, x, args.repeats, False)]
    if not args.quick:
        lines += ["", "Under `torch.compile` (inductor), resnet18:", "", *HEADER,
                  *model_rows(["resnet18"], x, args.repeats, True)]
        lines += ["", f"Activation checkpointing (`--checkpoint blocks`), batch {args.batch}, "
                  f"{args.size}x{args.size}:", "",
                  "| model | saved without (MiB) | saved with (MiB) | cut | time ratio |",
                  "|---|---:|---:|---:|---:|", *checkpoint_rows(x)]
    lines += ["", "Compile time against spec size (a residual stack of conv1d blocks):", "",
              "| nodes | check (s) | emit (s) | total (s) |", "|---:|---:|---:|---:|",
              *scaling_rows([1000, 2500, 5000, 10000])]
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
