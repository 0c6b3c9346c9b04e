"""Captured graph -> Spec (the flat form: one statement per op), and the helpers folding shares.

Writing goes through the Spec dataclasses and the canonical printers
(:func:`dagnet.spec.printer.to_dsl`, ``to_yaml``), so an imported spec is
exactly what ``dagnet fmt`` would print, and every string is quoted by the
printer that reads it back.
"""

from __future__ import annotations

from dagnet.errors import Loc
from dagnet.importer.graph import Captured, legal
from dagnet.spec.model import InputSpec, NodeSpec, Ref, Spec

LOC = Loc("<import>", 0, 0)


def op_node(name: str, op: str, args: dict, inputs: list[str]) -> NodeSpec:
    """One op node, its required arguments positional and those equal to the op's defaults left out."""
    node = NodeSpec(name, LOC, "op", op, [Ref(i, LOC) for i in inputs])
    node.posargs, node.args = call_args(op, args)
    return node


def call_args(op: str, args: dict) -> tuple[list, dict]:
    """(positional, keyword) arguments as a person writes them: required ones first, defaults dropped."""
    from dagnet import ops
    opdef = ops.get(op)
    positional, keywords, leading = [], {}, True
    for arg in opdef.args if opdef else ():
        if arg.name not in args:
            leading = False
            continue
        value = args[arg.name]
        if arg.required and leading:
            positional.append(value)
        elif arg.required or not _equal(value, arg.default):
            keywords[arg.name] = value
            leading = False
    keywords.update({k: v for k, v in args.items() if opdef is None or opdef.arg(k) is None})
    return positional, keywords


def _equal(value, default) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return type(value) is type(default) and value == default or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(default, (int, float))
        and not isinstance(default, bool) and value == default)


def spec_shell(captured: Captured, doc: str = "") -> Spec:
    """The spec's name, inputs and doc; nodes and outputs are the writer's."""
    spec = Spec(name=legal(captured.name, "model"), file=f"{legal(captured.name, 'model')}.dag", doc=doc)
    for name, shape, dtype in captured.inputs:
        spec.inputs[name] = InputSpec(name, list(shape), LOC, dtype)
    return spec


def flat_spec(captured: Captured, doc: str = "") -> tuple[Spec, dict[str, str]]:
    """One node per op, named after its module path; returns the spec and each op's IR path."""
    spec = spec_shell(captured, doc)
    for op in captured.ops:
        spec.nodes[op.name] = op_node(op.name, op.op, op.args, op.inputs)
    spec.outputs = [Ref(o, LOC) for o in dict.fromkeys(captured.outputs)]
    return spec, {op.name: op.name for op in captured.ops}
