"""Checking what a spec says about training, its losses and its `train:` section, before anything is built.

``dagnet check`` runs :func:`check_training` after the graph checks, so that a
loss naming a missing node or a misspelt setting is reported with its
file:line:col, together with the graph's errors, instead of surfacing as an
unlocated error halfway into ``dagnet train``. ``dagnet train`` resolves its
losses with the same :func:`resolve_losses`. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re

from dagnet import ops
from dagnet.errors import ErrorLog, Loc, did_you_mean
from dagnet.ir import IR
from dagnet.settings import LOSS_KEY_KINDS, LOSSES, ConfigError, TrainConfig

LOSS_COMMON_KEYS = ("op", "weight", "name")
DERIVED_KEYS = {"crf_nll": ("potentials",)}       # filled in from the loss's node, never written


def check_training(ir: IR, errors: ErrorLog) -> None:
    """Log every problem of the spec's losses and `train:` section.

    Names in losses are checked only when the graph has no errors: a node whose
    expansion failed would otherwise be reported a second time, as missing.
    """
    resolve_losses(ir, errors, check_names=not errors.errors)
    check_train_section(ir, errors)


# -- losses ----------------------------------------------------------------------
def resolve_losses(ir: IR, errors: ErrorLog, check_names: bool = True) -> tuple[list[dict], list[str]]:
    """The spec's losses with node names resolved, and the node outputs they need; problems are logged."""
    losses, needed = [], list(ir.outputs)
    for i, entry in enumerate(ir.losses):
        loss = {k: v for k, v in entry.items() if k != "_loc"}
        locs = _KeyLocs(entry.get("_loc", Loc(ir.file, 1, 1)), ir.loss_locs[i] if i < len(ir.loss_locs) else {})
        if not _check_loss_keys(loss, locs, errors) or not check_names:
            continue
        if loss["op"] == "crf_nll":
            node = _field_node(ir, loss["node"], locs["node"], errors)
            if node is None:
                continue
            loss["node"], loss["potentials"] = node, ir.node(node).inputs[0]
            needed.append(loss["potentials"])
        else:
            output = _node(ir, loss["output"], locs["output"], "output", errors)
            if output is None:
                continue
            loss["output"] = loss["output"] if loss["output"] in ir.outputs else output
            needed.append(loss["output"])
        losses.append(loss)
    return losses, list(dict.fromkeys(needed))


class _KeyLocs(dict):
    """Where each key of a loss was written; the loss itself for a key not written."""

    def __init__(self, loss_loc: Loc, locs: dict[str, Loc]):
        super().__init__(locs)
        self.loss_loc = loss_loc

    def __missing__(self, key: str) -> Loc:
        return self.loss_loc


def _check_loss_keys(loss: dict, locs: _KeyLocs, errors: ErrorLog) -> bool:
    """The loss's op is known, it has the keys that op needs and no others, its weight is a number.

    True when the names it gives can be resolved: the op is known and its required keys are there."""
    op = loss.get("op")
    if not isinstance(op, str) or op not in LOSSES:
        found = f"unknown loss `{op}`" if "op" in loss else "a loss without `op`"
        errors.add(found, locs["op"], (did_you_mean(op, LOSSES) if op else None) or f"the losses: {', '.join(LOSSES)}")
        return False
    required, optional = LOSSES[op]
    derived = DERIVED_KEYS.get(op, ())
    allowed = [k for k in (*LOSS_COMMON_KEYS, *required, *optional) if k not in derived]
    for key in loss:
        if key not in allowed:
            errors.add(f"unknown key `{key}` in a `{op}` loss", locs[key],
                       did_you_mean(key, allowed) or f"a `{op}` loss takes {', '.join(allowed)}")
    for key, value in loss.items():
        if key in allowed and key != "op" and not _fits(LOSS_KEY_KINDS[key], value, optional.get(key, 0)):
            errors.add(f"the `{key}` of a `{op}` loss must be a {LOSS_KEY_KINDS[key]}, found `{value}`", locs[key])
    missing = [key for key in required if key not in loss and key not in derived]
    for key in missing:
        errors.add(f"a `{op}` loss needs `{key}`", locs.loss_loc, f"add `{key}: ...` to the loss")
    return not missing


