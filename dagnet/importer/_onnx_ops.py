"""ONNX ops as torch: standard ``torch.nn`` leaves where an op has weights, small
traceable modules (:class:`OnnxOp`) for the rest.

Every function in :data:`FUNCTIONS` computes one ONNX op from torch tensors
with plain torch calls, so it serves twice: folding constant subgraphs at load
time (shape arithmetic, transposed weights) and, wrapped in an :class:`OnnxOp`,
as the imported module's code, which ``torch.fx`` traces through.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

Inputs = list  # list[torch.Tensor | None], one per ONNX input slot


def torch_dtype(onnx_type: int) -> torch.dtype:
    import numpy as np

    return torch.from_numpy(np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(onnx_type))).dtype


def _list(value) -> list:
    """A constant integer input as Python numbers: a tensor when folding, a
    literal already when the module runs (so that ``torch.fx`` never needs one)."""
    value = value.tolist() if isinstance(value, torch.Tensor) else value
    return value if isinstance(value, list) else [value]


def _rank(xs: Inputs, attrs: dict, i: int = 0) -> int:
    """Input ``i``'s rank: known from shape inference, else from the tensor."""
    ranks = attrs.get("_ranks")
    return ranks[i] if ranks and i < len(ranks) and ranks[i] is not None else xs[i].dim()


