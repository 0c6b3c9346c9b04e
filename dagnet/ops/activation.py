"""Element-wise non-linearities and softmaxes, emitted as plain function calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dagnet.ops._util import batch_dim
from dagnet.ops.registry import Arg, FunctionCall, OpDef, register


def _same(ins, a):
    return ins[0]


def _activation(name, fn, doc, args=()):
    register(OpDef(name, "activation", doc, tuple(args), _same,
                   lambda ins, a: FunctionCall(fn, dict(a))))


_activation("relu", torch.relu, "max(0, x).")
_activation("sigmoid", torch.sigmoid, "Logistic sigmoid.")
_activation("tanh", torch.tanh, "Hyperbolic tangent.")
_activation("leaky_relu", F.leaky_relu, "max(0, x) + negative_slope * min(0, x).",
            [Arg("negative_slope", "float", 0.01)])
_activation("gelu", F.gelu, "Gaussian error linear unit.",
            [Arg("approximate", "str", "none", ("none", "tanh"))])


def _softmax(name, fn):
    def shape(ins, a):
        batch_dim(a["dim"], len(ins[0]), name)
        return ins[0]

    register(OpDef(name, "activation",
                   f"`{fn.__module__}.{fn.__name__}` along `dim` (dims count the batch: 1 = channels).",
                   (Arg("dim", "int"),), shape, lambda ins, a: FunctionCall(fn, {"dim": a["dim"]})))


_softmax("softmax", torch.softmax)
_softmax("log_softmax", torch.log_softmax)
