"""Evaluation and prediction with a trained model: metrics, PNG masks, label sequences, class probabilities."""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dagnet.data import DataError, collate
from dagnet.settings import DEVICES, ConfigError
from dagnet.train.distributed import all_reduce_sum, local_rank
from dagnet.train.metrics import Task, scorer_for
from dagnet.train.objective import Objective


def model_inputs(model: nn.Module) -> tuple[str, ...] | None:
    """The keyword inputs of model.forward, or None if it takes **kwargs (then it gets the whole batch)."""
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_inputs(inputs: tuple[str, ...] | None, example: dict) -> None:
    missing = [name for name in inputs or () if name not in example]
    if missing:
        raise DataError(f"the model takes input {missing[0]!r}, which the data lacks (keys: {', '.join(example)})")


def forward(model: nn.Module, batch: dict[str, Tensor], inputs: tuple[str, ...] | None,
            names: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The model's outputs by name. A model that returns one tensor (a plain ``nn.Module``, or a
    compiled spec with one output) gives the one output the losses read, `names`."""
    outputs = model(**(batch if inputs is None else {name: batch[name] for name in inputs}))
    if isinstance(outputs, dict):
        return outputs
    if isinstance(outputs, Tensor) and len(names) == 1:
        return {names[0]: outputs}
    found = f"a {type(outputs).__name__}" if not isinstance(outputs, Tensor) else "one tensor"
    raise DataError(f"the model returned {found}, but the losses read the outputs {', '.join(names) or '(none)'}: "
                    "return a dict of named outputs")


def output_names(objective: Objective | None, task: Task | None) -> tuple[str, ...]:
    """The outputs read from the model: by the losses, else by the task's metrics."""
    return objective.outputs if objective is not None else (task.output,) if task is not None else ()


def resolve_device(name: str | torch.device, processes: int = 1) -> torch.device:
    """auto (CUDA if present, else the CPU), cpu, cuda, cuda:N or mps; one that is not here is a ConfigError."""
    name = str(name)
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError("device", f"must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} asked for, but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "mps asked for, but this machine has no Apple-silicon GPU (MPS) that torch "
                                    "can use: use cpu, or auto")
    if name == "cuda" and processes > 1:
        name = f"cuda:{local_rank()}"
    return torch.device(name)


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader,
    objective: Objective | None,
    task: Task | None,
    device: torch.device,
    autocast: Callable = contextlib.nullcontext,
    scorer: nn.Module | None = None,
) -> dict:
    """Mean loss terms and task metrics over a loader, summed over all processes.

    `model` runs the forward pass (it may be a compiled wrapper); `scorer` is the
    plain module whose CRF nodes decode (defaults to `model`).
    """
    model.eval()
    inputs, scorer, names = model_inputs(scorer or model), scorer or model, output_names(objective, task)
    sums, count, confusion, kind = {}, 0, None, None
    for batch in loader:
        batch = to_device(batch, device)
        n = len(next(iter(batch.values())))
        with autocast():
            outputs = forward(model, batch, inputs, names)
            parts = objective(outputs, batch)[1] if objective is not None else {}
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * n
        count += n
        if task is not None:
            scores, target = outputs[task.output], batch[task.target]
            kind = kind or task.resolve_kind(scores, target)
            confusion = confusion or scorer_for(task, kind, outputs, batch, scorer, device)
            if kind == "parse":     # a tree per sentence: attachment scores over the mask
                confusion.update(task.predict(scorer, outputs, batch), target, batch.get(task.mask))
            else:
                confusion.update(task.predict(scorer, outputs, batch), target, task.valid(batch))
    totals = all_reduce_sum(torch.tensor([*sums.values(), count], dtype=torch.float64, device=device)).tolist()
    result = {key: total / max(totals[-1], 1) for key, total in zip(sums, totals)}
    if confusion is not None:
        all_reduce_sum(confusion.counts)
        result |= confusion.summary(kind)
        if kind != "parse":
            result["confusion"] = confusion.counts.tolist()
    return result


def _loader(data: Dataset | DataLoader, batch_size: int, collate_fn: Callable) -> DataLoader:
    return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, collate_fn=collate_fn)


