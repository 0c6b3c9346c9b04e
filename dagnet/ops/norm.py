"""Normalisation and dropout."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.ops import titles
from dagnet.ops._util import expect_known
from dagnet.dims import product
from dagnet.ops.registry import POSITIVE, PROBABILITY, SIZE, Arg, ModuleCall, OpDef, ShapeError, no_params, register

nn = lazy("torch.nn")
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

for _name, _cls, _doc in (("dropout", "Dropout", "Element-wise dropout (`nn.Dropout`)."),
                          ("dropout2d", "Dropout2d", "Channel-wise dropout (`nn.Dropout2d`).")):
    register(OpDef(_name, "norm", _doc, (Arg("p", "float", 0.5, range=PROBABILITY),),
                   lambda ins, a: ins[0], lambda ins, a, c=_cls: ModuleCall(getattr(nn, c), dict(a)), params=no_params,
                   saves="nothing", title=titles.with_arg("dropout ", "p", 0.5, "{:g}"), inferred=()))
