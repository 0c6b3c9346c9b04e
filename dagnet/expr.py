"""A small, safe evaluator for parameter arithmetic in specs (``channels * 4``).

Expressions are parsed with :mod:`ast` and walked over a whitelist of node
types: numbers, names bound in the current scope, arithmetic, comparisons,
``and``/``or``/``not``, ``a if c else b`` and a few pure functions. Nothing is
ever passed to ``eval``; attribute access, subscripts, lambdas and calls to
anything but the whitelist are rejected. Results are bounded so that
``9 ** 9 ** 9`` is an error, not a hang.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_MAGNITUDE = 10**12
MAX_LENGTH = 1000

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
FUNCTIONS = {
    "min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round,
    "floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt,
}


class ExprError(ValueError):
    """An expression that cannot be evaluated; ``names`` lists unknown names."""

    def __init__(self, message: str, unknown: str | None = None):
        super().__init__(message)
        self.unknown = unknown


def evaluate(text: str, scope: dict):
    """Evaluate ``text`` with the names in ``scope``; raise ExprError on anything unsafe."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression `{text}`: {exc.msg}") from None
    return _eval(tree.body, scope)


def names_in(text: str) -> set[str]:
    """The free names an expression refers to (empty if it does not parse)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS)


def _check(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ExprError("expression is not finite")
        if abs(value) > MAX_MAGNITUDE:
            raise ExprError(f"value {value:.3g} exceeds the limit {MAX_MAGNITUDE:.0e}")
        return value
    if isinstance(value, str):
        return value
    raise ExprError(f"unsupported value of type {type(value).__name__}")


def _eval(node, scope):
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (int, float, bool, str)):
            return _check(node.value)
        raise ExprError(f"unsupported constant {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id in ("true", "false"):
            return node.id == "true"
        if node.id not in scope:
            raise ExprError(f"unknown name `{node.id}`", unknown=node.id)
        return scope[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, scope), _eval(node.right, scope)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ExprError("exponent too large")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except (ZeroDivisionError, TypeError, OverflowError) as exc:
            raise ExprError(str(exc)) from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand, scope)))
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, scope) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, scope)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, scope)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, scope) else node.orelse, scope)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords:
            raise ExprError(f"`{node.func.id}` takes no keyword arguments")
        args = [_eval(a, scope) for a in node.args]
        try:
            return _check(FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExprError(f"{node.func.id}: {exc}") from None
    raise ExprError(f"`{ast.unparse(node)}` is not allowed in a spec expression "
                    "(only numbers, parameters, arithmetic, comparisons and "
                    f"{', '.join(sorted(FUNCTIONS))})")
