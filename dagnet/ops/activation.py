"""Element-wise non-linearities and softmaxes, emitted as plain function calls (PReLU, which
learns its slopes, as a module)."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.ops._util import batch_dim, expect_known
from dagnet.ops.registry import (DIM, FINITE, POSITIVE, SIZE, Arg, FunctionCall, ModuleCall, OpDef, ShapeError,
                                 no_params, register)

torch = lazy("torch")
nn = lazy("torch.nn")
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
_activation("relu6", F, "min(max(0, x), 6).", "ReLU6", "inputs")
_activation("silu", F, "x * sigmoid(x), also called swish.", "SiLU", "inputs")
_activation("hardswish", F, "x * relu6(x + 3) / 6.", "hard swish", "inputs")
_activation("hardsigmoid", F, "relu6(x + 3) / 6.", "hard sigmoid", "inputs")
_activation("elu", F, "x for x > 0, else alpha * (exp(x) - 1).", "ELU", "inputs",
            [Arg("alpha", "float", 1.0, range=FINITE)])
_activation("selu", F, "scale * elu(x, alpha), with the self-normalising constants.", "SELU", "inputs")
_activation("mish", F, "x * tanh(softplus(x)).", "Mish", "inputs")
_activation("softplus", F, "log(1 + exp(beta * x)) / beta; x itself where beta * x > threshold.",
            "softplus", "inputs",
            [Arg("beta", "float", 1.0, range=POSITIVE), Arg("threshold", "float", 20.0, range=FINITE)])


def _prelu_shape(ins, a):
    x, n = ins[0], a["num_parameters"]
    hint = "num_parameters is 1 (one slope) or the channel count, dim 1 (a slope per channel)"
    if n != 1:
        if not x:
            raise ShapeError(f"`prelu`: num_parameters {n} needs a channel dim; the input is 0-d (per example)",
                             hint)
        channels = expect_known(x[0], "channel count", "prelu")
        if channels != n:
            raise ShapeError(f"`prelu`: num_parameters {n} is neither 1 nor the input's {channels} channels", hint)
    return x


register(OpDef(
    "prelu", "activation",
    "max(0, x) + a * min(0, x) with a learned slope `a`, one or one per channel (`nn.PReLU`).",
    (Arg("num_parameters", "int", 1, range=SIZE), Arg("init", "float", 0.25, range=FINITE)),
    _prelu_shape,
    lambda ins, a: ModuleCall(nn.PReLU, dict(a)),
    params=lambda ins, a: a["num_parameters"],
    saves="inputs", title="PReLU", inferred=(),
))


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
