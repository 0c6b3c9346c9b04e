"""Pure-torch helpers that emitted code calls.

Everything here imports only torch, so `dagnet compile -o model.py` can copy
these definitions verbatim into a standalone file. Arguments are annotated
with ``typing`` types so that TorchScript can compile them.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def crop(x: torch.Tensor, like: torch.Tensor, offset: Optional[int] = None) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to those of ``like`` (centred unless ``offset``)."""
    nd = like.dim() - 2
    for axis in range(2, 2 + nd):
        size, target = x.shape[axis], like.shape[axis]
        start = (size - target) // 2 if offset is None else offset
        x = x.narrow(axis, start, target)
    return x


def interpolate_like(x: torch.Tensor, like: torch.Tensor, mode: str = "nearest",
                     align_corners: Optional[bool] = None) -> torch.Tensor:
    """Resize ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[2:], mode=mode, align_corners=align_corners)


def reshape(x: torch.Tensor, shape: List[int]) -> torch.Tensor:
    """Reshape every example to ``shape`` (the batch dimension is kept)."""
    return x.reshape([x.shape[0]] + shape)


def add(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """Sum of three or more tensors (a merge of several residual branches)."""
    out = x + y + z
    for t in more:
        out = out + t
    return out


class LSTM(nn.LSTM):
    """A batch-first ``nn.LSTM`` that returns only the output sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class GRU(nn.GRU):
    """A batch-first ``nn.GRU`` that returns only the output sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class StochasticDepth(nn.Module):
    """``torchvision.ops.StochasticDepth``: in training, zero the whole input of each example
    (``row``) or of the batch (``batch``) with probability ``p`` and scale what is kept by
    1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        size = [x.shape[0] if self.mode == "row" else 1] + [1] * (x.dim() - 1)
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"
