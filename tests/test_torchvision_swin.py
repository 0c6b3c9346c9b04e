"""The Swin Transformer written as a spec computes what torchvision's swin_t computes, with
torchvision's weights copied in; swin_t, swin_s and swin_b have torchvision's parameter counts."""

import pytest
import torch

import dagnet
from dagnet.summary import summarize
from references import copy_in_order, randomise, torchvision
from tests.conftest import SPECS

# torchvision constructor -> (parameters that choose the variant, torchvision's parameter count)
VARIANTS = {
    "swin_t": ({}, 28_288_354),
    "swin_s": ({"depth3": 18, "sd_prob": 0.3}, 49_606_258),
    "swin_b": ({"width": 128, "heads": 4, "depth3": 18, "sd_prob": 0.5}, 87_768_224),
}


def _swin(params=None):
    return dagnet.load(SPECS / "swin.yaml", params or {})


@pytest.mark.parametrize("constructor", sorted(VARIANTS))
def test_parameter_counts_match_torchvision(constructor):
    params, count = VARIANTS[constructor]
    assert sum(r.params for r in summarize(_swin(params))) == count


def test_swin_t_macs_are_torchvisions_operation_count():
    # torchvision's weights say 4.491 GFLOPS for swin_t at 224x224, counted as multiply-adds
    assert sum(r.macs for r in summarize(_swin(), {"H": 224, "W": 224})) == 4_490_566_656


def _stochastic_depths(module):
    return [(m.p, m.mode) for m in module.modules() if type(m).__name__ == "StochasticDepth"]


@pytest.mark.parametrize("size", [(64, 64), (40, 72)])
def test_swin_t_equals_torchvision(size):
    # at 64x64 the stages are 16, 8, 4 and 2 positions wide: the first pads to three
    # windows and shifts, the later ones fit in one window and do not shift; 40x72 pads
    # rectangular maps and merges odd sizes
    reference = randomise(torchvision().models.swin_t()).eval()
    model = dagnet.compile(_swin()).eval()
    copy_in_order(reference, model)
    # each block drops its two branches with one probability, growing linearly as torchvision's
    ours = _stochastic_depths(model)
    assert ours[::2] == ours[1::2] == _stochastic_depths(reference)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_a_small_swin_with_another_window_equals_torchvision(grad):
    torchvision()
    from torchvision.models.swin_transformer import SwinTransformer
    reference = randomise(SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[1, 2, 3, 2], num_heads=[2, 4, 8, 16],
                                          window_size=[4, 4], stochastic_depth_prob=0.3, num_classes=10)).eval()
    model = dagnet.compile(_swin({"classes": 10, "width": 16, "heads": 2, "patch": 2, "window": 4, "depth1": 1,
                                  "depth2": 2, "depth3": 3, "depth4": 2, "sd_prob": 0.3})).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, 36, 52, generator=torch.Generator().manual_seed(2), requires_grad=grad)
    with torch.set_grad_enabled(grad):
        ours, theirs = model(x), reference(x)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    if grad:
        weight = torch.randn_like(ours)
        ours_grad, = torch.autograd.grad((ours * weight).sum(), x)
        theirs_grad, = torch.autograd.grad((theirs * weight).sum(), x)
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=0)


def test_swin_state_dict_follows_torchvision_order():
    """The attention's bias table and its index come before qkv; patch merging's reduction before its norm."""
    ours = list(dagnet.compile(_swin({"width": 8, "heads": 1, "depth3": 2})).state_dict())
    theirs = list(torchvision().models.swin_t().state_dict())
    assert len(ours) == len(theirs) - 4 * 14      # swin_t has 4 more blocks in stage 3, of 14 entries each
    assert ours[6:10] == ["stage1.0.attn.1.relative_position_bias_table", "stage1.0.attn.1.relative_position_index",
                          "stage1.0.attn.1.qkv.weight", "stage1.0.attn.1.qkv.bias"]
    assert theirs[6:8] == ["features.1.0.attn.relative_position_bias_table",
                           "features.1.0.attn.relative_position_index"]
    assert [k for k in ours if k.startswith("merge2.")] == ["merge2.reduction.weight", "merge2.norm.weight",
                                                             "merge2.norm.bias"]
    assert [k for k in theirs if k.startswith("features.2.")] == ["features.2.reduction.weight",
                                                                   "features.2.norm.weight", "features.2.norm.bias"]