def _axes(attrs: dict, xs: Inputs, slot: int) -> list[int] | None:
    """An op's axes: the attribute (older opsets) or a constant input (newer)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(xs) > slot and xs[slot] is not None:
        return [int(a) for a in _list(xs[slot])]
    return None


def _reduce(fn: Callable) -> Callable:
    def reduce(xs: Inputs, attrs: dict):
        x, axes = xs[0], _axes(attrs, xs, 1)
        keep = bool(attrs.get("keepdims", 1))
        rank = _rank(xs, attrs)
        if axes is None or axes == []:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(rank))
        return fn(x, [a % rank for a in axes], keep)

    return reduce


def _max_over(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.amax(dim=a, keepdim=keep)
    return x


def _min_over(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.amin(dim=a, keepdim=keep)
    return x


def _gather(xs: Inputs, attrs: dict):
    x, idx = xs[0], xs[1]
    axis = attrs.get("axis", 0) % _rank(xs, attrs)
    if isinstance(idx, torch.Tensor) and _rank(xs, attrs, 1) == 0:
        idx = idx.reshape(1)
        return x.index_select(axis, idx.long()).squeeze(axis)
    if isinstance(idx, int):
        return x.select(axis, idx)
    return x[(slice(None),) * axis + (idx if isinstance(idx, list) else idx.long(),)]


def _slice(xs: Inputs, attrs: dict):
    x = xs[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = _list(xs[1]), _list(xs[2])
        axes = _list(xs[3]) if len(xs) > 3 and xs[3] is not None else None
        steps = _list(xs[4]) if len(xs) > 4 and xs[4] is not None else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    rank = _rank(xs, attrs)
    if not all(isinstance(v, int) for v in (*starts, *ends)):
        # a bound known only at run time (a sequence length): aten's slice takes
        # symbolic sizes and clamps like ONNX, where Python's slice() cannot
        for s, e, a, st in zip(starts, ends, axes, steps):
            x = torch.ops.aten.slice.Tensor(x, a % rank, s, e, st)
        return x
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st < 0:
            raise NotImplementedError("Slice with a negative step")
        index[a % rank] = slice(s, e, st)
    return x[tuple(index)]


def _reshape(xs: Inputs, attrs: dict):
    x, shape = xs[0], _list(xs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if isinstance(s, int) and s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _split(xs: Inputs, attrs: dict):
    x, axis = xs[0], attrs.get("axis", 0)
    n = attrs.get("_outputs", 1)
    if len(xs) > 1 and xs[1] is not None:
        sizes = [int(s) for s in _list(xs[1])]
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:  # equal parts, the last one smaller: torch.chunk's rule too
        parts = torch.chunk(x, attrs.get("num_outputs", n), dim=axis)
        return tuple(parts[i] for i in range(n))
    parts = x.split(sizes, dim=axis)
    return tuple(parts[i] for i in range(len(sizes)))


def _softmax(fn):
    def softmax(xs: Inputs, attrs: dict):
        if attrs.get("_opset", 13) < 13:  # then: over all dims from ``axis`` on, as one
            x = xs[0]
            return fn(x.flatten(attrs.get("axis", 1)), dim=-1).reshape(x.shape)
        return fn(xs[0], dim=attrs.get("axis", -1))

    return softmax


def _squeeze(xs: Inputs, attrs: dict):
    axes = _axes(attrs, xs, 1)
    if axes is None:
        return xs[0].squeeze()
    x, rank = xs[0], _rank(xs, attrs)
    for a in sorted((a % rank for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _unsqueeze(xs: Inputs, attrs: dict):
    x, axes = xs[0], _axes(attrs, xs, 1)
    rank = _rank(xs, attrs) + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _pad(xs: Inputs, attrs: dict):
    x = xs[0]
    pads = list(attrs["pads"]) if "pads" in attrs else [int(p) for p in _list(xs[1])]
    value = float(_list(xs[2])[0]) if len(xs) > 2 and xs[2] is not None else float(attrs.get("value", 0.0))
    n = len(pads) // 2
    rank = _rank(xs, attrs)
    axes = [int(a) % rank for a in _list(xs[3])] if len(xs) > 3 and xs[3] is not None else list(range(n))
    per_dim = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    torch_pads = [p for d in range(rank - 1, -1, -1) for p in per_dim.get(d, (0, 0))]  # F.pad: last dim first
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:  # reflect/replicate pad only trailing dims
        torch_pads = torch_pads[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[attrs.get("mode", b"constant").decode()]
    return F.pad(x, torch_pads, mode=mode, value=value if mode == "constant" else None)


def _expand(xs: Inputs, attrs: dict):
    return xs[0] * torch.ones(_list(xs[1]), dtype=xs[0].dtype, device=xs[0].device)


def _clip(xs: Inputs, attrs: dict):
    lo = xs[1] if len(xs) > 1 and xs[1] is not None else attrs.get("min")
    hi = xs[2] if len(xs) > 2 and xs[2] is not None else attrs.get("max")
    return torch.clamp(xs[0], min=lo, max=hi)


def _gemm(xs: Inputs, attrs: dict):
    a, b = xs[0], xs[1]
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(xs) > 2 and xs[2] is not None:
        y = y + attrs.get("beta", 1.0) * xs[2]
    return y


def _scalar(value):
    return value.item() if isinstance(value, torch.Tensor) else _list(value)[0]


def _range(xs: Inputs, attrs: dict):
    dtype = xs[0].dtype if isinstance(xs[0], torch.Tensor) else None
    return torch.arange(_scalar(xs[0]), _scalar(xs[1]), _scalar(xs[2]), dtype=dtype)


def _constant_of_shape(xs: Inputs, attrs: dict):
    value = attrs.get("value")
    fill = torch.from_numpy(value.copy()).reshape(()) if value is not None else torch.tensor(0.0)
    return torch.full(_list(xs[0]), fill.item(), dtype=fill.dtype)


def resize_mode(attrs: dict, rank: int | None) -> tuple[str, bool | None] | None:
    """``F.interpolate``'s (mode, align_corners) for an ONNX Resize, or ``None`` if it has none."""
    mode = attrs.get("mode", b"nearest").decode()
    transform = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
    if attrs.get("_op") == "Upsample":
        transform = "asymmetric"
    nearest = attrs.get("nearest_mode", b"round_prefer_floor").decode()
    spatial = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(rank)
    if mode == "nearest" and transform == "asymmetric" and (nearest == "floor" or attrs.get("_op") == "Upsample"):
        return "nearest", None
    if mode == "linear" and spatial and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return spatial, transform == "align_corners"
    if mode == "cubic" and rank == 4 and transform in ("half_pixel", "align_corners") and \
            abs(attrs.get("cubic_coeff_a", -0.75) + 0.75) < 1e-6:
        return "bicubic", transform == "align_corners"
    return None


