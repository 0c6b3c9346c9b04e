"""ONNX ops that are one standard ``torch.nn`` module, weights included.

Each builder takes the node's attributes, its inputs (a constant tensor or
``None`` for a runtime value, one per slot) and the first input's shape, and
returns the module, or ``None`` when this node's form has no exact ``torch.nn``
equivalent (the caller then falls back to a generic op or ``Unsupported``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

class _Runtime:
    """Marks an input computed at run time (``None`` marks an absent optional input)."""

    def __repr__(self) -> str:
        return "RUNTIME"


RUNTIME = _Runtime()


def _tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_PAD = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_GAP = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_GMP = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def _set(param: nn.Parameter | torch.Tensor | None, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.reshape(param.shape))


def _pads(attrs: dict, n: int, in_shape, kernel, strides, dilations) -> tuple[list[int], list[int]] | None:
    """(begin, end) padding per spatial dim, resolving ``auto_pad``."""
    auto = attrs.get("auto_pad", b"NOTSET").decode()
    if auto in ("NOTSET", "VALID"):
        pads = list(attrs.get("pads", [0] * 2 * n)) if auto == "NOTSET" else [0] * 2 * n
        return pads[:n], pads[n:]
    if in_shape is None or any(d is None for d in in_shape[2:]):
        return None
    begin, end = [], []
    for size, k, s, d in zip(in_shape[2:], kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def _padded(module: nn.Module, n: int, begin: list[int], end: list[int], value: float = 0.0) -> nn.Module:
    if begin == end:
        return module
    torch_pads = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    module.padding = (0,) * n
    return nn.Sequential(_PAD[n](tuple(torch_pads), value), module)


def conv(attrs, ins, in_shape):
    w, b = ins[1], ins[2] if len(ins) > 2 else None
    if not _tensor(w) or b is RUNTIME:
        return None
    n = w.dim() - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides, dilations = list(attrs.get("strides", [1] * n)), list(attrs.get("dilations", [1] * n))
    pads = _pads(attrs, n, in_shape, kernel, strides, dilations)
    if n not in _CONV or pads is None:
        return None
    group = attrs.get("group", 1)
    module = _CONV[n](w.shape[1] * group, w.shape[0], tuple(kernel), tuple(strides), tuple(pads[0]),
                      tuple(dilations), group, bias=b is not None)
    _set(module.weight, w)
    if b is not None:
        _set(module.bias, b)
    return _padded(module, n, *pads)


def conv_transpose(attrs, ins, in_shape):
    w, b = ins[1], ins[2] if len(ins) > 2 else None
    n = w.dim() - 2 if _tensor(w) else 0
    if not _tensor(w) or b is RUNTIME or n not in _CONV_T or "output_shape" in attrs or attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
        return None
    pads = list(attrs.get("pads", [0] * 2 * n))
    if pads[:n] != pads[n:]:
        return None
    group = attrs.get("group", 1)
    module = _CONV_T[n](w.shape[0], w.shape[1] * group, tuple(attrs.get("kernel_shape", w.shape[2:])),
                        tuple(attrs.get("strides", [1] * n)), tuple(pads[:n]),
                        tuple(attrs.get("output_padding", [0] * n)), group, b is not None,
                        tuple(attrs.get("dilations", [1] * n)))
    _set(module.weight, w)
    if b is not None:
        _set(module.bias, b)
    return module


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """``y = x @ weight.T + bias`` with ``weight`` already (out, in)."""
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    _set(module.weight, weight)
    if bias is not None:
        _set(module.bias, bias.expand(weight.shape[0]))
    return module


def gemm(attrs, ins, in_shape):
    b, c = ins[1], ins[2] if len(ins) > 2 else None
    if not _tensor(b) or c is RUNTIME or attrs.get("transA", 0):
        return None
    weight = attrs.get("alpha", 1.0) * (b if attrs.get("transB", 0) else b.t())
    if c is not None and c.numel() not in (1, weight.shape[0]):
        return None
    return linear(weight, None if c is None else attrs.get("beta", 1.0) * c.reshape(-1))


def batch_norm(attrs, ins, in_shape):
    if attrs.get("training_mode", 0) or not all(_tensor(t) for t in ins[1:5]):
        return None
    rank = len(in_shape) if in_shape is not None else 4
    module = _BN.get(rank, nn.BatchNorm2d)(ins[1].numel(), eps=attrs.get("epsilon", 1e-5),
                                           momentum=1 - attrs.get("momentum", 0.9))
    for target, value in zip((module.weight, module.bias, module.running_mean, module.running_var), ins[1:5]):
        _set(target, value)
    return module.eval()


def layer_norm(attrs, ins, in_shape):
    scale, bias = ins[1], ins[2] if len(ins) > 2 else None
    if not _tensor(scale) or bias is RUNTIME:
        return None
    axis = attrs.get("axis", -1)
    if in_shape is not None and all(d is not None for d in in_shape[axis:]):
        shape = tuple(in_shape[axis:])
    elif axis == -1 or (in_shape is not None and len(in_shape) - axis % len(in_shape) == scale.dim()):
        shape = tuple(scale.shape)
    else:
        return None
    module = nn.LayerNorm(shape, eps=attrs.get("epsilon", 1e-5), bias=bias is not None)
    _set(module.weight, scale.expand(shape))
    if bias is not None:
        _set(module.bias, bias.expand(shape))
    return module


def _pool(table):
    def pool(attrs, ins, in_shape):
        kernel = list(attrs["kernel_shape"])
        n = len(kernel)
        strides, dilations = list(attrs.get("strides", [1] * n)), list(attrs.get("dilations", [1] * n))
        pads = _pads(attrs, n, in_shape, kernel, strides, dilations)
        if pads is None or n not in table or any(2 * p > k for p, k in zip(pads[0], kernel)):
            return None
        ceil = bool(attrs.get("ceil_mode", 0))
        if table is _MAXPOOL:
            module = table[n](tuple(kernel), tuple(strides), tuple(pads[0]), tuple(dilations), ceil_mode=ceil)
            return _padded(module, n, *pads, value=float("-inf"))
        if any(d != 1 for d in dilations) or pads[0] != pads[1]:
            return None
        return table[n](tuple(kernel), tuple(strides), tuple(pads[0]), ceil_mode=ceil,
                        count_include_pad=bool(attrs.get("count_include_pad", 0)))

    return pool


def _global(table):
    def pool(attrs, ins, in_shape):
        return table[len(in_shape) - 2 if in_shape is not None else 2](1)

    return pool


def _hard_sigmoid(attrs, ins, in_shape):
    if abs(attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and abs(attrs.get("beta", 0.5) - 0.5) < 1e-6:
        return nn.Hardsigmoid()
    return None


def _softmax(cls):
    def softmax(attrs, ins, in_shape, opset: int = 13):
        axis = attrs.get("axis", -1 if opset >= 13 else 1)
        if opset < 13 and not (axis == -1 or (in_shape is not None and axis == len(in_shape) - 1)):
            return None
        return cls(dim=axis)

    return softmax


def _clip(attrs, ins, in_shape):
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if lo is RUNTIME or hi is RUNTIME:
        return None
    lo = float(lo) if lo is not None else attrs.get("min", float("-inf"))
    hi = float(hi) if hi is not None else attrs.get("max", float("inf"))
    return nn.ReLU6() if (lo, hi) == (0.0, 6.0) else nn.Hardtanh(lo, hi)


def _embedding(attrs, ins, in_shape):
    data = ins[0]
    if not _tensor(data) or ins[1] is not RUNTIME or attrs.get("axis", 0) != 0 or data.dim() != 2 or not data.is_floating_point():
        return None
    return nn.Embedding.from_pretrained(data.clone(), freeze=False)


def _prelu(attrs, ins, in_shape):
    slope = ins[1]
    if not _tensor(slope) or (slope.numel() > 1 and slope.squeeze().dim() != 1) or (slope.dim() > 1 and slope.shape[0] == 1):
        return None
    module = nn.PReLU(slope.numel())
    _set(module.weight, slope.reshape(-1))
    return module


def _simple(cls, **kwargs):
    return lambda attrs, ins, in_shape: cls(**{k: f(attrs) for k, f in kwargs.items()})


BUILDERS: dict[str, Callable] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm,
    "BatchNormalization": batch_norm, "LayerNormalization": layer_norm,
    "MaxPool": _pool(_MAXPOOL), "AveragePool": _pool(_AVGPOOL),
    "GlobalAveragePool": _global(_GAP), "GlobalMaxPool": _global(_GMP),
    "Relu": _simple(nn.ReLU), "Sigmoid": _simple(nn.Sigmoid), "Tanh": _simple(nn.Tanh),
    "HardSwish": _simple(nn.Hardswish), "HardSigmoid": _hard_sigmoid, "Mish": _simple(nn.Mish),
    "Softplus": lambda attrs, ins, in_shape: nn.Softplus() if not attrs else None,
    "LeakyRelu": _simple(nn.LeakyReLU, negative_slope=lambda a: a.get("alpha", 0.01)),
    "Elu": _simple(nn.ELU, alpha=lambda a: a.get("alpha", 1.0)),
    "Gelu": _simple(nn.GELU, approximate=lambda a: a.get("approximate", b"none").decode()),
    "Softmax": _softmax(nn.Softmax), "LogSoftmax": _softmax(nn.LogSoftmax),
    "Clip": _clip, "Identity": _simple(nn.Identity), "Dropout": _simple(nn.Identity),
    "Flatten": lambda attrs, ins, in_shape: nn.Flatten() if attrs.get("axis", 1) == 1 else None,
    "Gather": _embedding, "PRelu": _prelu,
}
