"""The torchvision families written as specs compute what torchvision's models compute,
with torchvision's weights copied in."""

import pytest

from references import assert_same_outputs, marked_slow, torchvision

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


@pytest.mark.parametrize("constructor", marked_slow(FAMILIES, SLOW))
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params = FAMILIES[constructor]
    assert_same_outputs(getattr(torchvision().models, constructor)(), spec, params)
