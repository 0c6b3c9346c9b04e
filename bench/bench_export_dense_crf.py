"""An exported dense CRF against the eager module, in one process.

Setting: DeepLab's defaults (bench_dense_crf.py), 21 labels, 5 mean-field
iterations, one 64 x 64 synthetic scene with a DeepLab-like unary. Columns:
the eager ``DenseCRF`` (lattice built with data-sized tables), its portable
twin run eagerly (the static-shape lattice: N(d+1) rows, sort-merge lookups),
and the twin exported with ``torch.export`` (batch, H and W dynamic), saved
and loaded as .pt2; ``--onnx`` adds the ONNX file in onnxruntime. Outputs are
checked equal first (log Q to 1e-3: float32, and 5 iterations of weight-10
kernels amplify the roundings of differently ordered sums). Forward only,
median of alternating runs.

    python bench/bench_export_dense_crf.py [--size 64] [--repeats 15] [--threads 1] [--onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_dense_crf import ITERATIONS, LABELS, deeplab_unary, synthetic_scenes  # noqa: E402
from bench.bench_export_crf import median_times  # noqa: E402
from dagnet.fields.dense_crf import DenseCRF  # noqa: E402
from dagnet.fields.portable import twin  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX file in onnxruntime")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    image = synthetic_scenes(args.size, 1)
    logits = deeplab_unary(image)
    crf = DenseCRF(LABELS, iterations=ITERATIONS).eval()
    portable = twin(crf).eval()
    dims = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    example = (logits.repeat(2, 1, 1, 1), image.repeat(2, 1, 1, 1))   # a batch of 1 would specialise
    program = torch.export.export(portable, example, dynamic_shapes=(dims, dims))
    calls = {"eager DenseCRF": lambda: crf(logits, image), "eager portable twin": lambda: portable(logits, image)}
    with tempfile.TemporaryDirectory() as tmp:
        torch.export.save(program, str(Path(tmp) / "crf.pt2"))
        loaded = torch.export.load(str(Path(tmp) / "crf.pt2")).module()
        calls[".pt2"] = lambda: loaded(logits, image)
        if args.onnx:
            import onnxruntime as ort
            torch.onnx.export(program, example, dynamo=True, verbose=False).save(str(Path(tmp) / "crf.onnx"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(Path(tmp) / "crf.onnx"), options)
            feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), (logits, image))}
            calls[".onnx (onnxruntime)"] = lambda: session.run(None, feeds)
    with torch.no_grad():
        eager = crf(logits, image)
        for name, call in list(calls.items())[1:]:
            out = call()
            got = out[0] if isinstance(out, list) else out.numpy()
            np.testing.assert_allclose(got, eager.numpy(), atol=1e-3, err_msg=name)
        med = median_times(calls, args.repeats)
    print(f"torch {torch.__version__}, {args.threads} thread(s); dense CRF forward, B=1, {args.size}x{args.size}, "
          f"L={LABELS}, {ITERATIONS} iterations, median of {args.repeats}; outputs equal (1e-3)\n")
    print("| run | ms | time / eager DenseCRF |\n|---|---:|---:|")
    for name, seconds in med.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / med['eager DenseCRF']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
