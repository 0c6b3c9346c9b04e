"""Op titles as papers write them ("7×7 conv, 64, /2", "3×3 max pool, /2", "fc, 1000").

Each op's ``title`` facet is built here from its arguments; the renderer only
asks the op for it. Plain text with Unicode symbols: the renderer makes the
LaTeX form.
"""

from __future__ import annotations

TIMES = "\u00d7"


def kernel(k, nd: int) -> str:
    """``3×3`` for a kernel (or window) of ``nd`` dims, given as one int or a list."""
    ks = list(k) if isinstance(k, (list, tuple)) else [k] * nd
    return TIMES.join(str(v) for v in ks)


def ones(v) -> bool:
    """Whether an int or list argument is 1 in every dim (no stride, no dilation, a global pool)."""
    return all(x == 1 for x in v) if isinstance(v, (list, tuple)) else v == 1


def stride(s) -> int | str | None:
    """The stride as a title shows it; None for stride 1."""
    if s is None or ones(s):
        return None
    ss = list(s) if isinstance(s, (list, tuple)) else [s]
    return ss[0] if len(set(ss)) == 1 else "(" + ",".join(map(str, ss)) + ")"


def conv(nd: int, transposed: bool):
    """``3×3 conv, 64, /2, dil 2, g32``; a transposed one is an ``up-conv`` with ``×2``."""
    def title(a: dict) -> str:
        text = f"{kernel(a.get('kernel_size', '?'), nd)} {'up-conv' if transposed else 'conv'}, " \
               f"{a.get('out_channels', '?')}"
        s = stride(a.get("stride", 1))
        if s is not None:
            text += f", {TIMES}{s}" if transposed else f", /{s}"
        if not ones(a.get("dilation", 1)):
            text += f", dil {a['dilation']}"
        if a.get("groups", 1) != 1:
            text += f", g{a['groups']}"
        return text
    return title


def pool(nd: int, kind: str):
    """``3×3 max pool, /2`` (the stride defaults to the window)."""
    def title(a: dict) -> str:
        s = stride(a.get("stride") if a.get("stride") is not None else a.get("kernel_size"))
        return f"{kernel(a.get('kernel_size', '?'), nd)} {kind} pool" + (f", /{s}" if s else "")
    return title


def adaptive_pool(nd: int, kind: str):
    """``global avg pool`` for output size 1, else ``adaptive avg pool 7×7``."""
    def title(a: dict) -> str:
        size = a.get("output_size")
        if ones(size):
            return f"global {kind} pool"
        return f"adaptive {kind} pool {kernel(size, nd)}"
    return title


def upsample(a: dict) -> str:
    """``upsample ×2, bilinear`` (nearest is not written)."""
    scale = a.get("scale_factor")
    mode = a.get("mode", "nearest")
    return "upsample" + (f" {TIMES}{scale:g}" if isinstance(scale, (int, float)) else "") + \
           (f", {mode}" if mode != "nearest" else "")


def recurrent(cell: str):
    """``BiLSTM, 128, 2 layers``."""
    def title(a: dict) -> str:
        name = ("Bi" if a.get("bidirectional") else "") + cell
        layers = a.get("num_layers", 1)
        return f"{name}, {a.get('hidden_size', '?')}" + (f", {layers} layers" if layers != 1 else "")
    return title


def with_arg(prefix: str, arg: str, default="?", fmt: str = "{}"):
    """``fc, 1000``: a word and one argument's value."""
    def title(a: dict) -> str:
        return prefix + fmt.format(a.get(arg, default))
    return title