def _fits(kind: str, value, default) -> bool:
    """Whether a loss key's value is of its kind; an optional key may also be null when its default is."""
    if value is None:
        return default is None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "name":
        return isinstance(value, str) and bool(value)
    if kind == "integer":
        return number and float(value).is_integer()
    if kind == "finite number":
        return number and math.isfinite(value)
    return number and 0 <= value <= 1      # a number from 0 to 1


def _node(ir: IR, name, loc: Loc, key: str, errors: ErrorLog) -> str | None:
    """The node an output name or node path stands for; None (and an error) if it names none."""
    if isinstance(name, str) and name in ir.outputs:
        return ir.outputs[name]
    if isinstance(name, str) and name in ir.graph:
        return name
    errors.add(f"a loss's `{key}` names no node: `{name}`", loc,
               did_you_mean(name, list(ir.outputs) + list(ir.graph))
               or f"the outputs: {', '.join(ir.outputs)}")
    return None


def _field_node(ir: IR, name, loc: Loc, errors: ErrorLog) -> str | None:
    """The CRF node a `crf_nll` loss scores: its potentials are the node's first input."""
    node = _node(ir, name, loc, "node", errors)
    if node is None:
        return None
    opdef = ops.get(ir.node(node).op)
    if opdef is None or not opdef.stochastic or not ir.node(node).inputs:
        errors.add(f"`crf_nll` needs a CRF node, `{name}` is a `{ir.node(node).op}`", loc,
                   "name a node whose op is structured: "
                   + ", ".join(sorted(n for n, op in ops.OPS.items() if op.stochastic)))
        return None
    if opdef.arity[0] > 1:      # a second input the loss cannot supply (the dense CRF's image)
        errors.add(f"`crf_nll` cannot score `{name}`: a `{ir.node(node).op}` needs all its "
                   f"{opdef.arity[0]} inputs, and the loss passes only the potentials", loc,
                   "train it through its output instead, e.g. `cross_entropy` on its log-marginals")
        return None
    return node


# -- the `train:` section ---------------------------------------------------------
def check_train_section(ir: IR, errors: ErrorLog) -> None:
    """Every setting of `train:` is known, of its type and in its range; each mistake located.

    The settings are validated together (some depend on others: `nesterov` on
    `optimizer`); after an error the setting at fault is set aside and the rest
    validated again, so that every independent mistake is found in one run. The
    data source is left to ``dagnet train``: checking it needs the data loaders,
    which import torch, and the data at hand.
    """
    settings = dict(ir.train)
    data = settings.pop("data", None)
    if data is not None and not isinstance(data, (str, dict)):
        errors.add(f"training setting `data` must be a data set name, a path or a mapping, found `{data}`",
                   _setting_loc(ir, "data"), "e.g. `data: digits` or `data: {path: train.npz}`")
    while settings:
        try:
            TrainConfig.from_dict(settings)
            return
        except ConfigError as exc:
            errors.add(*_located(ir, exc))
            top = re.split(r"[.\[]", exc.key)[0]
            if top not in settings:             # an error of the section as a whole
                return
            del settings[top]


def _located(ir: IR, exc: ConfigError) -> tuple[str, Loc, str | None]:
    """(message, location, hint) for a ConfigError from the spec's `train:` section."""
    loc = _setting_loc(ir, exc.key)
    if exc.known:
        hint = f"did you mean `{exc.suggestion}`?" if exc.suggestion else f"the settings: {', '.join(exc.known)}"
        return f"unknown training setting `{exc.key}`", loc, hint
    return f"training setting `{exc.key}`: {exc.problem}", loc, None


def _setting_loc(ir: IR, key: str) -> Loc:
    """Where the setting ``key`` (`schedule.gamma`, `betas[0]`) or the nearest enclosing one was written."""
    path = re.sub(r"\[\d+\]", "", key)
    while path and path not in ir.train_locs:
        path = path.rpartition(".")[0]
    return ir.train_locs.get(path) or next(iter(ir.train_locs.values()), Loc(ir.file, 1, 1))
