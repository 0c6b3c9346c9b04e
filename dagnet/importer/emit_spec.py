"""Folded bodies -> Spec: block definitions, uses, repeats with `i` expressions, chains.

Each body is written through a *resolver* (a scalar's key -> a literal or a
parameter's name), so one routine writes the model (literals), a block
definition (its parameters) and a one-node child written in place (its
parent's values). Writing also yields the address map from which every
captured op's IR path is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagnet.errors import Loc
from dagnet.importer.fold import Body, Folder, Template
from dagnet.importer.graph import Captured
from dagnet.importer.write import LOC, call_args, spec_shell
from dagnet.spec.model import BlockSpec, NodeSpec, Ref, Spec


class Expr(str):
    """An argument written as an expression (a block parameter, ``i == 0``), not a literal."""


@dataclass
class Entry:
    name: str
    kind: str                          # "op" | "block"
    target: str
    inputs: list[str]
    args: dict = field(default_factory=dict)
    when: object = None
    repeat: int = 1
    members: list[str] = field(default_factory=list)     # the body nodes it writes
    template: Template | None = None
    pvalues: dict = field(default_factory=dict)           # a use's parameter values (None: the default)
    collapsed: dict | None = None                         # a one-node child written in place: its map


class Writer:
    def __init__(self, folder: Folder, captured: Captured, file: str):
        self.f, self.c, self.file = folder, captured, file
        self.tmaps: dict[int, dict] = {}
        self.blocks: dict[str, BlockSpec] = {}
        self.pending: list[Template] = []

    def template(self, body: Body) -> Template:
        return self.f.templates[self.f.find(body.template)]

    # -- one body ------------------------------------------------------------------------
    def emit(self, body: Body, resolve, template: Template | None) -> tuple[list[NodeSpec], dict]:
        entries = [self.entry(n, resolve, template) for n in body.nodes]
        entries = self.fold_repeats(entries, body.outputs)
        return self.write(entries, body.outputs)

    def entry(self, n, resolve, template) -> Entry:
        when = None
        if template is not None and n.name in template.optional:
            when = resolve((n.name, "__when__"))
            when = None if when is True else when
        if n.kind == "op":
            args = {k: (resolve((n.name, k)) if isinstance(v, (int, float, bool)) else v) for k, v in n.args.items()}
            return Entry(n.name, "op", n.target, list(n.inputs), args, when, members=[n.name])
        child = self.template(n.body)
        values = {}
        for p, keys in child.params.items():
            values[p] = next((v for v in (resolve((n.name, *k)) for k in keys) if v is not None), None)
        sub_nodes, sub_map = self.emit(n.body, lambda key, name=n.name: resolve((name, *key)), child)
        if len(sub_nodes) == 1 and [r.name for r in sub_nodes[0].inputs] == n.body.inputs and sub_nodes[0].when is None:
            node = sub_nodes[0]
            renamed = _renamed(sub_map, node.name, n.name)
            return Entry(n.name, "node", node.target or "", list(n.inputs), when=when, members=[n.name],
                         collapsed={"node": node, "map": renamed}, template=child, pvalues=values)
        if child.id not in self.tmaps and child not in self.pending:
            self.pending.append(child)
        return Entry(n.name, "block", child.name, list(n.inputs), when=when, members=[n.name], template=child,
                     pvalues=values)

    # -- repeats -----------------------------------------------------------------------------
    def fold_repeats(self, entries: list[Entry], outputs: list[str]) -> list[Entry]:
        readers: dict[str, int] = {}
        for e in entries:
            for i in e.inputs:
                readers[i] = readers.get(i, 0) + 1
        out, k = [], 0
        while k < len(entries):
            dense = self._dense(entries, k, readers, outputs)
            if dense is not None:
                out.append(dense[0])
                k += dense[1]
                continue
            run = self._run(entries, k, readers, outputs)
            for end in range(len(run), 1, -1):
                args = self._repeat_args(run[:end])
                if args is not None:
                    first = run[0]
                    out.append(Entry(run[end - 1].name, "block", first.template.name, first.inputs, args, first.when, end,
                                     [e.name for e in run[:end]], first.template))
                    self._need(first.template)
                    k += end
                    break
            else:
                e = entries[k]
                if e.kind == "block":
                    e.args = {p: v for p, v in e.pvalues.items()
                              if v is not None and (isinstance(v, Expr) or not _same(v, e.template.defaults[p]))}
                out.append(e)
                k += 1
        return out

    def _dense(self, entries, k, readers, outputs):
        """``u1 = v -> T; c2 = [v, u1] -> concat; u2 = c2 -> T; ...; cN+1 = [cN, uN] -> concat``:
        one `T * N dense` (each use reads the concat of the input and every earlier output)."""
        uses, value = [], None
        j = k
        while j + 1 < len(entries):
            use, cat = entries[j], entries[j + 1]
            source = use.inputs[0] if len(use.inputs) == 1 else None
            if (not _repeatable(use) or use.when is not None or source is None or (uses and source != value)
                    or (uses and use.template is not uses[0].template) or readers.get(use.name) != 1
                    or cat.kind != "op" or cat.target != "concat" or cat.args.get("dim", 1) != 1
                    or cat.when is not None or cat.inputs != [source, use.name] or use.name in outputs):
                break
            if uses and (readers.get(value) != 2 or value in outputs):
                break
            uses.append(use)
            value = cat.name
            j += 2
        if len(uses) < 2:
            return None
        args = self._repeat_args(uses)
        if args is None:
            return None
        first = uses[0]
        self._need(first.template)
        entry = Entry(value, "block", first.template.name, list(first.inputs), args, None, len(uses),
                      [u.name for u in uses], first.template)
        entry.connect = "dense"
        return entry, j - k

    def _need(self, template: Template) -> None:
        if template.id not in self.tmaps and template not in self.pending:
            self.pending.append(template)

    def _run(self, entries, k, readers, outputs) -> list[Entry]:
        run = [entries[k]]
        if not _repeatable(entries[k]):
            return run
        for e in entries[k + 1:]:
            prev = run[-1]
            if (not _repeatable(e) or e.template is not prev.template or e.inputs != [prev.name] or e.when is not None
                    or readers.get(prev.name) != 1 or prev.name in outputs):
                break
            run.append(e)
        return run

    def _repeat_args(self, run: list[Entry]) -> dict | None:
        template, args = run[0].template, {}
        for p in template.params:
            values = [e.pvalues[p] if e.pvalues[p] is not None else template.defaults[p] for e in run]
            text = _as_function_of_i(values)
            if text is None:
                return None
            if not (not isinstance(text, Expr) and _same(text, template.defaults[p])):
                args[p] = text
        return args

    # -- chains and NodeSpecs -------------------------------------------------------------
    def write(self, entries: list[Entry], outputs: list[str]) -> tuple[list[NodeSpec], dict]:
        readers: dict[str, int] = {}
        for e in entries:
            for i in e.inputs:
                readers[i] = readers.get(i, 0) + 1
        chains: list[list[Entry]] = []
        for e in entries:
            last = chains[-1][-1] if chains else None
            if (last is not None and e.inputs == [last.name] and readers.get(last.name) == 1
                    and last.name not in outputs and _chainable(e) and _chainable(last)):
                chains[-1].append(e)
            else:
                chains.append([e])
        nodes, amap = [], {}
        for chain in chains:
            if len(chain) == 1:
                node = self.node_spec(chain[0], chain[0].name)
                node.inputs = [Ref(i, LOC) for i in chain[0].inputs]
                self.map_entry(chain[0], chain[0].name, amap)
            else:
                items = []
                for k, e in enumerate(chain):      # named after its last node, the value it gives
                    items.append(self.node_spec(e, str(k)))
                    self.map_entry(e, f"{chain[-1].name}.{k}", amap)
                node = NodeSpec(chain[-1].name, LOC, "seq", None, [Ref(i, LOC) for i in chain[0].inputs], items=items)
            nodes.append(node)
        return nodes, amap

    def node_spec(self, e: Entry, name: str) -> NodeSpec:
        node = self._node_spec(e, name)
        node.args = {k: _plain(v) for k, v in node.args.items()}
        node.posargs = [_plain(v) for v in node.posargs]
        node.when = _plain(node.when)
        return node

    def _node_spec(self, e: Entry, name: str) -> NodeSpec:
        if e.collapsed is not None:
            inner = e.collapsed["node"]
            node = NodeSpec(name, LOC, inner.kind, inner.target, [], dict(inner.args), posargs=list(inner.posargs),
                            repeat=inner.repeat, when=e.when, items=inner.items, connect=inner.connect)
            return node
        if e.kind == "op":
            posargs, args = call_args(e.target, e.args)
            return NodeSpec(name, LOC, "op", e.target, [], args, posargs=posargs, when=e.when)
        return NodeSpec(name, LOC, "block", e.target, [], dict(e.args), repeat=e.repeat, when=e.when,
                        connect=getattr(e, "connect", "sequential"))

    def map_entry(self, e: Entry, prefix: str, amap: dict) -> None:
        if e.collapsed is not None:
            amap[e.members[0]] = (None, _renamed(e.collapsed["map"], e.name, prefix), True)
        elif e.repeat > 1:
            for j, m in enumerate(e.members):
                amap[m] = (f"{prefix}.{j}", None, False)
        else:
            amap[e.members[0]] = (prefix, None, False)

    # -- the whole spec ----------------------------------------------------------------------
    def block_defs(self) -> None:
        while self.pending:
            t = self.pending.pop(0)
            if t.id in self.tmaps:
                continue
            self.tmaps[t.id] = {}
            resolve = (lambda key, t=t: Expr(t.param_of[key]) if key in t.param_of else t.constants.get(key))
            nodes, amap = self.emit(t.rep, resolve, t)
            self.tmaps[t.id] = amap
            self.blocks[t.name] = BlockSpec(t.name, Loc(self.file, 0, 0), dict(t.defaults), {}, list(t.rep.inputs),
                                            {n.name: n for n in nodes}, [Ref(o, LOC) for o in t.rep.outputs])

    def assign(self, body: Body, amap: dict, base: str, paths: dict) -> None:
        for n in body.nodes:
            if n.name not in amap and n.kind == "op" and not n.op.state:
                continue            # a concat a dense repeat writes for itself
            prefix, sub, collapsed = amap[n.name]
            if n.kind == "op":
                paths[n.op.name] = _join(base, prefix)
            elif collapsed:
                self.assign(n.body, sub, base, paths)
            else:
                self.assign(n.body, self.tmaps[self.template(n.body).id], _join(base, prefix), paths)


def _plain(value):
    """An expression as the plain string the printers know (both print it as an expression)."""
    return str(value) if isinstance(value, Expr) else value


def _renamed(amap: dict, old: str, new: str) -> dict:
    """An address map with the path prefix ``old`` (the one node a child was) replaced by ``new``."""
    out = {}
    for k, (p, sub, collapsed) in amap.items():
        if collapsed:
            out[k] = (None, _renamed(sub, old, new), True)
        else:
            out[k] = (new + p[len(old):] if p == old or p.startswith(old + ".") else p, sub, False)
    return out


def _join(base: str, prefix: str) -> str:
    return f"{base}.{prefix}" if base else prefix


def _repeatable(e: Entry) -> bool:
    """A use that may join a repeat: not guarded, and not itself a repeat written in place (stages of
    one shape but different widths read better as stages than as a repeat of repeats)."""
    if e.template is None or e.when is not None:
        return False
    return e.collapsed is None or e.collapsed["node"].repeat == 1


def _chainable(e: Entry) -> bool:
    if e.when is not None or e.repeat != 1 or getattr(e, "connect", "sequential") != "sequential":
        return False
    if e.collapsed is not None:
        node = e.collapsed["node"]
        return node.kind in ("op", "block") and node.repeat == 1 and node.target not in ("chunk", "split")
    return len(e.inputs) == 1 and e.target not in ("chunk", "split")    # several outputs: a node of its own


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                            and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _as_function_of_i(values: list):
    """``values`` (one per repetition) as a constant or an expression in ``i``; None if neither."""
    first = values[0]
    if all(_same(v, first) for v in values):
        return first
    if any(isinstance(v, Expr) for v in values):
        return None
    rest = values[1]
    if all(_same(v, rest) for v in values[1:]):
        if isinstance(first, bool):
            return Expr("i == 0" if first else "i > 0")
        return Expr(f"{_lit(first)} if i == 0 else {_lit(rest)}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        step = values[1] - values[0]
        if all(values[k] == values[0] + step * k for k in range(len(values))):
            return Expr(f"{values[0]} + {step} * i")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        # a float progression (stochastic depth rising block by block), equal to 1e-9 relative
        step = (values[-1] - values[0]) / (len(values) - 1)
        if all(abs(values[k] - (values[0] + step * k)) <= 1e-9 * max(1.0, abs(values[k])) for k in range(len(values))):
            return Expr(f"{_lit(values[0])} + {_lit(step)} * i")
    return None


def _lit(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v)


def write_folded(folder: Folder, root: Body, captured: Captured, doc: str) -> tuple[Spec, dict[str, str]]:
    spec = spec_shell(captured, doc)
    writer = Writer(folder, captured, spec.file)
    values = folder.values(root)
    nodes, amap = writer.emit(root, lambda key: values.get(key), None)
    writer.block_defs()
    spec.blocks = writer.blocks
    spec.nodes = {n.name: n for n in nodes}
    spec.outputs = [Ref(o, LOC) for o in root.outputs]
    paths: dict[str, str] = {}
    writer.assign(root, amap, "", paths)
    return spec, paths
