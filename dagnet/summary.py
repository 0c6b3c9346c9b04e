"""``dagnet summary``: per node op, output shape, parameters and MACs."""

from __future__ import annotations

from dataclasses import dataclass

from dagnet import ops
from dagnet.dims import fmt_shape, known, substitute
from dagnet.ir import IR
from dagnet.ops import count_params


@dataclass
class Row:
    name: str
    op: str
    shape: tuple
    params: int
    macs: object        # int, or None when a dim is still symbolic


def summarize(ir: IR, dims: dict | None = None) -> list[Row]:
    """One row per node; MACs per example where every dim is known (``dims`` fills symbols)."""
    dims = dims or {}
    shapes = {n.name: substitute(n.shape, dims) for n in ir.order()}
    rows = []
    for node in ir.order():
        macs = 0
        opdef = ops.get(node.op)
        if opdef is not None and opdef.macs is not None:
            ins = [shapes[i] for i in node.inputs]
            value = opdef.macs(ins, shapes[node.name], node.args)
            macs = int(value) if known(value) else None
        rows.append(Row(node.name, node.op, shapes[node.name], count_params(ir, node), macs))
    return rows


def format_summary(ir: IR, rows: list[Row]) -> str:
    header = ("node", "op", "output shape", "params", "MACs")
    table = [(r.name, r.op, fmt_shape(r.shape), f"{r.params:,}" if r.params else "",
              "" if r.macs == 0 else ("?" if r.macs is None else f"{r.macs:,}")) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(5)]
    lines = [f"{ir.name} ({ir.file})", ""]
    fmt_row = lambda row: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)    # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    lines += [fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in table]
    total = sum(r.params for r in rows)
    lines += ["", f"total parameters: {total:,}"]
    if any(r.macs is None for r in rows):
        free = sorted({str(s) for r in rows for d in r.shape if not known(d) for s in d.free_symbols})
        lines.append(f"MACs per example: depend on {', '.join(free)} (give --dim "
                     + " ".join(f"{s}=..." for s in free) + ")")
    else:
        lines.append(f"MACs per example: {sum(r.macs for r in rows):,}")
    return "\n".join(lines)
