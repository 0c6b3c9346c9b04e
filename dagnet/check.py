"""Checking the IR: graph facts (networkx), symbolic shape inference and a memory estimate.

``check`` reports every problem it can find in one pass: cycles (printed with
line numbers), wrong arity, nodes that reach no output, shape errors at the
node where they occur, and a model too large to build. Nodes downstream of an
error are skipped rather than reported again.
"""

from __future__ import annotations

import networkx as nx

from dagnet import ops
from dagnet.dims import fmt_shape, known, product
from dagnet.errors import ErrorLog, SpecError
from dagnet.ir import IR, UNKNOWN_OP, loss_refs

# What a spec may ask for, so that `check` refuses a model that cannot be built
# rather than `compile` dying in the allocator. Values are float32 (4 bytes).
# A program meant for a bigger machine may raise them before loading a spec.
BYTES_PER_VALUE = 4
MAX_PARAMETER_BYTES = 16 * 2**30     # all parameters together: 4 Gi values
MAX_ACTIVATION_BYTES = 8 * 2**30     # one node's output for one example


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
    check_memory(ir, errors)
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
    sinks = set(ir.outputs.values()) | {r for r in loss_refs(ir.losses) if r in ir.graph}
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
    name = node.name.rpartition(".")[0] if opdef.multi_output else node.name    # `s`, not its output `s.0`
    low, high = opdef.arity
    if len(in_shapes) < low or (high is not None and len(in_shapes) > high):
        want = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise SpecError(f"`{node.op}` takes {want} input(s), `{name}` has {len(in_shapes)}", node.loc)
    try:
        return tuple(opdef.shape(in_shapes, node.args))
    except ops.ShapeError as exc:
        raise SpecError(f"{name}: {exc}", node.loc, exc.hint) from None


def check_memory(ir: IR, errors: ErrorLog) -> None:
    """Refuse a model whose parameters, or one of whose activations, would not fit in memory.

    Estimated from the shapes alone, without building anything: parameters by
    each op's own counting rule (an op without one, a plugin's, is not
    counted: that would import torch), and activations at their smallest over
    every input size (see :func:`_smallest`), so nothing is refused for what a
    symbolic size might become.
    """
    shaped = [n for n in ir.order() if n.op != UNKNOWN_OP and n.shape is not None]
    counts = {n.name: _parameters(ir, n) for n in shaped}
    total = sum(counts.values())
    if total * BYTES_PER_VALUE > MAX_PARAMETER_BYTES:
        biggest = ir.node(max(counts, key=counts.get))
        errors.add(f"the model's {total:,} parameters need {human_bytes(total * BYTES_PER_VALUE)} "
                   f"(float32), over the limit of {human_bytes(MAX_PARAMETER_BYTES)}; "
                   f"`{biggest.name}` ({biggest.op}) holds {counts[biggest.name]:,} of them",
                   biggest.loc, "make the largest layers narrower, or shrink their input first "
                   "(pooling, a stride, fewer channels)")
    smallest: dict = {}             # dim -> its lower bound, shared by the nodes that have it
    for node in shaped:             # the first one too large is the cause; later ones follow from it
        size = product(_smallest(d, smallest) for d in node.shape) * BYTES_PER_VALUE
        if size > MAX_ACTIVATION_BYTES:
            _too_large_activation(node, size, errors)
            break


def _smallest(d, cache: dict) -> int:
    """A lower bound on a dim over every input size: its value with each symbol at 1, and at least 1.

    Shape rules only grow with the sizes of their inputs (H -> H // 2 + 1, 4 H, H + W), so the
    smallest sizes give the smallest dims; any dim of a run is at least 1.
    """
    if known(d):
        return int(d)
    if d not in cache:
        at_one = d.subs({s: 1 for s in d.free_symbols})
        cache[d] = max(1, int(at_one)) if at_one.is_number and at_one.is_finite else 1
    return cache[d]


def _too_large_activation(node, size: int, errors: ErrorLog) -> None:
    what = f"input `{node.name}`" if node.op == "input" else f"the output of `{node.name}` ({node.op})"
    hint = ("shapes are per example (the batch dim is implicit): check the input's dims"
            if node.op == "input" else
            "reduce the sizes before this node (pooling, a stride, fewer channels or features)")
    errors.add(f"{what} is {human_bytes(size)} per example ({fmt_shape(node.shape)}, float32), "
               f"over the limit of {human_bytes(MAX_ACTIVATION_BYTES)}", node.loc, hint)


def _parameters(ir: IR, node) -> int:
    """A node's parameter count by its op's rule; 0 for inputs and ops without a rule."""
    opdef = ops.get(node.op)
    if opdef is None or opdef.params is None:
        return 0
    count = opdef.params([ir.node(i).shape for i in node.inputs], node.args)
    return int(count) if known(count) else 0


def human_bytes(size: int) -> str:
    """``4000000000000`` -> ``3.6 TiB``; beyond EiB, a power of ten (a float would overflow)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if size >= 1024 ** len(units):
        return f"about 10^{len(str(size)) - 1} B"
    power = next(p for p in range(len(units)) if size < 1024 ** (p + 1))
    if power == 0:
        return f"{size:,} B"
    return f"{size / 1024 ** power:.1f}".removesuffix(".0") + f" {units[power]}"
