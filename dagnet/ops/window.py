"""Windowed attention over channels-last feature maps [H, W, C] (per example), and the
patch merging between its stages: the Swin Transformer's two layers, as torchvision
writes them (`torchvision.models.swin_transformer`)."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import ceildiv, fmt_shape
from dagnet.ops import titles
from dagnet.ops._util import expect_known, expect_rank, tuple_of
from dagnet.ops.registry import NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE, Arg, ModuleCall, OpDef, ShapeError, register

functional = lazy("dagnet.ops.functional")

SWIN = "shifted_window_attention"


def _windows(a) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window_size, shift_size), each as (height, width)."""
    for name in ("window_size", "shift_size"):
        if isinstance(a[name], (list, tuple)) and len(a[name]) != 2:
            raise ShapeError(f"`{SWIN}`: `{name}` needs 2 values (height, width), found {len(a[name])}",
                             "windows are 2-d: give [height, width], or one int for a square")
    window, shift = tuple_of(a["window_size"], 2, "window_size"), tuple_of(a["shift_size"], 2, "shift_size")
    for w, s, axis in zip(window, shift, ("height", "width")):
        if s >= w:
            raise ShapeError(f"`{SWIN}`: shift_size {list(shift)} must be below window_size {list(window)} "
                             f"(the {axis} shifts by {s} in windows of {w})",
                             "Swin shifts by half a window: shift_size = window_size // 2, or 0 for no shift")
    return window, shift


def _swin_dims(ins, a):
    """(H, W, C, window, shift) of an input [H, W, C]."""
    x = ins[0]
    expect_rank(x, 3, SWIN, "channels-last [H, W, C]")
    H, W, C = x
    C = expect_known(C, "channel count (last dim)", SWIN)
    window, shift = _windows(a)
    if C % a["num_heads"]:
        raise ShapeError(f"`{SWIN}`: num_heads {a['num_heads']} does not divide the {C} channels of "
                         f"{fmt_shape(x)}", "each head takes channels / num_heads of the features: "
                         "pick a divisor of the channel count")
    return H, W, C, window, shift


def _swin_shape(ins, a):
    _swin_dims(ins, a)
    return ins[0]


def _swin_build(ins, a):
    _, _, C, window, shift = _swin_dims(ins, a)
    return ModuleCall(functional.ShiftedWindowAttention, {
        "dim": C, "window_size": list(window), "shift_size": list(shift), "num_heads": a["num_heads"],
        "qkv_bias": a["qkv_bias"], "proj_bias": a["proj_bias"], "attention_dropout": a["attention_dropout"],
        "dropout": a["dropout"]})


def _swin_params(ins, a):
    """qkv (C x 3C), proj (C x C), their biases, and the bias table [(2wh-1)(2ww-1), heads]."""
    _, _, C, (wh, ww), _ = _swin_dims(ins, a)
    return (4 * C * C + (3 * C if a["qkv_bias"] else 0) + (C if a["proj_bias"] else 0)
            + (2 * wh - 1) * (2 * ww - 1) * a["num_heads"])


def _swin_macs(ins, out, a):
    """Over the input padded to whole windows (N positions): the q, k, v and output
    projections, and each position's scores and weighted sum over its window."""
    H, W, C, (wh, ww), _ = _swin_dims(ins, a)
    positions = ceildiv(H, wh) * wh * ceildiv(W, ww) * ww
    return positions * (4 * C * C + 2 * wh * ww * C)


def _swin_title(a) -> str:
    """``SW-MSA 7×7, 3 heads`` as the paper names it: W-MSA unshifted, SW-MSA shifted."""
    shift = a.get("shift_size", 0)
    shifted = any(shift) if isinstance(shift, (list, tuple)) else shift != 0
    return f"{'SW' if shifted else 'W'}-MSA {titles.kernel(a.get('window_size', '?'), 2)}, " \
           f"{a.get('num_heads', '?')} heads"


register(OpDef(
    SWIN, "attention",
    "Swin's (shifted) window multi-head self-attention with a learned relative position bias "
    "(torchvision's `ShiftedWindowAttention`) over channels-last [H, W, C]: padded to whole windows, "
    "cyclically shifted by `shift_size` (the wrapped regions masked), cropped back; `dim` is inferred.",
    (Arg("window_size", "ints", range=SIZE, doc="window height and width (one int: square)"),
     Arg("shift_size", "ints", range=NON_NEGATIVE, doc="cyclic shift, below window_size (Swin: half)"),
     Arg("num_heads", "int", range=SIZE), Arg("qkv_bias", "bool", True), Arg("proj_bias", "bool", True),
     Arg("attention_dropout", "float", 0.0, range=PROBABILITY), Arg("dropout", "float", 0.0, range=PROBABILITY)),
    _swin_shape, _swin_build, macs=_swin_macs, params=_swin_params,
    saves="inputs", title=_swin_title, inferred=("dim",)))


def _merging_channels(ins) -> int:
    x = ins[0]
    expect_rank(x, 3, "patch_merging", "channels-last [H, W, C]")
    return expect_known(x[2], "channel count (last dim)", "patch_merging")


def _merging_shape(ins, a):
    C = _merging_channels(ins)
    H, W, _ = ins[0]
    return (ceildiv(H, 2), ceildiv(W, 2), 2 * C)


register(OpDef(
    "patch_merging", "dense",
    "Swin's patch merging (torchvision's `PatchMerging`) over channels-last [H, W, C]: each 2x2 "
    "neighbourhood concatenated (odd sizes padded), layer-normalised and projected without bias to "
    "[ceil(H/2), ceil(W/2), 2C]; `dim` is inferred.",
    (Arg("eps", "float", 1e-5, range=POSITIVE, doc="the layer norm's epsilon"),),
    _merging_shape,
    lambda ins, a: ModuleCall(functional.PatchMerging, {"dim": _merging_channels(ins), "eps": a["eps"]}),
    macs=lambda ins, out, a: out[0] * out[1] * 8 * _merging_channels(ins) ** 2,
    params=lambda ins, a: 8 * _merging_channels(ins) ** 2 + 8 * _merging_channels(ins),
    saves="inputs", title="patch merging", inferred=("dim",)))
