"""Small helpers shared by the op families."""

from __future__ import annotations

from dagnet.dims import differ, fmt_shape, known
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


def broadcast(shapes, op: str, what: str = "inputs") -> tuple:
    """NumPy broadcasting of per-example shapes (a 1 stretches; other sizes must agree)."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        big = [d for d in dims if not (isinstance(d, int) and d == 1)]
        if any(differ(big[0], d) for d in big[1:]):
            raise ShapeError(f"`{op}` {what} do not broadcast: {', '.join(fmt_shape(s) for s in shapes)}",
                             "aligned at the last dim, sizes must be equal or 1")
        out.append(big[0] if big else 1)
    return tuple(out)