def _resize(xs: Inputs, attrs: dict):
    x, rank = xs[0], _rank(xs, attrs)
    mode, align = resize_mode(attrs, rank)
    scales = xs[1] if attrs.get("_op") == "Upsample" else xs[2] if len(xs) > 2 else None
    sizes = xs[3] if len(xs) > 3 else None
    if sizes is not None and len(_list(sizes)) == rank:
        return F.interpolate(x, size=_list(sizes)[2:], mode=mode, align_corners=align)
    factors = [float(f) for f in _list(scales)]
    return F.interpolate(x, scale_factor=factors[2:], mode=mode, align_corners=align)


def _variadic(fn):
    def variadic(xs: Inputs, attrs: dict):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return variadic


def _elementwise(fn):
    return lambda xs, attrs: fn(*xs)


FUNCTIONS: dict[str, Callable[[Inputs, dict], object]] = {
    "Add": _elementwise(torch.add), "Sub": _elementwise(torch.sub), "Mul": _elementwise(torch.mul),
    "Div": lambda xs, attrs: torch.div(*xs, rounding_mode="trunc") if (
        attrs["_integer"] if "_integer" in attrs else not xs[0].is_floating_point()) else torch.div(*xs),
    "Pow": _elementwise(torch.pow), "MatMul": _elementwise(torch.matmul), "Mod": _elementwise(torch.fmod),
    "Equal": _elementwise(torch.eq), "Less": _elementwise(torch.lt), "Greater": _elementwise(torch.gt),
    "LessOrEqual": _elementwise(torch.le), "GreaterOrEqual": _elementwise(torch.ge),
    "And": _elementwise(torch.logical_and), "Or": _elementwise(torch.logical_or), "Not": _elementwise(torch.logical_not),
    "Where": _elementwise(torch.where), "Sqrt": _elementwise(torch.sqrt), "Exp": _elementwise(torch.exp),
    "Log": _elementwise(torch.log), "Neg": _elementwise(torch.neg), "Abs": _elementwise(torch.abs),
    "Reciprocal": _elementwise(torch.reciprocal), "Erf": _elementwise(torch.erf), "Floor": _elementwise(torch.floor),
    "Ceil": _elementwise(torch.ceil), "Sin": _elementwise(torch.sin), "Cos": _elementwise(torch.cos),
    "IsNaN": _elementwise(torch.isnan), "IsInf": _elementwise(torch.isinf), "Sign": _elementwise(torch.sign),
    "Relu": _elementwise(torch.relu), "Sigmoid": _elementwise(torch.sigmoid), "Tanh": _elementwise(torch.tanh),
    "Identity": lambda xs, attrs: xs[0], "Dropout": lambda xs, attrs: xs[0],
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Mean": lambda xs, attrs: _variadic(torch.add)(xs, attrs) / len(xs),
    "Cast": lambda xs, attrs: xs[0].to(torch_dtype(attrs["to"])),
    "CastLike": lambda xs, attrs: xs[0].to(xs[1].dtype),
    "Shape": lambda xs, attrs: torch._shape_as_tensor(xs[0])[attrs.get("start", 0) : attrs.get("end")],
    "Size": lambda xs, attrs: torch.tensor(xs[0].numel(), dtype=torch.int64),
    "Transpose": lambda xs, attrs: xs[0].permute(attrs["perm"]) if "perm" in attrs else xs[0].permute(
        list(range(_rank(xs, attrs) - 1, -1, -1))),
    "Concat": lambda xs, attrs: torch.cat([x for x in xs if x is not None], dim=attrs["axis"]),
    "Flatten": lambda xs, attrs: xs[0].reshape(1, -1) if attrs.get("axis", 1) == 0 else xs[0].flatten(
        0, attrs.get("axis", 1) % _rank(xs, attrs) - 1).flatten(1),
    "Reshape": _reshape, "Gather": _gather, "Slice": _slice, "Split": _split, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Pad": _pad, "Expand": _expand, "Clip": _clip, "Gemm": _gemm, "Range": _range,
    "ConstantOfShape": _constant_of_shape, "Resize": _resize, "Upsample": _resize,
    "GatherElements": lambda xs, attrs: torch.gather(xs[0], attrs.get("axis", 0), xs[1].long()),
    "Tile": lambda xs, attrs: xs[0].repeat(_list(xs[1])),
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "ReduceMean": _reduce(lambda x, axes, keep: x.mean(dim=axes, keepdim=keep)),
    "ReduceSum": _reduce(lambda x, axes, keep: x.sum(dim=axes, keepdim=keep)),
    "ReduceMax": _reduce(_max_over), "ReduceMin": _reduce(_min_over),
    "ReduceProd": _reduce(lambda x, axes, keep: _prod(x, axes, keep)),
    "ReduceL2": _reduce(lambda x, axes, keep: x.square().sum(dim=axes, keepdim=keep).sqrt()),
    "ArgMax": lambda xs, attrs: xs[0].argmax(dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1))),
    "ArgMin": lambda xs, attrs: xs[0].argmin(dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1))),
    "CumSum": lambda xs, attrs: xs[0].cumsum(int(_list(xs[1])[0])),
    "Einsum": lambda xs, attrs: torch.einsum(attrs["equation"].decode(), *xs),
    "LeakyRelu": lambda xs, attrs: F.leaky_relu(xs[0], attrs.get("alpha", 0.01)),
    "Elu": lambda xs, attrs: F.elu(xs[0], attrs.get("alpha", 1.0)),
    "HardSigmoid": lambda xs, attrs: torch.clamp(attrs.get("alpha", 0.2) * xs[0] + attrs.get("beta", 0.5), 0, 1),
    "HardSwish": lambda xs, attrs: F.hardswish(xs[0]),
    "Softplus": lambda xs, attrs: F.softplus(xs[0]),
    "Gelu": lambda xs, attrs: F.gelu(xs[0], approximate=attrs.get("approximate", b"none").decode()),
    "Trilu": lambda xs, attrs: (torch.triu if attrs.get("upper", 1) else torch.tril)(
        xs[0], int(_list(xs[1])[0]) if len(xs) > 1 and xs[1] is not None else 0),
}
# ONNX ops whose every output is a pure function of its inputs and attributes
# (no randomness, no state), so a node with constant inputs folds at load time.
FOLDABLE = set(FUNCTIONS) - {"Dropout"}


