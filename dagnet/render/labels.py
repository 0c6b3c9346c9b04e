"""What a figure writes in a node: op titles, shapes and parameter counts.

Every piece of text is made twice, as Unicode for Graphviz (DOT, SVG, PNG) and
as LaTeX for TikZ, so that LaTeX sets the paper's own fonts and math. Titles
follow the way papers label layers ("7×7 conv, 64, /2", "3×3 max pool, /2",
"fc, 1000"), not PyTorch's class names; each op's ``title`` facet
(dagnet/ops/titles.py) writes its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy

from dagnet import ops
from dagnet.dims import substitute
from dagnet.ops.titles import TIMES     # ×, measured by the metrics tables and set as \times in TeX

MINUS = "\u2212"
DOTS = "\u2026"


@dataclass(frozen=True)
class Line:
    """One line of a label: ``text`` for Graphviz, ``tex`` for LaTeX; ``role`` picks the font."""

    text: str
    tex: str
    role: str = "title"     # title (bold), op (regular), detail (small, grey), mark, cluster
    html: str | None = None  # Graphviz HTML markup when plain text will not do (subscripts)


def tex_escape(text: str) -> str:
    """Escape LaTeX specials and turn the few Unicode symbols we write into math."""
    out = []
    for ch in text:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\textbackslash{}")
        elif ch in "~^":
            out.append("\\" + ch + "{}")
        elif ch == TIMES:
            out.append("$\\times$")
        elif ch == MINUS:
            out.append("$-$")
        elif ch == DOTS:
            out.append("\\dots{}")
        elif ch == "\u00b7":
            out.append("$\\cdot$")
        else:
            out.append(ch)
    return "".join(out).replace("$$", "")


def plain(text: str, role: str = "title") -> Line:
    return Line(text, tex_escape(text), role)


# -- shapes -----------------------------------------------------------------

_NOMINAL = 2 ** 12      # a size divisible by every stride product a network uses


@functools.lru_cache(maxsize=4096)
def nominal_dim(d) -> tuple[str, str]:
    """A symbolic size as a figure shows it: ``H/4`` for ``floor(floor(H/2 - 1/2)/2) + 1``.

    The exact size rounds at each stride; the figure shows its value when every
    symbol is a multiple of 4096 (any input size a network is meant for), which
    is the size papers write. Returns (text, tex); ints print as they are.
    """
    if isinstance(d, int):
        return str(d), str(d)
    free = sorted(d.free_symbols, key=str)
    scaled = {s: sympy.Symbol(f"_{s}", integer=True, positive=True) for s in free}
    simple = d.subs({s: _NOMINAL * t for s, t in scaled.items()})
    simple = sympy.expand(simple.subs({t: s / _NOMINAL for s, t in scaled.items()}))
    if simple.has(sympy.floor, sympy.ceiling):
        simple = d                      # no closed form: show the exact expression
    text = _dim_text(simple)
    tex = text.replace(MINUS, "-").replace("\u00b7", "\\cdot ")
    return text, tex


def _dim_text(e) -> str:
    """Compact text: 3*H/4 -> 3H/4, H - 4 -> H−4, 64*H*W -> 64·H·W."""
    text = str(e).replace(" ", "")
    text = text.replace("**", "^")
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "*":
            before, after = text[i - 1] if i else "", text[i + 1] if i + 1 < len(text) else ""
            out.append("" if before.isdigit() and after.isalpha() and len(after) == 1 else "\u00b7")
        elif ch == "-" and i > 0:
            out.append(MINUS)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def shape_line(shape, dims: dict | None = None) -> Line | None:
    """``64×H/4×W/4`` (channels first, as the spec writes shapes)."""
    if shape is None:
        return None
    if dims:
        shape = substitute(shape, dims)
    parts = [_bracket(nominal_dim(d)) for d in shape]
    if not parts:
        return Line("scalar", "scalar", "detail")
    text = TIMES.join(p[0] for p in parts)
    tex = "$" + "{\\times}".join(p[1] for p in parts) + "$"     # {\times}: tight, as in text
    return Line(text, tex, "detail")


def _bracket(dim: tuple[str, str]) -> tuple[str, str]:
    """(H/2+99) inside a product, so that 64×(H/2+99) reads as it should."""
    text, tex = dim
    if any(op in text[1:] for op in ("+", MINUS)):
        return f"({text})", f"({tex})"
    return text, tex


def params_text(n: int) -> str:
    """3 significant digits: 9,408 -> 9.41k; 25,557,032 -> 25.6M."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            value = n / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f}{suffix}"
    return str(n)


def params_line(n: int) -> Line | None:
    if not n:
        return None
    text = f"{params_text(n)} params"
    return Line(text, tex_escape(text), "detail")


# -- op titles ----------------------------------------------------------------

def op_title(op: str, args: dict) -> str:
    """The layer as a paper labels it: the op's ``title`` facet (an input is "input")."""
    opdef = ops.get(op)
    if opdef is None:
        return "input" if op == "input" else op.replace("_", " ")
    return opdef.title_for(args)


def split_title(title: str) -> list[str]:
    """Break a title at its commas, for the narrow boxes of a left-to-right figure."""
    parts = [p.strip() for p in title.split(",")]
    if len(parts) <= 1:
        return [title]
    lines = [parts[0]]
    for p in parts[1:]:
        if len(lines[-1]) + len(p) + 2 <= 10:
            lines[-1] += ", " + p
        else:
            lines.append(p)
    return lines
