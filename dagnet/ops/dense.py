"""Fully connected layers and embeddings."""

from __future__ import annotations

import torch.nn as nn

from dagnet.dims import product
from dagnet.ops._util import expect_known
from dagnet.ops.registry import Arg, ModuleCall, OpDef, ShapeError, register


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
))

register(OpDef(
    "embedding", "dense", "Lookup table for integer inputs (`nn.Embedding`).",
    (Arg("num_embeddings", "int"), Arg("embedding_dim", "int"), Arg("padding_idx", "int_or_none", None)),
    lambda ins, a: (*ins[0], a["embedding_dim"]),
    lambda ins, a: ModuleCall(nn.Embedding, dict(a)),
))
