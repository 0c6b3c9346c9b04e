"""``dagnet diff A B``: two specs compared node by node, as text and in the viewer.

Nodes are matched by their path, which holds the block path and the repeat
index (``layer3.4.conv2``), so "the fifth repetition's second conv" is compared
with its counterpart. A node left over on both sides is matched by structure
instead: the same op and arguments reading the same (already matched) inputs is
the same node under a new name, a *rename*. What remains is added or removed.
For each matched pair: the op, each argument (old -> new), the wiring, the
output shape and the parameter count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagnet.dims import fmt_shape
from dagnet.view.model import _order, _params


@dataclass
class Change:
    path: str                       # the node's path in B (in A for a removed node)
    kind: str                       # added, removed, changed, renamed
    op: str
    details: list[str] = field(default_factory=list)
    old_path: str | None = None

    def line(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~", "renamed": ">"}[self.kind]
        head = f"{mark} {self.path} ({self.op})"
        if self.kind == "renamed":
            head = f"{mark} {self.old_path} -> {self.path} ({self.op})"
        return head + (": " + "; ".join(self.details) if self.details else "")


@dataclass
class Diff:
    a: str
    b: str
    changes: list[Change]
    params: tuple[int, int]
    matched: dict[str, str]         # path in A -> path in B

    @property
    def equal(self) -> bool:
        return not self.changes

    def text(self) -> str:
        lines = [f"--- {self.a}", f"+++ {self.b}"] + _grouped_lines(self.changes)
        if self.equal:
            lines.append("no differences")
        else:
            counts = {k: sum(c.kind == k for c in self.changes) for k in ("added", "removed", "changed", "renamed")}
            lines.append(f"{len(self.changes)} difference{'s' if len(self.changes) > 1 else ''}: "
                         + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
                         + f"; parameters {self.params[0]:,} -> {self.params[1]:,}")
        return "\n".join(lines)


def _rename_prefixes(old: str, new: str) -> tuple[str, str]:
    """``layer4.1.sum -> stage4.1.sum`` is ``layer4 -> stage4``: the paths less their common tail."""
    a, b = old.split("."), new.split(".")
    while len(a) > 1 and len(b) > 1 and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    return ".".join(a), ".".join(b)


def _grouped_lines(changes: list[Change]) -> list[str]:
    """One line per change, but a renamed block is one line, not one per node inside it."""
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        if c.kind == "renamed" and not c.details:
            groups.setdefault(_rename_prefixes(c.old_path, c.path), []).append(c)
    lines, done = [], set()
    for c in changes:
        prefixes = _rename_prefixes(c.old_path, c.path) if c.kind == "renamed" and not c.details else None
        if prefixes is None or len(groups[prefixes]) == 1:
            lines.append(c.line())
        elif prefixes not in done:
            done.add(prefixes)
            lines.append(f"> {prefixes[0]} -> {prefixes[1]} ({len(groups[prefixes])} nodes renamed)")
    return lines


def _args_text(args: dict) -> dict[str, str]:
    return {k: str(v) for k, v in args.items()}


def _shape(node) -> str:
    return fmt_shape(node.shape) if node.shape is not None else "?"


def match_renamed(ir_a, ir_b, matched: dict[str, str]) -> dict[str, str]:
    """Pair the nodes left on both sides by structure; B's order.

    First the same op, arguments and shape reading the same matched inputs;
    then, among what is left, the same op reading the same inputs (a renamed
    node whose arguments changed too).
    """
    renamed = _match(ir_a, ir_b, matched, {}, strict=True)
    return _match(ir_a, ir_b, matched, renamed, strict=False)


def _match(ir_a, ir_b, matched: dict[str, str], renamed: dict[str, str], strict: bool) -> dict[str, str]:
    """One pass in B's topological order: an A node enters the index once all its inputs are matched."""
    renamed = dict(renamed)
    known = {**matched, **renamed}                  # A path -> B path
    taken = set(known.values())

    def key(n, inputs):
        if not strict:
            return (n.op, tuple(inputs))
        return (n.op, tuple(sorted(_args_text(n.args).items())), n.shape is not None and _shape(n), tuple(inputs))

    left_a = [n for n in _order(ir_a) if n.name not in known]
    waiting = {n.name: len(set(n.inputs) - known.keys()) for n in left_a}
    users: dict[str, list] = {}
    for n in left_a:
        for i in set(n.inputs) - known.keys():
            users.setdefault(i, []).append(n)
    index: dict[tuple, list[str]] = {}

    def ready(n) -> None:
        index.setdefault(key(n, [known[i] for i in n.inputs]), []).append(n.name)

    for n in left_a:
        if not waiting[n.name]:
            ready(n)
    for b in _order(ir_b):
        found = None if b.name in taken else index.get(key(b, b.inputs))
        if not found:
            continue
        a = found.pop(0)
        renamed[a] = known[a] = b.name
        taken.add(b.name)
        for user in users.get(a, []):               # a rename upstream makes its consumers matchable
            waiting[user.name] -= 1
            if not waiting[user.name]:
                ready(user)
    return renamed


def diff(ir_a, ir_b, name_a: str = "A", name_b: str = "B") -> Diff:
    nodes_a = {n.name: n for n in _order(ir_a)}
    nodes_b = {n.name: n for n in _order(ir_b)}
    matched = {p: p for p in nodes_a if p in nodes_b}
    renamed = match_renamed(ir_a, ir_b, matched)
    pairs = {**matched, **renamed}
    changes: list[Change] = []
    back = {b: a for a, b in pairs.items()}
    for name, nb in nodes_b.items():
        if name not in back:
            changes.append(Change(name, "added", nb.op))
            continue
        na = nodes_a[back[name]]
        details = []
        if na.op != nb.op:
            details.append(f"op {na.op} -> {nb.op}")
        old, new = _args_text(na.args), _args_text(nb.args)
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                details.append(f"{k} {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}")
        ins_a = [pairs.get(i, i) for i in na.inputs]
        if ins_a != list(nb.inputs):
            details.append(f"inputs {', '.join(na.inputs) or '-'} -> {', '.join(nb.inputs) or '-'}")
        if _shape(na) != _shape(nb):
            details.append(f"shape {_shape(na)} -> {_shape(nb)}")
        pa, pb = _params(ir_a, na), _params(ir_b, nb)
        if pa != pb:
            details.append(f"params {pa:,} -> {pb:,}")
        if name in renamed.values():
            changes.append(Change(name, "renamed", nb.op, details, old_path=back[name]))
        elif details:
            changes.append(Change(name, "changed", nb.op, details))
    for name, na in nodes_a.items():
        if name not in pairs:
            changes.append(Change(name, "removed", na.op))
    total_a = sum(_params(ir_a, n) for n in nodes_a.values())
    total_b = sum(_params(ir_b, n) for n in nodes_b.values())
    return Diff(name_a, name_b, changes, (total_a, total_b), pairs)


def diff_view_data(result: Diff, data_b: dict) -> dict:
    """The viewer's data of B, with each node's status and the changes listed."""
    index = {it["path"]: k for k, it in enumerate(data_b["items"]) if it["t"] == "n"}
    status, notes = {}, {}
    for c in result.changes:
        if c.kind == "removed" or c.path not in index:
            continue
        k = index[c.path]
        status[k] = "added" if c.kind == "added" else "changed"
        notes[k] = c.line()
    listed = [{"text": c.line(), "id": index.get(c.path, -1) if c.kind != "removed" else -1, "kind": c.kind}
              for c in result.changes]
    data_b["diff"] = {"status": status, "notes": notes, "text": result.text(), "changes": listed,
                      "equal": result.equal}
    return data_b
