"""Fold a captured graph into blocks: the module tree becomes the block tree, equal siblings repeats.

1. *Bodies.* Each module whose ops form one unit with one output becomes a
   body: its direct ops and one `use` per child module (a module with several
   outputs, or one in a cycle with its siblings, is dissolved into its parent).
2. *Templates.* Bodies equal up to scalar arguments share a template (its key is
   the body's structure with every int, float and bool left out). A body equal
   to another but for one single-input node (ResNet's first block and its
   projection) joins that template, the node guarded by `when`.
3. *Parameters.* Per template, a scalar that differs between instances becomes
   a block parameter (equal ones share one), the others stay literals.
4. *Writing.* Consecutive uses of one template, each feeding the next, become
   `block(...) * N` when every parameter is a function of `i` (constant,
   `a if i == 0 else b`, `a + d * i`); a use whose block is one node is written
   as that node; straight runs of single-input nodes become chains.

Every captured op gets its IR path (the compiled spec's state-dict prefix) from
the same walk that writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from dagnet.importer.graph import Captured, Op, legal, unique
from dagnet.spec.model import Spec

SCALARS = (int, float, bool)


@dataclass
class BNode:
    name: str
    kind: str                      # "op" | "use"
    target: str                    # op name | "" for a use (its template is body.template)
    inputs: list[str]
    args: dict = field(default_factory=dict)
    op: Op | None = None
    body: Body | None = None


@dataclass
class Body:
    scope: tuple
    inputs: list[str]
    nodes: list[BNode]
    outputs: list[str]
    template: int = -1

    def node(self, name):
        return next((n for n in self.nodes if n.name == name), None)


@dataclass
class Template:
    id: int
    rep: Body
    name: str = ""
    instances: list[Body] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)
    params: dict[str, list[tuple]] = field(default_factory=dict)     # param -> the keys it stands for
    defaults: dict[str, object] = field(default_factory=dict)
    param_of: dict[tuple, str] = field(default_factory=dict)
    constants: dict[tuple, object] = field(default_factory=dict)


def _is_scalar(v) -> bool:
    return isinstance(v, SCALARS)


class Folder:
    def __init__(self, captured: Captured):
        self.c = captured
        self.templates: list[Template] = []
        self.parent: dict[int, int] = {}
        self.by_sig: dict[tuple, int] = {}
        self.by_reduced: dict[tuple, tuple[int, str]] = {}
        self.producer = {op.name: op for op in captured.ops}
        self.consumers: dict[str, set[str]] = {}
        for op in captured.ops:
            for i in op.inputs:
                self.consumers.setdefault(_base(i), set()).add(op.name)

    # -- 1. bodies ----------------------------------------------------------------------
    def find(self, tid: int) -> int:
        while self.parent.get(tid, tid) != tid:
            tid = self.parent[tid]
        return tid

    def build(self, scope: tuple, ops: list[Op], ext: list[str], outputs: list[str]) -> Body:
        dissolved: set[tuple] = set()
        while True:
            units = self._units(scope, ops, dissolved)
            bad = self._bad_units(units, ops, outputs)
            if not bad:
                break
            dissolved |= bad
        taken = set()
        inputs = [unique(legal(e) if not scope else ("x" if k == 0 else f"x{k + 1}"), taken) for k, e in enumerate(ext)]
        local = dict(zip(ext, inputs))

        def loc(ref: str) -> str:        # `c.1`, a piece of a chunk, is local `c`'s piece 1
            if ref in local:
                return local[ref]
            base, _, k = ref.partition(".")
            return f"{local[base]}.{k}"
        nodes = []
        for key, members in units.items():
            if key[0] == "op":
                op = members[0]
                name = unique(legal("_".join([*op.scope[len(scope):], op.local])), taken)
                nodes.append(BNode(name, "op", op.op, [loc(i) for i in op.inputs], dict(op.args), op=op))
                local[op.name] = name
            else:
                path = key[1]
                names = {o.name for o in members}
                sub_ext = list(dict.fromkeys(i for o in members for i in o.inputs if _base(i) not in names))
                out = self._outputs_of(members, outputs)
                child = self.build(path, members, sub_ext, out)
                name = unique(legal("_".join(path[len(scope):])), taken)
                nodes.append(BNode(name, "use", "", [loc(i) for i in sub_ext], body=child))
                local[out[0]] = name
        body = Body(scope, inputs, nodes, [loc(o) for o in outputs])
        if scope:
            self.register(body)
        return body

    def _units(self, scope, ops, dissolved) -> dict:
        units: dict[tuple, list[Op]] = {}
        for op in ops:
            depth = len(scope) + 1
            while op.scope[:depth] in dissolved and len(op.scope) > depth:
                depth += 1
            key = ("op", op.name) if len(op.scope) < depth or op.scope[:depth] in dissolved else \
                ("use", op.scope[:depth])
            units.setdefault(key, []).append(op)
        return units

    def _outputs_of(self, members, outputs) -> list[str]:
        """The values of ``members`` read outside them (or returned by the model or the body)."""
        names = {o.name for o in members}
        return [o.name for o in members
                if o.name in outputs or o.name in self.c.outputs or self.consumers.get(o.name, set()) - names]

    def _bad_units(self, units, ops, outputs) -> set[tuple]:
        """Child modules that cannot be blocks: several outputs, or a cycle with their siblings."""
        bad, owner, graph = set(), {}, nx.DiGraph()
        for key, members in units.items():
            graph.add_node(key)
            for o in members:
                owner[o.name] = key
        for key, members in units.items():
            out = self._outputs_of(members, outputs) if key[0] == "use" else []
            if key[0] == "use" and (len(out) != 1 or self.producer[out[0]].op in ("chunk", "split")):
                bad.add(key[1])
            for o in members:
                for i in map(_base, o.inputs):
                    if i in owner and owner[i] != key:
                        graph.add_edge(owner[i], key)
        if not bad:
            try:
                cycle = nx.find_cycle(graph)
                bad |= {k[1] for edge in cycle for k in edge if k[0] == "use"}
            except nx.NetworkXNoCycle:
                pass
        return bad

    # -- 2. templates ----------------------------------------------------------------------
    def signature(self, body: Body, skip: str | None = None) -> tuple:
        alias = {}
        if skip is not None:
            alias[skip] = body.node(skip).inputs[0]
        rows = []
        for n in body.nodes:
            if n.name == skip:
                continue
            ins = tuple(alias.get(i, i) for i in n.inputs)
            if n.kind == "op":
                args = tuple(sorted((k, "#" if _is_scalar(v) else repr(v)) for k, v in n.args.items()))
                rows.append((n.name, n.target, ins, args))
            else:
                rows.append((n.name, "use", self.find(n.body.template), ins))
        return (len(body.inputs), tuple(rows), tuple(alias.get(o, o) for o in body.outputs))

    def register(self, body: Body) -> None:
        sig = self.signature(body)
        if sig in self.by_sig:
            tid = self.find(self.by_sig[sig])
        elif sig in self.by_reduced:
            tid, node = self.by_reduced[sig]
            tid = self.find(tid)
            self.templates[tid].optional.add(node)
        else:
            tid = len(self.templates)
            self.templates.append(Template(tid, body))
            self.by_sig[sig] = tid
            for n in body.nodes:
                if len(n.inputs) == 1 and n.name not in body.outputs:
                    reduced = self.signature(body, skip=n.name)
                    if reduced in self.by_sig and self.find(self.by_sig[reduced]) != tid:
                        old = self.find(self.by_sig[reduced])
                        self.parent[old] = tid
                        self.templates[tid].instances += self.templates[old].instances
                        self.templates[tid].optional.add(n.name)
                    self.by_reduced.setdefault(reduced, (tid, n.name))
        body.template = tid
        self.templates[tid].instances.append(body)

    # -- 3. parameters ------------------------------------------------------------------------
    def values(self, body: Body) -> dict[tuple, object]:
        out = {}
        for n in body.nodes:
            if n.kind == "op":
                out.update({(n.name, k): v for k, v in n.args.items() if _is_scalar(v)})
            else:
                out.update({(n.name, *k): v for k, v in self.full_values(n.body).items()})
        return out

    def full_values(self, body: Body) -> dict[tuple, object]:
        out = self.values(body)
        present = {n.name for n in body.nodes}
        for name in self.templates[self.find(body.template)].optional:
            out[(name, "__when__")] = name in present
        return out

    def derive_params(self) -> None:
        names = {}
        for t in self.templates:
            if self.find(t.id) != t.id:
                continue
            rows = [self.full_values(b) for b in t.instances]
            keys = list(dict.fromkeys(k for row in rows for k in row))
            groups: list[tuple[str, list, list]] = []     # (name, keys, representative vector)
            taken = set()
            for key in keys:
                vector = [row.get(key) for row in rows]
                known = [v for v in vector if v is not None]
                if len(set(map(repr, known))) <= 1:
                    t.constants[key] = known[0] if known else None
                    continue
                for name, members, rep in groups:
                    if all(a is None or b is None or (a == b and type(a) is type(b)) for a, b in zip(rep, vector)):
                        members.append(key)
                        rep[:] = [a if a is not None else b for a, b in zip(rep, vector)]
                        break
                else:
                    base = f"has_{key[-2]}" if key[-1] == "__when__" else key[-1]
                    name = legal(base) if legal(base) not in taken else legal("_".join(map(str, key)))
                    groups.append((unique(name, taken), [key], list(vector)))
            for name, members, rep in groups:
                t.params[name] = members
                t.defaults[name] = next(v for v in rep if v is not None)
                for k in members:
                    t.param_of[k] = name
            cls = self.c.classes.get(t.rep.scope, "block")
            if cls in ("Sequential", "ModuleList", "ModuleDict", "Module") and t.rep.scope:
                cls = t.rep.scope[-1] if not t.rep.scope[-1].isdigit() else "block"
                parents = {re.sub(r"\d+$", "", b.scope[-2]) if len(b.scope) > 1 else "" for b in t.instances}
                stem = re.sub(r"\W", "", next(iter(parents))) if len(parents) == 1 else ""
                if cls == "block" and self.c.classes.get(t.rep.scope) == "Module" and stem.strip("_"):
                    cls = f"{stem}_block"       # a file that names no classes: layer1.0 .. layer4.1 are layer_blocks
            t.name = unique(_block_name(cls), names.setdefault("taken", set()))


def _base(ref: str) -> str:
    """The op a reference reads: ``c`` for ``c.1``, a piece of a chunk or split."""
    return ref.partition(".")[0]


def chain_concats(captured: Captured) -> None:
    """Rewrite ``cat([a, b, c])`` as ``cat([cat([a, b]), c])`` where ``cat([a, b])`` is computed already.

    The same values, and the dense pattern (DenseNet's layers each reading every
    earlier output) becomes one concat per layer, moved to the module holding
    both, so each layer is a one-input block and the run a `* N dense` repeat.
    """
    seen: dict[tuple, Op] = {}
    for op in captured.ops:
        if op.op != "concat" or op.args.get("dim", 1) != 1:
            continue
        flat = tuple(op.inputs)
        prefix = seen.get(flat[:-1]) if len(flat) > 2 else None
        if prefix is not None:
            op.inputs = [prefix.name, flat[-1]]
            op.scope = prefix.scope = _common(op.scope, prefix.scope)
        seen[flat] = op


def _common(a: tuple, b: tuple) -> tuple:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return a[:k]


MAX_PERIOD = 60


def find_flat_repeats(captured: Captured) -> None:
    """Give a flat graph (an ONNX file without scopes, a Caffe net) the hierarchy it lacks.

    Searches the model-level ops for back-to-back runs of one sub-sequence (equal ops and
    non-scalar arguments, equal wiring, one value in and one out), takes the run that
    shortens the spec most, and repeats on what is left. Each run becomes a module
    ``repeat<k>`` with one child per period, so folding writes it as ``block * N``.
    """
    ops = [op for op in captured.ops if not op.scope]
    index = {op.name: k for k, op in enumerate(ops)}
    used_by: dict[str, set[int]] = {}
    for k, op in enumerate(ops):
        for i in op.inputs:
            used_by.setdefault(_base(i), set()).add(k)
    outputs = set(captured.outputs)
    taken = [False] * len(ops)
    group = 0
    while True:
        best = None
        for period in range(1, min(MAX_PERIOD, len(ops) // 2) + 1):
            start = 0
            while start + 2 * period <= len(ops):
                count = _periods(ops, index, used_by, outputs, taken, start, period)
                gain = (count - 1) * period
                if count >= 2 and (best is None or gain > best[0]):
                    best = (gain, start, period, count)
                start += 1
        if best is None or best[0] < 2:
            return
        _, start, period, count = best
        for j in range(count):
            taken_names: set[str] = set()
            for k in range(start + j * period, start + (j + 1) * period):
                ops[k].scope = (f"repeat{group}", str(j))
                ops[k].local = unique(legal(ops[k].op), taken_names)
                taken[k] = True
        group += 1


def _signature_at(ops, index, used_by, outputs, start, period):
    """The structure of ``ops[start:start+period]`` as one period, or None if it is not one."""
    inside = range(start, start + period)
    external, rows = None, []
    for k in inside:
        op = ops[k]
        wiring = []
        for i in op.inputs:
            at = index.get(_base(i))
            if at is not None and start <= at < start + period:
                wiring.append(("rel", at - start, i.partition(".")[2]))
            else:
                if external is not None and external != i:
                    return None, None
                external = i
                wiring.append(("in",))
        args = tuple(sorted((a, "#" if isinstance(v, (int, float, bool)) else repr(v)) for a, v in op.args.items()))
        rows.append((op.op, args, tuple(wiring)))
    leaving = [k for k in inside if ops[k].name in outputs or any(u >= start + period for u in used_by.get(ops[k].name, ()))]
    if len(leaving) != 1 or external is None:
        return None, None
    return (tuple(rows), leaving[0] - start), external


def _periods(ops, index, used_by, outputs, taken, start, period) -> int:
    """How many times the period at ``start`` repeats back to back, each reading the one before."""
    if any(taken[start:start + period]):
        return 0
    first, _ = _signature_at(ops, index, used_by, outputs, start, period)
    if first is None:
        return 0
    count = 1
    while start + (count + 1) * period <= len(ops) and not any(taken[start + count * period:start + (count + 1) * period]):
        at = start + count * period
        sig, external = _signature_at(ops, index, used_by, outputs, at, period)
        previous_out = ops[at - period + first[1]].name
        if sig != first or external != previous_out:
            break
        # the earlier period's output is read only by this one
        if any(u >= at + period or u < at for u in used_by.get(previous_out, ())):
            break
        count += 1
    return count


def _block_name(cls: str) -> str:
    from dagnet import ops
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", cls).lower()
    name = legal(snake, "block")
    return name + "_block" if ops.get(name) is not None else name


def folded_spec(captured: Captured, doc: str = "") -> tuple[Spec, dict[str, str]]:
    """The spec with blocks and repeats, and each captured op's IR path."""
    from dagnet.importer.emit_spec import write_folded
    chain_concats(captured)
    if sum(1 for op in captured.ops if not op.scope) > 0.8 * len(captured.ops):
        find_flat_repeats(captured)
    folder = Folder(captured)
    outputs = list(dict.fromkeys(captured.outputs))
    root = folder.build((), captured.ops, [name for name, _, _ in captured.inputs], outputs)
    folder.derive_params()
    return write_folded(folder, root, captured, doc)