def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    task: Task | None,
    *,
    objective: Objective | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    collate_fn: Callable = collate,
) -> dict:
    """Metrics of `model` on `data`: with a task its metrics and confusion matrix, with an objective the losses."""
    device = resolve_device(device)
    return run_evaluation(model.to(device), _loader(data, batch_size, collate_fn), objective, task, device)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Dataset | DataLoader,
    task: Task,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    collate_fn: Callable = collate,
    class_names: list[str] | None = None,
) -> Path:
    """Write predictions for every example of `data`, in order, and return the file or folder written.

    classification: predictions.csv (index, label, p_0 .. p_{C-1}); segmentation:
    masks/<index>.png holding class ids; sequence: predictions.jsonl, one
    {"index", "labels"} per line, cut to the mask; parse: predictions.jsonl, one {"index", "heads",
    "relations"} per line (heads as in CoNLL-U: 0 the root). Targets need not be present.
    class_names (the names of the class ids, from the data's preprocessing) add a
    `class` column to predictions.csv and a "classes" list to each JSON line.
    """
    device, out_dir = resolve_device(device), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).eval()
    inputs, index, writer = model_inputs(model), 0, None
    for batch in _loader(data, batch_size, collate_fn):
        batch = to_device(batch, device)
        outputs = forward(model, batch, inputs, (task.output,))
        scores = outputs[task.output]
        kind = task.resolve_kind(scores, batch.get(task.target))
        writer = writer or _WRITERS[kind](out_dir, class_names)
        labels = task.predict(model, outputs, batch).cpu()
        probabilities = None
        if kind == "classification" and task.node is None:
            probabilities = scores.float().softmax(task.class_dim(scores, batch.get(task.target))).cpu()
        elif kind == "classification":      # a CRF's potentials are not class scores; ask the node
            node = model.get_submodule(task.node)
            mask = batch[task.mask] if task.mask else None
            probabilities = node.marginals(scores, mask).float().cpu()
        mask = batch[task.mask].cpu() if task.mask and task.mask in batch else None
        for row in range(len(labels)):
            writer.write(index, labels[row], probabilities[row] if probabilities is not None else None,
                         mask[row] if mask is not None else None)
            index += 1
    if writer is None:
        raise DataError("predict: the data set is empty")
    writer.close()
    return writer.path


class _CsvWriter:
    def __init__(self, out_dir: Path, class_names: list[str] | None):
        self.path = out_dir / "predictions.csv"
        self.file = self.path.open("w", newline="")
        self.csv = csv.writer(self.file)
        self.names = class_names

    def write(self, index: int, label: Tensor, probabilities: Tensor, mask) -> None:
        named = ["class"] if self.names else []
        if index == 0:
            self.csv.writerow(["index", "label", *named, *(f"p_{c}" for c in range(len(probabilities)))])
        name = [self.names[int(label)]] if self.names else []
        self.csv.writerow([index, int(label), *name, *(f"{p:.6g}" for p in probabilities.tolist())])

    def close(self) -> None:
        self.file.close()


class _TreeWriter:
    """A parse a line: {"index", "heads", "relations"?} cut to the mask, heads numbered as in CoNLL-U
    (0 the root, else the head word's 1-based position), relations named when the data named them."""

    def __init__(self, out_dir: Path, class_names: list[str] | None):
        self.path = out_dir / "predictions.jsonl"
        self.file = self.path.open("w")
        self.names = class_names

    def write(self, index: int, label: Tensor, probabilities: Tensor, mask) -> None:
        length = int(mask.sum()) if mask is not None else len(label)
        heads = (label[:length, 0] if label.dim() == 2 else label[:length]).tolist()
        line = {"index": index, "heads": [0 if h == i else h + 1 for i, h in enumerate(heads)]}
        if label.dim() == 2:
            relations = label[:length, 1].tolist()
            line["relations"] = [self.names[r] for r in relations] if self.names else relations
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.file.close()


class _MaskWriter:
    def __init__(self, out_dir: Path, class_names: list[str] | None):
        self.path = out_dir / "masks"
        self.path.mkdir(exist_ok=True)

    def write(self, index: int, label: Tensor, probabilities: Tensor, mask) -> None:
        from PIL import Image

        if label.max() > 255:
            raise ValueError("predict: PNG masks hold class ids up to 255")
        Image.fromarray(label.numpy().astype(np.uint8)).save(self.path / f"{index:05d}.png")

    def close(self) -> None:
        pass


class _JsonLinesWriter:
    def __init__(self, out_dir: Path, class_names: list[str] | None):
        self.path = out_dir / "predictions.jsonl"
        self.file = self.path.open("w")
        self.names = class_names

    def write(self, index: int, label: Tensor, probabilities: Tensor, mask) -> None:
        length = int(mask.sum()) if mask is not None else len(label)
        line = {"index": index, "labels": label[:length].tolist()}
        if self.names:
            line["classes"] = [self.names[i] for i in line["labels"]]
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.file.close()


_WRITERS = {"classification": _CsvWriter, "segmentation": _MaskWriter, "sequence": _JsonLinesWriter,
            "parse": _TreeWriter}
