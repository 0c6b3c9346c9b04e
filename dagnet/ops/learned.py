"""Learned tensors (a free parameter, layer scale) and the positions of a sequence.

A node's value has a batch dimension, and only an input knows its size: so
`parameter` takes one input, of any shape, and repeats its learned tensor
over that input's batch (a class token, learned queries, a position table).
"""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import fmt_shape, product
from dagnet.ops import titles
from dagnet.ops._util import batch_dim, expect_known
from dagnet.ops.registry import (DIM, FINITE, POSITIVE, SIZE, Arg, FunctionCall, ModuleCall, OpDef, ShapeError,
                                 no_params, register)

functional = lazy("dagnet.ops.functional")

register(OpDef(
    "parameter", "learned", "A learned tensor of `shape`, repeated over the batch of the input (whose values "
    "are not read); `init` zeros, normal, trunc_normal (cut at 2 std) or uniform, with deviation `std`, or "
    "constant, every entry `value` (a layer scale).",
    (Arg("shape", "shape", range=SIZE),
     Arg("init", "str", "zeros", ("zeros", "normal", "trunc_normal", "uniform", "constant")),
     Arg("std", "float", 0.02, range=POSITIVE, doc="standard deviation of the random inits"),
     Arg("value", "float", 0.0, range=FINITE, doc="every entry's value for `init: constant`")),
    lambda ins, a: tuple(a["shape"]),
    lambda ins, a: ModuleCall(functional.LearnedTensor, {**a, "shape": list(a["shape"])}),
    params=lambda ins, a: product(a["shape"]),
    saves="nothing", title=lambda a: "parameter " + titles.kernel(a.get("shape", "?"), 1), inferred=()))


def _channels(ins, a) -> int:
    """The size of the channel dim ``dim``: one scale each."""
    x = ins[0]
    return expect_known(x[batch_dim(a["dim"], len(x), "layer_scale")], f"channel count (dim {a['dim']})",
                        "layer_scale")


def _layer_scale_shape(ins, a):
    _channels(ins, a)
    return ins[0]


register(OpDef(
    "layer_scale", "learned", "Multiply by a learned per-channel scale initialised to `init_values` "
    "(CaiT, ConvNeXt); the channels are along `dim` (counting the batch): -1 for [T, C], 1 for [C, H, W].",
    (Arg("init_values", "float", 1e-5, range=FINITE), Arg("dim", "int", -1, range=DIM)),
    _layer_scale_shape,
    lambda ins, a: ModuleCall(functional.LayerScale, {"channels": _channels(ins, a), **a}),
    params=_channels, saves="inputs", title="layer scale", inferred=("channels",)))


def _sequence(op: str, x):
    if not x:
        raise ShapeError(f"`{op}` needs a sequence [T, ...], found {fmt_shape(x)}",
                         "the positions are those of dim 1, the first per-example dim")
    return x[0]


register(OpDef(
    "positions", "position", "The positions 0 .. T-1 of a sequence [T, ...], as int64 [T] (to feed "
    "`embedding`).",
    (), lambda ins, a: (_sequence("positions", ins[0]),), lambda ins, a: FunctionCall(functional.positions),
    params=no_params, saves="nothing", title="positions", look="tensor", inferred=()))

register(OpDef(
    "sinusoidal_positions", "position", "The Transformer's fixed sinusoidal encoding [T, d_model] of the "
    "positions of a sequence [T, ...] (add it to the embeddings).",
    (Arg("d_model", "int", range=SIZE),),
    lambda ins, a: (_sequence("sinusoidal_positions", ins[0]), a["d_model"]),
    lambda ins, a: FunctionCall(functional.sinusoidal_positions, dict(a)),
    params=no_params, saves="nothing", title=titles.with_arg("sinusoidal positions, ", "d_model"),
    look="tensor", inferred=()))
