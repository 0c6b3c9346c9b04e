"""Every op's shape rule agrees with what PyTorch actually computes.

Each registered op has cases here (a test fails if one is missing), and each
case is checked at a few input sizes, symbolic and concrete.
"""

import importlib
from pathlib import Path

import pytest
import torch
import yaml

import dagnet
from dagnet import ops
from dagnet.dims import substitute

# op -> list of (input shapes, args); "H"/"W"/"T" are symbolic sizes
CASES = {
    "linear": [([[5]], {"out_features": 5}), ([[7, 3]], {"out_features": 2, "bias": False})],
    "conv_transpose1d": [([[3, "T"]], {"out_channels": 2, "kernel_size": 4, "stride": 2, "padding": 1})],
    "conv_transpose2d": [([[3, "H", "W"]], {"out_channels": 2, "kernel_size": 3, "stride": 2,
                                           "padding": 1, "output_padding": 1})],
    "max_pool1d": [([[3, "T"]], {"kernel_size": 2})],
    "max_pool2d": [([[3, "H", "W"]], {"kernel_size": 3, "stride": 2, "padding": 1}),
                   ([[3, 11, 13]], {"kernel_size": 2, "ceil_mode": True})],
    "avg_pool1d": [([[3, "T"]], {"kernel_size": 3, "stride": 1})],
    "avg_pool2d": [([[3, "H", "W"]], {"kernel_size": 2, "stride": 2})],
    "adaptive_avg_pool1d": [([[3, "T"]], {"output_size": 4})],
    "adaptive_avg_pool2d": [([[3, "H", "W"]], {"output_size": [2, 3]})],
    "adaptive_max_pool1d": [([[3, "T"]], {"output_size": 1})],
    "adaptive_max_pool2d": [([[3, "H", "W"]], {"output_size": 1})],
    "interpolate": [([[3, "H", "W"]], {"scale_factor": 2, "mode": "bilinear"}),
                    ([[3, "H", "W"], [1, 5, 7]], {"mode": "nearest"})],
    "upsample": [([[3, "H", "W"]], {"size": [5, 6]})],
    "batch_norm": [([[3, "H", "W"]], {}), ([[5]], {}), ([[5, "T"]], {"affine": False}), ([[2, "D", "H", "W"]], {})],
    "layer_norm": [([["T", 6]], {}), ([[4, 5]], {"normalized_shape": [4, 5]})],
    "group_norm": [([[6, "H", "W"]], {"num_groups": 3})],
    "dropout": [([[3, "H"]], {"p": 0.1})],
    "dropout2d": [([[3, "H", "W"]], {})],
    "relu": [([[3, "H"]], {})], "sigmoid": [([[3]], {})], "tanh": [([[3]], {})],
    "leaky_relu": [([[3, "H"]], {"negative_slope": 0.2})], "gelu": [([[3]], {"approximate": "tanh"})],
    "softmax": [([[3, "H", "W"]], {"dim": 1})], "log_softmax": [([["T", 4]], {"dim": -1})],
    "flatten": [([[3, "H", "W"]], {}), ([[3, 4, "W"]], {"start_dim": 1, "end_dim": 2})],
    "reshape": [([[6, 4]], {"shape": [2, -1]}), ([[6, 4]], {"shape": [24]})],
    "permute": [([[3, "H", "W"]], {"dims": [0, 2, 3, 1]})],
    "identity": [([[3, "H"]], {})],
    "add": [([[3, "H"], [3, "H"], [3, "H"]], {}), ([[3, 4], [3, 4]], {})],
    "mul": [([[3, "H", "W"], [3, 1, 1]], {})],
    "concat": [([[3, "H", "W"], [5, "H", "W"]], {}), ([["T", 2], ["T", 3]], {"dim": -1})],
    "crop": [([[3, 9, 11], [1, 5, 6]], {}), ([[3, 9, 11], [1, 5, 6]], {"offset": 2})],
    "embedding": [([["T"]], {"num_embeddings": 10, "embedding_dim": 3})],
    "lstm": [([["T", 5]], {"hidden_size": 4, "bidirectional": True, "num_layers": 2})],
    "gru": [([["T", 5]], {"hidden_size": 3})],
}

# Each family of new ops brings its cases in a file of its own: tests/op_cases_<family>.py
# with a CASES dict of the same form. An input may also be {"shape": [...], "dtype": "int64"}.
for _path in sorted(Path(__file__).parent.glob("op_cases_*.py")):
    CASES.update(importlib.import_module(_path.stem).CASES)

SIZES = [{"H": 9, "W": 12, "T": 7, "F": 5, "D": 6}, {"H": 16, "W": 17, "T": 10, "F": 5, "D": 5}]


def test_every_op_has_cases():
    # `unsupported` (dagnet import's placeholder) cannot run: tests/test_import_module.py covers it
    deterministic = {name for name, op in ops.OPS.items() if not op.stochastic and op.family != "opaque"}
    assert deterministic == set(CASES)


def _input(shape) -> dict:
    return dict(shape) if isinstance(shape, dict) else {"shape": shape}


def _concrete(shape, sizes) -> dict:
    """An input with its symbolic sizes given values."""
    spec = _input(shape)
    return {**spec, "shape": [sizes.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]}


def _tensors(name, in_shapes, sizes) -> dict:
    """A batch of two examples for each input, of its dtype (int64: zeros, an index into any
    table; bool: mostly true)."""
    tensors = {}
    for i, shape in enumerate(in_shapes):
        spec = _concrete(shape, sizes)
        dims, dtype = spec["shape"], "int64" if name == "embedding" else spec.get("dtype", "float32")
        tensors[f"x{i}"] = (torch.zeros(2, *dims, dtype=torch.int64) if dtype == "int64"
                            else torch.rand(2, *dims) < 0.8 if dtype == "bool"
                            else torch.randn(2, *dims))
    return tensors


def _spec(name, in_shapes, args):
    inputs = {f"x{i}": _input(shape) for i, shape in enumerate(in_shapes)}
    if name == "embedding":
        inputs["x0"]["dtype"] = "int64"
    node = {"op": name, "in": list(inputs), **args}
    return yaml.safe_dump({"dagnet": 1, "name": name, "inputs": inputs, "nodes": {"y": node},
                           "outputs": [_output(name)]})


def _output(name) -> str:
    """The node a one-op spec returns: ``y``, or output 0 of an op with several (``y.0``)."""
    return "y.0" if ops.get(name).multi_output else "y"


@pytest.mark.parametrize("name, in_shapes, args",
                         [(n, s, a) for n, cases in sorted(CASES.items()) for s, a in cases],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_shape_rule_matches_pytorch(name, in_shapes, args):
    ir = dagnet.load(_spec(name, in_shapes, args))
    model = dagnet.compile(ir).eval()
    for sizes in SIZES:
        with torch.no_grad():
            out = model(**_tensors(name, in_shapes, sizes))
        expected = substitute(ir.node(_output(name)).shape, sizes)
        assert tuple(out.shape) == (2, *expected), (name, sizes)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_recurrent_layers_train_under_cpu_bf16_autocast(name):
    """oneDNN has no bf16 recurrent kernel: under CPU autocast the recurrence runs in float32."""
    torch.manual_seed(0)
    model = dagnet.compile(_spec(name, [["T", 5]], {"hidden_size": 4, "bidirectional": True}))
    x = torch.randn(2, 7, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x0=x)
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), model(x0=x), rtol=0, atol=0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
