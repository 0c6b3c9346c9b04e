"""A deployed chain CRF against the eager module, in one process.

A linear layer under a chain CRF (emissions B x T x K, a ragged mask), three queries:
the op's value (the tag marginals), decoding (Viterbi tags) and the nll (per
sequence, partially labelled). Each runs eagerly (dagnet.fields, its fast paths) and
as deployed, through the portable twin (dagnet.fields.portable) that every export
format holds: a torch.export program (.pt2), ONNX (run by onnxruntime) and TorchScript
(.pt), exported as ``dagnet.export`` does. Outputs are checked equal first (marginals
and nll to 1e-5, tags exactly), then timed forward only, median of alternating runs.

    python bench/bench_export_crf.py [--batch 64] [--length 200] [--tags 20] [--repeats 21] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from dagnet.fields.portable import portable  # noqa: E402

SPEC = """dagnet: 1
name: crf-bench
inputs:
  x: {{shape: [T, {features}]}}
  mask: {{shape: [T], dtype: bool}}
nodes:
  emissions: {{op: linear, in: x, out_features: {tags}}}
  crf: {{op: chain_crf, in: [emissions, mask]}}
outputs: [crf]
"""


class Query(torch.nn.Module):
    """One query of the model's CRF on its emissions: "marginals" (the model itself),
    "decode" (tags) or "nll" (per sequence)."""

    def __init__(self, model, query: str):
        super().__init__()
        self.emissions = dagnet.compile(model.dagnet_ir, outputs=["emissions"])
        self.emissions.load_state_dict(model.state_dict(), strict=False)
        self.crf, self.query = model.crf, query

    def forward(self, x, mask, labels):
        emissions = self.emissions(x=x, mask=mask)
        if self.query == "decode":
            return self.crf.decode(emissions, mask)[0]
        if self.query == "nll":
            return self.crf.nll(emissions, labels, mask, "none")
        return self.crf.marginals(emissions, mask)


def deployed(module, example: tuple, folder: Path, threads: int) -> dict:
    """The module in each format, as dagnet.export writes it (portable twins, batch and
    length dynamic from 1), loaded back: {format: callable(x, mask, labels)}."""
    import onnxruntime as ort
    module = portable(module).eval()
    dim = torch.export.Dim.AUTO(min=1)
    dynamic = ({0: dim, 1: dim},) * 3
    torch.export.save(torch.export.export(module, example, dynamic_shapes=dynamic), str(folder / "m.pt2"))
    torch.onnx.export(module, example, dynamic_shapes=dynamic, dynamo=True, verbose=False).save(str(folder / "m.onnx"))
    torch.jit.save(torch.jit.script(module), str(folder / "m.pt"))
    program = torch.export.load(str(folder / "m.pt2")).module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / "m.onnx"), options)
    names = [i.name for i in session.get_inputs()]
    scripted = torch.jit.load(str(folder / "m.pt"))

    def onnx(*args):
        feeds = {name: a.numpy() for name, a in zip(names, args)}
        return torch.from_numpy(session.run(None, feeds)[0])
    return {".pt2": program, ".onnx (onnxruntime)": onnx, ".pt (TorchScript)": scripted}


def median_times(calls: dict, repeats: int) -> dict:
    times = {k: [] for k in calls}
    for call in calls.values():                       # warm-up
        call()
    for r in range(repeats):
        for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    torch.manual_seed(0)
    model = dagnet.compile(SPEC.format(features=args.features, tags=args.tags)).eval()
    B, T = args.batch, args.length
    x = torch.randn(B, T, args.features)
    mask = torch.arange(T) < torch.randint(T // 2, T + 1, (B, 1))
    mask[0] = True
    labels = torch.randint(-1, args.tags, (B, T))          # -1: unlabelled, summed out
    example = (torch.randn(2, 16, args.features), torch.ones(2, 16, dtype=torch.bool),
               torch.zeros(2, 16, dtype=torch.long))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s); chain CRF, "
          f"B={B}, T={T}, K={args.tags}, ragged mask, forward only, median of {args.repeats} alternating runs\n")
    print("| query | run | ms | time / eager | equal to eager |\n|---|---|---:|---:|---|")
    for query in ("marginals", "decode", "nll"):
        eager = Query(model, query).eval()
        with tempfile.TemporaryDirectory() as tmp:
            runs = deployed(eager, example, Path(tmp), args.threads)
        with torch.no_grad():
            expected = eager(x, mask, labels)
            equal = {}
            for name, run in runs.items():
                got = run(x, mask, labels)
                equal[name] = bool(torch.equal(got, expected)) if query == "decode" else \
                    bool(np.allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5))
            med = median_times({"eager": lambda: eager(x, mask, labels),
                                **{k: (lambda r=r: r(x, mask, labels)) for k, r in runs.items()}}, args.repeats)
        for name, seconds in med.items():
            same = "-" if name == "eager" else ("yes" if equal[name] else "NO")
            print(f"| {query} | {name} | {seconds * 1e3:.1f} | {seconds / med['eager']:.2f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