def _prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.prod(dim=a, keepdim=keep)
    return x


class OnnxOp(nn.Module):
    """One ONNX op with no weights, computed by plain torch calls.

    ``slots`` says, for each ONNX input in order, whether the caller passes it
    (``"arg"``), it is a constant tensor kept as a buffer (``("buffer", name)``)
    or a small integer constant kept as Python numbers (``("literal", value)``:
    shapes, axes, indices, which ``torch.fx`` must see as plain values), or it
    is absent (``None``); attributes are plain Python values.
    """

    def __init__(self, op_type: str, attrs: dict, slots: list, constants: dict[str, torch.Tensor]):
        super().__init__()
        self.op_type, self.attrs, self.slots = op_type, attrs, list(slots)
        for key, tensor in constants.items():
            self.register_buffer(key, tensor)

    def forward(self, *args):
        args, inputs = list(args), []
        witnesses = args[sum(slot == "arg" for slot in self.slots) :]
        for index, slot in enumerate(self.slots):
            if slot == "arg":
                inputs.append(args.pop(0))
            elif slot is None:
                inputs.append(None)
            elif slot[0] == "buffer":
                inputs.append(getattr(self, slot[1]))
            elif slot[0] == "literal":
                inputs.append(slot[1])
            else:  # ("symbolic", entries, scalar): sizes read off the witness tensors now
                values = [evaluate(entry, witnesses) for entry in slot[1]]
                value = values[0] if slot[2] else values
                python = index > 0 or self.op_type in ("Range", "ConstantOfShape")
                inputs.append(value if python or slot[2] else torch.tensor(value, dtype=torch.int64))
        return FUNCTIONS[self.op_type](inputs, self.attrs)

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.attrs.items() if not hasattr(v, "shape")}
        return f"{self.op_type}, {shown}" if shown else self.op_type


def evaluate(entry, witnesses: list):
    """A symbolic size: an int, ``("dim", k, axis)`` (``witnesses[k].shape[axis]``)
    or ``(op, a, b)`` over two of them."""
    if not isinstance(entry, tuple):
        return entry
    if entry[0] == "dim":
        return witnesses[entry[1]].shape[entry[2]]
    a, b = evaluate(entry[1], witnesses), evaluate(entry[2], witnesses)
    if entry[0] == "add":
        return a + b
    if entry[0] == "sub":
        return a - b
    if entry[0] == "mul":
        return a * b
    return a // b
