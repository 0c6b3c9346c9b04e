"""Checking the IR: graph facts (networkx) and symbolic shape inference.

``check`` reports every problem it can find in one pass: cycles (printed with
line numbers), wrong arity, nodes that reach no output, and shape errors at
the node where they occur. Nodes downstream of an error are skipped rather than
reported again.
"""

from __future__ import annotations

import networkx as nx

from dagnet import ops
from dagnet.errors import ErrorLog, SpecError
from dagnet.ir import IR, UNKNOWN_OP


def check(ir: IR, errors: ErrorLog | None = None) -> IR:
    """Validate ``ir`` and fill in every node's output shape; raise SpecErrors if wrong.

    ``errors`` may already hold what expansion found; everything is raised together.
    """
    errors = errors if errors is not None else ErrorLog()
    if _check_cycles(ir, errors):
        errors.raise_if_any()       # shapes need a DAG
    if not errors.errors:           # a broken reference would make reachability errors cascade
        _check_reach(ir, errors)
    infer_shapes(ir, errors)
    errors.raise_if_any()
    return ir


def _check_cycles(ir: IR, errors: ErrorLog) -> bool:
    found = False
    for cycle in _cycles(ir.graph):
        found = True
        steps = [f"`{n}` (line {ir.node(n).loc.line})" for n in cycle] + [f"`{cycle[0]}`"]
        errors.add("cycle: " + " -> ".join(steps), ir.node(cycle[0]).loc,
                   "a spec is a DAG: break the cycle by changing one `in`")
    return found


def _cycles(graph: nx.DiGraph):
    """One cycle per strongly connected component, ordered along the edges."""
    position = None
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1 and not graph.has_edge(*component, *component):
            continue
        position = position or {n: i for i, n in enumerate(graph.nodes)}
        start = min(component, key=position.get)       # start at the first node declared
        edges = nx.find_cycle(graph.subgraph(component), source=start)
        yield [u for u, _ in edges]


def _check_reach(ir: IR, errors: ErrorLog) -> None:
    sinks = set(ir.outputs.values())
    for loss in ir.losses:
        for key in ("output", "node", "potentials"):
            if isinstance(loss.get(key), str) and loss[key] in ir.graph:
                sinks.add(loss[key])
    if not sinks:
        return
    useful = set(sinks)
    for sink in sinks:
        useful |= nx.ancestors(ir.graph, sink)
    for name in ir.graph.nodes:
        if name not in useful:
            node = ir.node(name)
            what = "input" if node.op == "input" else "node"
            label = f"`{name}`"
            if node.use:                # named as in the block: the same error in every use, so one
                label = f"`{name.removeprefix(node.use + '.')}` of block `{node.block}`"
            with errors.in_use(node.block, node.use):
                errors.add(f"{what} {label} reaches no output", node.loc,
                           "add it to `outputs`, feed it into another node, or remove it")


def infer_shapes(ir: IR, errors: ErrorLog) -> None:
    """Propagate shapes in topological order, recording the first error on each path."""
    failed: set[str] = set()
    for node in ir.order():
        if node.op == "input":
            continue
        if node.op == UNKNOWN_OP or any(i in failed for i in node.inputs):
            failed.add(node.name)
            continue
        try:
            node.shape = output_shape(node, [ir.node(i).shape for i in node.inputs])
        except SpecError as exc:
            errors.extend(exc)
            failed.add(node.name)


def output_shape(node, in_shapes) -> tuple:
    opdef = ops.get(node.op)
    low, high = opdef.arity
    if len(in_shapes) < low or (high is not None and len(in_shapes) > high):
        want = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise SpecError(f"`{node.op}` takes {want} input(s), `{node.name}` has {len(in_shapes)}", node.loc)
    try:
        return tuple(opdef.shape(in_shapes, node.args))
    except ops.ShapeError as exc:
        raise SpecError(f"{node.name}: {exc}", node.loc, exc.hint) from None
