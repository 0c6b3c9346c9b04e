"""Tensor algebra: products, reductions, slices and constant arithmetic, as plain function calls.

Dims count the batch, as PyTorch's do (1 is the first per-example dim); none
of these ops acts on the batch. `einsum`'s equation names the per-example
dims only: dagnet puts the batch in front as `...`.
"""

from __future__ import annotations

import string

from dagnet._lazy import lazy
from dagnet.dims import differ, fmt_shape, known, product, same
from dagnet.ops._util import batch_dim, broadcast
from dagnet.ops.registry import (DIM, FINITE, NON_NEGATIVE, SIZE, Arg, FunctionCall, OpDef, Range, ShapeError,
                                 no_params, register)
from dagnet.ops.titles import TIMES

torch = lazy("torch")
functional = lazy("dagnet.ops.functional")


def _number_title(prefix: str, arg: str):
    """``×0.5``: a symbol and a number argument."""
    return lambda a: prefix + (f"{a[arg]:g}" if arg in a else "?")


def _must_agree(op: str, what: str, a, b, hint: str) -> None:
    """Raise unless dims ``a`` and ``b`` are provably equal."""
    if not same(a, b):
        verb = "differ" if differ(a, b) else "may differ"
        raise ShapeError(f"`{op}`: {what} {verb}: {a} vs {b}", hint)


# -- products -----------------------------------------------------------------------------

def _matmul_shape(ins, a):
    x, y = ins
    if not x or not y:
        raise ShapeError(f"`matmul` needs a vector or more on both sides, found {fmt_shape(x)} and {fmt_shape(y)}",
                         "multiply by a scalar per example with `mul`")
    inner_x, inner_y = x[-1], y[-1] if len(y) == 1 else y[-2]
    _must_agree("matmul", f"the inner sizes of {fmt_shape(x)} @ {fmt_shape(y)}", inner_x, inner_y,
                "the last dim of the first input meets the second-to-last of the second (the last, "
                "for a vector): transpose one of them")
    rows = () if len(x) == 1 else (x[-2],)
    cols = () if len(y) == 1 else (y[-1],)
    return (*broadcast([x[:-2], y[:-2]], "matmul", "batch dims"), *rows, *cols)


register(OpDef(
    "matmul", "tensor", "Matrix product of two inputs (`torch.matmul` per example: vectors, matrices, "
    "broadcast stacks of matrices).",
    (), _matmul_shape, lambda ins, a: FunctionCall(functional.matmul), arity=(2, 2),
    macs=lambda ins, out, a: product(out) * ins[0][-1], params=no_params,
    saves="inputs", title="matmul", inferred=()))


LETTERS = frozenset(string.ascii_letters)


def _einsum_terms(equation: str, inputs: int):
    """The subscripts of each operand and of the output (explicit, or as torch infers them:
    the letters used once, in alphabetical order); ShapeError for a malformed equation."""
    text = equation.replace(" ", "")
    bad = sorted(set(text) - LETTERS - set(",->"))
    if bad:
        hint = ("dagnet adds the batch as `...` itself: write the per-example dims only" if "." in bad
                else "subscripts are letters a-z and A-Z, operands are separated by `,`, the output follows `->`")
        raise ShapeError(f"`einsum`: equation `{equation}` has {', '.join(f'`{c}`' for c in bad)}", hint)
    left, arrow, right = text.partition("->")
    if "-" in left + right or ">" in left + right:
        raise ShapeError(f"`einsum`: equation `{equation}` has a stray `-` or `>`",
                         "one `->` separates the operands from the output (`td,sd->ts`)")
    terms = left.split(",")
    if len(terms) != inputs:
        raise ShapeError(f"`einsum`: equation `{equation}` has {len(terms)} operand(s), the node has "
                         f"{inputs} input(s)", "one comma-separated operand per input, in the order of `in`")
    if not arrow:
        right = "".join(sorted(c for c in set(left) - {","} if left.count(c) == 1))
    for c in right:
        if right.count(c) > 1 or c not in left:
            raise ShapeError(f"`einsum`: output letter `{c}` of `{equation}` "
                             + ("appears twice" if c in left else "is in no operand"),
                             "each output letter names one dim of an operand, once")
    return terms, right


