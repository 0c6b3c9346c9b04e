"""Argument ranges and the memory bound: bad numbers are located errors in `check`, never tracebacks.

Every numeric argument of every built-in op declares the values it accepts;
a value outside is reported at the argument itself. A model too large to
build is refused by `check` and `compile` before anything is allocated.
"""

import math
import time

import pytest
import torch
import yaml

import dagnet
from dagnet import ops
from dagnet.check import MAX_ACTIVATION_BYTES, human_bytes
from dagnet.cli import main
from dagnet.dims import substitute
from dagnet.errors import SpecError
from dagnet.ops.registry import DIM, FINITE, PROBABILITY, SIZE, Range


def _spec(op: str, in_shape: list, /, **args) -> str:
    """A one-node spec whose node line is line 5, its arguments in flow style."""
    node = ", ".join(f"{k}: {yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in args.items())
    return (f"dagnet: 1\ninputs:\n  x: {{shape: {in_shape}}}\nnodes:\n"
            f"  n: {{op: {op}, in: x{', ' if node else ''}{node}}}\noutputs: [n]\n")


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        dagnet.load(text)
    return info.value


def _col(text: str, key: str) -> int:
    """1-based column of ``key:`` on the node's line (line 5)."""
    return text.splitlines()[4].index(f", {key}:") + 3


# -- each numeric failure of issue 15 -----------------------------------------------------------

FAILURES = [   # (op, input shape, args, the argument at fault, message)
    ("conv2d", [3, 8, 8], {"out_channels": 4, "kernel_size": 3, "stride": 0}, "stride",
     "`stride` of `conv2d` must be >= 1, found 0"),
    ("group_norm", [4, 8, 8], {"num_groups": 0}, "num_groups",
     "`num_groups` of `group_norm` must be >= 1, found 0"),
    ("reshape", [4, 8, 8], {"shape": [-1, 0]}, "shape",
     "`shape` of `reshape`: entry 2 of 2 must be >= 1 or -1, found 0"),
    ("linear", [8], {"out_features": -3}, "out_features",
     "`out_features` of `linear` must be >= 1, found -3"),
    ("dropout", [8], {"p": 2}, "p", "`p` of `dropout` must be in [0, 1], found 2"),
    ("batch_norm", [8], {"eps": 0}, "eps", "`eps` of `batch_norm` must be > 0, found 0"),
    ("max_pool2d", [3, 8, 8], {"kernel_size": [2, 0]}, "kernel_size",
     "`kernel_size` of `max_pool2d`: entry 2 of 2 must be >= 1, found 0"),
    ("latent_dynamic_crf", [5, 6], {"num_labels": 0}, "num_labels",
     "`num_labels` of `latent_dynamic_crf` must be >= 1, found 0"),
    ("interpolate", [3, 8, 8], {"scale_factor": -2}, "scale_factor",
     "`scale_factor` of `interpolate` must be > 0, found -2"),
    ("leaky_relu", [8], {"negative_slope": float("inf")}, "negative_slope",
     "`negative_slope` of `leaky_relu` must be a finite number, found inf"),
]


@pytest.mark.parametrize("op, shape, args, key, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_out_of_range_argument_is_reported_at_the_argument(op, shape, args, key, message):
    text = _spec(op, shape, **args)
    error = _error(text)
    assert [e.message for e in error.errors] == [message]
    assert (error.loc.line, error.loc.col) == (5, _col(text, key))
    assert error.hint


@pytest.mark.parametrize("op, shape, args, key, message", FAILURES[:5], ids=[f[0] for f in FAILURES[:5]])
def test_cli_prints_one_located_error_without_traceback(op, shape, args, key, message, spec_file, capsys):
    path = spec_file(_spec(op, shape, **args))
    for command in ("check", "compile"):
        assert main([command, str(path)]) == 1
        err = capsys.readouterr().err
        assert f"{path}:5:" in err and message in err and "Traceback" not in err


def test_hint_names_the_default():
    error = _error(_spec("conv2d", [3, 8, 8], out_channels=4, kernel_size=3, stride=0))
    assert error.hint == "sizes, counts, strides and dilations start at 1; leave `stride` out for the default, 1"


def test_a_parameter_expression_is_checked_after_evaluation():
    text = ("dagnet: 1\nparams: {s: 1}\ninputs:\n  x: {shape: [3, 8, 8]}\nnodes:\n"
            "  n: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, stride: s - 1}\noutputs: [n]\n")
    assert _error(text).message == "`stride` of `conv2d` must be >= 1, found 0"


def test_a_list_entry_and_the_dsl_are_checked_too(spec_file):
    error = _error(spec_file("input x[3, 8, 8]\ny = x -> conv2d(4, 3, stride=[1, 0])\noutput y\n", "model.dag"))
    assert error.message == "`stride` of `conv2d`: entry 2 of 2 must be >= 1, found 0"
    assert error.loc.line == 2


def test_nan_is_outside_every_range():
    error = _error(_spec("dropout", [8], p=float("nan")))
    assert error.message == "`p` of `dropout` must be in [0, 1], found nan"


# -- cross-argument rules PyTorch would otherwise enforce at build or run time ------------------

@pytest.mark.parametrize("op, shape, args, message", [
    ("max_pool2d", [3, 8, 8], {"kernel_size": 2, "padding": 2},
     "n: `max_pool2d`: padding 2 is more than half the window (2)"),
    ("conv_transpose2d", [3, 8, 8], {"out_channels": 2, "kernel_size": 3, "stride": 2, "output_padding": 2},
     "n: `conv_transpose2d`: output_padding 2 must be smaller than the stride (2) or the dilation (1)"),
    ("embedding", [5], {"num_embeddings": 4, "embedding_dim": 2, "padding_idx": 4},
     "n: `embedding`: padding_idx 4 is not a row of the 4-row table"),
    ("conv_transpose2d", [3, 8, 8], {"out_channels": 2, "kernel_size": 3, "padding_mode": "reflect"},
     "`padding_mode` of `conv_transpose2d` must be one of zeros, found `reflect`"),
])
def test_arguments_that_pytorch_would_refuse_are_spec_errors(op, shape, args, message):
    assert _error(_spec(op, shape, **args)).message == message


def test_a_scale_that_rounds_a_size_to_zero_is_refused():
    error = _error(_spec("interpolate", [3, 8, 8], scale_factor=0.01))
    assert error.message == "n: `interpolate` makes an empty output from input [3, 8, 8]"


def test_layer_norm_takes_one_size_as_well_as_a_list():
    assert dagnet.load(_spec("layer_norm", [4, 5], normalized_shape=5)).node("n").shape == (4, 5)


@pytest.mark.parametrize("parents, cycle", [([-1, 2, 1, 1, 1], "1 -> 2 -> 1"), ([-1, 1, 0, 1, 1], "1 -> 1")])
def test_tree_parents_with_a_cycle_are_refused(parents, cycle):
    error = _error(_spec("tree_crf", [5, 3], parents=parents))
    assert error.message == f"n: `tree_crf`: `parents` makes a cycle, not a tree: {cycle}"


def _probe_values(arg):
    """Values at and around the usual bounds, for every kind of numeric argument."""
    base = arg.kind.removesuffix("_or_none")
    numbers = [-0.5, 0.0, 0.5, 1.0, 1.5] if base in ("float", "floats") else [-1, 0, 1, 2, 3]
    return numbers + ([[n, 1] for n in numbers] if base in ("ints", "shape") else [])


def _probe_cases():
    from tests.test_ops import CASES, SIZES, _concrete
    for name, cases in sorted(CASES.items()):
        for shapes, args in cases:
            shapes = [_concrete(shape, SIZES[0]) for shape in shapes]
            for arg in ops.get(name).args:
                if arg.numeric:
                    yield name, shapes, args, arg.name, _probe_values(arg)


@pytest.mark.parametrize("name, shapes, args, key, values", list(_probe_cases()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_value_check_accepts_builds_and_runs(name, shapes, args, key, values):
    """What `check` accepts, PyTorch builds and runs: the declared ranges are not too loose."""
    from tests.test_ops import _spec as op_spec, _tensors
    for value in values:
        try:
            model = dagnet.compile(op_spec(name, shapes, {**args, key: value})).eval()
        except SpecError:
            continue
        with torch.no_grad():
            model(**_tensors(name, shapes, {}))


# -- padding: same / valid ----------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    {"kernel_size": 3, "padding": "same"},
    {"kernel_size": [4, 3], "dilation": [1, 2], "padding": "same", "padding_mode": "reflect"},
    {"kernel_size": 3, "padding": "valid"},
])
def test_conv_padding_words_match_pytorch(args):
    ir = dagnet.load(_spec("conv2d", [3, "H", "W"], out_channels=5, **args))
    model = dagnet.compile(ir).eval()
    node = ir.node("n")
    for h, w in ((9, 12), (16, 17)):
        with torch.no_grad():
            out = model(x=torch.randn(2, 3, h, w))
        assert tuple(out.shape) == (2, *substitute(node.shape, {"H": h, "W": w}))
    if args["padding"] == "same":
        assert node.shape[1:] == ir.node("x").shape[1:]
    assert ops.count_params(ir, node) == ops.module_params(ops.build_call(ir, node))


def test_padding_same_in_the_dsl_and_through_a_parameter(spec_file):
    ir = dagnet.load(spec_file("param pad = same\ninput x[3, 8, 8]\ny = x -> conv2d(4, 3, padding=pad)\n"
                               "z = x -> conv2d(4, 3, padding=same)\noutput y\noutput z\n", "model.dag"))
    assert ir.node("y").shape == ir.node("z").shape == (4, 8, 8)


def test_padding_same_with_a_stride_says_why():
    error = _error(_spec("conv2d", [3, 8, 8], out_channels=4, kernel_size=3, stride=2, padding="same"))
    assert error.message == "n: `conv2d`: padding `same` needs stride 1, found stride 2"
    assert "kernel_size // 2" in error.hint


def test_a_misspelt_padding_word_lists_the_words():
    text = _spec("conv2d", [3, 8, 8], out_channels=4, kernel_size=3, padding="sme")
    error = _error(text)
    assert error.message == "`padding` of `conv2d` must be a number or one of same, valid, found `sme`"
    assert error.hint == "did you mean `same`?"
    assert error.loc.col == _col(text, "padding")


@pytest.mark.parametrize("op, args", [("conv_transpose2d", {"out_channels": 4, "kernel_size": 3}),
                                      ("max_pool2d", {"kernel_size": 3})])
def test_padding_same_where_pytorch_has_none_says_so(op, args):
    error = _error(_spec(op, [3, 8, 8], padding="same", **args))
    assert error.message == f"`padding` of `{op}` must be a number, found `same`"
    assert error.hint == ("padding `same` is for conv1d, conv2d and conv3d only: give a number here (positions "
                          "on each side; kernel_size // 2 keeps an odd kernel's size at stride 1)")


def test_standalone_source_keeps_padding_same(tmp_path, spec_file):
    path = spec_file(_spec("conv2d", [3, 8, 8], out_channels=4, kernel_size=3, padding="same"))
    out = tmp_path / "model.py"
    assert main(["compile", str(path), "-o", str(out)]) == 0
    assert "padding='same'" in out.read_text().replace('"', "'")


# -- the memory bound ---------------------------------------------------------------------------

def test_huge_linear_is_refused_by_check_and_compile_within_a_second(spec_file, capsys):
    path = spec_file(_spec("linear", [1000000], out_features=1000000))
    for command in ("check", "compile"):
        start = time.perf_counter()
        assert main([command, str(path)]) == 1
        assert time.perf_counter() - start < 1.0
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert (f"{path}:5:3: error: the model's 1,000,001,000,000 parameters need 3.6 TiB (float32), "
                "over the limit of 16 GiB; `n` (linear) holds 1,000,001,000,000 of them") in err


def test_huge_linear_is_refused_by_the_library_compile():
    with pytest.raises(SpecError, match="parameters need 3.6 TiB"):
        dagnet.compile(_spec("linear", [1000000], out_features=1000000))


def test_a_huge_activation_is_refused_at_the_first_node_that_makes_it():
    text = ("dagnet: 1\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
            "  up: {op: interpolate, in: x, size: [200000, 200000]}\n  a: {op: relu, in: up}\noutputs: [a]\n")
    error = _error(text)
    assert [e.message for e in error.errors] == [
        "the output of `up` (interpolate) is 447 GiB per example ([3, 200000, 200000], float32), "
        "over the limit of 8 GiB"]
    assert error.loc.line == 5


def test_symbolic_dims_count_at_their_smallest():
    # [8, H, W] is 32 bytes at H = W = 1; nothing symbolic is refused for what it might become
    assert dagnet.load(_spec("relu", [8, "H", "W"])).node("n").shape[0] == 8
    big = 2 * MAX_ACTIVATION_BYTES // 4     # values per example, with H >= 1 still over the limit
    assert "per example" in _error(_spec("relu", [big, "H"])).message
    # a scale of a million makes [3, H * 10^6, W * 10^6]: 10.9 TiB even at H = W = 1
    error = _error(_spec("interpolate", [3, "H", "W"], scale_factor=1000000))
    assert error.message.startswith("the output of `n` (interpolate) is 10.9 TiB per example")


def test_human_bytes():
    sizes = (512, 2048, 16 * 2**30, 4 * 10**12, 10**400)
    assert [human_bytes(n) for n in sizes] == ["512 B", "2 KiB", "16 GiB", "3.6 TiB", "about 10^400 B"]


@pytest.mark.parametrize("value", [10**30, -(10**30)])
def test_an_integer_beyond_64_bits_is_refused(value):
    error = _error(_spec("conv2d", [3, 8, 8], out_channels=4, kernel_size=3, stride=value))
    assert error.message == ("`stride` of `conv2d` does not fit in 64 bits, found a 31-digit number "
                             f"({'-' if value < 0 else ''}100000...)")


def test_checking_a_large_but_legal_model_needs_no_torch():
    import subprocess
    import sys
    code = ("import sys, dagnet; dagnet.load(" + repr(_spec("linear", [100000], out_features=10000)) + ")\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the registry itself ------------------------------------------------------------------------

def _builtin_args():
    for op in ops.OPS.values():
        if op.shape.__module__.startswith("dagnet.ops."):       # not a plugin registered by a test
            for arg in op.args:
                yield op, arg


def test_every_numeric_argument_declares_a_range():
    missing = [f"{op.name}.{arg.name}" for op, arg in _builtin_args() if arg.numeric and arg.range is None]
    assert not missing, f"declare a Range for: {', '.join(missing)}"


def test_every_default_lies_in_its_range():
    for op, arg in _builtin_args():
        if arg.range is None or arg.required or arg.default is None or isinstance(arg.default, str):
            continue
        for value in arg.default if isinstance(arg.default, list) else [arg.default]:
            assert value in arg.range, f"{op.name}.{arg.name} = {value} is outside {arg.range}"


def test_range_text_and_membership():
    assert (str(SIZE), str(PROBABILITY), str(FINITE)) == (">= 1", "in [0, 1]", "a finite number")
    assert str(Range(0, 1, high_open=True)) == "in [0, 1)"
    assert 0 not in Range(0, low_open=True) and 1e-12 in Range(0, low_open=True)
    assert -1 in Range(1, also=(-1,)) and 0 not in Range(1, also=(-1,))
    assert math.inf not in FINITE and math.nan not in PROBABILITY and -7 in DIM


def test_ops_listing_shows_the_ranges(capsys):
    assert main(["ops", "--family", "conv"]) == 0
    out = capsys.readouterr().out
    assert "stride=1 (>= 1)" in out and "padding=0 (>= 0, same or valid)" in out
