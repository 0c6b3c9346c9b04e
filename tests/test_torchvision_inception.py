"""GoogLeNet and Inception v3 written as specs compute what torchvision's models compute,
with torchvision's weights copied in (built with aux_logits=False: torchvision runs its
auxiliary classifiers in training only; transform_input is off, its default)."""

import pytest

import dagnet
from references import assert_same_outputs, torchvision
from tests.conftest import SPECS

# torchvision constructor -> (spec, spec parameters that choose the variant, input side)
FAMILIES = {
    "googlenet": ("googlenet", {}, 64),
    "inception_v3": ("inception_v3", {"size": 75}, 75),    # 75x75: the smallest input it takes
}


def reference(constructor):
    build = getattr(torchvision().models, constructor)
    return build(aux_logits=False, init_weights=True)


@pytest.mark.parametrize("constructor", sorted(FAMILIES))
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params, side = FAMILIES[constructor]
    assert_same_outputs(reference(constructor), spec, params, side)


@pytest.mark.parametrize("constructor", sorted(FAMILIES))
def test_state_dict_keys_are_torchvisions(constructor):
    """Nodes carry torchvision's module names, so its state_dict loads by name too."""
    spec, params, _ = FAMILIES[constructor]
    model = dagnet.compile(dagnet.load(SPECS / f"{spec}.yaml", params))
    assert list(model.state_dict()) == list(reference(constructor).state_dict())
