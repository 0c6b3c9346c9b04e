"""The architecture view: IR -> Figure, blocks collapsed and identical repeats folded.

Node paths nest (``layer3.2.body.4`` is item 4 of ``body`` in repetition 2 of
``layer3``), so the paths form a tree of *groups*. A group whose children are
numbered (``layer3.0``, ``layer3.1``, ... and the sugar merges ``3_add``,
``3_in``, ``cat``) is a repeat or a ``seq``; one whose children are named is a
block use. ``depth`` says how many levels of groups open up as clusters below
the top level; a group that stays closed is one node. In a numbered group,
consecutive repetitions that are identical (same ops, arguments and shapes,
wired the same way, each feeding the next) fold into one node marked ``×N``
with their parameters summed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from dagnet import ops
from dagnet.ir import IR, Node
from dagnet.render.drawing import FCluster, FEdge, Figure, FNode
from dagnet.render.labels import (TIMES, Line, op_title, params_line, plain, shape_line,
                                  split_title, tex_escape)

NUMBERED = re.compile(r"^(\d+)(_add|_in)?$")
# Which family a closed `seq` is drawn as: the first of its members' families in this order.
DOMINANT = ("conv", "dense", "recurrent", "attention", "field", "upsample", "pool", "norm", "learned",
            "activation", "tensor", "merge", "shape")


@dataclass
class Group:
    path: str
    children: list = field(default_factory=list)     # Group | Node, in topological order


@dataclass
class Options:
    depth: int = 0
    fold: bool = True
    rankdir: str = "TB"
    shapes: bool = True
    params: bool = True
    dims: dict | None = None
    legend: bool = True
    wrap: bool = False          # narrow boxes: the title broken at its commas, one detail per line
    names: bool = False         # --labels names: the spec's own identifiers as titles


def group_tree(ir: IR) -> Group:
    """The groups of the model, from the node paths (the root is the model itself)."""
    root = Group("")
    groups = {"": root}
    for node in ir.order():
        parts = node.name.split(".")
        parent = root
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix not in groups:
                groups[prefix] = Group(prefix)
                parent.children.append(groups[prefix])
            parent = groups[prefix]
        parent.children.append(node)
    return root


def local(item) -> str:
    return (item.path if isinstance(item, Group) else item.name).rsplit(".", 1)[-1]


def family(node: Node) -> str:
    if node.op == "input":
        return "input"
    opdef = ops.get(node.op)
    return opdef.style if opdef else "layer"


def mark_legends() -> list[tuple[str, str]]:
    """(mark, words) of every op drawn as a mark, from its ``mark`` and ``mark_legend``
    facets, in the legend's order: alphabetical by the words."""
    found = {op.mark: op.mark_legend for op in ops.OPS.values() if op.mark and op.mark_legend}
    return sorted(found.items(), key=lambda item: item[1])


def mark(node: Node) -> str | None:
    """The circled mark a merge is drawn as ("+", "C"), from the op's ``mark`` facet."""
    opdef = ops.get(node.op)
    return opdef.mark if opdef else None


