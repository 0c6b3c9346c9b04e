"""Convolutions, transposed convolutions, pooling and upsampling (1-d, 2-d and 3-d), and the
channel rearrangements that go with them (pixel shuffle, channel shuffle)."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import ceildiv, floordiv, fmt_shape, known, product
from dagnet.ops import titles
from dagnet.ops._util import expect_known, expect_rank, tuple_of
from dagnet.ops.registry import (NON_NEGATIVE, POSITIVE, SIZE, Arg, FunctionCall, ModuleCall, OpDef, ShapeError,
                                  no_params, register)

nn = lazy("torch.nn")
F = lazy("torch.nn.functional")
functional = lazy("dagnet.ops.functional")


def _window_out(size, k, s, p, d, ceil_mode=False):
    """floor((L + 2p - d(k-1) - 1) / s) + 1, PyTorch's output size of a window op."""
    span = size + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return floordiv(span, s) + 1
    out = ceildiv(span, s) + 1
    if isinstance(out, int) and (out - 1) * s >= size + p:   # last window must start inside
        out -= 1
    return out


PADDING_DOC = "positions on each side; kernel_size // 2 keeps an odd kernel's size at stride 1"


def _conv_args(transposed: bool):
    # PyTorch's padding="same" / "valid" exist for convolutions only, not transposed ones
    padding_words = () if transposed else ("same", "valid")
    args = [Arg("out_channels", "int", doc="output channels", range=SIZE),
            Arg("kernel_size", "ints", range=SIZE), Arg("stride", "ints", 1, range=SIZE),
            Arg("padding", "ints", 0, padding_words, PADDING_DOC, range=NON_NEGATIVE)]
    if transposed:
        args.append(Arg("output_padding", "ints", 0, range=NON_NEGATIVE))
    modes = ("zeros",) if transposed else ("zeros", "reflect", "replicate", "circular")
    args += [Arg("dilation", "ints", 1, range=SIZE), Arg("groups", "int", 1, range=SIZE),
             Arg("bias", "bool", True), Arg("padding_mode", "str", "zeros", modes)]
    return tuple(args)


def _padding(name: str, a: dict, nd: int) -> tuple | None:
    """Per-dim padding of a convolution; None for "same", which keeps the size.

    PyTorch pads "same" by d * (k - 1) in all, the odd one at the end, and only
    without a stride; "valid" is no padding.
    """
    if a["padding"] == "valid":
        return (0,) * nd
    if a["padding"] != "same":
        return tuple_of(a["padding"], nd, "padding")
    if any(s != 1 for s in tuple_of(a["stride"], nd, "stride")):
        raise ShapeError(f"`{name}`: padding `same` needs stride 1, found stride {a['stride']}",
                         "PyTorch pads `same` only without a stride: give the padding as a number "
                         "instead (kernel_size // 2 for an odd kernel)")
    return None


def _check_output_padding(name: str, output_padding, stride, dilation) -> None:
    for o, s, d in zip(output_padding, stride, dilation):
        if o >= s and o >= d:
            raise ShapeError(f"`{name}`: output_padding {o} must be smaller than the stride ({s}) "
                             f"or the dilation ({d})", "output_padding only picks among the sizes a "
                             "stride makes ambiguous: use 0 .. stride - 1")


