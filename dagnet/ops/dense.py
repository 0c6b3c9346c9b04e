"""Fully connected layers and embeddings."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import product
from dagnet.ops._util import expect_known
from dagnet.ops.registry import Arg, ModuleCall, OpDef, ShapeError, register

nn = lazy("torch.nn")


def _linear_shape(ins, a):
    (x,) = ins
    if not x:
        raise ShapeError("`linear` needs at least one feature dimension, found a scalar per example")
    expect_known(x[-1], "feature size (last dim)", "linear")
    return (*x[:-1], a["out_features"])


register(OpDef(
    "linear", "dense", "Affine map of the last dimension (`nn.Linear`); `in_features` is inferred.",
    (Arg("out_features", "int"), Arg("bias", "bool", True)),
    _linear_shape,
    lambda ins, a: ModuleCall(nn.Linear, {"in_features": ins[0][-1], **a}),
    macs=lambda ins, out, a: product(out) * ins[0][-1],
    params=lambda ins, a: (ins[0][-1] + a["bias"]) * a["out_features"],
))

register(OpDef(
    "embedding", "dense", "Lookup table for integer inputs (`nn.Embedding`).",
    (Arg("num_embeddings", "int"), Arg("embedding_dim", "int"), Arg("padding_idx", "int_or_none", None)),
    lambda ins, a: (*ins[0], a["embedding_dim"]),
    lambda ins, a: ModuleCall(nn.Embedding, dict(a)),
    params=lambda ins, a: a["num_embeddings"] * a["embedding_dim"],
))
