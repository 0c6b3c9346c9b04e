"""The torchvision families written as specs compute what torchvision's models compute,
with torchvision's weights copied in."""

import pytest
import torch

import dagnet
from references import copy_in_order, randomise, torchvision
from tests.conftest import SPECS

# spec -> (torchvision constructor, spec parameters, input size)
FAMILIES = {
    "resnet18": ("resnet18", {}, 64),
    "resnet50": ("resnet50", {}, 64),
    "densenet121": ("densenet121", {}, 64),
    "vgg16": ("vgg16", {}, 64),
}
SLOW = {"vgg16"}            # 138 M parameters: 20 s to randomise and copy


@pytest.mark.parametrize("spec", [pytest.param(s, marks=[pytest.mark.slow] if s in SLOW else [])
                                  for s in sorted(FAMILIES)])
def test_outputs_equal_torchvision_with_its_weights(spec):
    constructor, params, size = FAMILIES[spec]
    reference = randomise(getattr(torchvision().models, constructor)()).eval()
    model = dagnet.compile(dagnet.load(SPECS / f"{spec}.yaml", params)).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
