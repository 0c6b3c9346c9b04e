"""The Spec: plain data produced by every front end, with source locations.

A Spec says what the user wrote, nothing more: parameter values are still
unevaluated expressions, blocks are not yet inlined and names are local.
:func:`dagnet.ir.expand` turns it into the IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dagnet.errors import Loc

SPEC_VERSION = 1
CONNECT_MODES = ("sequential", "residual", "dense")
# the element types an input may declare, with their sizes in bytes
DTYPES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
          "int8": 1, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class Ref:
    """A reference to a node (``c1``) or to a block node's output (``enc.skip``)."""

    name: str
    loc: Loc


@dataclass
class NodeSpec:
    """One entry of ``nodes:``: an op, a block use, or a ``seq`` of either.

    ``args`` holds raw values (numbers, lists, or expression strings); ``posargs``
    holds positional arguments from the call form ``conv2d(64, 3, stride=2)``.
    """

    name: str
    loc: Loc
    kind: str                                   # "op" | "block" | "seq"
    target: str | None = None                   # op or block name
    inputs: list[Ref] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    arg_locs: dict[str, Loc] = field(default_factory=dict)
    posargs: list[Any] = field(default_factory=list)
    repeat: Any = 1
    connect: str = "sequential"
    when: Any = None
    checkpoint: bool = False
    items: list["NodeSpec"] = field(default_factory=list)   # for kind == "seq"


@dataclass
class InputSpec:
    name: str
    shape: list[Any]
    loc: Loc
    dtype: str = "float32"


@dataclass
class BlockSpec:
    """A named, parameterised subgraph with inputs and outputs, used as a node."""

    name: str
    loc: Loc
    params: dict[str, Any]
    param_locs: dict[str, Loc]
    inputs: list[str]
    nodes: dict[str, NodeSpec]
    outputs: list[Ref]
    doc: str = ""


@dataclass
class Spec:
    name: str
    file: str
    params: dict[str, Any] = field(default_factory=dict)
    param_locs: dict[str, Loc] = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    outputs: list[Ref] = field(default_factory=list)
    blocks: dict[str, BlockSpec] = field(default_factory=dict)
    losses: list[dict] = field(default_factory=list)
    train: dict = field(default_factory=dict)
    # where each key of each loss, and of `train:` by dotted path (`schedule.name`), was written
    loss_locs: list[dict[str, Loc]] = field(default_factory=list)
    train_locs: dict[str, Loc] = field(default_factory=dict)
    doc: str = ""
    version: int = SPEC_VERSION
    loc: Loc = field(default_factory=Loc)
    imports: list[str] = field(default_factory=list)    # paths as written; their blocks are in `blocks`
