"""The op registry: one entry per op, read by the checker, emitter, scheduler,
renderer, trainer and docs.

An :class:`OpDef` says what arguments an op takes (PyTorch's own names), how
its output shape follows from its input shapes, how it is built (a module that
owns parameters, or a plain function call), what it keeps for the backward
pass, and how it is drawn. Later stages read these facets and keep no table
keyed by op name, so adding an op is one entry in one file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()
ARG_KINDS = ("int", "float", "bool", "str", "ints", "shape", "floats", "int_or_none", "float_or_none",
             "ints_or_none", "floats_or_none", "str_or_none", "any")
NUMERIC_KINDS = ("int", "float", "ints", "shape", "floats")   # (and their `_or_none` forms)


class ShapeError(ValueError):
    """Raised by a shape rule; the checker attaches the node's location."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Range:
    """The values a numeric argument accepts: an interval, plus a few listed extras.

    Every numeric argument of a built-in op declares one (a plugin's may leave
    ``Arg.range`` None: unchecked). It is checked where
    arguments are typed (:mod:`dagnet.values`), so a bad value is reported at
    the argument itself and shape rules never see a zero stride or a negative
    size. Values must also be finite (no inf or nan). ``meaning`` says what such
    a value is, for the hint.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False      # True: ``low`` itself is excluded (eps > 0)
    high_open: bool = False
    also: tuple = ()            # allowed outside the interval: -1 in `reshape`'s shape
    meaning: str = ""

    def __contains__(self, value) -> bool:
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        """As in a message: ``>= 1``, ``> 0``, ``in [0, 1)``, ``>= 1 or -1``."""
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {high}"
        else:
            text = "a finite number"
        return " or ".join([text, *map(_num, self.also)])


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# the ranges most arguments share
SIZE = Range(1, meaning="sizes, counts, strides and dilations start at 1")
NON_NEGATIVE = Range(0, meaning="padding and offsets count positions, from 0 up")
POSITIVE = Range(0, low_open=True, meaning="scales, bandwidths and epsilons are above 0")
PROBABILITY = Range(0, 1, meaning="probabilities and momenta are fractions, from 0 to 1")
FINITE = Range(meaning="any finite number")
# a dim counting the batch (negative from the end); the shape rule checks it against the rank
DIM = Range(meaning="dims count the batch: 1 is the first per-example dim, -1 the last")


@dataclass(frozen=True)
class Arg:
    """One argument of an op: PyTorch's name, its kind, default and allowed values.

    ``choices`` lists the allowed strings of a `str` argument, or strings a
    numeric argument also takes (`padding: same`); ``range`` bounds every
    number of a numeric argument (each entry of a list).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""
    range: Range | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def numeric(self) -> bool:
        return self.kind.removesuffix("_or_none") in NUMERIC_KINDS


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


SAVES = ("inputs", "output", "nothing")
TASKS = ("sequence", "classification", "segmentation", "parse")
# how the graphical-model view draws a structured op: a chain of labels, a chain of hidden
# states under one label (hidden) or under one label each (latent_dynamic), a lattice, a
# binary tree, a fully connected clique
PGM_KINDS = ("chain", "hidden", "latent_dynamic", "grid", "tree", "clique")


@dataclass(frozen=True)
class OpDef:
    """Every facet of one op. The first ones are required; the rest have defaults so
    that a plugin op need not say how it is drawn (built-in ops declare them all,
    which tests/test_registry.py checks)."""

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
    # what it keeps for its gradient ("inputs", "output", "nothing"), for the memory
    # estimate; None: "inputs", the safe over-estimate
    saves: str | None = None
    view: bool = False     # its value shares its input's storage (reshape, flatten)
    # its title in figures, as papers write it: a string, or (args) -> str; None: the name
    title: Callable | str | None = None
    look: str | None = None   # the style a figure draws it in (render/styles.py); None: the family
    mark: str | None = None   # a merge drawn as a circled mark ("+", "C") instead of a titled box
    mark_legend: str | None = None   # what the legend says the mark is ("add (residual)")
    task: str | None = None   # a structured op: what it predicts, for metrics (TASKS)
    pgm: str | None = None    # a structured op: how the graphical-model view draws it (PGM_KINDS)
    # its module's arguments that come from the input shapes (`in_channels`): given in a
    # spec, the error says to remove them; None: guessed from the name (`in_*`, ...)
    inferred: tuple[str, ...] | None = None
    # several outputs (`chunk`, `split`), named `node.0`, `node.1`, ...: each one used is a
    # node of its own, whose args hold its index as "output" (read by `shape` and `build`)
    multi_output: bool = False

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    @property
    def positional(self) -> tuple[str, ...]:
        """Argument names in the order the call form ``op(a, b)`` binds them."""
        return tuple(a.name for a in self.args)

    @property
    def saved(self) -> str:
        """What the backward pass keeps: the declared facet, else its inputs."""
        return self.saves or "inputs"

    @property
    def style(self) -> str:
        """The figure style key: the declared look, else the family."""
        return self.look or self.family

    def infers(self, name: str) -> bool:
        """Whether ``name`` is an argument this op infers from its input shapes."""
        if self.inferred is not None:
            return name in self.inferred
        return name.startswith("in_") or name in ("input_size", "num_features", "num_channels")

    def title_for(self, args: dict) -> str:
        """The op's title in a figure, for these arguments."""
        if callable(self.title):
            return self.title(args or {})
        return self.title if self.title is not None else self.name.replace("_", " ")


def missing_facets(op: OpDef) -> list[str]:
    """The facets a built-in op must declare and ``op`` leaves to a default.

    A plugin may leave them (the defaults are safe: it saves its inputs, it is
    titled by its name and drawn as its family), but a built-in op that forgets
    one would be estimated, drawn or scored wrongly without a word.
    """
    missing = [facet for facet in ("saves", "title", "inferred") if getattr(op, facet) is None]
    if op.style == "merge" and op.mark is None:
        missing.append("mark")
    if op.mark is not None and op.mark_legend is None:
        missing.append("mark_legend")
    if op.family == "field" or op.stochastic:
        missing += [facet for facet in ("task", "pgm") if getattr(op, facet) is None]
    return missing


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
    for facet, allowed in (("saves", SAVES), ("task", TASKS), ("pgm", PGM_KINDS)):
        value = getattr(op, facet)
        if value is not None and value not in allowed:
            raise ValueError(f"op `{op.name}`: {facet} `{value}` is not one of {', '.join(allowed)}")
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    return OPS.get(name)