def _conv(nd: int, transposed: bool):
    name = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    cls_name = f"ConvTranspose{nd}d" if transposed else f"Conv{nd}d"

    def shape(ins, a):
        (x,) = ins
        expect_rank(x, nd + 1, name)
        c_in = expect_known(x[0], "channel count", name)
        for g_name, c in (("in", c_in), ("out", a["out_channels"])):
            if c % a["groups"]:
                raise ShapeError(f"`{name}`: {g_name} channels {c} not divisible by groups {a['groups']}")
        k, s, d = (tuple_of(a[n], nd, n) for n in ("kernel_size", "stride", "dilation"))
        p = _padding(name, a, nd)
        if transposed:
            op = tuple_of(a["output_padding"], nd, "output_padding")
            _check_output_padding(name, op, s, d)
            spatial = [(L - 1) * s_ - 2 * p_ + d_ * (k_ - 1) + o + 1
                       for L, k_, s_, p_, d_, o in zip(x[1:], k, s, p, d, op)]
        elif p is None:
            spatial = list(x[1:])
        else:
            spatial = [_window_out(L, *t) for L, t in zip(x[1:], zip(k, s, p, d))]
        _positive(spatial, x, name)
        return (a["out_channels"], *spatial)

    def build(ins, a):
        kwargs = {"in_channels": ins[0][0], **{k: _tuple(v) for k, v in a.items()}}
        return ModuleCall(getattr(nn, cls_name), kwargs)

    def macs(ins, out, a):
        k = product(tuple_of(a["kernel_size"], nd, "kernel_size"))
        per_out = (ins[0][0] // a["groups"]) * k
        if transposed:   # every input element scatters into out_channels/groups * k outputs
            return product(ins[0]) * (a["out_channels"] // a["groups"]) * k
        return product(out) * per_out

    def params(ins, a):   # weight [out, in / groups, *k] (transposed: [in, out / groups, *k]) + bias
        k = product(tuple_of(a["kernel_size"], nd, "kernel_size"))
        return ins[0][0] * a["out_channels"] // a["groups"] * k + (a["out_channels"] if a["bias"] else 0)

    doc = (f"{nd}-d {'transposed ' if transposed else ''}convolution (`nn.{cls_name}`); "
           "`in_channels` is inferred.")
    register(OpDef(name, "conv", doc, _conv_args(transposed), shape, build, macs=macs,
                   params=params, saves="inputs", title=titles.conv(nd, transposed),
                   inferred=("in_channels",)))


def _positive(spatial, x, name, hint="the input is too small for this kernel, stride and padding"):
    for s in spatial:
        if isinstance(s, int) and s < 1:
            raise ShapeError(f"`{name}` makes an empty output from input {list(x)}", hint)


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _pool(nd: int, kind: str):
    name = f"{kind}_pool{nd}d"
    args = [Arg("kernel_size", "ints", range=SIZE), Arg("stride", "ints_or_none", None, range=SIZE),
            Arg("padding", "ints", 0, doc=PADDING_DOC, range=NON_NEGATIVE)]
    if kind == "max":
        args.append(Arg("dilation", "ints", 1, range=SIZE))
    args.append(Arg("ceil_mode", "bool", False))
    if kind == "avg":
        args.append(Arg("count_include_pad", "bool", True))

    def shape(ins, a):
        (x,) = ins
        expect_rank(x, nd + 1, name)
        k = tuple_of(a["kernel_size"], nd, "kernel_size")
        s = tuple_of(a["stride"] if a["stride"] is not None else a["kernel_size"], nd, "stride")
        p = tuple_of(a["padding"], nd, "padding")
        d = tuple_of(a.get("dilation", 1), nd, "dilation")
        _check_pool_padding(name, k, p, d)
        spatial = [_window_out(L, *t, ceil_mode=a["ceil_mode"]) for L, t in zip(x[1:], zip(k, s, p, d))]
        _positive(spatial, x, name)
        return (x[0], *spatial)

    def build(ins, a):
        return FunctionCall(getattr(F, name), {k: _tuple(v) for k, v in a.items()})

    register(OpDef(name, "pool", f"{nd}-d {kind} pooling (`F.{name}`).", tuple(args), shape, build,
                   params=no_params, saves="inputs", title=titles.pool(nd, kind), inferred=()))


def _check_pool_padding(name: str, kernel, padding, dilation) -> None:
    """PyTorch pads a pooling window by at most half of its (dilated) size."""
    for k, p, d in zip(kernel, padding, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise ShapeError(f"`{name}`: padding {p} is more than half the window ({d * (k - 1) + 1})",
                             f"pad by at most {(d * (k - 1) + 1) // 2}, or widen the window")


def _adaptive(nd: int, kind: str):
    name = f"adaptive_{kind}_pool{nd}d"

    def shape(ins, a):
        (x,) = ins
        expect_rank(x, nd + 1, name)
        out = tuple_of(a["output_size"], nd, "output_size")
        return (x[0], *[L if o is None else o for L, o in zip(x[1:], out)])

    register(OpDef(name, "pool", f"{nd}-d adaptive {kind} pooling (`F.{name}`).",
                   (Arg("output_size", "ints", range=SIZE),), shape,
                   lambda ins, a: FunctionCall(getattr(F, name), {"output_size": _tuple(a["output_size"])}),
                   params=no_params, saves="inputs", title=titles.adaptive_pool(nd, kind),
                   inferred=()))


def _interpolate_shape(name):
    def shape(ins, a):
        x = ins[0]
        if len(x) < 2:
            raise ShapeError(f"`{name}` expects [C, L] or [C, H, W], found {list(x)}")
        nd = len(x) - 1
        if len(ins) == 2:          # resize to the spatial size of a second input
            if len(ins[1]) != len(x):
                raise ShapeError(f"`{name}`: reference rank {len(ins[1])} differs from input rank {len(x)}")
            return (x[0], *ins[1][1:])
        if (a["size"] is None) == (a["scale_factor"] is None):
            raise ShapeError(f"`{name}` needs exactly one of `size` or `scale_factor` "
                             "(or a second input whose size to match)")
        if a["size"] is not None:
            return (x[0], *tuple_of(a["size"], nd, "size"))
        scale = tuple_of(a["scale_factor"], nd, "scale_factor")
        spatial = [_scaled(L, f) for L, f in zip(x[1:], scale)]
        _positive(spatial, x, name, "PyTorch floors the scaled size: use a larger scale_factor, or `size`")
        return (x[0], *spatial)
    return shape


def _scaled(size, factor):
    if float(factor).is_integer():
        return size * int(factor)
    if isinstance(size, int):
        return int(size * factor)       # PyTorch floors the scaled size
    return floordiv(size * int(round(factor * 1000)), 1000)


def _interpolate_build(ins, a):
    kwargs = {"mode": a["mode"]}
    if a["mode"] in ("linear", "bilinear", "bicubic", "trilinear"):
        kwargs["align_corners"] = a["align_corners"]
    if len(ins) == 2:
        return FunctionCall(functional.interpolate_like, kwargs)
    kwargs.update(size=_tuple(a["size"]), scale_factor=_tuple(a["scale_factor"]))
    return FunctionCall(F.interpolate, kwargs)


_INTERP_ARGS = (Arg("size", "ints_or_none", None, range=SIZE),
                Arg("scale_factor", "floats_or_none", None, range=POSITIVE),
                Arg("mode", "str", "nearest", ("nearest", "linear", "bilinear", "bicubic", "trilinear")),
                Arg("align_corners", "bool", False))

for _name in ("interpolate", "upsample"):
    register(OpDef(_name, "upsample",
                   "Resize by `size` or `scale_factor`, or to the spatial size of a second input "
                   "(`F.interpolate`).", _INTERP_ARGS, _interpolate_shape(_name), _interpolate_build,
                   arity=(1, 2), params=no_params, saves="inputs", title=titles.upsample,
                   inferred=()))


def _pixel_shuffle_shape(ins, a):
    (x,) = ins
    expect_rank(x, 3, "pixel_shuffle")
    c, r = expect_known(x[0], "channel count", "pixel_shuffle"), a["upscale_factor"]
    if c % (r * r):
        raise ShapeError(f"`pixel_shuffle`: channels {c} not divisible by upscale_factor² ({r * r})",
                         f"it makes each {r * r} channels one {r}{titles.TIMES}{r} patch: give it a multiple "
                         f"of {r * r} channels ({r * r} * C from the layer before)")
    return (c // (r * r), x[1] * r, x[2] * r)


def _pixel_unshuffle_shape(ins, a):
    (x,) = ins
    expect_rank(x, 3, "pixel_unshuffle")
    r = a["downscale_factor"]
    for axis, size in zip("HW", x[1:]):
        if known(size) and int(size) % r:
            raise ShapeError(f"`pixel_unshuffle`: {axis} = {size} not divisible by downscale_factor {r}",
                             f"it folds each {r}{titles.TIMES}{r} patch into channels: crop or pad the input "
                             f"to a multiple of {r}")
    # PyTorch refuses a remainder rather than flooring it, so a symbolic size divides exactly
    return (x[0] * r * r, *(floordiv(L, r) if known(L) else L / r for L in x[1:]))


def _channel_shuffle_shape(ins, a):
    (x,) = ins
    if len(x) < 2:
        raise ShapeError(f"`channel_shuffle` expects a [C, ...] input with spatial dims, found {fmt_shape(x)}",
                         "PyTorch shuffles [C, L], [C, H, W] or [C, D, H, W]: reshape a [C] input to [C, 1]")
    c = expect_known(x[0], "channel count", "channel_shuffle")
    if c % a["groups"]:
        raise ShapeError(f"`channel_shuffle`: channels {c} not divisible by groups {a['groups']}",
                         "use the groups of the grouped convolution before it, which divide its channels")
    return x


register(OpDef("pixel_shuffle", "upsample",
               "[C * r², H, W] -> [C, H * r, W * r], r = `upscale_factor` (`nn.PixelShuffle`, sub-pixel "
               "convolution).", (Arg("upscale_factor", "int", range=SIZE),), _pixel_shuffle_shape,
               lambda ins, a: FunctionCall(F.pixel_shuffle, dict(a)), params=no_params, saves="nothing",
               title=titles.with_arg(f"pixel shuffle {titles.TIMES}", "upscale_factor"), inferred=()))
register(OpDef("pixel_unshuffle", "shape",
               "[C, H * r, W * r] -> [C * r², H, W], r = `downscale_factor` (`nn.PixelUnshuffle`).",
               (Arg("downscale_factor", "int", range=SIZE),), _pixel_unshuffle_shape,
               lambda ins, a: FunctionCall(F.pixel_unshuffle, dict(a)), params=no_params, saves="nothing",
               title=titles.with_arg("pixel unshuffle /", "downscale_factor"), inferred=()))
register(OpDef("channel_shuffle", "shape",
               "Interleave the channels of `groups` groups (`nn.ChannelShuffle`, ShuffleNet).",
               (Arg("groups", "int", range=SIZE),), _channel_shuffle_shape,
               lambda ins, a: FunctionCall(F.channel_shuffle, dict(a)), params=no_params, saves="nothing",
               title=titles.with_arg("channel shuffle, ", "groups", fmt="{} groups"), inferred=()))

for _nd in (1, 2, 3):
    _conv(_nd, transposed=False)
    _conv(_nd, transposed=True)
    for _kind in ("max", "avg"):
        _pool(_nd, _kind)
        _adaptive(_nd, _kind)
