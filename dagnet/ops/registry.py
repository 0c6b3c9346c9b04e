"""The op registry: one entry per op, read by the checker, emitter, renderer and docs.

An :class:`OpDef` says what arguments an op takes (PyTorch's own names), how
its output shape follows from its input shapes, how it is built (a module that
owns parameters, or a plain function call), and how it is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()
ARG_KINDS = ("int", "float", "bool", "str", "ints", "shape", "int_or_none", "float_or_none",
             "ints_or_none", "str_or_none", "any")


class ShapeError(ValueError):
    """Raised by a shape rule; the checker attaches the node's location."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class ModuleCall:
    """Build ``cls(**kwargs)``; the node's parameters live in that module.

    The node's value is ``module(*inputs)``, or ``module.<method>(*inputs)``
    when ``method`` is given (a CRF's ``marginals``).
    """

    cls: type
    kwargs: dict
    method: str | None = None


@dataclass(frozen=True)
class FunctionCall:
    """Call ``fn(*inputs, **kwargs)``; ``inputs_as_list`` passes the inputs as one list."""

    fn: Callable
    kwargs: dict = field(default_factory=dict)
    inputs_as_list: bool = False


@dataclass(frozen=True)
class OpDef:
    name: str
    family: str            # conv, pool, dense, norm, activation, merge, shape, recurrent, field
    doc: str
    args: tuple[Arg, ...]
    shape: Callable        # (in_shapes, args) -> out shape
    build: Callable        # (in_shapes, args) -> ModuleCall | FunctionCall
    arity: tuple = (1, 1)  # (min, max); max None = unbounded
    macs: Callable | None = None   # (in_shapes, out_shape, args) -> int | expr
    stochastic: bool = False
    # (in_shapes, args) -> parameter count, without building anything; None: count the
    # parameters of the module ``build`` returns (which imports torch)
    params: Callable | None = None

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    @property
    def positional(self) -> tuple[str, ...]:
        """Argument names in the order the call form ``op(a, b)`` binds them."""
        return tuple(a.name for a in self.args)


def no_params(ins, a) -> int:
    """The ``params`` rule of an op emitted as a plain function call."""
    return 0


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op `{op.name}` registered twice")
    for a in op.args:
        if a.kind not in ARG_KINDS:
            raise ValueError(f"op `{op.name}`: argument `{a.name}` has unknown kind `{a.kind}`")
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    return OPS.get(name)
