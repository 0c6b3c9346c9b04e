"""Normalisation, dropout and stochastic depth."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.ops import titles
from dagnet.ops._util import expect_known, expect_rank
from dagnet.dims import fmt_shape, product
from dagnet.ops.registry import (FINITE, POSITIVE, PROBABILITY, SIZE, Arg, FunctionCall, ModuleCall, OpDef, Range,
                                 ShapeError, no_params, register)

nn = lazy("torch.nn")
F = lazy("torch.nn.functional")
functional = lazy("dagnet.ops.functional")
_BATCH_NORM = {1: "BatchNorm1d", 2: "BatchNorm1d", 3: "BatchNorm2d", 4: "BatchNorm3d"}


def _batch_norm_shape(ins, a):
    x = ins[0]
    if len(x) not in _BATCH_NORM:
        raise ShapeError(f"`batch_norm` expects [C], [C, L], [C, H, W] or [C, D, H, W], found {list(x)}")
    expect_known(x[0], "channel count", "batch_norm")
    return x


def _batch_norm_build(ins, a):
    return ModuleCall(getattr(nn, _BATCH_NORM[len(ins[0])]), {"num_features": ins[0][0], **a})


register(OpDef(
    "batch_norm", "norm",
    "Batch normalisation over the channel dim (`nn.BatchNorm1d/2d/3d`, chosen by rank).",
    (Arg("eps", "float", 1e-5, range=POSITIVE), Arg("momentum", "float_or_none", 0.1, range=PROBABILITY),
     Arg("affine", "bool", True),
     Arg("track_running_stats", "bool", True)),
    _batch_norm_shape,
    _batch_norm_build,
    params=lambda ins, a: 2 * ins[0][0] if a["affine"] else 0,   # running statistics are buffers
    saves="inputs", title="batch norm", inferred=("num_features",),
))


def _normalized(ins, a) -> list:
    """The dims layer_norm normalises: as given (one size or a list), else the last one."""
    shape = a["normalized_shape"]
    return [ins[0][-1]] if shape is None else shape if isinstance(shape, list) else [shape]


def _layer_norm_shape(ins, a):
    shape = _normalized(ins, a)
    if list(ins[0][len(ins[0]) - len(shape):]) != list(shape):
        raise ShapeError(f"`layer_norm`: normalized_shape {list(shape)} does not match the "
                         f"trailing dims of {list(ins[0])}")
    for d in shape:
        expect_known(d, "normalized size", "layer_norm")
    return ins[0]


def _layer_norm_build(ins, a):
    return ModuleCall(nn.LayerNorm, {"normalized_shape": tuple(_normalized(ins, a)),
                                     "eps": a["eps"], "elementwise_affine": a["elementwise_affine"]})


register(OpDef(
    "layer_norm", "norm", "Layer normalisation (`nn.LayerNorm`); normalises the last dim by default.",
    (Arg("normalized_shape", "ints_or_none", None, range=SIZE), Arg("eps", "float", 1e-5, range=POSITIVE),
     Arg("elementwise_affine", "bool", True)),
    _layer_norm_shape,
    _layer_norm_build,
    params=lambda ins, a: 2 * product(_normalized(ins, a)) if a["elementwise_affine"] else 0,
    saves="inputs", title="layer norm", inferred=(),
))


def _group_norm_shape(ins, a):
    channels = expect_known(ins[0][0], "channel count", "group_norm")
    if channels % a["num_groups"]:
        raise ShapeError(f"`group_norm`: {channels} channels not divisible by {a['num_groups']} groups")
    return ins[0]


def _group_norm_build(ins, a):
    return ModuleCall(nn.GroupNorm, {"num_groups": a["num_groups"], "num_channels": ins[0][0],
                                     "eps": a["eps"], "affine": a["affine"]})


register(OpDef(
    "group_norm", "norm", "Group normalisation (`nn.GroupNorm`); `num_channels` is inferred.",
    (Arg("num_groups", "int", range=SIZE), Arg("eps", "float", 1e-5, range=POSITIVE), Arg("affine", "bool", True)),
    _group_norm_shape,
    _group_norm_build,
    params=lambda ins, a: 2 * ins[0][0] if a["affine"] else 0,
    saves="inputs", title=titles.with_arg("group norm, ", "num_groups"), inferred=("num_channels",),
))

_INSTANCE_NORM = {2: "InstanceNorm1d", 3: "InstanceNorm2d", 4: "InstanceNorm3d"}


def _instance_norm_shape(ins, a):
    x = ins[0]
    if len(x) not in _INSTANCE_NORM:
        raise ShapeError(f"`instance_norm` expects [C, L], [C, H, W] or [C, D, H, W], found {fmt_shape(x)}",
                         "it normalises each channel of an example over that example's positions")
    expect_known(x[0], "channel count", "instance_norm")
    if product(x[1:]) == 1:
        raise ShapeError(f"`instance_norm`: a {fmt_shape(x)} input has one position per channel to normalise over",
                         "PyTorch refuses it; normalise before the spatial size shrinks to 1")
    return x


def _instance_norm_build(ins, a):
    return ModuleCall(getattr(nn, _INSTANCE_NORM[len(ins[0])]), {"num_features": ins[0][0], **a})


register(OpDef(
    "instance_norm", "norm",
    "Instance normalisation: each channel of each example over its positions "
    "(`nn.InstanceNorm1d/2d/3d`, chosen by rank).",
    (Arg("eps", "float", 1e-5, range=POSITIVE), Arg("momentum", "float", 0.1, range=PROBABILITY),
     Arg("affine", "bool", False), Arg("track_running_stats", "bool", False)),
    _instance_norm_shape,
    _instance_norm_build,
    params=lambda ins, a: 2 * ins[0][0] if a["affine"] else 0,
    saves="inputs", title="instance norm", inferred=("num_features",),
))

LRN_ALPHA = Range(0, meaning="alpha scales the squared sum: from 0 up")


def _local_response_norm_shape(ins, a):
    if len(ins[0]) < 2:
        raise ShapeError(f"`local_response_norm` expects [C, ...] with at least one dim after the channels, "
                         f"found {fmt_shape(ins[0])}", "the batch dimension is implicit; reshape the input first")
    return ins[0]


register(OpDef(
    "local_response_norm", "norm",
    "x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta (`nn.LocalResponseNorm`).",
    (Arg("size", "int", range=SIZE), Arg("alpha", "float", 1e-4, range=LRN_ALPHA),
     Arg("beta", "float", 0.75, range=FINITE), Arg("k", "float", 1.0, range=POSITIVE)),
    _local_response_norm_shape,
    lambda ins, a: FunctionCall(F.local_response_norm, dict(a)),
    params=no_params, saves="inputs", title="LRN", inferred=(),
))


def _dropout(name, cls, doc, rank=None):
    """``rank``: the per-example rank a channel-wise dropout expects."""
    def shape(ins, a):
        if rank is not None:
            expect_rank(ins[0], rank, name)
        return ins[0]

    register(OpDef(name, "norm", doc, (Arg("p", "float", 0.5, range=PROBABILITY),), shape,
                   lambda ins, a: ModuleCall(getattr(nn, cls), dict(a)), params=no_params,
                   saves="nothing", title=titles.with_arg("dropout ", "p", 0.5, "{:g}"), inferred=()))


_dropout("dropout", "Dropout", "Element-wise dropout (`nn.Dropout`).")
_dropout("dropout1d", "Dropout1d", "Channel-wise dropout over [C, L] (`nn.Dropout1d`).", 2)
_dropout("dropout2d", "Dropout2d", "Channel-wise dropout over [C, H, W] (`nn.Dropout2d`).", 3)
_dropout("dropout3d", "Dropout3d", "Channel-wise dropout over [C, D, H, W] (`nn.Dropout3d`).", 4)

register(OpDef(
    "stochastic_depth", "norm",
    "Drops a residual branch with probability `p` in training, per example (`row`) or for the whole batch "
    "(`batch`), scaling what is kept by 1 / (1 - p); the identity in eval (`torchvision.ops.StochasticDepth`).",
    (Arg("p", "float", range=PROBABILITY), Arg("mode", "str", choices=("row", "batch"))),
    lambda ins, a: ins[0],
    lambda ins, a: ModuleCall(functional.StochasticDepth, dict(a)),
    params=no_params, saves="nothing", title=titles.with_arg("stochastic depth ", "p"), inferred=(),
))
