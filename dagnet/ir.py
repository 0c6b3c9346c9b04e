"""The IR and ``expand``: Spec -> a flat DAG of :class:`Node` records.

Expansion inlines blocks, unrolls ``repeat`` and ``seq``, applies the
``residual``/``dense`` connection sugar, evaluates parameter arithmetic and
resolves every reference to a full node path such as ``layer3.1.conv2``.
Shapes are not known yet; :mod:`dagnet.check` infers them.

Naming: an op node is named by its path. A block use ``b`` puts the block's
nodes under ``b.``; a repeated node puts repetition ``k`` under ``b.k``; a
``seq`` puts item ``i`` under ``b.i``; an op with several outputs (``chunk``) is
one node per output named, ``b.0``, ``b.1``, ... Merge nodes made by the sugar are
``b.k_add`` (residual) and ``b.k_in`` / ``b.cat`` (dense). A name that is not a
node (a block use, a ``seq``, a node switched off by ``when``) is an *alias*
that resolves to the node producing its value.

A node switched off by ``when`` (or repeated 0 times) is an alias of its first
input; its other inputs are released, and a node that then feeds nothing,
with everything upstream that fed only it, is dropped: the branch it computed
is switched off too. Model inputs, outputs and what losses read are kept. A
repeated block threads its first input and output through the repetitions;
its other inputs reach each one, and its other outputs are the last one's
(the earlier ones' are released).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from dagnet.errors import ErrorLog, Loc, SpecError, did_you_mean
from dagnet.spec.model import DTYPES, NodeSpec, Spec
from dagnet.spec.names import check_names
from dagnet.values import Resolver

MAX_NODES = 200_000
UNKNOWN_OP = "?"            # a node whose op or inputs are unknown (already reported)
MISSING = "?missing"        # stands for a reference that did not resolve (already reported)
MAX_REPEAT = 10_000
MAX_BLOCK_DEPTH = 64


@dataclass
class Node:
    """One operation of the expanded graph."""

    name: str                       # full path, also the state_dict prefix
    op: str                         # an op name, or "input"
    inputs: list[str]
    args: dict[str, Any]
    loc: Loc
    block: str | None = None        # the innermost block this node came from
    checkpoint: str | None = None   # path of the enclosing `checkpoint: true` node
    shape: tuple | None = None      # per-example output shape, set by check
    dtype: str = "float32"
    use: str | None = None          # path of the use of `block` it came from (`layer3.1`)


@dataclass
class IR:
    """A flat DAG: ``graph`` holds Node records under attribute ``node``."""

    name: str
    file: str
    graph: nx.DiGraph
    inputs: list[str]
    outputs: dict[str, str]         # output name as written -> node producing it
    losses: list[dict] = field(default_factory=list)
    train: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    output_locs: dict[str, Loc] = field(default_factory=dict)
    loss_locs: list[dict[str, Loc]] = field(default_factory=list)   # each loss's keys
    train_locs: dict[str, Loc] = field(default_factory=dict)         # `train:` keys by dotted path

    def node(self, name: str) -> Node:
        return self.graph.nodes[name]["node"]

    def order(self) -> list[Node]:
        """Nodes in a deterministic topological order (declaration order breaks ties)."""
        index = {n: i for i, n in enumerate(self.graph.nodes)}
        return [self.node(n) for n in nx.lexicographical_topological_sort(self.graph, key=index.get)]


class _Expander:
    def __init__(self, spec: Spec, errors: ErrorLog):
        self.spec = spec
        self.errors = errors
        self.nodes: dict[str, Node] = {}
        self.alias: dict[str, tuple[str, Loc]] = {}
        self.block_stack: list[str] = []
        self.use_stack: list[str] = []          # paths of the block uses being expanded
        self.released: list[tuple[str, Loc]] = []   # values nothing may consume any more (see _prune)
        self.multi: dict[str, Node] = {}        # several-output nodes, by path: made a node per output
        self.picked: dict[str, set[int]] = {}   # their outputs that something names

    # -- bookkeeping -------------------------------------------------------
    def add_node(self, node: Node) -> None:
        if node.name in self.nodes or node.name in self.alias:
            self.errors.add(f"two nodes are both named `{node.name}`", node.loc,
                            "rename one; sugar names end in `_add`, `_in` and `.cat`")
            return
        if len(self.nodes) >= MAX_NODES:
            raise SpecError(f"the expanded graph exceeds {MAX_NODES:,} nodes", node.loc,
                            "check `repeat` counts and recursive blocks")
        self.nodes[node.name] = node

    def add_alias(self, name: str, target: str, loc: Loc) -> None:
        self.alias[name] = (target, loc)

    def pass_through(self, path: str, ins: list[str], loc: Loc) -> None:
        """A node switched off: its first input stands for it, the others are released."""
        if ins:                         # none: reported where the node is written
            self.add_alias(path, ins[0], loc)
            self.released += [(i, loc) for i in ins[1:]]

    def origin(self) -> dict:
        """The innermost block, and the use of it, that a node made now comes from."""
        return {"block": self.block_stack[-1], "use": self.use_stack[-1]} if self.block_stack else {}

    # -- scopes ------------------------------------------------------------
    def scope(self, prefix: str, nodes: dict[str, NodeSpec], env: dict, bound: dict[str, str],
              ctx: dict) -> dict[str, str]:
        """Expand a mapping of named nodes; ``bound`` maps visible outside names to paths."""
        local = dict(bound)
        for name in nodes:
            local[name] = prefix + name
        for name, ns in nodes.items():
            ins = [self.local_ref(r.name, r.loc, local, nodes) for r in ns.inputs]
            if not ns.inputs:
                self.errors.add(f"node `{name}` has no input", ns.loc, "add `in: <node>`")
            self.node(prefix + name, ns, [i or MISSING for i in ins], env, ctx)
        return local

    def local_ref(self, name: str, loc: Loc, local: dict[str, str], nodes: dict[str, NodeSpec]):
        head, _, tail = name.partition(".")
        if head in nodes and multi_output(nodes[head]):
            return self.pick(local[head], nodes[head], tail, loc)
        if name in local:
            return local[name]
        if tail and head in nodes and nodes[head].kind == "block":
            block = self.spec.blocks.get(nodes[head].target)
            outs = [r.name for r in block.outputs] if block else []
            if block and tail not in outs:
                self.errors.add(f"block `{block.name}` has no output `{tail}`", loc,
                                did_you_mean(tail, outs) or f"its outputs: {', '.join(outs)}")
                return None
            return local[head] + "." + tail
        self.errors.add(f"unknown node `{name}`", loc,
                        did_you_mean(name, local) or f"visible here: {', '.join(sorted(local))}")
        return None

    def pick(self, path: str, ns: NodeSpec, tail: str, loc: Loc) -> str | None:
        """``s.0``: output 0 of the several-output node ``s``, made a node when expansion ends."""
        if not tail.isdigit():
            what = f"has no output `{tail}`" if tail else "has several outputs"
            self.errors.add(f"`{ns.name}` ({ns.target}) {what}", loc,
                            f"name one by its index: `{ns.name}.0`, `{ns.name}.1`, ...")
            return None
        self.picked.setdefault(path, set()).add(int(tail))
        return f"{path}.{int(tail)}"

    def add_picked(self) -> None:
        """A node per output of a several-output node that something names (`s.0`; none named: `s.0`)."""
        for path, template in self.multi.items():
            for k in sorted(self.picked.get(path, {0})):
                self.add_node(replace(template, name=f"{path}.{k}", args={**template.args, "output": k}))

    # -- one node ------------------------------------------------------------
    def node(self, path: str, ns: NodeSpec, ins: list[str], env: dict, ctx: dict) -> None:
        resolver = Resolver(env, self.errors)
        if ns.checkpoint and not ctx.get("checkpoint"):
            ctx = {**ctx, "checkpoint": path}
        if multi_output(ns) and (ns.when is not None or ns.repeat != 1 or ns.connect != "sequential"):
            self.errors.add(f"`{ns.name}` ({ns.target}) has several outputs: it takes no `when` or `repeat`",
                            ns.loc, f"switch off or repeat what reads `{ns.name}.0`, `{ns.name}.1`, ...")
            return
        if ns.when is not None and not resolver.boolean(ns.when, ns.loc, "`when`"):
            self.pass_through(path, ins, ns.loc)
            return
        repeat = resolver.integer(ns.repeat, ns.loc, "`repeat`", low=0, high=MAX_REPEAT)
        if repeat is None:
            return
        if repeat == 0:
            self.pass_through(path, ins, ns.loc)
            return
        if repeat == 1 and ns.connect == "sequential":
            # one repetition keeps the node's own path, and a count that came to 1 still gives `i`
            out = self.body(path, ns, ins, env if ns.repeat == 1 else {**env, "i": 0}, ctx)
            if out and out != path:
                self.add_alias(path, out, ns.loc)
            return
        out = self.repeated(path, ns, ins, env, ctx, repeat)
        if out:
            self.add_alias(path, out, ns.loc)

    def repeated(self, path, ns, ins, env, ctx, repeat) -> str | None:
        """Unroll ``repeat`` with sequential, residual or dense connections.

        The first input threads through the repetitions; the others reach every
        repetition unchanged (a mask, an encoder's memory).
        """
        x, carried, features = (ins[0] if ins else None), ins[1:], ins[:1]
        for k in range(repeat):
            rep_env = {**env, "i": k}
            rep_in = [x] if ns.connect != "dense" else self.merge(f"{path}.{k}_in", "concat", features, ns.loc, ctx)
            y = self.body(f"{path}.{k}", ns, rep_in + carried if x is not None else [], rep_env, ctx)
            if y is None:
                return None
            if ns.connect == "residual":
                x = self.merge(f"{path}.{k}_add", "add", [x, y], ns.loc, ctx)[0]
            elif ns.connect == "dense":
                features.append(y)
            else:
                x = y
        if ns.connect == "dense":
            x = self.merge(f"{path}.cat", "concat", features, ns.loc, ctx)[0]
        if ns.kind == "block":
            self.repeated_outputs(path, self.spec.blocks[ns.target], x, repeat - 1)
        return x

    def repeated_outputs(self, path, block, value, last) -> None:
        """``path.out``: the repeated value for the block's first output, the last repetition's for the others.

        The other outputs of earlier repetitions are released: nothing can name them.
        """
        for k, ref in enumerate(block.outputs):
            target = value if k == 0 else f"{path}.{last}.{ref.name}"
            if target != f"{path}.{ref.name}":
                self.add_alias(f"{path}.{ref.name}", target, ref.loc)
            if k:
                self.released += [(f"{path}.{r}.{ref.name}", ref.loc) for r in range(last)]

    def merge(self, name, op, inputs, loc, ctx) -> list[str]:
        if len(inputs) == 1:
            return list(inputs)
        self.add_node(Node(name, op, list(inputs), {"dim": 1} if op == "concat" else {}, loc,
                           checkpoint=ctx.get("checkpoint"), **self.origin()))
        return [name]

    def body(self, path: str, ns: NodeSpec, ins: list[str], env: dict, ctx: dict) -> str | None:
        """Expand one repetition of a node; return the path producing its value."""
        if ns.kind == "seq":
            x = ins
            for i, item in enumerate(ns.items):
                if multi_output(item):
                    self.errors.add(f"`{item.target}` has several outputs: it cannot be an item of a chain",
                                    item.loc, f"give it a node of its own, `s = x -> {item.target}(...)`, "
                                    "and name its outputs `s.0`, `s.1`, ...")
                    return None
                self.node(f"{path}.{i}", item, x, env, ctx)
                x = [f"{path}.{i}"]
            return x[0]
        if ns.kind == "block":
            return self.block(path, ns, ins, env, ctx)
        return self.op(path, ns, ins, env, ctx)

    def op(self, path, ns, ins, env, ctx) -> str:
        from dagnet import ops
        opdef = ops.get(ns.target)
        if opdef is None:
            self.unknown_op(ns)
            self.add_node(Node(path, UNKNOWN_OP, list(ins), {}, ns.loc))   # keeps the graph whole
            return path
        before = self.errors.logged         # not len(errors): a block's repeated error is logged once
        resolver = Resolver(env, self.errors)
        args = resolver.op_args(opdef, ns)
        # bad arguments (reported here or where a parameter failed): no shape to infer
        broken = (self.errors.logged > before or resolver.knock_ons
                  or any(a.required and a.name not in args for a in opdef.args))
        node = Node(path, UNKNOWN_OP if broken else opdef.name, list(ins), args, ns.loc,
                    checkpoint=ctx.get("checkpoint"), **self.origin())
        if opdef.multi_output:
            self.multi[path] = node
        else:
            self.add_node(node)
        return path

    def unknown_op(self, ns: NodeSpec) -> None:
        """An op name dagnet does not know: a PyTorch op not added yet, or a typo of one it has."""
        from dagnet import ops
        from dagnet.ops.pytorch_names import PYTORCH_OPS
        name = ns.target.lower()
        if name in PYTORCH_OPS and name not in ops.OPS:  # a different function: no near name offered
            self.errors.add(f"`{ns.target}` is a PyTorch op dagnet does not have yet", ns.loc,
                            "add it as a plugin (docs/custom_ops.md) and load it with --plugin MODULE; "
                            "`dagnet ops` lists the ops dagnet has")
            return
        close = did_you_mean(ns.target, list(ops.OPS) + list(self.spec.blocks))  # `ReLU6` -> `relu6`
        self.errors.add(f"unknown op `{ns.target}`", ns.loc,
                        (f"{close} Custom ops load with --plugin MODULE" if close
                         else "run `dagnet ops` for the list; custom ops load with --plugin MODULE"))

    def block(self, path, ns, ins, env, ctx) -> str | None:
        block = self.spec.blocks.get(ns.target)
        if block is None:
            from dagnet import ops
            hint = did_you_mean(ns.target, self.spec.blocks)
            if ops.get(ns.target):
                hint = f"`{ns.target}` is an op: write `op: {ns.target}`"
            self.errors.add(f"unknown block `{ns.target}`", ns.loc, hint or "define it under `blocks:` or import it")
            return None
        if ns.target in self.block_stack or len(self.block_stack) >= MAX_BLOCK_DEPTH:
            chain = " -> ".join(self.block_stack + [ns.target])
            raise SpecError(f"recursive block: {chain}", ns.loc, "a block cannot use itself")
        if len(ins) != len(block.inputs):
            hint = f"give one node per input, in this order: {', '.join(block.inputs)}"
            if ns.repeat != 1:
                hint += "; under `repeat` the first threads through the repetitions, the others reach each one"
            self.errors.add(f"block `{block.name}` takes {len(block.inputs)} input(s) "
                            f"({', '.join(block.inputs)}), `{ns.name}` gives {len(ins)}", ns.loc, hint)
            return None
        inner_env = Resolver(env, self.errors).block_params(block, ns)
        self.block_stack.append(block.name)
        self.use_stack.append(path)
        try:
            with self.errors.in_use(block.name, path):    # a mistake in the body: one error, all uses named
                local = self.scope(path + ".", block.nodes, inner_env, dict(zip(block.inputs, ins)), ctx)
                outs = self.block_outputs(path, block, local)
        finally:
            self.block_stack.pop()
            self.use_stack.pop()
        return outs[0] if outs else None

    def block_outputs(self, path, block, local) -> list[str]:
        outs = []
        for ref in block.outputs:
            target = self.local_ref(ref.name, ref.loc, local, block.nodes)
            if target:                  # `path.out` is already the inner node `out` if it is one
                if target != f"{path}.{ref.name}":
                    self.add_alias(f"{path}.{ref.name}", target, ref.loc)
                outs.append(target)
        return outs

    # -- resolution ----------------------------------------------------------
    def resolve(self, name: str, loc: Loc) -> str | None:
        seen = []
        while name in self.alias:
            if name in seen:
                self.errors.add(f"cycle through `{' -> '.join(seen + [name])}`", loc)
                return None
            seen.append(name)
            name = self.alias[name][0]
        return name


def multi_output(ns: NodeSpec) -> bool:
    """Whether ``ns`` is an op with several outputs (`chunk`, `split`), named `node.0`, `node.1`, ..."""
    from dagnet import ops
    opdef = ops.get(ns.target) if ns.kind == "op" else None
    return bool(opdef and opdef.multi_output)


LOSS_REF_KEYS = ("output", "node", "potentials")


def loss_refs(losses: list[dict]) -> list[str]:
    """The output names and node paths that training losses read."""
    return [loss[key] for loss in losses for key in LOSS_REF_KEYS if isinstance(loss.get(key), str)]


def _prune(graph: nx.DiGraph, released: list[str | None], keep: set[str]) -> None:
    """Switch off what only switched-off nodes consumed, up the branch (never a model input)."""
    todo = list(released)
    while todo:
        name = todo.pop()
        if (name in graph and name not in keep and graph.out_degree(name) == 0
                and graph.nodes[name]["node"].op != "input"):
            todo += graph.predecessors(name)
            graph.remove_node(name)


def expand(spec: Spec, overrides: dict | None = None, errors: ErrorLog | None = None) -> IR:
    """Inline blocks and resolve names.

    Raises SpecErrors listing every problem found, unless an ``errors`` log is
    given: then problems are logged and the IR is returned as far as it could be
    built, so that the checker can report its own findings in the same run.
    """
    own_log = errors is None
    errors = errors if errors is not None else ErrorLog()
    check_names(spec, errors)
    env = Resolver({}, errors).spec_params(spec, overrides or {})
    exp = _Expander(spec, errors)
    graph = nx.DiGraph()
    for name, inp in spec.inputs.items():
        shape = Resolver(env, errors).input_shape(inp)
        if inp.dtype not in DTYPES:     # later stages look the name up on `torch`
            errors.add(f"input `{name}` has unknown dtype `{inp.dtype}`", inp.loc,
                       did_you_mean(inp.dtype, DTYPES) or f"use one of {', '.join(DTYPES)}")
        node = Node(name, "input", [], {}, inp.loc, shape=shape, dtype=inp.dtype)
        exp.nodes[name] = node
    exp.scope("", spec.nodes, env, {n: n for n in spec.inputs}, {})
    top_local = {**{n: n for n in spec.inputs}, **{n: n for n in spec.nodes}}
    targets = [(ref, exp.local_ref(ref.name, ref.loc, top_local, spec.nodes)) for ref in spec.outputs]
    exp.add_picked()
    for node in exp.nodes.values():
        graph.add_node(node.name, node=node)
    for node in exp.nodes.values():
        resolved = [exp.resolve(i, node.loc) for i in node.inputs]
        if any(r not in exp.nodes for r in resolved):
            node.op = UNKNOWN_OP        # its input is missing: reported where the name was written
        node.inputs = [r for r in resolved if r in exp.nodes]
        for r in node.inputs:
            graph.add_edge(r, node.name)
    outputs, output_locs = {}, {}
    for ref, target in targets:
        target = exp.resolve(target, ref.loc) if target else None
        if target in exp.nodes:
            outputs[ref.name] = target
            output_locs[ref.name] = ref.loc
    keep = set(outputs.values()) | set(loss_refs(spec.losses))
    _prune(graph, [exp.resolve(r, loc) for r, loc in exp.released], keep)
    if own_log:
        errors.raise_if_any()
    return IR(spec.name, spec.file, graph, list(spec.inputs), outputs, spec.losses, spec.train,
              dict(env), output_locs, spec.loss_locs, spec.train_locs)
