"""The training objective: a weighted sum of a spec's losses, checked against the model when built."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from dagnet.fields.protocol import Field
from dagnet.settings import LOSSES  # op -> (required keys, optional keys with defaults)


class ObjectiveError(ValueError):
    """A loss names an unknown op, a missing key, or an output or node the model lacks."""


@dataclass
class Term:
    name: str
    weight: float
    compute: Callable[[dict, dict], Tensor]


class Objective:
    """Callable (outputs, batch) -> (total loss, {"loss": total, <term name>: value, ...} as floats).

    `outputs` names the model outputs the losses read and `batch_keys` the batch keys (targets,
    then masks), each in the order the losses give them: `fit` uses them to name the fields of
    tuple examples and the tensor a single-output model returns.
    """

    def __init__(self, terms: list[Term], outputs: tuple[str, ...] = (), batch_keys: tuple[str, ...] = ()):
        self.terms, self.outputs, self.batch_keys = terms, outputs, batch_keys

    def __call__(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        values = [(term, term.compute(outputs, batch)) for term in self.terms]
        weighted = [value if term.weight == 1 else term.weight * value for term, value in values]
        total = sum(weighted[1:], weighted[0])
        parts = {"loss": total.item()}
        if len(values) > 1:
            parts |= {term.name: value.item() for term, value in values}
        return total, parts


def build_objective(losses: list[dict], model: nn.Module) -> Objective:
    """Turn loss dicts like {"op": "cross_entropy", "output": "logits", "target": "label"} into an Objective."""
    if not losses:
        raise ObjectiveError("no losses given: a spec needs at least one entry under `losses`")
    terms, seen, outputs, keys = [], {}, [], []
    for i, loss in enumerate(losses):
        options = _check_keys(loss, i)
        name = loss.get("name", loss["op"])
        seen[name] = seen.get(name, 0) + 1
        name = name if seen[name] == 1 else f"{name}_{seen[name]}"
        weight = loss.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ObjectiveError(f"loss {i} ({loss['op']}): weight must be a number, got {weight!r}")
        terms.append(Term(name, float(weight), _compute(loss["op"], options, model, i)))
        outputs.append(options.get("output") or options["potentials"])
        keys += [options[key] for key in ("target", "mask") if options.get(key)]
    return Objective(terms, tuple(dict.fromkeys(outputs)), tuple(dict.fromkeys(keys)))


def _check_keys(loss: dict, i: int) -> dict:
    """The loss's options with defaults filled in; errors name the loss and the offending key."""
    op = loss.get("op")
    if op not in LOSSES:
        close = difflib.get_close_matches(str(op), LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ObjectiveError(f"loss {i}: unknown op {op!r}{hint}; known: {', '.join(LOSSES)}")
    required, optional = LOSSES[op]
    allowed = {"op", "weight", "name", *required, *optional}
    for key in loss:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ObjectiveError(f"loss {i} ({op}): unknown key {key!r}{hint}")
    missing = [key for key in required if key not in loss]
    if missing:
        raise ObjectiveError(f"loss {i} ({op}): missing {', '.join(map(repr, missing))}")
    return {**optional, **{k: loss[k] for k in (*required, *optional) if k in loss}}


def _compute(op: str, o: dict, model: nn.Module, i: int) -> Callable[[dict, dict], Tensor]:
    if op == "crf_nll":
        node = _crf_node(model, o["node"], i)
        return lambda outputs, batch: node.nll(
            _get(outputs, o["potentials"], "output", i),
            _get(batch, o["target"], "batch key", i),
            mask=_get(batch, o["mask"], "batch key", i) if o["mask"] else None,
            reduction="mean",
        )
    if op == "cross_entropy":

        def cross_entropy(outputs: dict, batch: dict) -> Tensor:
            logits, target = _get(outputs, o["output"], "output", i), _get(batch, o["target"], "batch key", i)
            if o["mask"]:
                target = target.masked_fill(~_get(batch, o["mask"], "batch key", i).bool(), o["ignore_index"])
            logits = logits.movedim(class_dim(logits, target), 1)
            return F.cross_entropy(
                logits, target, ignore_index=o["ignore_index"], label_smoothing=o["label_smoothing"]
            )

        return cross_entropy
    loss_fn = F.mse_loss if op == "mse" else F.binary_cross_entropy_with_logits

    def elementwise(outputs: dict, batch: dict) -> Tensor:
        output, target = _get(outputs, o["output"], "output", i), _get(batch, o["target"], "batch key", i)
        if output.shape != target.shape:
            raise ObjectiveError(
                f"loss {i} ({op}): output {o['output']!r} has shape {tuple(output.shape)} "
                f"but target {o['target']!r} has shape {tuple(target.shape)}"
            )
        return loss_fn(output, target.to(output.dtype))

    return elementwise


def _crf_node(model: nn.Module, name: str, i: int) -> nn.Module:
    try:
        node = model.get_submodule(name)
    except AttributeError:
        names = [n for n, m in model.named_modules() if n and isinstance(m, Field)]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ObjectiveError(f"loss {i} (crf_nll): the model has no node {name!r}{hint}") from None
    if not isinstance(node, Field):
        raise ObjectiveError(f"loss {i} (crf_nll): node {name!r} is a {type(node).__name__}, "
                             "not a structured node (chain_crf, tree_crf, hidden_crf, ...)")
    return node


def _get(tensors: dict, key: str, what: str, i: int) -> Tensor:
    if key not in tensors:
        raise ObjectiveError(f"loss {i}: no {what} {key!r} (available: {', '.join(tensors)})")
    return tensors[key]


def class_dim(scores: Tensor, target: Tensor) -> int:
    """Which dim of `scores` holds the classes: 1 as in PyTorch (N, C, ...), or the last for (N, T, C) sequences."""
    if scores.dim() != target.dim() + 1:
        raise ObjectiveError(
            f"class scores of shape {tuple(scores.shape)} do not fit labels of shape {tuple(target.shape)}"
        )
    if scores.shape[:1] + scores.shape[2:] == target.shape:
        return 1
    if scores.shape[:-1] == target.shape:
        return scores.dim() - 1
    raise ObjectiveError(
        f"class scores of shape {tuple(scores.shape)} do not fit labels of shape {tuple(target.shape)}: "
        "expected (N, C, ...) or (N, ..., C)"
    )
