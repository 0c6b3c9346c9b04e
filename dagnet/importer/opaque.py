"""The stand-in for a source op dagnet cannot express: kept, located, never run."""

from __future__ import annotations

import torch
from torch import nn


class Unsupported(nn.Module):
    """An op of the source model with no dagnet equivalent.

    ``source_op`` names it as the source does (``"aten.fft_rfft2"``,
    ``"onnx::NonMaxSuppression"``, ``"caffe:Python"``), ``location`` says where
    it sits (a module path, an ONNX node name, a prototxt line), and
    ``out_shapes`` are its outputs' shapes without the batch dim when the source
    knows them, so that the imported spec still checks and renders. Capture
    treats it as a leaf; calling it is an error that names it.
    """

    def __init__(self, source_op: str, location: str = "", out_shapes: list[tuple[int, ...]] | None = None):
        super().__init__()
        self.source_op = source_op
        self.location = location
        self.out_shapes = [tuple(s) for s in out_shapes] if out_shapes is not None else None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        where = f" at {self.location}" if self.location else ""
        raise NotImplementedError(f"{self.source_op}{where} has no dagnet equivalent and cannot run")

    def extra_repr(self) -> str:
        return f"{self.source_op!r}, location={self.location!r}"
