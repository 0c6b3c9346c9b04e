"""Shape arithmetic over sizes unknown until run time (a dynamic batch or sequence).

Exporters compute a Reshape's target as ``Shape -> Gather -> Concat``. With
static shapes that chain folds to a constant; with a symbolic dim it folds to a
:class:`Sym`: a short list whose entries are ints or expressions naming the
tensor and axis the size is read from (``("dim", "x", 0)``). The op consuming
it then reads those sizes off its witness tensors with ``x.shape[0]``, which
``torch.fx`` and ``torch.export`` trace as symbolic sizes, instead of turning
a shape tensor back into Python numbers, which neither can trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sym:
    values: list
    scalar: bool  # a 0-d value (one size) rather than a 1-d shape vector


def as_sym(value) -> Sym | None:
    """A Sym, or a small integer constant seen as one."""
    if isinstance(value, Sym):
        return value
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dim() <= 1 and value.numel() <= 64:
        return Sym(value.reshape(-1).tolist(), value.dim() == 0)
    return None


def _arith(op: str):
    def combine(a, b):
        if isinstance(a, int) and isinstance(b, int):
            return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b if b else 0}[op]
        if op == "mul" and (a == 1 or b == 1):
            return b if a == 1 else a
        return (op, a, b)

    def fold(args: list, attrs: dict) -> Sym:
        a, b = args
        if len(a.values) != len(b.values) and 1 not in (len(a.values), len(b.values)):
            raise ValueError("shapes do not broadcast")
        n = max(len(a.values), len(b.values))
        pick = lambda s, i: s.values[0] if len(s.values) == 1 else s.values[i]  # noqa: E731
        return Sym([combine(pick(a, i), pick(b, i)) for i in range(n)], a.scalar and b.scalar)

    return fold


def _gather(args, attrs):
    data, index = args
    if attrs.get("axis", 0) != 0 or data.scalar:
        raise ValueError("gather off a shape vector only")
    picked = [data.values[i] for i in index.values]
    return Sym(picked, index.scalar)


def _slice(args, attrs):
    data = args[0]
    starts, ends = args[1].values, args[2].values
    if len(starts) != 1 or (len(args) > 3 and args[3] is not None and args[3].values != [0]):
        raise ValueError("a 1-d slice only")
    step = args[4].values[0] if len(args) > 4 and args[4] is not None else 1
    if not all(isinstance(v, int) for v in (starts[0], ends[0], step)):
        raise ValueError("symbolic slice bounds")
    return Sym(data.values[starts[0] : ends[0] : step], False)


def _unsqueeze(args, attrs):
    if not args[0].scalar:
        raise ValueError("unsqueeze of a vector")
    return Sym(args[0].values, False)


def _squeeze(args, attrs):
    if len(args[0].values) != 1:
        raise ValueError("squeeze of a longer vector")
    return Sym(args[0].values, True)


FOLDS = {
    "Gather": _gather, "Slice": _slice, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Concat": lambda args, attrs: Sym([v for a in args for v in a.values], False),
    "Cast": lambda args, attrs: args[0], "Identity": lambda args, attrs: args[0],
    "Add": _arith("add"), "Sub": _arith("sub"), "Mul": _arith("mul"), "Div": _arith("div"),
}


def shape_of(name: str, shape: tuple, attrs: dict) -> Sym:
    """``Shape(name)``: known dims as ints, the others read off ``name`` at run time."""
    values = [d if d is not None else ("dim", name, axis) for axis, d in enumerate(shape)]
    return Sym(values[attrs.get("start", 0) : attrs.get("end")], False)


def fold(op: str, ins: list, attrs: dict) -> Sym | None:
    """The op over Sym / small constant inputs, or ``None`` when it must run as an op."""
    if op not in FOLDS or not any(isinstance(v, Sym) for v in ins):
        return None
    args = [as_sym(v) if v is not None else None for v in ins]
    if any(a is None for a, v in zip(args, ins) if v is not None):
        return None
    try:
        return FOLDS[op](args, attrs)
    except (ValueError, IndexError, TypeError):
        return None


def witnesses(entries: list, names: list[str]) -> list:
    """``entries`` with each ``("dim", name, axis)`` renamed to its index in ``names`` (appended as met)."""
    def rename(entry):
        if not isinstance(entry, tuple):
            return entry
        if entry[0] == "dim":
            if entry[1] not in names:
                names.append(entry[1])
            return ("dim", names.index(entry[1]), entry[2])
        return (entry[0], rename(entry[1]), rename(entry[2]))

    return [rename(e) for e in entries]
