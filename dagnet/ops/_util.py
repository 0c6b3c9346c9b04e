"""Small helpers shared by the op families."""

from __future__ import annotations

from dagnet.dims import fmt_shape, known
from dagnet.ops.registry import ShapeError

LAYOUTS = {1: "[C, L]", 2: "[C, H, W]", 3: "[C, D, H, W]"}


def expect_rank(shape, rank: int, op: str, layout: str | None = None) -> None:
    if len(shape) != rank:
        layout = layout or LAYOUTS.get(rank - 1, f"{rank} dims")
        raise ShapeError(f"`{op}` expects a {layout} input (per example), found {fmt_shape(shape)}",
                         "the batch dimension is implicit; reshape or flatten the input first")


def expect_known(d, what: str, op: str):
    if not known(d):
        raise ShapeError(f"`{op}` needs a known {what}, found `{d}`",
                         "channel and feature sizes must not depend on symbolic input sizes")
    return int(d)


def tuple_of(value, n: int, name: str):
    """Broadcast an int (or a list) argument to an n-tuple, as PyTorch does."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ShapeError(f"`{name}` needs {n} values, found {len(value)}")
        return tuple(value)
    return (value,) * n


def batch_dim(dim: int, rank: int, op: str) -> int:
    """Map a PyTorch dim (which counts the batch) onto a per-example shape index."""
    full = rank + 1
    if not -full <= dim < full:
        raise ShapeError(f"`{op}`: dim {dim} is out of range for a {rank}-d example (+ batch)")
    if dim % full == 0:
        raise ShapeError(f"`{op}` cannot act on the batch dimension (dim {dim})",
                         "dims count the batch: dim=1 is the first per-example dim")
    return dim % full - 1