def _einsum_shape(ins, a):
    terms, out = _einsum_terms(a["equation"], len(ins))
    sizes = {}
    for i, (term, shape) in enumerate(zip(terms, ins), 1):
        if len(term) != len(shape):
            raise ShapeError(f"`einsum`: operand {i} `{term}` has {len(term)} letter(s), input {i} has shape "
                             f"{fmt_shape(shape)}", "one letter per per-example dim (the batch is not written)")
        for c, d in zip(term, shape):
            first = sizes.setdefault(c, (d, i))
            _must_agree("einsum", f"the sizes of `{c}` in operands {first[1]} and {i}", first[0], d,
                        "a letter names one size wherever it appears")
    return tuple(sizes[c][0] for c in out)


def _einsum_build(ins, a):
    terms, out = _einsum_terms(a["equation"], len(ins))
    equation = ",".join("..." + t for t in terms) + "->..." + out
    return FunctionCall(functional.einsum, {"equation": equation}, inputs_as_list=True)


def _einsum_macs(ins, out, a):
    """A multiply per combination of all letters' values, for each operand after the first."""
    terms, _ = _einsum_terms(a["equation"], len(ins))
    sizes = {c: d for term, shape in zip(terms, ins) for c, d in zip(term, shape)}
    return product(sizes.values()) * (len(ins) - 1)


register(OpDef(
    "einsum", "tensor", "`torch.einsum` over the inputs; the `equation` names the per-example dims only "
    "(`td,sd->ts`) and dagnet adds the batch in front.",
    (Arg("equation", "str", doc="subscripts per input, comma-separated, then `->` and the output's"),),
    _einsum_shape, _einsum_build, arity=(1, None), macs=_einsum_macs, params=no_params,
    saves="inputs", title=lambda a: f"einsum {a.get('equation', '')}".strip(), inferred=()))


# -- reordering and slicing ---------------------------------------------------------------

def _transpose_shape(ins, a):
    x = list(ins[0])
    i, j = batch_dim(a["dim0"], len(x), "transpose"), batch_dim(a["dim1"], len(x), "transpose")
    x[i], x[j] = x[j], x[i]
    return tuple(x)


register(OpDef(
    "transpose", "tensor", "Swap dims `dim0` and `dim1` (`torch.transpose`; dims count the batch).",
    (Arg("dim0", "int", range=DIM), Arg("dim1", "int", range=DIM)), _transpose_shape,
    lambda ins, a: FunctionCall(torch.transpose, dict(a)), params=no_params,
    saves="nothing", view=True, title="transpose", look="shape", inferred=()))

INDEX = Range(meaning="an index into the dim, negative from its end")


def _select_shape(ins, a):
    x = ins[0]
    axis = batch_dim(a["dim"], len(x), "select")
    size, index = x[axis], a["index"]
    if known(size) and not -size <= index < size:
        raise ShapeError(f"`select`: index {index} is outside dim {a['dim']} of {fmt_shape(x)}",
                         f"use 0 .. {size - 1} (or -{size} .. -1 counting from the end)")
    return (*x[:axis], *x[axis + 1:])


register(OpDef(
    "select", "tensor", "The slice at `index` along `dim`, which it removes (`torch.select`; dims count "
    "the batch).",
    (Arg("dim", "int", range=DIM), Arg("index", "int", range=INDEX)), _select_shape,
    lambda ins, a: FunctionCall(torch.select, dict(a)), params=no_params,
    saves="nothing", view=True, title=_number_title("select ", "index"), look="shape", inferred=()))


def _narrow_shape(ins, a):
    x = ins[0]
    axis = batch_dim(a["dim"], len(x), "narrow")
    if known(x[axis]) and a["start"] + a["length"] > x[axis]:
        raise ShapeError(f"`narrow`: positions {a['start']} .. {a['start'] + a['length'] - 1} run past dim "
                         f"{a['dim']} of {fmt_shape(x)}", f"start + length must be at most {x[axis]}")
    return (*x[:axis], a["length"], *x[axis + 1:])


