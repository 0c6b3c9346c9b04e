"""MobileNetV2, MobileNetV3 and MNASNet written as specs compute what torchvision's models
compute, with torchvision's weights copied in; every variant has torchvision's parameter count."""

import pytest
import torch

import dagnet
from references import assert_same_outputs, randomise, spec_parameters, torchvision
from tests.conftest import SPECS

# torchvision constructor (and its keyword arguments) -> (spec, parameters that choose the
# variant, torchvision's parameter count)
VARIANTS = {
    "mobilenet_v2": ("mobilenet_v2", {}, 3_504_872),
    # channels rounded by _make_divisible: 0.75 rounds 18 up to 24 (the 90% rule),
    # 0.1 makes the first block 8 -> 8 channels at stride 1, so it adds its input back
    "mobilenet_v2(width_mult=0.5)": ("mobilenet_v2", {"width_mult": 0.5}, 1_968_680),
    "mobilenet_v2(width_mult=0.75)": ("mobilenet_v2", {"width_mult": 0.75}, 2_636_424),
    "mobilenet_v2(width_mult=1.4)": ("mobilenet_v2", {"width_mult": 1.4}, 6_108_776),
    "mobilenet_v2(width_mult=0.1)": ("mobilenet_v2", {"width_mult": 0.1}, 1_367_080),
    "mobilenet_v3_large": ("mobilenet_v3", {}, 5_483_032),
    "mobilenet_v3_small": ("mobilenet_v3", {"small": True}, 2_542_856),
    "mnasnet0_5": ("mnasnet", {"alpha": 0.5}, 2_218_512),
    "mnasnet0_75": ("mnasnet", {"alpha": 0.75}, 3_170_208),
    "mnasnet1_0": ("mnasnet", {}, 4_383_312),
    "mnasnet1_3": ("mnasnet", {"alpha": 1.3}, 6_282_256),
}


def _constructor(name):
    """`mobilenet_v2(width_mult=0.5)` -> torchvision's model, randomised, in eval mode."""
    function, _, arguments = name.partition("(")
    kwargs = {k: float(v) for k, v in (a.split("=") for a in arguments.rstrip(")").split(",") if a)}
    return randomise(getattr(torchvision().models, function)(**kwargs)).eval()


@pytest.mark.parametrize("constructor", sorted(VARIANTS))
def test_parameter_counts_match_torchvision(constructor):
    spec, params, count = VARIANTS[constructor]
    assert spec_parameters(spec, params) == count


@pytest.mark.parametrize("constructor", sorted(VARIANTS))
def test_equals_torchvision(constructor):
    spec, params, count = VARIANTS[constructor]
    reference = _constructor(constructor)
    assert sum(p.numel() for p in reference.parameters()) == count
    assert_same_outputs(reference, spec, params)


def test_mnasnet_keeps_torchvision_batch_norm_momentum():
    reference = torchvision().models.mnasnet1_0()
    model = dagnet.compile(dagnet.load(SPECS / "mnasnet.yaml"))
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert momenta == [m.momentum for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert set(momenta) == {1 - 0.9997}
