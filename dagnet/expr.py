"""A small, safe evaluator for parameter arithmetic in specs (``channels * 4``).

Expressions are parsed with :mod:`ast` and walked over a whitelist of node
types: numbers, names bound in the current scope, arithmetic, comparisons,
``and``/``or``/``not``, ``a if c else b`` and a few pure functions. Nothing is
ever passed to ``eval``; attribute access, subscripts, lambdas and calls to
anything but the whitelist are rejected. Results are bounded so that
``9 ** 9 ** 9`` is an error, not a hang, and ``"ab" * 10**10`` an error, not a
20 GB string: sizes are checked before an operation runs, not after.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_MAGNITUDE = 10**12
MAX_LENGTH = 1000       # characters of expression text
MAX_SIZE = 10_000       # items of a string or list an expression may build
MAX_DEPTH = 100         # nesting of the expression (the evaluator recurses once per level)

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
    except (RecursionError, MemoryError):      # how Python's parser says "too deeply nested"
        raise ExprError(f"expression nested more than {MAX_DEPTH} levels deep") from None
    if depth(tree.body) > MAX_DEPTH:
        raise ExprError(f"expression nested more than {MAX_DEPTH} levels deep")
    return _eval(tree.body, scope)


def depth(tree: ast.AST) -> int:
    """How deeply ``tree`` nests, found without recursion (the tree may be deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parses(text: str) -> bool:
    """Whether ``text`` reads as an expression at all (`td,sd->ts` does not)."""
    try:
        ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return False
    return True


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
        if len(value) > MAX_SIZE:
            raise ExprError(f"a string of {len(value):,} characters; the limit is {MAX_SIZE:,}")
        return value
    raise ExprError(f"unsupported value of type {type(value).__name__}")


def _check_size(op: ast.operator, left, right) -> None:
    """Refuse, before it runs, an operation that would build a too long string or list.

    ``"ab" * 10**10`` is cheap to write and costs 20 GB to evaluate; ``%`` on a
    string is Python's string formatting (``"%0999999999d" % 1``), not arithmetic.
    """
    sizes = [len(v) for v in (left, right) if isinstance(v, (str, list, tuple))]
    if not sizes:
        return
    if isinstance(op, ast.Mod) and isinstance(left, str):
        raise ExprError("`%` formats strings in Python; it is not allowed in a spec expression")
    if isinstance(op, ast.Mult) and len(sizes) == 1:
        count = right if isinstance(left, (str, list, tuple)) else left
        size = sizes[0] * count if isinstance(count, int) else 0
    else:
        size = sum(sizes)
    if size > MAX_SIZE:
        what = "string of" if isinstance(left, str) or isinstance(right, str) else "list of"
        unit = "characters" if what == "string of" else "items"
        raise ExprError(f"this would build a {what} {size:,} {unit}; the limit is {MAX_SIZE:,}")


_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
            ast.Pow: "**"}


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string `{value[:40]}`"
    return f"a {type(value).__name__}" if isinstance(value, (list, dict, tuple)) else f"`{value}`"


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
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
            raise ExprError("exponent too large")
        _check_size(node.op, left, right)
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except OverflowError:
            raise ExprError("the result is too large for a number") from None
        except TypeError:                       # `null // 2`, `"a" - 1`: say it in the spec's words
            symbol = _SYMBOLS[type(node.op)]
            raise ExprError(f"`{symbol}` cannot combine {_describe(left)} and {_describe(right)}") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        operand = _eval(node.operand, scope)
        if not isinstance(node.op, ast.Not) and not isinstance(operand, (int, float)):
            raise ExprError(f"a sign needs a number, found {_describe(operand)}")
        return _check(_UNARY[type(node.op)](operand))
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, scope) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, scope)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, scope)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:                   # `"a" < 1`
                raise ExprError(f"cannot compare {_describe(left)} with {_describe(right)}") from None
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
