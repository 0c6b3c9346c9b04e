"""Fully connected layers and embeddings."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import product
from dagnet.ops import titles
from dagnet.ops._util import expect_known
from dagnet.ops.registry import FINITE, SIZE, Arg, ModuleCall, OpDef, ShapeError, register

nn = lazy("torch.nn")


def _linear_shape(ins, a):
    (x,) = ins
    if not x:
        raise ShapeError("`linear` needs at least one feature dimension, found a scalar per example")
    expect_known(x[-1], "feature size (last dim)", "linear")
    return (*x[:-1], a["out_features"])


register(OpDef(
    "linear", "dense", "Affine map of the last dimension (`nn.Linear`); `in_features` is inferred.",
    (Arg("out_features", "int", range=SIZE), Arg("bias", "bool", True)),
    _linear_shape,
    lambda ins, a: ModuleCall(nn.Linear, {"in_features": ins[0][-1], **a}),
    macs=lambda ins, out, a: product(out) * ins[0][-1],
    params=lambda ins, a: (ins[0][-1] + a["bias"]) * a["out_features"],
    saves="inputs", title=titles.with_arg("fc, ", "out_features"), inferred=("in_features",),
))

def _embedding_shape(ins, a):
    rows, index = a["num_embeddings"], a["padding_idx"]
    if index is not None and not -rows <= index < rows:
        raise ShapeError(f"`embedding`: padding_idx {index} is not a row of the {rows}-row table",
                         f"use 0 .. {rows - 1} (or -{rows} .. -1 counting from the end)")
    return (*ins[0], a["embedding_dim"])


register(OpDef(
    "embedding", "dense", "Lookup table for integer inputs (`nn.Embedding`).",
    (Arg("num_embeddings", "int", range=SIZE), Arg("embedding_dim", "int", range=SIZE),
     Arg("padding_idx", "int_or_none", None, range=FINITE)),
    _embedding_shape,
    lambda ins, a: ModuleCall(nn.Embedding, dict(a)),
    params=lambda ins, a: a["num_embeddings"] * a["embedding_dim"],
    saves="inputs", title=titles.with_arg("embedding, ", "embedding_dim"), inferred=(),
))
