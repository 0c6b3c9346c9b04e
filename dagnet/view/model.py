"""IR -> the viewer's data: a tree of items (groups and nodes), their details, and the edges.

The node paths nest (``layer3.2.conv1``), so they form a tree of *groups* as in
``dagnet render`` (``dagnet.render.arch``): a group whose children are numbered is
a repeat (or a ``seq``), any other one is a block use. Everything the page shows
is computed here once: per node its op, arguments, shapes, parameters, MACs and
source line; per group the sums; and per group the edges between its children
(every IR edge lifted to the lowest group holding both ends), so that the page
can lay out one group at a time, only when it is opened.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from dagnet import ops
from dagnet.dims import fmt_shape, known, substitute
from dagnet.errors import ErrorLog, SpecError, SpecErrors
from dagnet.render.arch import NUMBERED, family, mark
from dagnet.render.labels import op_title
from dagnet.render.styles import FAMILY_ORDER, theme

MAX_ARG_TEXT = 200          # an argument longer than this is cut (a long list of sizes)
# A group with more children than this (a flat import) has them split into consecutive
# ranges of RANGE_SIZE, each a closed box: no open group lays out more than this many boxes.
MAX_CHILDREN = 150
RANGE_SIZE = 100


def load_tolerant(path, overrides: dict | None = None):
    """Parse, expand and check as far as the spec allows: ``(ir or None, [SpecError, ...])``.

    A spec with errors still yields the part that could be built, so the viewer
    can draw it and list the errors where they are.
    """
    from dagnet.check import check
    from dagnet.ir import expand
    from dagnet.loader import parse
    errors = ErrorLog()
    try:
        spec = parse(Path(path))
    except SpecError as exc:
        return None, _flatten(exc)
    ir = None
    try:
        ir = expand(spec, overrides, errors)
        check(ir, errors)
    except SpecError as exc:
        return ir, _flatten(exc)
    return ir, []


def _flatten(exc: SpecError) -> list[SpecError]:
    return list(exc.errors) if isinstance(exc, SpecErrors) else [exc]


def _order(ir) -> list:
    """Topological order, or declaration order where the graph has a cycle (already an error)."""
    try:
        return ir.order()
    except nx.NetworkXUnfeasible:
        return [ir.node(n) for n in ir.graph.nodes]


def _text(value) -> str:
    text = str(value)
    return text if len(text) <= MAX_ARG_TEXT else text[:MAX_ARG_TEXT] + "…"


def _shape_texts(shape, dims: dict) -> tuple[str | None, str | None]:
    if shape is None:
        return None, None
    sym = fmt_shape(shape)
    if not dims:
        return sym, None
    try:
        value = fmt_shape(substitute(shape, dims))
    except Exception:       # noqa: BLE001 - a dim sympy cannot substitute: show the symbolic one only
        return sym, None
    return sym, (value if value != sym else None)


def _macs(ir, node, dims: dict):
    """MACs per example, or None where a dim is still symbolic (or a shape is unknown)."""
    opdef = ops.get(node.op)
    if opdef is None or opdef.macs is None:
        return 0
    try:
        ins = [substitute(ir.node(i).shape, dims) for i in node.inputs]
        value = opdef.macs(ins, substitute(node.shape, dims), node.args)
    except Exception:       # noqa: BLE001 - a node whose shapes are unknown (the spec has errors)
        return None
    return int(value) if known(value) else None


def _params(ir, node) -> int:
    try:
        return int(ops.count_params(ir, node))
    except Exception:       # noqa: BLE001 - unknown shapes (the spec has errors): no count
        return 0


class _Source:
    """Source lines by file, read once, for the details panel."""

    def __init__(self):
        self.files: dict[str, list[str]] = {}

    def line(self, file: str, line: int) -> str:
        if file not in self.files:
            try:
                self.files[file] = Path(file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                self.files[file] = []
        lines = self.files[file]
        return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def view_data(ir, errors: list[SpecError] = (), dims: dict | None = None, file: str = "",
              theme_name: str = "paper") -> dict:
    """Everything the page needs, as plain JSON-ready data (see the module docstring)."""
    dims = dims or {}
    source = _Source()
    error_lines = {(e.loc.file, e.loc.line) for e in errors}
    items: list[dict] = [{"t": "g", "path": "", "label": ir.name if ir else Path(file).stem,
                          "kind": "root", "parent": -1, "children": [], "depth": 0}]
    group_of = {"": 0}
    nodes = _order(ir) if ir is not None else []
    index: dict[str, int] = {}
    for node in nodes:
        parts = node.name.split(".")
        parent = 0
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix not in group_of:
                group_of[prefix] = len(items)
                items.append({"t": "g", "path": prefix, "label": parts[i - 1], "kind": "block",
                              "parent": parent, "children": [], "depth": i})
                items[parent]["children"].append(group_of[prefix])
            parent = group_of[prefix]
        index[node.name] = len(items)
        items[parent]["children"].append(len(items))
        items.append(_node_item(ir, node, parent, len(parts), dims, source, error_lines))
    _split_long_groups(items)
    _finish_groups(items)
    edges = [[index[u], index[v]] for u, v in ir.graph.edges] if ir is not None else []
    _lift_edges(items, edges)
    t = theme(theme_name)
    looks = {k: {"fill": v.fill, "shape": v.shape, "style": v.style, "legend": v.legend}
             for k, v in t.looks.items()}
    return {
        "name": ir.name if ir else Path(file).stem, "file": file, "dims": dims,
        "items": items, "edges": edges, "looks": looks, "families": list(FAMILY_ORDER),
        "outputs": dict(ir.outputs) if ir else {},
        "errors": [{"message": e.message, "hint": e.hint or "", "file": e.loc.file, "line": e.loc.line,
                    "col": e.loc.col, "source": source.line(e.loc.file, e.loc.line)} for e in errors],
        "nodeCount": len(nodes),
    }


def _node_item(ir, node, parent, depth, dims, source, error_lines) -> dict:
    sym, value = _shape_texts(node.shape, dims)
    try:
        title = op_title(node.op, node.args)
    except Exception:       # noqa: BLE001 - arguments that did not check: the op name will do
        title = node.op
    if node.op == "?":      # op or inputs unknown (an error says which): the name tells the node apart
        title = node.name.rsplit(".", 1)[-1] + " (?)"
    return {
        "t": "n", "path": node.name, "label": node.name.rsplit(".", 1)[-1], "op": node.op,
        "title": title, "family": family(node), "mark": mark(node), "parent": parent, "depth": depth,
        "args": {k: _text(v) for k, v in node.args.items()},
        "shape": sym, "shapeDims": value, "dtype": node.dtype,
        "params": _params(ir, node), "macs": _macs(ir, node, dims),
        "loc": f"{node.loc.file}:{node.loc.line}:{node.loc.col}", "src": source.line(node.loc.file, node.loc.line),
        "block": node.block, "error": (node.loc.file, node.loc.line) in error_lines,
    }


def _split_long_groups(items: list[dict]) -> None:
    """Children of an over-long group go into ranges (``n0 … n99``), again while still too many."""
    for g in range(len(items)):
        if items[g]["t"] != "g":
            continue
        while len(items[g]["children"]) > MAX_CHILDREN:
            kids, ranges = items[g]["children"], []
            size = -(-len(kids) // -(-len(kids) // RANGE_SIZE))        # ranges of equal size, none over RANGE_SIZE
            for start in range(0, len(kids), size):
                chunk = kids[start:start + size]
                first, last = _first_label(items, chunk[0]), _last_label(items, chunk[-1])
                label = first if first == last else f"{first} … {last}"
                ranges.append(len(items))
                items.append({"t": "g", "path": f"{items[g]['path']}[{label}]", "label": label,
                              "kind": "range", "parent": g, "children": chunk, "depth": items[g]["depth"]})
                for c in chunk:
                    items[c]["parent"] = ranges[-1]
            items[g]["children"] = ranges


def _first_label(items, i) -> str:
    return items[i]["label"].split(" … ")[0]


def _last_label(items, i) -> str:
    return items[i]["label"].split(" … ")[-1]


def _post_order(items: list[dict]) -> list[int]:
    """Every item after its children (ranges are appended after the items they hold)."""
    out, stack = [], [(0, False)]
    while stack:
        i, done = stack.pop()
        if done or items[i]["t"] != "g":
            out.append(i)
            continue
        stack.append((i, True))
        stack.extend((c, False) for c in reversed(items[i]["children"]))
    return out


def _finish_groups(items: list[dict]) -> None:
    """Kind (block or repeat), sums and the output shape of every group, bottom up."""
    for i in _post_order(items):
        g = items[i]
        if g["t"] != "g":
            continue
        kids = [items[c] for c in g["children"]]
        numbered = [k for k in kids if NUMBERED.match(k["label"]) or k["label"] == "cat"]
        if g["kind"] != "root" and kids and len(numbered) == len(kids):
            g["kind"] = "repeat"
            g["count"] = sum(1 for k in kids if k["label"].isdigit())
            leaves = [(k["op"], tuple(k["args"].items())) for k in kids if k["t"] == "n"]
            g["seq"] = len(leaves) == len(kids) and len(set(leaves)) > 1     # a `seq` of different layers
        g["params"] = sum(k["params"] for k in kids)
        g["macs"] = None if any(k["macs"] is None for k in kids) else sum(k["macs"] for k in kids)
        g["size"] = sum(k.get("size", 1) for k in kids)
        g["error"] = any(k["error"] for k in kids)
        last = kids[-1] if kids else {}
        g["shape"], g["shapeDims"] = last.get("shape"), last.get("shapeDims")
        blocks = {k.get("block") for k in kids if k["t"] == "n"} | {k.get("blockName") for k in kids
                                                                    if k["t"] == "g" and k["kind"] == "block"}
        blocks.discard(None)
        g["blockName"] = next(iter(blocks)) if g["kind"] == "block" and len(blocks) == 1 else None
        fams = [k["family"] for k in kids if k.get("family")]
        g["family"] = "block"
        g["title"] = _group_title(g)
        if g["kind"] == "block" and not g["blockName"] and len(kids) == 1 and kids[0]["t"] == "g":
            g["title"] = f"{g['label']}: {kids[0]['title']}"        # a use holding one seq: name the seq
        g["inner"] = fams[0] if fams else "block"


def _group_title(g: dict) -> str:
    if g["kind"] == "range":
        return f"{g['label']} ({g['size']:,} nodes)"
    if g["kind"] == "repeat" and g.get("seq"):
        return f"{g['label']} ({g['count']} layers)"
    if g["kind"] == "repeat":
        return f"{g['label']} × {g['count']}" if g.get("count") else g["label"]
    if g.get("blockName") and g["blockName"] != g["label"]:
        return f"{g['label']}: {g['blockName']}"
    return g["label"]


def _lift_edges(items: list[dict], edges: list[list[int]]) -> None:
    """For each IR edge, the lowest group holding both ends gets an edge between its two children."""
    chains: dict[int, list[int]] = {}

    def chain(i: int) -> list[int]:            # [i, parent, grandparent, ..., root]
        if i not in chains:
            p = items[i]["parent"]
            chains[i] = [i] + (chain(p) if p >= 0 else [])
        return chains[i]

    lifted: dict[int, set] = {}
    for u, v in edges:
        cu, cv = chain(u)[::-1], chain(v)[::-1]          # root first
        k = 0
        while k + 1 < min(len(cu), len(cv)) and cu[k + 1] == cv[k + 1]:
            k += 1
        if k + 1 < len(cu) and k + 1 < len(cv):
            lifted.setdefault(cu[k], set()).add((cu[k + 1], cv[k + 1]))
    for g, pairs in lifted.items():
        items[g]["edges"] = sorted([a, b] for a, b in pairs)

