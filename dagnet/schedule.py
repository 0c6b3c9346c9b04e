"""Message schedules: the order forward messages are computed and when each dies.

In the message-passing view of backpropagation the forward pass sends
M_c = f_c(M_p for parents p) along the DAG in topological order, and the
backward pass sends V_p = sum_c (dM_c/dM_p)^T V_c in the reverse order. This
module derives both schedules from the IR, with each message's size and
lifetime, and estimates peak activation memory:

- inference: a message is alive from the step that computes it to the step
  of its last consumer (the emitted code frees it there);
- training: a message also stays alive until the backward step of every
  consumer that saves it for its gradient (a convolution saves its input, a
  ReLU its output, an add nothing).

It is an analysis beside the pipeline, not a plan that emit consumes: the
emitter and this module read the one forward order, ``IR.order()``, and
torch.fx frees each value after its last use in the generated code by itself,
so a plan handed to emit would carry nothing it uses. The tests check that
this schedule's order and lifetimes are those of the emitted code.
Checkpointed parts (recomputed in the backward pass) are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagnet import ops
from dagnet.dims import known, product, substitute
from dagnet.ir import IR
from dagnet.spec.model import DTYPES


@dataclass
class Message:
    """The forward message of one node."""

    step: int              # forward step that computes it
    node: str
    storage: str           # the node whose storage holds it (itself, unless it is a view)
    op: str
    shape: tuple           # per example
    bytes: int | None      # for the whole batch; None when a dim is symbolic
    last_use: int          # forward step of its last consumer (len(schedule) for outputs)
    saved_until: int       # backward step until which training keeps it (-1: freed in forward)


def saves(op: str) -> str:
    """'inputs', 'output' or 'nothing': what an op keeps for its gradient (its ``saves``
    facet); an input keeps nothing."""
    opdef = ops.get(op)
    return "nothing" if opdef is None else opdef.saved


def is_view(op: str) -> bool:
    """Whether an op's value shares its input's storage (its ``view`` facet)."""
    opdef = ops.get(op)
    return opdef is not None and opdef.view


def forward_schedule(ir: IR, batch: int = 1, dims: dict | None = None) -> list[Message]:
    """Messages in forward order; step t computes message t."""
    order = ir.order()
    step = {n.name: t for t, n in enumerate(order)}
    end = len(order)
    outputs = set(ir.outputs.values())
    storage = {}
    messages = []
    for t, node in enumerate(order):
        consumers = [step[c] for c in ir.graph.successors(node.name)]
        last = end if node.name in outputs else max(consumers, default=t)
        shape = substitute(node.shape, dims or {})
        numel = product(shape) if shape else 1
        size = int(numel) * batch * DTYPES.get(node.dtype, 4) if known(numel) else None
        # backward runs in reverse: consumer at forward step c runs at backward step end-1-c
        keepers = [step[c] for c in ir.graph.successors(node.name) if saves(ir.node(c).op) == "inputs"]
        if saves(node.op) == "output":
            keepers.append(t)
        saved_until = end - 1 - min(keepers) if keepers else -1
        storage[node.name] = storage[node.inputs[0]] if is_view(node.op) else node.name
        messages.append(Message(t, node.name, storage[node.name], node.op, shape, size, last, saved_until))
    return messages


def peak_memory(messages: list[Message], training: bool = False) -> int | None:
    """Peak bytes of live storage over the forward (and, if training, backward) steps.

    A view keeps its source's storage alive and costs nothing itself.
    """
    if any(m.bytes is None for m in messages):
        return None
    size = {m.node: m.bytes for m in messages}
    end = len(messages)

    def total(alive) -> int:
        return sum(size[s] for s in {m.storage for m in messages if alive(m)})

    peak = 0
    for t in range(end):                               # forward step t
        peak = max(peak, total(lambda m: m.step <= t and (
            m.last_use >= t or (training and m.saved_until >= 0))))
    if training:                                       # backward step b undoes forward step end-1-b
        for b in range(end):
            peak = max(peak, total(lambda m: m.saved_until >= b))
    return peak


def format_schedule(ir: IR, messages: list[Message], batch: int) -> str:
    """The forward and backward schedules as tables, with lifetimes and peak memory."""
    end = len(messages)
    width = max(len(m.node) for m in messages)
    lines = [f"forward schedule of {ir.name} (batch {batch}): step, node, op, shape, bytes, lifetime", ""]
    for m in messages:
        size = "?" if m.bytes is None else f"{m.bytes:,}"
        dies = "output" if m.last_use == end else f"freed after step {m.last_use}"
        kept = f", kept for backward step {m.saved_until}" if m.saved_until >= 0 else ""
        lines.append(f"{m.step:>5}  {m.node:<{width}}  {m.op:<20} {str(list(m.shape)):<22} "
                     f"{size:>14}  {dies}{kept}")
    lines += ["", "backward schedule (V_p = sum_c J_cp^T V_c, reverse order):", ""]
    for b, m in enumerate(reversed(messages)):
        if m.op == "input":
            continue
        parents = ", ".join(ir.node(m.node).inputs) or "-"
        lines.append(f"{b:>5}  V[{m.node}] -> {parents}")
    inference, training = peak_memory(messages), peak_memory(messages, training=True)
    if inference is None:
        lines.append("\npeak activation memory: give --dim values for the symbolic sizes")
    else:
        lines.append(f"\npeak activation memory: inference {inference / 2**20:,.1f} MiB, "
                     f"training {training / 2**20:,.1f} MiB (estimate, batch {batch})")
    return "\n".join(lines)
