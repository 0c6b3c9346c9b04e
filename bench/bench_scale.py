"""Scaling out on one machine: samples/s with 1 and 2 processes, and memory per process, ddp vs fsdp.

Each configuration trains a spec from scratch with `dagnet train`'s own code in
freshly spawned processes (CPU, gloo, one thread per process) and reports the median epoch time after the first (an epoch
includes its validation pass and checkpoint). Memory per process: the peak
resident set of each process, and what a process holds of the weights and
optimizer state: the whole of both for ddp (as saved in last.pt), its own shard
for fsdp (its file in last.dcp/).

    python bench/bench_scale.py [--epochs 3] [--specs SPEC ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.distributed import launch, world

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(1, "ddp"), (2, "ddp"), (2, "fsdp")]      # one process is the same for either strategy


def bert_tagger(folder: Path) -> Path:
    """specs/bert_crf_tagger.yaml with a softmax head for its CRF: a small BERT-style encoder
    (2 post-norm layers, hidden 64) tagging each frame. fsdp shards no CRF (see sharding.py)."""
    text = (ROOT / "specs/bert_crf_tagger.yaml").read_text()
    crf = """  crf: {op: chain_crf, in: [emissions, mask]}

outputs: [crf]
loss: {op: crf_nll, node: crf, target: labels, mask: mask}"""
    assert crf in text, "specs/bert_crf_tagger.yaml changed: update bench_scale.bert_tagger"
    path = folder / "bert_tagger.yaml"
    path.write_text(text.replace(crf, "\noutputs: [emissions]\n"
                                      "loss: {op: cross_entropy, output: emissions, target: labels, mask: mask}"))
    return path


def worker(spec: str, out: str, strategy: str, epochs: int) -> None:
    """Module-level so that spawned processes can import it: train, then note this process's peak memory."""
    from dagnet.train.from_spec import train
    torch.set_num_threads(1)            # one thread per process, however many processes: the count scales
    train(spec, out, epochs=epochs, flags=[f"strategy={strategy}", "device=cpu"], progress=False)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: KiB
    (Path(out) / f"rss{world()[0]}.json").write_text(json.dumps(peak_mib))


def measure(spec: Path, nproc: int, strategy: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        launch(nproc, worker, str(spec), str(out), strategy, epochs)
        log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        state = load_checkpoint(out / "last.pt")
        samples = _train_size(state)
        rss = [json.loads((out / f"rss{rank}.json").read_text()) for rank in range(nproc)]
        held = (_largest_shard(out / "last.dcp") if strategy == "fsdp"
                else _tensor_bytes(state["model"]) + _tensor_bytes(state["optimizer"]))
    return {"samples/s": samples / statistics.median(r["time"] for r in log[1:]),
            "rss": max(rss), "held": held / 2**20}


def _train_size(state: dict) -> int:
    """Training examples per epoch, from the run's settings (the split is seeded)."""
    from dagnet.data import prepare_data
    from dagnet.train.config import TrainConfig
    config = TrainConfig.from_dict(state["config"])
    return len(prepare_data(config.data, val_split=config.val_split, seed=config.seed).train)


def _largest_shard(folder: Path) -> int:
    """Bytes of tensor data the busiest rank wrote into a torch.distributed.checkpoint folder: its
    shards of the weights and optimizer state (plus any unsharded tensor the checkpoint gave it)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata
    metadata = FileSystemReader(str(folder)).read_metadata()
    per_file: dict[str, int] = {}
    for name, item in metadata.state_dict_metadata.items():
        if isinstance(item, TensorStorageMetadata):
            for chunk in item.chunks:
                file = metadata.storage_data[MetadataIndex(name, chunk.offsets)].relative_path
                per_file[file] = per_file.get(file, 0) + chunk.sizes.numel() * item.properties.dtype.itemsize
    return max(per_file.values())


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--specs", nargs="+", help="spec files (default: specs/resnet_digits.yaml and a BERT-style "
                                                   "tagger made from specs/bert_crf_tagger.yaml)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        specs = [Path(spec) for spec in args.specs] if args.specs else [ROOT / "specs/resnet_digits.yaml",
                                                                         bert_tagger(Path(folder))]
        report(specs, args.epochs)


def report(specs: list[Path], epochs: int) -> None:
    print(f"{epochs} epochs per configuration; samples/s from the median epoch after the first.\n")
    print("| spec | processes | strategy | samples/s | speed-up | peak RSS per process (MiB) "
          "| weights + optimizer state per process (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        base = None
        for nproc, strategy in CONFIGS:
            result = measure(spec, nproc, strategy, epochs)
            base = base or result["samples/s"]
            print(f"| {spec.stem} | {nproc} | {strategy} | {result['samples/s']:.0f} | "
                  f"{result['samples/s'] / base:.2f} | {result['rss']:.0f} | {result['held']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
