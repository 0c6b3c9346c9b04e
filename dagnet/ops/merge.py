"""Merge points: residual edges (`add`), dense edges (`concat`), gates (`mul`), `crop`."""

from __future__ import annotations

import operator

from dagnet._lazy import lazy
from dagnet.dims import differ, fmt_shape, may_differ_at, same
from dagnet.ops import titles
from dagnet.ops._util import batch_dim, broadcast
from dagnet.ops.registry import DIM, NON_NEGATIVE, Arg, FunctionCall, OpDef, ShapeError, no_params, register

torch = lazy("torch")
functional = lazy("dagnet.ops.functional")


def _mismatch(op, shapes, i, extra=""):
    return ShapeError(f"`{op}` inputs disagree{extra}: input 1 has shape {fmt_shape(shapes[0])}, "
                      f"input {i + 1} has shape {fmt_shape(shapes[i])}",
                      "make the branches agree (a 1x1 conv with a stride on the shortcut, "
                      "or `crop` to the smaller size)")


def _agree(op, shapes, a, b, i, extra=""):
    """Raise unless dims a and b are equal; symbolic dims are tested at sample sizes."""
    if same(a, b):
        return
    if differ(a, b):
        raise _mismatch(op, shapes, i, extra)
    witness = may_differ_at(a, b)
    if witness:
        at = ", ".join(f"{k}={v}" for k, v in witness.items())
        raise ShapeError(f"`{op}` inputs may disagree{extra} (they differ when {at}): "
                         f"{fmt_shape(shapes[0])} vs {fmt_shape(shapes[i])}",
                         "constrain the input size or `crop` to the smaller branch")


def _add_shape(ins, a):
    for i, s in enumerate(ins[1:], 1):
        if len(s) != len(ins[0]):
            raise _mismatch("add", ins, i)
        for d0, d in zip(ins[0], s):
            _agree("add", ins, d0, d, i)
    return ins[0]


def _add_build(ins, a):
    if len(ins) == 2:
        return FunctionCall(operator.add)
    return FunctionCall(functional.add, inputs_as_list=True)


register(OpDef("add", "merge", "Element-wise sum of two or more inputs of one shape: a residual edge.",
               (), _add_shape, _add_build, arity=(2, None), params=no_params,
               saves="nothing", title="+", look="merge", mark="+", mark_legend="add (residual)",
               inferred=()))


register(OpDef("mul", "merge", "Element-wise product with broadcasting (gates, attention).",
               (), lambda ins, a: broadcast(ins, "mul"), lambda ins, a: FunctionCall(operator.mul), arity=(2, 2), params=no_params,
               saves="inputs", title=titles.TIMES, look="merge", mark=titles.TIMES, mark_legend="multiply",
               inferred=()))


def _concat_shape(ins, a):
    axis = batch_dim(a["dim"], len(ins[0]), "concat")
    for i, s in enumerate(ins[1:], 1):
        if len(s) != len(ins[0]):
            raise _mismatch("concat", ins, i)
        for k, (d0, d) in enumerate(zip(ins[0], s)):
            if k != axis:
                _agree("concat", ins, d0, d, i, f" outside dim {a['dim']}")
    total = 0
    for s in ins:
        total = total + s[axis]
    return (*ins[0][:axis], total, *ins[0][axis + 1:])


register(OpDef("concat", "merge", "Concatenation along `dim` (default 1, the channels): a dense edge.",
               (Arg("dim", "int", 1, range=DIM),), _concat_shape,
               lambda ins, a: FunctionCall(torch.cat, {"dim": a["dim"]}, inputs_as_list=True),
               arity=(2, None), params=no_params, saves="nothing", title="C", look="merge", mark="C",
               mark_legend="concatenate (dense)", inferred=()))


def _crop_shape(ins, a):
    x, like = ins
    if len(x) != len(like):
        raise ShapeError(f"`crop`: input rank {len(x)} differs from reference rank {len(like)}")
    for L, T in zip(x[1:], like[1:]):
        start = 0 if a["offset"] is None else a["offset"]
        if isinstance(L, int) and isinstance(T, int) and L < T + start:
            raise ShapeError(f"`crop`: cannot crop {fmt_shape(x)} to the size of {fmt_shape(like)}",
                             "crop the larger branch to the smaller one: `in: [big, small]`")
    return (x[0], *like[1:])


register(OpDef("crop", "merge",
               "Crop the spatial dims of the first input to those of the second "
               "(centred, or from `offset`), as FCN skip connections need.",
               (Arg("offset", "int_or_none", None, range=NON_NEGATIVE),), _crop_shape,
               lambda ins, a: FunctionCall(functional.crop, dict(a)), arity=(2, 2), params=no_params,
               saves="nothing", view=True, title="crop", look="crop", inferred=()))
