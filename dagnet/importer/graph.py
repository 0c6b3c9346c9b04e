"""The flat graph every front end is captured into, and the importer's one error type.

A :class:`Captured` graph is a list of :class:`Op` records in execution order:
each is one dagnet op with its arguments, the module path it ran under (the
block tree folding reads) and the tensors its dagnet module holds, already in
dagnet's layout.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

import torch

from dagnet.spec.dsl_lexer import (
    CONSTANTS,
    MODIFIER_KEYWORDS,
    OPERATOR_KEYWORDS,
    STATEMENT_KEYWORDS,
)
from dagnet.spec.names import MODULE_ATTRIBUTES

MAX_NAME = 64


class ImportModelError(ValueError):
    """A model that cannot be imported, or an import whose check failed: one line for the CLI."""


@dataclass
class Op:
    """One node of the captured graph."""

    name: str                       # unique, legal identifier over the whole graph
    op: str                         # a dagnet op name
    args: dict
    inputs: list[str]               # names of earlier ops or of graph inputs
    scope: tuple[str, ...]          # module path of the module it ran in ('layer1', '0')
    local: str                      # legal name inside that scope ('conv1', 'add')
    where: str                      # the source location, for messages
    shape: tuple = ()               # per-example output shape
    state: dict[str, torch.Tensor] = field(default_factory=dict)   # its dagnet module's tensors
    source_op: str | None = None    # set on `unsupported` ops


@dataclass
class Captured:
    name: str
    inputs: list[tuple[str, tuple, str]]          # (name, per-example shape, dtype)
    ops: list[Op]
    outputs: list[str]
    classes: dict[tuple, str] = field(default_factory=dict)     # module path -> its class's name

    @property
    def unsupported(self) -> list[Op]:
        return [op for op in self.ops if op.op == "unsupported"]


_RESERVED = (set(keyword.kwlist) | set(MODULE_ATTRIBUTES) | set(STATEMENT_KEYWORDS) | set(MODIFIER_KEYWORDS)
             | set(OPERATOR_KEYWORDS) | set(CONSTANTS))


def legal(name: str, fallback: str = "n") -> str:
    """``name`` made a legal dagnet node name: ``layer1.0`` -> ``layer1_0``, ``0`` -> ``n0``."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(name)).strip("_")[:MAX_NAME] or fallback
    if text[0].isdigit():
        text = fallback + text
    if text in _RESERVED or text.lower() in _RESERVED:
        text += "_"
    return text


def unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... : the first one not in ``taken`` (which it joins)."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate
