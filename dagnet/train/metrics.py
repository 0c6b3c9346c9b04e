"""Task metrics from one confusion matrix: accuracy, per-class IoU and mIoU, macro F1; and attachment
scores (UAS, LAS) for dependency parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dagnet.data import DataError
from dagnet.fields.protocol import Field
from dagnet.train.objective import class_dim


@dataclass(frozen=True)
class Task:
    """What to score: an output of class scores (or a CRF node's potentials) against target labels.

    kind is classification (one label per example), segmentation (per pixel),
    sequence (per position), parse (a head, and a relation if labelled, per word: scored by
    AttachmentScores) or auto (from the target's dims: 1, 3+, 2). With a
    structured `node` (a dagnet.fields.Field), predictions are its decode rather than an argmax.
    """

    output: str
    target: str
    kind: str = "auto"
    mask: str | None = None
    node: str | None = None
    ignore_index: int | None = None

    def resolve_kind(self, scores: Tensor, target: Tensor | None = None) -> str:
        if self.kind != "auto":
            return self.kind
        dims = target.dim() if target is not None else scores.dim() - 1
        return {1: "classification", 2: "sequence"}.get(dims, "segmentation")

    def class_dim(self, scores: Tensor, target: Tensor | None = None) -> int:
        """Dim of the classes in `scores`; without labels, sequences are taken as (N, T, C)."""
        if target is not None:
            return class_dim(scores, target)
        return scores.dim() - 1 if self.resolve_kind(scores) == "sequence" else 1

    def predict(self, model: nn.Module, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        """Predicted labels, shaped like the target; the target itself need not be in the batch."""
        scores, target = outputs[self.output], batch.get(self.target)
        if self.node is None:
            return scores.argmax(self.class_dim(scores, target))
        mask = batch[self.mask] if self.mask else None
        labels, _ = field_node(model, self.node).decode(scores, mask)
        return labels.to(scores.device)

    def valid(self, batch: dict[str, Tensor]) -> Tensor:
        """Which target positions count: not ignore_index, and inside the mask."""
        target = batch[self.target]
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        if self.mask and batch[self.mask].shape == target.shape:   # a sequence mask of a per-sequence label
            valid &= batch[self.mask].bool()                          # (hidden CRF) masks the input only
        return valid

    def num_classes(self, outputs: dict[str, Tensor], batch: dict[str, Tensor], model: nn.Module | None = None) -> int:
        if self.node is not None and model is not None:     # a field knows its labels; its potentials may not
            return field_node(model, self.node).num_labels
        scores = outputs[self.output]
        return scores.shape[self.class_dim(scores, batch.get(self.target))]


def scorer_for(task: Task, kind: str, outputs: dict[str, Tensor], batch: dict[str, Tensor], model: nn.Module,
               device) -> "ConfusionMatrix | AttachmentScores":
    """What accumulates the task's metrics over batches: attachment scores for a parse, else a confusion matrix."""
    if kind == "parse":
        return AttachmentScores(device)
    return ConfusionMatrix(task.num_classes(outputs, batch, model), device)


def field_node(model: nn.Module, name: str) -> Field:
    node = model.get_submodule(name)
    if not isinstance(node, Field):
        raise TypeError(f"node {name!r} is a {type(node).__name__}, not a structured node (dagnet.fields.Field)")
    return node


def infer_task(losses: list[dict]) -> Task | None:
    """The Task scored by the first classification-like loss (cross_entropy or crf_nll), if any."""
    for loss in losses:
        if loss["op"] == "crf_nll":
            return Task(loss["potentials"], loss["target"], mask=loss.get("mask"), node=loss["node"])
        if loss["op"] == "cross_entropy":
            ignore_index = loss.get("ignore_index", -100)  # the loss's default, as in PyTorch
            return Task(loss["output"], loss["target"], mask=loss.get("mask"), ignore_index=ignore_index)
    return None


class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs over the valid positions seen so far."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, predicted: Tensor, target: Tensor, valid: Tensor) -> None:
        c = len(self.counts)
        truth, guess = target[valid], predicted[valid].to(target.dtype)
        if truth.numel() and (truth.min() < 0 or truth.max() >= c):
            bad = truth[(truth < 0) | (truth >= c)].unique()[:5].tolist()
            raise DataError(f"labels {bad} are outside 0..{c - 1} for a model with {c} classes")
        self.counts += torch.bincount(truth * c + guess, minlength=c * c).view(c, c)

    def summary(self, kind: str) -> dict:
        """Metrics that fit the task; NaN (no example of a class) becomes None so the result is valid JSON."""
        counts = self.counts.double().cpu()
        hits, true, predicted = counts.diag(), counts.sum(1), counts.sum(0)
        accuracy = (hits.sum() / counts.sum().clamp_min(1)).item()
        if kind == "classification":
            return {"accuracy": accuracy}
        if kind == "segmentation":
            iou = hits / (true + predicted - hits)  # NaN for a class absent from both truth and prediction
            return {"pixel_accuracy": accuracy, "miou": _nanmean(iou), "iou": _nan_to_none(iou)}
        f1 = 2 * hits / (true + predicted)
        return {"accuracy": accuracy, "macro_f1": _nanmean(f1)}


class AttachmentScores:
    """Attachment scores of predicted dependency trees over the words inside the mask (punctuation
    included; a word whose gold head is unknown, -1, does not count).

    Predictions and targets are heads (B, N), or heads and relations (B, N, 2) in a labelled parse.
    UAS: the share of words given their gold head; LAS: of words given both their gold head and
    relation (only with relations on both sides). `counts` holds (words, head right, both right)
    so that processes can sum it.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.counts = torch.zeros(3, dtype=torch.long, device=device)
        self.labelled = None

    def update(self, predicted: Tensor, target: Tensor, mask: Tensor | None) -> None:
        predicted = predicted.to(target.device)
        labelled = target.dim() == 3 and predicted.dim() == 3
        self.labelled = labelled if self.labelled is None else self.labelled and labelled
        gold_heads = target[..., 0] if target.dim() == 3 else target
        heads = predicted[..., 0] if predicted.dim() == 3 else predicted
        if heads.shape != gold_heads.shape:
            raise DataError(f"parse: predicted heads {tuple(heads.shape)} do not match the target's "
                            f"{tuple(gold_heads.shape)}")
        valid = gold_heads >= 0
        if mask is not None:
            valid &= mask.to(valid.device).bool().view_as(valid)
        right = (heads == gold_heads) & valid
        both = right & (predicted[..., 1] == target[..., 1]) if labelled else right
        self.counts += torch.stack([valid.sum(), right.sum(), both.sum()])

    def summary(self, kind: str = "parse") -> dict:
        words, right, both = self.counts.double().cpu().tolist()
        scores = {"uas": right / max(words, 1)}
        if self.labelled:
            scores["las"] = both / max(words, 1)
        return scores


def _nanmean(values: Tensor) -> float | None:
    mean = values.nanmean().item()
    return None if math.isnan(mean) else mean


def _nan_to_none(values: Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]