register(OpDef(
    "narrow", "tensor", "`length` positions from `start` along `dim` (`torch.narrow`; dims count the batch).",
    (Arg("dim", "int", range=DIM), Arg("start", "int", range=NON_NEGATIVE), Arg("length", "int", range=SIZE)),
    _narrow_shape, lambda ins, a: FunctionCall(torch.narrow, dict(a)), params=no_params,
    saves="nothing", view=True, title="narrow", look="shape", inferred=()))


# -- reductions ---------------------------------------------------------------------------

def _reduced(op: str, x, dim) -> list[int]:
    """The per-example indices of the dims ``dim`` names (counting the batch; None: all of them)."""
    if not x:
        raise ShapeError(f"`{op}`: nothing to reduce in a scalar per example",
                         "the batch dimension is never reduced; remove the node")
    if dim is None:
        return list(range(len(x)))
    dims = [batch_dim(d, len(x), op) for d in (dim if isinstance(dim, list) else [dim])]
    if not dims or len(set(dims)) != len(dims):
        raise ShapeError(f"`{op}`: dim {dim} must name each dim once",
                         "leave `dim` out to reduce every per-example dim")
    return dims


def _reduction(name: str, doc: str, title: str, saves: str):
    def shape(ins, a):
        x = ins[0]
        dims = _reduced(name, x, a["dim"])
        if a["keepdim"]:
            return tuple(1 if i in dims else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i not in dims)

    def build(ins, a):
        dim = a["dim"] if a["dim"] is not None else [i + 1 for i in _reduced(name, ins[0], None)]
        return FunctionCall(getattr(torch, name), {"dim": dim, "keepdim": a["keepdim"]})

    register(OpDef(
        name, "tensor", f"{doc} over `dim` (one dim or a list, counting the batch; default: every "
        f"per-example dim) (`torch.{name}`).",
        (Arg("dim", "ints_or_none", None, range=DIM), Arg("keepdim", "bool", False)), shape, build,
        params=no_params, saves=saves, title=title, look="pool", inferred=()))


_reduction("mean", "Mean", "mean", "nothing")
_reduction("sum", "Sum", "sum", "nothing")
_reduction("amax", "Maximum", "max", "inputs")


def _masked_mean_shape(ins, a):
    x, mask = ins
    if not x:
        raise ShapeError("`masked_mean` needs a sequence [T, ...], found a scalar per example")
    if len(mask) != 1 or not same(mask[0], x[0]):
        raise ShapeError(f"`masked_mean`: the mask must have shape [{x[0]}], found {fmt_shape(mask)}",
                         "one bool per position of the sequence (dim 1): true where it counts")
    return tuple(x[1:])


register(OpDef(
    "masked_mean", "tensor", "Mean of a sequence [T, ...] over the positions where a bool mask [T] "
    "(input 2) is true: masked mean pooling; zeros where no position is.",
    (), _masked_mean_shape, lambda ins, a: FunctionCall(functional.masked_mean), arity=(2, 2),
    params=no_params, saves="inputs", title="masked mean", look="pool", inferred=()))


# -- arithmetic with a constant -----------------------------------------------------------

register(OpDef(
    "scale", "tensor", "Multiply by a constant `factor`.",
    (Arg("factor", "float", range=FINITE),), lambda ins, a: ins[0],
    lambda ins, a: FunctionCall(torch.mul, {"other": a["factor"]}), params=no_params,
    saves="nothing", title=_number_title(TIMES, "factor"), inferred=()))

register(OpDef(
    "add_scalar", "tensor", "Add a constant `value`.",
    (Arg("value", "float", range=FINITE),), lambda ins, a: ins[0],
    lambda ins, a: FunctionCall(torch.add, {"other": a["value"]}), params=no_params,
    saves="nothing", title=_number_title("+", "value"), inferred=()))
