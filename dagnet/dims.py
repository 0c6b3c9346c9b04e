"""Symbolic dimensions: Python ints when known, sympy expressions when not.

Shapes are per example (the batch dimension is implicit) and are tuples whose
entries are ints or sympy expressions over the spec's symbolic input sizes
(``H``, ``W``, ``T``). Arithmetic stays in plain ints whenever it can, so a
fully concrete spec never touches sympy.
"""

from __future__ import annotations

import functools

import sympy

Dim = "int | sympy.Expr"
Shape = tuple


@functools.lru_cache(maxsize=None)
def symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, positive=True)


def known(d) -> bool:
    return isinstance(d, int) or (isinstance(d, sympy.Integer))


def normal(d):
    """Collapse sympy integers to ints (sympy's automatic evaluation does the rest)."""
    if isinstance(d, int):
        return d
    return int(d) if d.is_Integer else d


def floordiv(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return normal(sympy.floor(sympy.Integer(a) / b if isinstance(a, int) else a / b))


def ceildiv(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    return normal(sympy.ceiling(a / sympy.Integer(b) if isinstance(b, int) else a / b))


def product(dims):
    out = 1
    for d in dims:
        out = out * d
    return normal(out) if not isinstance(out, int) else out


def same(a, b) -> bool:
    """True when two dims are provably equal."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    diff = sympy.sympify(a) - b
    return diff == 0 or sympy.expand(diff) == 0


def differ(a, b) -> bool:
    """True when two dims are provably different (for every value of the symbols)."""
    if isinstance(a, int) and isinstance(b, int):
        return a != b
    diff = sympy.expand(sympy.sympify(a) - b)
    return bool(diff.is_number) and diff != 0


def may_differ_at(a, b, samples=(224, 225, 513, 1000)) -> dict | None:
    """An assignment of the free symbols for which ``a != b``, if a small search finds one."""
    expr = sympy.sympify(a) - b
    free = sorted(expr.free_symbols, key=str)
    for value in samples:
        sub = {s: value for s in free}
        if expr.subs(sub) != 0:
            return {str(s): value for s in free}
    return None


@functools.lru_cache(maxsize=4096)
def fmt(d) -> str:
    """A dim as text; cached, since sympy's printer is slow and a network repeats its dims."""
    return str(d)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(fmt(d) for d in shape) + "]"


def substitute(shape, values: dict) -> tuple:
    """Replace symbols by concrete values (``{"H": 224}``)."""
    subs = {symbol(k): v for k, v in values.items()}
    return tuple(d if isinstance(d, int) else normal(sympy.sympify(d).subs(subs)) for d in shape)
