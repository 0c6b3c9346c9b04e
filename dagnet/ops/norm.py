"""Normalisation and dropout."""

from __future__ import annotations

import torch.nn as nn

from dagnet.ops._util import expect_known
from dagnet.ops.registry import Arg, ModuleCall, OpDef, ShapeError, register

_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}


def _batch_norm_build(ins, a):
    x = ins[0]
    if len(x) not in _BATCH_NORM:
        raise ShapeError(f"`batch_norm` expects [C], [C, L], [C, H, W] or [C, D, H, W], found {list(x)}")
    channels = expect_known(x[0], "channel count", "batch_norm")
    return ModuleCall(_BATCH_NORM[len(x)], {"num_features": channels, **a})


register(OpDef(
    "batch_norm", "norm",
    "Batch normalisation over the channel dim (`nn.BatchNorm1d/2d/3d`, chosen by rank).",
    (Arg("eps", "float", 1e-5), Arg("momentum", "float_or_none", 0.1), Arg("affine", "bool", True),
     Arg("track_running_stats", "bool", True)),
    lambda ins, a: (_batch_norm_build(ins, a), ins[0])[1],
    _batch_norm_build,
))


def _layer_norm_build(ins, a):
    shape = a["normalized_shape"] or [ins[0][-1]]
    if list(ins[0][len(ins[0]) - len(shape):]) != list(shape):
        raise ShapeError(f"`layer_norm`: normalized_shape {list(shape)} does not match the "
                         f"trailing dims of {list(ins[0])}")
    for d in shape:
        expect_known(d, "normalized size", "layer_norm")
    return ModuleCall(nn.LayerNorm, {"normalized_shape": tuple(shape), "eps": a["eps"],
                                     "elementwise_affine": a["elementwise_affine"]})


register(OpDef(
    "layer_norm", "norm", "Layer normalisation (`nn.LayerNorm`); normalises the last dim by default.",
    (Arg("normalized_shape", "ints_or_none", None), Arg("eps", "float", 1e-5),
     Arg("elementwise_affine", "bool", True)),
    lambda ins, a: (_layer_norm_build(ins, a), ins[0])[1],
    _layer_norm_build,
))


def _group_norm_build(ins, a):
    channels = expect_known(ins[0][0], "channel count", "group_norm")
    if channels % a["num_groups"]:
        raise ShapeError(f"`group_norm`: {channels} channels not divisible by {a['num_groups']} groups")
    return ModuleCall(nn.GroupNorm, {"num_groups": a["num_groups"], "num_channels": channels,
                                     "eps": a["eps"], "affine": a["affine"]})


register(OpDef(
    "group_norm", "norm", "Group normalisation (`nn.GroupNorm`); `num_channels` is inferred.",
    (Arg("num_groups", "int"), Arg("eps", "float", 1e-5), Arg("affine", "bool", True)),
    lambda ins, a: (_group_norm_build(ins, a), ins[0])[1],
    _group_norm_build,
))

for _name, _cls, _doc in (("dropout", nn.Dropout, "Element-wise dropout (`nn.Dropout`)."),
                          ("dropout2d", nn.Dropout2d, "Channel-wise dropout (`nn.Dropout2d`).")):
    register(OpDef(_name, "norm", _doc, (Arg("p", "float", 0.5),),
                   lambda ins, a: ins[0], lambda ins, a, c=_cls: ModuleCall(c, dict(a))))
