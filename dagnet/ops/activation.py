"""Element-wise non-linearities and softmaxes, emitted as plain function calls."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.ops._util import batch_dim
from dagnet.ops.registry import DIM, FINITE, Arg, FunctionCall, OpDef, no_params, register

torch = lazy("torch")
F = lazy("torch.nn.functional")


def _same(ins, a):
    return ins[0]


def _activation(name, module, doc, title, saves, args=()):
    """``saves``: the output where the gradient is a function of it (relu, sigmoid, tanh),
    else the input."""
    register(OpDef(name, "activation", doc, tuple(args), _same,
                   lambda ins, a: FunctionCall(getattr(module, name), dict(a)), params=no_params,
                   saves=saves, title=title, inferred=()))


_activation("relu", torch, "max(0, x).", "ReLU", "output")
_activation("sigmoid", torch, "Logistic sigmoid.", "sigmoid", "output")
_activation("tanh", torch, "Hyperbolic tangent.", "tanh", "output")
_activation("leaky_relu", F, "max(0, x) + negative_slope * min(0, x).", "leaky ReLU", "inputs",
            [Arg("negative_slope", "float", 0.01, range=FINITE)])
_activation("gelu", F, "Gaussian error linear unit.", "GELU", "inputs",
            [Arg("approximate", "str", "none", ("none", "tanh"))])


def _softmax(name, title):
    def shape(ins, a):
        batch_dim(a["dim"], len(ins[0]), name)
        return ins[0]

    register(OpDef(name, "activation",
                   f"`torch.{name}` along `dim` (dims count the batch: 1 = channels).",
                   (Arg("dim", "int", range=DIM),), shape,
                   lambda ins, a: FunctionCall(getattr(torch, name), {"dim": a["dim"]}),
                   params=no_params, saves="output", title=title, inferred=()))


_softmax("softmax", "softmax")
_softmax("log_softmax", "log-softmax")