class ArchBuilder:
    def __init__(self, ir: IR, options: Options):
        self.ir = ir
        self.opt = options
        self.fig = Figure(ir.name, "arch")
        self.rep: dict[str, str] = {}           # IR node -> figure node drawing it
        self._members: dict[str, list[Node]] = {}
        self._params: dict[str, int] = {}
        self.folded = False
        self._docs: dict | None = None

    # -- facts about groups ---------------------------------------------------
    def members(self, item) -> list[Node]:
        if isinstance(item, Node):
            return [item]
        if item.path not in self._members:
            self._members[item.path] = [n for c in item.children for n in self.members(c)]
        return self._members[item.path]

    def params(self, node: Node) -> int:
        if node.name not in self._params:
            self._params[node.name] = ops.count_params(self.ir, node)
        return self._params[node.name]

    @staticmethod
    def numbered(group: Group) -> bool:
        return all(NUMBERED.match(local(c)) or local(c) == "cat" for c in group.children)

    def is_block(self, group: Group) -> bool:
        return not self.numbered(group) and all(n.block for n in self.members(group))

    @staticmethod
    def several_outputs(group: Group) -> bool:
        """Whether ``group`` is the outputs ``s.0``, ``s.1``, ... of one op with several (`chunk`)."""
        return all(isinstance(c, Node) and ops.get(c.op) and ops.get(c.op).multi_output for c in group.children)

    def block_name(self, group: Group) -> str:
        """The block's title: the first clause of its ``doc`` when short, else its name
        humanised (``dense_layer`` -> ``dense layer``); the raw name with ``--labels names``."""
        shallowest = min(self.members(group), key=lambda n: n.name.count("."))
        name = shallowest.block
        if self.opt.names:
            return name
        doc = self.block_docs().get(name, "")
        first = re.split(r"[.;:(\n]", doc.strip(), maxsplit=1)[0].strip()
        return first if 0 < len(first) <= 28 else humanise(name)

    def block_docs(self) -> dict[str, str]:
        """``doc`` of each block of the spec file (the IR keeps none), or nothing."""
        if self._docs is None:
            self._docs = {}
            try:
                from dagnet.loader import parse
                spec = parse(Path(self.ir.file))
                self._docs = {name: b.doc or "" for name, b in spec.blocks.items()}
            except Exception:           # no file (a spec from text), or one that moved: names
                pass
        return self._docs

    def title_of(self, name: str) -> Line | None:
        """A node's own name as a title: humanised, and none for a placeholder (``out``)."""
        if self.opt.names:
            return plain(name)
        local_name = name.rsplit(".", 1)[-1]
        if local_name.lower() in PLACEHOLDERS or local_name.isdigit():
            return None
        return plain(humanise(name))

    def units(self, group: Group) -> list[list]:
        """Children of a numbered group by repetition: ``k`` with its ``k_add``/``k_in``."""
        units: dict = {}
        for child in group.children:
            m = NUMBERED.match(local(child))
            key = int(m.group(1)) if m else local(child)
            units.setdefault(key, []).append(child)
        return list(units.values())

    def describe(self, item) -> str:
        """What a closed item is: a block name, an op title, ``bottleneck ×3``, ``fc, 128 – ReLU``."""
        if isinstance(item, Node):
            return op_title(item.op, item.args)
        if self.is_block(item):
            return self.block_name(item)
        if self.several_outputs(item):
            return op_title(item.children[0].op, item.children[0].args)
        if self.numbered(item):
            mains = [c for c in item.children if NUMBERED.match(local(c)) and local(c).isdigit()]
            kinds = [self.describe(c) for c in mains]
            sugar = {local(c).split("_")[-1] for c in item.children if not local(c).isdigit()}
            connect = ", residual" if "add" in sugar else ", dense" if sugar & {"in", "cat"} else ""
            if len(set(kinds)) == 1 and len(kinds) > 1:
                return f"{grouped(kinds[0])} {TIMES} {len(kinds)}{connect}"
            if len(kinds) <= 3:
                return " \u2013 ".join(kinds) + connect
            return sequence_summary(kinds) + connect
        return f"{len(self.members(item))} layers"

    def kind_of(self, item) -> str:
        if isinstance(item, Node):
            return "merge" if mark(item) else family(item)
        if self.is_block(item) or (self.numbered(item) and any(isinstance(c, Group) for c in item.children)):
            return "block"
        fams = {family(n) for n in self.members(item)}
        return next((f for f in DOMINANT if f in fams), "block")

    def signature(self, unit: list, prefix: str) -> tuple:
        """Structure, arguments and shapes of a repetition, with its own index taken out."""
        nodes = [n for c in unit for n in self.members(c)]
        inside = {n.name for n in nodes}
        index = re.compile("^" + re.escape(prefix) + r"\d+")

        def rel(name):
            return index.sub("#", name) if name in inside else "<outside>"
        return tuple((rel(n.name), n.op, repr(sorted(n.args.items())), repr(n.shape),
                      tuple(rel(i) for i in n.inputs)) for n in nodes)

    # -- the figure -------------------------------------------------------------
    def build(self) -> Figure:
        root = group_tree(self.ir)
        self.place(root, self.opt.depth, None)
        self.add_edges()
        outputs = {self.rep[n] for n in self.ir.outputs.values() if n in self.rep}
        for node_id in outputs:
            self.fig.nodes[node_id].output = True
        if self.opt.legend:
            self.fig.legend = self.legend()
        return self.fig

    def place(self, group: Group, depth: int, cluster: FCluster | None) -> None:
        units = self.units(group) if self.numbered(group) else [[c] for c in group.children]
        runs = self.runs(group, units, depth) if self.opt.fold and self.numbered(group) else [[u] for u in units]
        for run in runs:
            if len(run) > 1:
                self.folded_node(group, run, cluster)
                continue
            for child in run[0]:
                if isinstance(child, Group) and depth > 0:
                    sub = FCluster("cluster_" + child.path, self.cluster_label(child))
                    (cluster.clusters if cluster else self.fig.clusters).append(sub)
                    self.place(child, depth - 1, sub)
                else:
                    self.closed_node(child, cluster)

    def runs(self, group: Group, units: list[list], depth: int) -> list[list]:
        """Maximal runs of consecutive identical repetitions, each feeding the next."""
        if depth > 0 and any(isinstance(c, Group) for u in units for c in u):
            return [[u] for u in units]          # repetitions open up: draw each one
        prefix = group.path + "." if group.path else ""
        runs: list[list] = []
        last_sig = None
        for unit in units:
            sig = self.signature(unit, prefix) if local(unit[0]).isdigit() else None
            if runs and sig is not None and sig == last_sig and self.feeds(runs[-1][-1], unit):
                runs[-1].append(unit)
            else:
                runs.append([unit])
            last_sig = sig
        return runs

    def feeds(self, before: list, after: list) -> bool:
        produced = {n.name for c in before for n in self.members(c)}
        return any(i in produced for c in after for n in self.members(c) for i in n.inputs)

    def cluster_label(self, group: Group) -> Line:
        name = group.path if self.opt.names else humanise(group.path)
        what = self.describe(group)
        # an opened `seq` shows its ops: its title is its name; a block or repeat says what it is
        plain_seq = self.numbered(group) and not self.is_block(group) and f" {TIMES} " not in what
        text = name if plain_seq else f"{name}: {what}"
        return Line(text, tex_escape(text), "cluster")

    def lines(self, title: Line | None, sub: str | None, items: list[Node]) -> list[Line]:
        """Title, what it is, output shape and parameters, flowed for the rank direction."""
        last = items[-1]
        shape = shape_line(last.shape, self.opt.dims) if self.opt.shapes else None
        count = sum(self.params(n) for n in items) if self.opt.params else 0
        params = params_line(count)
        wide = self.opt.rankdir in ("TB", "BT") and not self.opt.wrap
        out = [title] if title else []
        if sub:
            parts = [sub] if wide else split_title(sub)
            out += [plain(p, "op") for p in parts]
        details = [x for x in (shape, params) if x is not None]
        if wide and len(details) == 2:
            sep = "  \u00b7  "
            out.append(Line(details[0].text + sep + details[1].text,
                            details[0].tex + " $\\cdot$ " + details[1].tex, "detail"))
        else:
            out += details
        return out

    def closed_node(self, item, cluster: FCluster | None) -> None:
        if isinstance(item, Node):
            node = self.layer_node(item)
        else:
            name = local(item)
            title = self.title_of(item.path if not cluster else name)
            members = self.members(item)
            node = FNode(item.path, self.kind_of(item), self.lines(title, self.describe(item), members),
                         sum(self.params(n) for n in members), tuple(n.name for n in members),
                         tooltip=item.path)
        self.fig.add(node)
        for name in node.members:
            self.rep[name] = node.id
        if cluster is not None:
            cluster.nodes.append(node.id)

    def layer_node(self, node: Node) -> FNode:
        if node.op == "input":
            lines = [plain(node.name if self.opt.names else humanise(node.name))]
            shape = shape_line(node.shape, self.opt.dims) if self.opt.shapes else None
            return FNode(node.name, "input", lines + ([shape] if shape else []), 0, (node.name,),
                         tooltip=node.name)
        if mark(node):
            return FNode(node.name, "merge", [plain(mark(node), "mark")], 0, (node.name,),
                         size=(15, 15), tooltip=f"{node.name}: {node.op}")
        kind = family(node)
        return FNode(node.name, kind, self.lines(None, op_title(node.op, node.args), [node]),
                     self.params(node), (node.name,), tooltip=node.name)

    def folded_node(self, group: Group, run: list[list], cluster: FCluster | None) -> None:
        first, last = local(run[0][0]), local(run[-1][0])
        items = [n for unit in run for c in unit for n in self.members(c)]
        sugar = {local(c).split("_")[-1] for u in run for c in u if not local(c).isdigit()}
        connect = ", residual" if "add" in sugar else ", dense" if "in" in sugar else ""
        title = plain(f"{grouped(self.describe(run[0][0]))} {TIMES} {len(run)}{connect}", "op")
        node = FNode(f"{group.path}.{first}-{last}" if group.path else f"{first}-{last}",
                     self.kind_of(run[0][0]), [title] + self.lines(None, None, items),
                     sum(self.params(n) for n in items), tuple(n.name for n in items),
                     tooltip=f"{group.path}.{first}..{last}")
        self.folded = True
        self.fig.add(node)
        for name in node.members:
            self.rep[name] = node.id
        if cluster is not None:
            cluster.nodes.append(node.id)

    def add_edges(self) -> None:
        seen = set()
        for node in self.ir.order():
            head = self.rep.get(node.name)
            for i in node.inputs:
                tail = self.rep.get(i)
                if tail is None or head is None or tail == head or (tail, head) in seen:
                    continue
                seen.add((tail, head))
                self.fig.edges.append(FEdge(tail, head))
        mark_skips(self.fig)

    def legend(self) -> list[tuple[str, str]]:
        from dagnet.render.styles import FAMILY_ORDER, PAPER_LOOKS
        kinds = {n.kind for n in self.fig.nodes.values()}
        entries = [(k, PAPER_LOOKS[k].legend) for k in FAMILY_ORDER if k in kinds and k != "merge"]
        marks = {n.lines[0].text for n in self.fig.nodes.values() if n.kind == "merge"}
        entries += [("mark:" + m, words) for m, words in mark_legends() if m in marks]
        if any(n.output for n in self.fig.nodes.values()):
            entries.append(("output", "output"))
        if self.folded:
            entries.append(("note", f"{TIMES} N: N identical repeats"))
        return entries


