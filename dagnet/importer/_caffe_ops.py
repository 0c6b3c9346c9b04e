"""Caffe layers with no single ``torch.nn`` twin, as small traceable modules."""

from __future__ import annotations

import torch
from torch import nn


class Eltwise(nn.Module):
    """Caffe's Eltwise: SUM (with per-input coefficients), PROD or MAX of its bottoms."""

    def __init__(self, operation: str, coeffs: list[float] | None = None):
        super().__init__()
        self.operation, self.coeffs = operation, coeffs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "SUM":
            out = xs[0] * self.coeffs[0] if self.coeffs else xs[0]
            for i, x in enumerate(xs[1:], 1):
                out = out + (x * self.coeffs[i] if self.coeffs else x)
            return out
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.operation == "PROD" else torch.maximum(out, x)
        return out

    def extra_repr(self) -> str:
        return self.operation + (f", coeffs={self.coeffs}" if self.coeffs else "")


class Scale(nn.Module):
    """Caffe's Scale (and Bias): a learned per-channel ``x * weight + bias`` along ``axis``."""

    def __init__(self, shape: tuple[int, ...], rank: int = 4, axis: int = 1, bias: bool = True, scale: bool = True):
        super().__init__()
        self.view = [*shape] + [1] * (rank - axis % rank - len(shape))  # broadcast from ``axis`` on
        self.weight = nn.Parameter(torch.ones(shape)) if scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.weight.reshape(self.view) if self.weight is not None else x
        return out + self.bias.reshape(self.view) if self.bias is not None else out


class Power(nn.Module):
    """Caffe's Power: ``(shift + scale * x) ** power``."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shift + self.scale * x
        return y if self.power == 1.0 else y.pow(self.power)


class Reshape(nn.Module):
    """Caffe's Reshape: ``shape`` replaces dims ``axis .. axis+num_axes`` (0 copies, -1 infers)."""

    def __init__(self, shape: list[int], rank: int, axis: int = 0, num_axes: int = -1):
        super().__init__()
        self.shape = list(shape)
        self.start = axis % (rank + 1) if axis < 0 else axis
        self.end = rank if num_axes == -1 else self.start + num_axes
        self.rank = rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = [x.shape[self.start + i] if s == 0 else s for i, s in enumerate(self.shape)]
        head = [x.shape[i] for i in range(self.start)]
        tail = [x.shape[i] for i in range(self.end, self.rank)]
        return x.reshape(head + middle + tail)


class Slice(nn.Module):
    """Caffe's Slice: cut ``axis`` at ``points`` (or into ``parts`` equal pieces)."""

    def __init__(self, axis: int, points: list[int], parts: int):
        super().__init__()
        self.axis, self.points, self.parts = axis, list(points), parts

    def forward(self, x: torch.Tensor):
        if self.points:
            bounds = [0, *self.points]
            pieces = [x.narrow(self.axis, a, b - a) for a, b in zip(bounds, bounds[1:])]
            return tuple(pieces) + (x.narrow(self.axis, bounds[-1], x.shape[self.axis] - bounds[-1]),)
        chunks = torch.chunk(x, self.parts, dim=self.axis)
        return tuple(chunks[i] for i in range(self.parts))


class Concat(nn.Module):
    """Caffe's Concat: its bottoms joined along ``axis``."""

    def __init__(self, axis: int = 1):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class AbsVal(nn.Module):
    """Caffe's AbsVal: ``|x|``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()
