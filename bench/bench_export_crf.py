"""An exported chain CRF against the eager module, in one process.

The spec is a linear layer under a chain CRF (emissions B x T x K, a ragged
mask); its value, the tag marginals, is exported to .pt2 (torch.export) and
.onnx (run by onnxruntime), and each is timed against the eager compiled
module, forward only (inference), median of alternating runs. Outputs are
checked equal first, to 1e-4: the exported path is the exact float32
log-space scan, the eager one the float64 rescaled scan, and over 200 steps
their roundings differ by a few 1e-5. Decoding and the nll are not part of
an exported program yet (issue 18), so they are not here.

    python bench/bench_export_crf.py [--batch 64] [--length 200] [--tags 20] [--repeats 15] [--threads 1]
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
from dagnet.export import export  # noqa: E402

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
    parser.add_argument("--repeats", type=int, default=15)
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
    with tempfile.TemporaryDirectory() as tmp:
        export(model, Path(tmp) / "m.pt2")
        export(model, Path(tmp) / "m.onnx")
        program = torch.export.load(str(Path(tmp) / "m.pt2")).module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(Path(tmp) / "m.onnx"), options)
    feeds = {"x": x.numpy(), "mask": mask.numpy()}
    with torch.no_grad():
        eager = model(x=x, mask=mask)
        torch.testing.assert_close(program(x=x, mask=mask), eager, atol=1e-4, rtol=0)
        np.testing.assert_allclose(session.run(None, feeds)[0], eager.numpy(), atol=1e-4)
        med = median_times({"eager": lambda: model(x=x, mask=mask),
                            ".pt2": lambda: program(x=x, mask=mask),
                            ".onnx (onnxruntime)": lambda: session.run(None, feeds)}, args.repeats)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s); chain CRF "
          f"marginals, B={B}, T={T}, K={args.tags}, ragged mask, forward only, median of {args.repeats}; "
          "outputs equal (1e-4)\n")
    print("| run | ms | time / eager |\n|---|---:|---:|")
    for name, seconds in med.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / med['eager']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
