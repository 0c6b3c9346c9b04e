"""The torchvision families written as specs compute what torchvision's models compute,
with torchvision's weights copied in."""

import pytest
import torch

import dagnet
from references import copy_in_order, randomise, torchvision
from tests.conftest import SPECS

# torchvision constructor -> (spec, spec parameters that choose the variant); slow ones are marked
FAMILIES = {
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "resnet101": ("resnet50", {"depth3": 23}),
    "resnet152": ("resnet50", {"depth2": 8, "depth3": 36}),
    "resnext50_32x4d": ("resnet50", {"groups": 32, "base_width": 4}),
    "resnext101_32x8d": ("resnet50", {"depth3": 23, "groups": 32, "base_width": 8}),
    "wide_resnet50_2": ("resnet50", {"base_width": 128}),
    "densenet121": ("densenet121", {}),
    "squeezenet1_0": ("squeezenet", {"version": 1.0}),
    "squeezenet1_1": ("squeezenet", {"version": 1.1}),
    "vgg16": ("vgg16", {}),
}
SLOW = {"vgg16", "resnet101", "resnet152", "resnext101_32x8d", "wide_resnet50_2"}  # 45-140 M parameters


@pytest.mark.parametrize("constructor", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else [])
                                         for c in sorted(FAMILIES)])
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params = FAMILIES[constructor]
    reference = randomise(getattr(torchvision().models, constructor)()).eval()
    model = dagnet.compile(dagnet.load(SPECS / f"{spec}.yaml", params)).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
