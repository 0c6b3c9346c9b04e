"""Swin's window attention and patch merging against torchvision's own modules, in float64:
forward values, input gradients, parameter counts and state order; and their spec errors."""

import pytest
import torch

import dagnet
from dagnet.emit import standalone_source
from dagnet.errors import SpecError
from references import torchvision
from tests.test_ops_attention import assert_same_with_gradients, floats, one_node, params_rule

B = 3


def swin_module(name):
    torchvision()
    from torchvision.models import swin_transformer
    return getattr(swin_transformer, name)


def _copied(text, reference):
    """The one-node spec compiled, with the reference's state copied in by name (the keys agree)."""
    model = dagnet.compile(text).double()
    assert list(model.y.state_dict()) == list(reference.state_dict())
    model.y.load_state_dict(reference.state_dict())
    return model


@pytest.mark.parametrize("shape, window, shift, heads, bias", [
    ([8, 8, 12], [4, 4], [2, 2], 3, True),      # whole windows, shifted
    ([9, 12, 12], [4, 4], [2, 2], 3, True),     # padded to whole windows (bottom, right), then cropped
    ([10, 7, 8], [3, 5], [1, 2], 2, False),     # a rectangular window, no biases
    ([5, 3, 8], [7, 7], [3, 3], 4, True),       # the window covers the padded input: not shifted
    ([16, 16, 6], [7, 7], [0, 0], 1, True),     # Swin's unshifted blocks
])
def test_shifted_window_attention_is_torchvisions(shape, window, shift, heads, bias):
    reference = swin_module("ShiftedWindowAttention")(shape[-1], window, shift, heads, qkv_bias=bias,
                                                      proj_bias=bias).double().eval()
    with torch.no_grad():
        reference.relative_position_bias_table.normal_()       # a bias that matters
    text = one_node({"x": (shape, None)}, "shifted_window_attention", window_size=window, shift_size=shift,
                    num_heads=heads, qkv_bias=bias, proj_bias=bias)
    model = _copied(text, reference).eval()
    assert torch.equal(model.y.relative_position_index, reference.relative_position_index)
    x = floats(B, *shape)
    assert_same_with_gradients(model(x=x), reference(x), (x,))
    assert params_rule(text) == sum(p.numel() for p in reference.parameters())


def test_shifted_window_attention_takes_one_int_for_a_square_window_and_drops_out_in_training():
    text = one_node({"x": ([8, 8, 4], None)}, "shifted_window_attention", window_size=4, shift_size=2,
                    num_heads=2, dropout=0.5)
    model = dagnet.compile(text)
    assert model.y.window_size == [4, 4] and model.y.shift_size == [2, 2]
    x = torch.randn(B, 8, 8, 4)
    assert torch.equal(model.eval()(x=x), model(x=x))
    torch.manual_seed(0)
    assert (model.train()(x=x) == 0).float().mean() > 0.3


@pytest.mark.parametrize("shape", [[8, 6, 4], [7, 5, 6], [1, 1, 2]])
def test_patch_merging_is_torchvisions(shape):
    reference = swin_module("PatchMerging")(shape[-1]).double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    text = one_node({"x": (shape, None)}, "patch_merging")
    model = _copied(text, reference)
    x = floats(B, *shape)
    ours = model(x=x)
    assert ours.shape == (B, (shape[0] + 1) // 2, (shape[1] + 1) // 2, 2 * shape[2])
    assert_same_with_gradients(ours, reference(x), (x,))
    assert params_rule(text) == sum(p.numel() for p in reference.parameters())


def test_a_standalone_file_copies_the_swin_modules_in():
    text = one_node({"x": ([9, 9, 8], None)}, "shifted_window_attention", window_size=4, shift_size=2,
                    num_heads=2).replace("outputs: [y]", "  z: {op: patch_merging, in: y}\noutputs: [z]")
    model = dagnet.compile(text).eval()
    source = standalone_source(model)
    assert "class ShiftedWindowAttention(nn.Module):" in source and "class PatchMerging(nn.Module):" in source
    namespace = {}
    exec(compile(source, "model.py", "exec"), namespace)
    standalone = namespace[type(model).__name__]().eval()
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(B, 9, 9, 8)
    with torch.no_grad():
        assert torch.equal(standalone(x), model(x=x))


@pytest.mark.parametrize("shape, op, args, message", [
    ([8, 8, 12], "shifted_window_attention", {"window_size": 4, "shift_size": 4, "num_heads": 3},
     "y: `shifted_window_attention`: shift_size [4, 4] must be below window_size [4, 4]"),
    ([8, 8, 12], "shifted_window_attention", {"window_size": 4, "shift_size": 2, "num_heads": 5},
     "y: `shifted_window_attention`: num_heads 5 does not divide the 12 channels of [8, 8, 12]"),
    ([12, 8, 8], "shifted_window_attention", {"window_size": [4, 4, 4], "shift_size": 0, "num_heads": 1},
     "y: `shifted_window_attention`: `window_size` needs 2 values (height, width), found 3"),
    ([12, 64], "shifted_window_attention", {"window_size": 4, "shift_size": 2, "num_heads": 2},
     "y: `shifted_window_attention` expects a channels-last [H, W, C] input (per example), found [12, 64]"),
    ([3, 8, 8, 4], "patch_merging", {}, "y: `patch_merging` expects a channels-last [H, W, C] input"),
])
def test_shapes_that_do_not_fit_are_located_errors(shape, op, args, message):
    with pytest.raises(SpecError) as info:
        dagnet.load(one_node({"x": (shape, None)}, op, **args))
    assert info.value.message.startswith(message) and info.value.loc.line == 6 and info.value.hint


def test_a_symbolic_channel_count_is_an_error_with_a_hint():
    with pytest.raises(SpecError) as info:
        dagnet.load(one_node({"x": (["H", "W", "C"], None)}, "shifted_window_attention", window_size=7,
                             shift_size=3, num_heads=3))
    assert "needs a known channel count (last dim)" in info.value.message and info.value.hint


def test_a_zero_window_is_refused_at_the_argument():
    with pytest.raises(SpecError) as info:
        dagnet.load(one_node({"x": ([8, 8, 4], None)}, "shifted_window_attention", window_size=0,
                             shift_size=0, num_heads=1))
    assert "window_size" in info.value.message and ">= 1" in info.value.message