PLACEHOLDERS = {"out", "output", "outputs", "x", "y", "h", "body", "main", "result", "res", "tmp", "value"}


def humanise(name: str) -> str:
    """A spec identifier as words: ``double_conv`` -> ``double conv``, ``layer3.1`` kept."""
    return re.sub(r"[_]+", " ", name).strip() or name


def sequence_summary(kinds: list[str]) -> str:
    """A long ``seq`` by what it does: ``conv – batch norm – ReLU – max pool``, not "4 layers";
    a repeated pattern as ``(conv – batch norm – ReLU) × 2``."""
    words = [re.sub(r"^\d+(\u00d7\d+)*\s+", "", k).split(",")[0].strip() for k in kinds]
    for period in range(1, len(words) // 2 + 1):
        if len(words) % period == 0 and words == words[:period] * (len(words) // period):
            inner = sequence_summary(words[:period]) if period > 1 else words[0]
            return f"{grouped(inner)} {TIMES} {len(words) // period}"
    short = [w for i, w in enumerate(words) if i == 0 or words[i - 1] != w]
    if len(short) > 5:
        short = short[:4] + ["\u2026"]
    return " \u2013 ".join(short)


def grouped(what: str) -> str:
    """``(batch norm – ReLU) ×3`` but ``basic ×3``: say what the count applies to."""
    return f"({what})" if (", " in what or " \u2013 " in what) else what


def mark_skips(fig: Figure) -> None:
    """Of the edges into a node, the one from the deepest predecessor is the main path;
    the others are skips (residual and dense edges), drawn lighter and kept out of the way."""
    g = nx.DiGraph()
    g.add_nodes_from(fig.nodes)
    g.add_edges_from((e.tail, e.head) for e in fig.edges)
    depth: dict[str, int] = {}
    for n in nx.topological_sort(g):
        depth[n] = max((depth[p] + 1 for p in g.predecessors(n)), default=0)
    main = {}
    for e in fig.edges:
        best = main.get(e.head)
        if best is None or depth[e.tail] > depth[best]:
            main[e.head] = e.tail
    for e in fig.edges:
        if main[e.head] != e.tail:
            e.kind = "skip"


def arch_figure(ir: IR, options: Options | None = None) -> Figure:
    """The architecture view of a checked IR."""
    return ArchBuilder(ir, options or Options()).build()
