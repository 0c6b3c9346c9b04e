"""EfficientNet (B0-B7), EfficientNetV2 (S, M, L) and ShuffleNet V2 written as specs compute
what torchvision's models compute, with torchvision's weights copied in; every variant has
torchvision's parameter count."""

import pytest
import torch

import dagnet
from references import assert_same_outputs, marked_slow, spec_parameters, torchvision

# EfficientNet-B5 to B7 use batch norm with eps 0.001 and momentum 0.01
BN_B5 = {"eps": 0.001, "momentum": 0.01}
V2_M = {"c1": 24, "c2": 48, "c3": 80, "c4": 160, "c5": 176, "c6": 304, "c7": 512,
        "d1": 3, "d2": 5, "d3": 5, "d4": 7, "d5": 14, "d6": 18, "d7": 5, "dropout": 0.3}
V2_L = {"c0": 32, "c1": 32, "c2": 64, "c3": 96, "c4": 192, "c5": 224, "c6": 384, "c7": 640,
        "d1": 4, "d2": 7, "d3": 7, "d4": 10, "d5": 19, "d6": 25, "d7": 7, "dropout": 0.4}

# torchvision constructor -> (spec, parameters that choose the variant, torchvision's parameter count)
VARIANTS = {
    "efficientnet_b0": ("efficientnet", {}, 5_288_548),
    "efficientnet_b1": ("efficientnet", {"depth_mult": 1.1}, 7_794_184),
    "efficientnet_b2": ("efficientnet", {"width_mult": 1.1, "depth_mult": 1.2, "dropout": 0.3}, 9_109_994),
    "efficientnet_b3": ("efficientnet", {"width_mult": 1.2, "depth_mult": 1.4, "dropout": 0.3}, 12_233_232),
    "efficientnet_b4": ("efficientnet", {"width_mult": 1.4, "depth_mult": 1.8, "dropout": 0.4}, 19_341_616),
    "efficientnet_b5": ("efficientnet", {"width_mult": 1.6, "depth_mult": 2.2, "dropout": 0.4, **BN_B5},
                        30_389_784),
    "efficientnet_b6": ("efficientnet", {"width_mult": 1.8, "depth_mult": 2.6, "dropout": 0.5, **BN_B5},
                        43_040_704),
    "efficientnet_b7": ("efficientnet", {"width_mult": 2.0, "depth_mult": 3.1, "dropout": 0.5, **BN_B5},
                        66_347_960),
    "efficientnet_v2_s": ("efficientnet_v2", {}, 21_458_488),
    "efficientnet_v2_m": ("efficientnet_v2", V2_M, 54_139_356),
    "efficientnet_v2_l": ("efficientnet_v2", V2_L, 118_515_272),
    "shufflenet_v2_x0_5": ("shufflenet_v2", {"c1": 48}, 1_366_792),
    "shufflenet_v2_x1_0": ("shufflenet_v2", {}, 2_278_604),
    "shufflenet_v2_x1_5": ("shufflenet_v2", {"c1": 176}, 3_503_624),
    "shufflenet_v2_x2_0": ("shufflenet_v2", {"c1": 244, "last": 2048}, 7_393_996),
}
SLOW = {"efficientnet_v2_l"}  # 119 M parameters, about 8 s


@pytest.mark.parametrize("constructor", sorted(VARIANTS))
def test_parameter_counts_match_torchvision(constructor):
    spec, params, count = VARIANTS[constructor]
    assert spec_parameters(spec, params) == count


def _stochastic_depths(model):
    return [(m.p, m.mode) for m in model.modules() if type(m).__name__ == "StochasticDepth"]


def _residual_stochastic_depths(reference):
    """torchvision builds a StochasticDepth in every block but uses it only on the residual ones."""
    return [(m.stochastic_depth.p, m.stochastic_depth.mode) for m in reference.modules()
            if getattr(m, "use_res_connect", False)]


def _batch_norms(model):
    return [(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("constructor", marked_slow(VARIANTS, SLOW))
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params, _ = VARIANTS[constructor]
    reference = getattr(torchvision().models, constructor)()
    model = assert_same_outputs(reference, spec, params)  # copying checks the order (shufflenet: branch1 first)
    assert _batch_norms(model) == _batch_norms(reference)
    if spec.startswith("efficientnet"):  # drop probabilities grow as torchvision's, 0.2 * index / blocks
        assert _stochastic_depths(model) == _residual_stochastic_depths(reference)


def test_a_repeat_count_of_one_still_binds_the_index():
    """`* d1` with d1 = 1 (EfficientNet-B0's first stage) gives its one repetition `i = 0`."""
    ir = dagnet.load("dagnet: 1\nname: t\nparams: {n: 1}\ninputs:\n  x: {shape: [4, 6, 6]}\nnodes:\n"
                     "  c: {op: conv2d, in: x, repeat: n, out_channels: 4 * (i + 1), kernel_size: 1}\n"
                     "outputs: [c]\n")
    assert ir.node(ir.outputs["c"]).shape == (4, 6, 6)
