"""`dagnet import` of ONNX files: statements, max abs diff against onnxruntime, import seconds.

    PYTHONPATH=. python -m bench.bench_import_onnx            # prints the table for docs/benchmarks.md
    PYTHONPATH=. python -m bench.bench_import_onnx bert       # the models whose name contains "bert"

Each model is built with random weights (seed 0), in eval mode, exported by
``torch.onnx.export`` (the dynamo exporter; the BERT encoder by both), imported
with ``dagnet.import_model(path)`` (what ``dagnet import FILE.onnx`` runs), and
the compiled spec's output is compared with onnxruntime's on one random input
(the file's static batch of 1). *Seconds* is the import (ONNX load, capture,
fold), export and verification excluded.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _torchvision():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from references import torchvision
    return torchvision()


def resnet50():
    return _torchvision().models.resnet50().eval(), torch.randn(1, 3, 224, 224)


def mobilenet_v3_large():
    return _torchvision().models.mobilenet_v3_large().eval(), torch.randn(1, 3, 224, 224)


def bert_encoder():
    _torchvision()      # transformers imports torchvision, which needs its op schemas first
    import transformers
    config = transformers.BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=1000)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    return Encoder().eval(), torch.randint(0, 1000, (1, 16))


MODELS = [("ResNet-50", resnet50, True), ("MobileNetV3-large", mobilenet_v3_large, True),
          ("BERT encoder (hidden 128, 4 layers)", bert_encoder, True),
          ("BERT encoder (hidden 128, 4 layers)", bert_encoder, False)]


def run(label: str, build, dynamo: bool, tmp: Path) -> dict:
    import onnxruntime as ort

    import dagnet
    torch.manual_seed(0)
    model, x = build()
    path = str(tmp / f"{build.__name__}_{'dynamo' if dynamo else 'torchscript'}.onnx")
    torch.onnx.export(model, (x,), path, dynamo=dynamo, input_names=["x"])
    start = time.perf_counter()
    imported = dagnet.import_model(path)
    seconds = time.perf_counter() - start
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        got = imported.compile()(x).numpy()
    diff = float(np.abs(got - want).max())
    equal = diff <= 1e-4 * max(1.0, float(np.abs(want).max()))
    return {"model": label, "exporter": "dynamo" if dynamo else "TorchScript", "statements": imported.statements(),
            "ops": len(imported.captured.ops), "diff": diff, "equal": equal, "seconds": seconds}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    chosen = [m for m in MODELS if not argv or any(a.lower() in m[1].__name__ for a in argv)]
    print("| model | exporter | statements | captured ops | max abs diff vs onnxruntime | import seconds |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, build, dynamo in chosen:
            r = run(label, build, dynamo, Path(tmp))
            print(f"| {r['model']} | {r['exporter']} | {r['statements']} | {r['ops']} | {r['diff']:.2g}"
                  f"{'' if r['equal'] else ' (differs)'} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
