"""Compiled specs against the library models they stand for, in one process.

Each spec is compiled, the library's model (torchvision, transformers) gets
the same weights (copied entry by entry, every shape checked, as in the
equality tests), and forward + backward in training mode is timed, median of
alternating runs with the order swapped every round, so drift in machine load
hits both alike. The ratio is dagnet's time over the library's. BERT-base runs on sequences of
128 tokens, padded at random lengths.

    python bench/bench_library.py [--batch 8] [--repeats 7] [--models vit_b_16 convnext_tiny] [--out FILE]
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
sys.path.insert(0, str(ROOT / "tests"))

import dagnet  # noqa: E402
from references import copy_in_order, torchvision  # noqa: E402


def vision(constructor: str, spec: str, params: dict, size: int = 224):
    """A torchvision classifier and its spec; both called on an image batch."""
    def make(batch: int):
        reference = getattr(torchvision().models, constructor)()
        ours = dagnet.compile(dagnet.load(ROOT / "specs" / f"{spec}.yaml", params))
        copy_in_order(reference, ours)
        x = torch.randn(batch, 3, size, size)
        return ours, reference, (lambda m: m(x)), (lambda m: m(x))
    return make


def bert(length: int = 128):
    """transformers' BERT-base encoder (no pooler) and specs/bert.yaml, on padded token batches."""
    def make(batch: int):
        torchvision()          # transformers imports torchvision, which needs the nms schemas first
        import transformers
        reference = transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False)
        ours = dagnet.compile(dagnet.load(ROOT / "specs" / "bert.yaml"))
        copy_in_order(reference, ours)
        ids = torch.randint(0, 30522, (batch, length))
        types = torch.zeros_like(ids)
        mask = torch.arange(length) < torch.randint(length // 2, length + 1, (batch, 1))
        return (ours, reference, lambda m: m(tokens=ids, token_types=types, mask=mask),
                lambda m: m(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state)
    return make


MODELS = {
    "vit_b_16": vision("vit_b_16", "vit", {}),
    "convnext_tiny": vision("convnext_tiny", "convnext", {}),
    "mobilenet_v3_large": vision("mobilenet_v3_large", "mobilenet_v3", {}),
    "bert_base": bert(),
    "resnet50": vision("resnet50", "resnet50", {}),
}


def step(call, model) -> float:
    start = time.perf_counter()
    out = call(model)
    (out if isinstance(out, torch.Tensor) else out[0]).float().sum().backward()
    return time.perf_counter() - start


def measure(name: str, batch: int, repeats: int) -> str:
    ours, reference, call_ours, call_ref = MODELS[name](batch)
    ours.train(), reference.train()
    runs = {"dagnet": (call_ours, ours), "library": (call_ref, reference)}
    times = {k: [] for k in runs}
    for call, model in runs.values():                    # warm-up
        step(call, model)
    for r in range(repeats):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            call, model = runs[k]
            model.zero_grad(set_to_none=True)
            times[k].append(step(call, model))
    med = {k: statistics.median(v) for k, v in times.items()}
    return f"| {name} | {med['dagnet'] * 1e3:.0f} | {med['library'] * 1e3:.0f} | {med['dagnet'] / med['library']:.3f} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    lines = [f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}. Forward + backward in training mode, batch {args.batch}, "
             f"median of {args.repeats} alternating runs.", "",
             "| model | dagnet (ms) | library (ms) | time ratio |", "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name in args.models:
        lines.append(measure(name, args.batch, args.repeats))
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
