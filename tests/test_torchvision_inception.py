"""GoogLeNet and Inception v3 written as specs compute what torchvision's models compute,
with torchvision's weights copied in (without the auxiliary classifiers, which torchvision
runs in training only, and without transform_input)."""

import pytest
import torch

import dagnet
from references import copy_in_order, randomise, torchvision
from tests.conftest import SPECS

# torchvision constructor -> (spec, spec parameters that choose the variant, input side)
FAMILIES = {
    "googlenet": ("googlenet", {}, 64),
}


@pytest.mark.parametrize("constructor", sorted(FAMILIES))
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params, side = FAMILIES[constructor]
    build = getattr(torchvision().models, constructor)
    reference = randomise(build(aux_logits=False, init_weights=True)).eval()
    model = dagnet.compile(dagnet.load(SPECS / f"{spec}.yaml", params)).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
