"""A dagnet plugin: Swish, x * sigmoid(beta x), with a learnable beta per channel.

    dagnet --plugin dagnet_swish train examples/plugins/swish_mlp.yaml

(the module must be importable: installed, or on PYTHONPATH).
"""

from __future__ import annotations

import torch
from torch import nn

from dagnet.dims import product
from dagnet.ops import Arg, ModuleCall, OpDef, ShapeError, register


class Swish(nn.Module):
    """x * sigmoid(beta x) over inputs (B, C, ...), one beta per channel."""

    def __init__(self, channels: int, beta: float = 1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.full((channels,), float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.view(-1, *([1] * (x.dim() - 2)))
        return x * torch.sigmoid(beta * x)


def shape(ins, args):
    """Output shape from the input shapes (per example, no batch dim); may be symbolic."""
    (x,) = ins
    if not x or not isinstance(x[0], int):
        raise ShapeError(f"`swish` needs a known channel count (dim 1), found {list(x)}",
                         "put it after a layer with a fixed width: `linear(128) -> swish`")
    return x


register(OpDef(
    "swish", "activation", "x * sigmoid(beta x), with a learnable beta per channel (dim 1).",
    (Arg("beta", "float", 1.0, doc="initial beta"),),
    shape=shape,
    build=lambda ins, args: ModuleCall(Swish, {"channels": ins[0][0], "beta": args["beta"]}),
    macs=lambda ins, out, args: 3 * product(out),        # a product, a sigmoid, a product
    params=lambda ins, args: ins[0][0],                   # counted without building the module
))
