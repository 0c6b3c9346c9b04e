"""Recurrent layers over [T, F] sequences (batch-first), returning the output sequence."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.ops import titles
from dagnet.ops._util import expect_known, expect_rank
from dagnet.ops.registry import PROBABILITY, SIZE, Arg, ModuleCall, OpDef, register

functional = lazy("dagnet.ops.functional")

_ARGS = (Arg("hidden_size", "int", range=SIZE), Arg("num_layers", "int", 1, range=SIZE),
         Arg("bidirectional", "bool", False), Arg("dropout", "float", 0.0, range=PROBABILITY),
         Arg("bias", "bool", True))


def _recurrent(name, cls_name, gates):
    def shape(ins, a):
        expect_rank(ins[0], 2, name, "[T, F]")
        expect_known(ins[0][1], "feature size", name)
        return (ins[0][0], a["hidden_size"] * (2 if a["bidirectional"] else 1))

    def build(ins, a):
        return ModuleCall(getattr(functional, cls_name), {"input_size": ins[0][1], "batch_first": True, **a})

    def macs(ins, out, a):
        dirs = 2 if a["bidirectional"] else 1
        T, F, H = ins[0][0], ins[0][1], a["hidden_size"]
        first = gates * (F * H + H * H)
        later = gates * (dirs * H * H + H * H) * (a["num_layers"] - 1)
        return T * dirs * (first + later)

    def params(ins, a):
        dirs, H = 2 if a["bidirectional"] else 1, a["hidden_size"]
        total, width = 0, ins[0][1]
        for _ in range(a["num_layers"]):    # per direction: W_ih, W_hh and two biases per gate
            total += dirs * gates * H * (width + H + (2 if a["bias"] else 0))
            width = dirs * H
        return total

    register(OpDef(name, "recurrent",
                   f"{name.upper()} over a batch-first [T, F] sequence; returns the [T, H*dirs] outputs.",
                   _ARGS, shape, build, macs=macs, params=params,
                   saves="inputs", title=titles.recurrent(name.upper()), inferred=("input_size",)))


_recurrent("lstm", "LSTM", 4)
_recurrent("gru", "GRU", 3)
