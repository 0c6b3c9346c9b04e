"""The 3-d convolutions and pools, `padding: same | valid` and the shuffles against the PyTorch
modules they stand for: a one-node spec, compiled, with the module's weights copied, in float64."""

import pytest
import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dagnet
from dagnet.cli import main
from dagnet.dims import fmt_shape
from dagnet.errors import SpecError
from dagnet.summary import summarize

CASES = [   # (op, input shape, args, the PyTorch module)
    ("conv3d", [4, 5, 6, 7], {"out_channels": 6, "kernel_size": [3, 2, 3], "stride": [1, 2, 1], "padding": 1,
                              "groups": 2},
     lambda: nn.Conv3d(4, 6, (3, 2, 3), stride=(1, 2, 1), padding=1, groups=2)),
    ("conv3d", [3, 5, 6, 7], {"out_channels": 4, "kernel_size": [4, 2, 3], "dilation": [1, 2, 2],
                              "padding": "same", "bias": False},
     lambda: nn.Conv3d(3, 4, (4, 2, 3), dilation=(1, 2, 2), padding="same", bias=False)),
    ("conv3d", [3, 5, 6, 7], {"out_channels": 2, "kernel_size": 3, "padding": "valid", "padding_mode": "circular"},
     lambda: nn.Conv3d(3, 2, 3, padding="valid", padding_mode="circular")),
    ("conv1d", [3, 9], {"out_channels": 2, "kernel_size": 4, "dilation": 3, "padding": "same"},
     lambda: nn.Conv1d(3, 2, 4, dilation=3, padding="same")),
    ("conv2d", [3, 6, 7], {"out_channels": 2, "kernel_size": [2, 3], "padding": "same", "padding_mode": "reflect"},
     lambda: nn.Conv2d(3, 2, (2, 3), padding="same", padding_mode="reflect")),
    ("conv_transpose3d", [4, 3, 4, 5], {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                                        "output_padding": 1, "groups": 2},
     lambda: nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
    ("max_pool3d", [2, 5, 6, 7], {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": [1, 1, 2]},
     lambda: nn.MaxPool3d(3, stride=2, padding=1, dilation=(1, 1, 2))),
    ("avg_pool3d", [2, 5, 6, 7], {"kernel_size": [2, 3, 3], "stride": 2, "padding": 1, "ceil_mode": True,
                                  "count_include_pad": False},
     lambda: nn.AvgPool3d((2, 3, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avg_pool3d", [2, 5, 6, 7], {"output_size": [1, 2, 3]}, lambda: nn.AdaptiveAvgPool3d((1, 2, 3))),
    ("adaptive_max_pool3d", [2, 5, 6, 7], {"output_size": [2, None, 3]},
     lambda: nn.AdaptiveMaxPool3d((2, None, 3))),
    ("pixel_shuffle", [18, 3, 4], {"upscale_factor": 3}, lambda: nn.PixelShuffle(3)),
    ("pixel_unshuffle", [2, 6, 4], {"downscale_factor": 2}, lambda: nn.PixelUnshuffle(2)),
    ("channel_shuffle", [6, 3, 4], {"groups": 3}, lambda: nn.ChannelShuffle(3)),
]

CONVS = [case for case in CASES if case[0].startswith("conv")]


def _spec(op: str, shape: list, args: dict) -> str:
    """A one-node spec whose node `n` is on line 5."""
    node = ", ".join(f"{k}: {yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in args.items())
    return f"dagnet: 1\ninputs:\n  x: {{shape: {shape}}}\nnodes:\n  n: {{op: {op}, in: x, {node}}}\noutputs: [n]\n"


def _ids(cases):
    return [f"{op}-{i}" for i, (op, *_) in enumerate(cases)]


@pytest.mark.parametrize("op, shape, args, make", CASES, ids=_ids(CASES))
def test_output_gradient_and_parameters_match_pytorch(op, shape, args, make):
    ir = dagnet.load(_spec(op, shape, args))
    model, ref = dagnet.compile(ir).double(), make().double()
    ref.load_state_dict({k.removeprefix("n."): v for k, v in model.state_dict().items()})
    x = torch.randn(2, *shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = model(x=x), ref(x_ref)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    (row,) = [r for r in summarize(ir) if r.name == "n"]      # `dagnet summary`'s rule, nothing built
    assert row.params == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("op, shape, args, make", CONVS, ids=_ids(CONVS))
def test_macs_are_what_pytorch_counts(op, shape, args, make):
    (row,) = [r for r in summarize(dagnet.load(_spec(op, shape, args))) if r.name == "n"]
    with FlopCounterMode(display=False) as counter:
        make()(torch.randn(1, *shape))
    assert row.macs == counter.get_total_flops() // 2       # a multiply-accumulate is two flops


def test_conv3d_macs_by_hand():
    ir = dagnet.load(_spec("conv3d", [4, "D", 6, 7], CASES[0][2]))
    assert fmt_shape(ir.node("n").shape) == "[6, D, 4, 7]"
    (row,) = [r for r in summarize(ir, {"D": 5}) if r.name == "n"]
    # [6, 5, 4, 7] outputs, each a sum over in_channels / groups = 2 channels of a 3x2x3 window
    assert row.macs == (6 * 5 * 4 * 7) * 2 * (3 * 2 * 3)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        dagnet.load(text)
    return info.value


def test_padding_same_with_a_stride_is_an_error_at_the_node():
    error = _error(_spec("conv3d", [3, 8, 8, 8], {"out_channels": 4, "kernel_size": 3, "stride": [1, 2, 2],
                                                   "padding": "same"}))
    assert error.message == "n: `conv3d`: padding `same` needs stride 1, found stride [1, 2, 2]"
    assert (error.loc.line, error.loc.col) == (5, 3)
    assert "kernel_size // 2" in error.hint


def test_pixel_shuffle_of_indivisible_channels_is_an_error_at_the_node(spec_file, capsys):
    path = spec_file(_spec("pixel_shuffle", [10, 8, 8], {"upscale_factor": 2}))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5:3: error: n: `pixel_shuffle`: channels 10 not divisible by upscale_factor² (4)" in err
    assert "give it a multiple of 4 channels" in err
    error = _error("dagnet: 1\ninputs:\n  x: {shape: [3, 8, 8]}\nnodes:\n"
                   "  c: {op: conv2d, in: x, out_channels: 8, kernel_size: 3, padding: same}\n"
                   "  n: {op: pixel_shuffle, in: c, upscale_factor: 3}\noutputs: [n]\n")
    assert (error.loc.line, error.loc.col) == (6, 3)
    assert error.message == "n: `pixel_shuffle`: channels 8 not divisible by upscale_factor² (9)"


@pytest.mark.parametrize("op, shape, args, message", [
    ("pixel_unshuffle", [3, 8, 9], {"downscale_factor": 2}, "W = 9 not divisible by downscale_factor 2"),
    ("channel_shuffle", [6, 4], {"groups": 4}, "channels 6 not divisible by groups 4"),
    ("channel_shuffle", [6], {"groups": 3}, "expects a [C, ...] input with spatial dims, found [6]"),
    ("max_pool3d", [3, 8, 8], {"kernel_size": 2}, "expects a [C, D, H, W] input (per example), found [3, 8, 8]"),
])
def test_what_pytorch_refuses_is_a_located_error(op, shape, args, message):
    error = _error(_spec(op, shape, args))
    assert message in error.message and error.hint
    assert (error.loc.line, error.loc.col) == (5, 3)


def test_padding_same_in_a_pool_names_the_ops_that_take_it():
    text = _spec("avg_pool3d", [3, 8, 8, 8], {"kernel_size": 3, "padding": "same"})
    error = _error(text)
    assert error.message == "`padding` of `avg_pool3d` must be a number, found `same`"
    assert error.hint.startswith("padding `same` is for conv1d, conv2d and conv3d only")
    assert error.loc.col == text.splitlines()[4].index("padding:") + 1
