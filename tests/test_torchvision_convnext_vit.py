"""ConvNeXt and the Vision Transformer written as specs compute what torchvision's models
compute, with torchvision's weights copied in; every variant has torchvision's parameter count."""

import pytest
import torch

import dagnet
from references import copy_in_order, randomise, spec_parameters, torchvision
from tests.conftest import SPECS

VIT_B_16 = {}
VIT_L = {"dim": 1024, "layers": 24, "heads": 16, "mlp_dim": 4096}

# torchvision constructor -> (spec, parameters that choose the variant, torchvision's parameter count)
VARIANTS = {
    "convnext_tiny": ("convnext", {}, 28_589_128),
    "convnext_small": ("convnext", {"depth3": 27, "sd_prob": 0.4}, 50_223_688),
    "convnext_base": ("convnext", {"width": 128, "depth3": 27, "sd_prob": 0.5}, 88_591_464),
    "convnext_large": ("convnext", {"width": 192, "depth3": 27, "sd_prob": 0.5}, 197_767_336),
    "vit_b_16": ("vit", VIT_B_16, 86_567_656),
    "vit_b_32": ("vit", {"patch": 32}, 88_224_232),
    "vit_l_16": ("vit", VIT_L, 304_326_632),
    "vit_l_32": ("vit", {**VIT_L, "patch": 32}, 306_535_400),
    "vit_h_14": ("vit", {"patch": 14, "dim": 1280, "layers": 32, "heads": 16, "mlp_dim": 5120}, 632_045_800),
}


@pytest.mark.parametrize("constructor", sorted(VARIANTS))
def test_parameter_counts_match_torchvision(constructor):
    spec, params, count = VARIANTS[constructor]
    assert spec_parameters(spec, params) == count


def _stochastic_depths(module):
    return [(m.p, m.mode) for m in module.modules() if type(m).__name__ == "StochasticDepth"]


def test_convnext_tiny_equals_torchvision():
    reference = randomise(torchvision().models.convnext_tiny()).eval()
    model = dagnet.compile(dagnet.load(SPECS / "convnext.yaml")).eval()
    scales = [w for key, w in model.state_dict().items() if key.endswith(".scale.weight")]
    assert len(scales) == 18 and all(torch.equal(w, torch.full_like(w, 1e-6)) for w in scales)  # torchvision's init
    copy_in_order(reference, model)
    # the drop probability grows linearly over the 18 blocks, as torchvision's does
    assert _stochastic_depths(model) == _stochastic_depths(reference)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("image_size, patch, layers, heads, dim, mlp_dim",
                         [(32, 16, 2, 4, 32, 64), (32, 8, 2, 2, 48, 96)])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_small_vit_equals_torchvision(image_size, patch, layers, heads, dim, mlp_dim, grad):
    # without autograd nn.MultiheadAttention takes its fused fast path, with it the
    # composite one: both must agree, on the same path, with torchvision's
    torchvision()
    from torchvision.models.vision_transformer import VisionTransformer
    reference = randomise(VisionTransformer(image_size=image_size, patch_size=patch, num_layers=layers,
                                            num_heads=heads, hidden_dim=dim, mlp_dim=mlp_dim)).eval()
    model = dagnet.compile(dagnet.load(SPECS / "vit.yaml", {
        "image_size": image_size, "patch": patch, "layers": layers, "heads": heads, "dim": dim,
        "mlp_dim": mlp_dim})).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_vit_state_dict_follows_torchvision_order():
    """The class token comes first, the position table after the patch embedding."""
    keys = list(dagnet.compile(dagnet.load(SPECS / "vit.yaml", {"image_size": 32, "layers": 2, "dim": 24,
                                                                    "heads": 2, "mlp_dim": 8})).state_dict())
    assert keys[:4] == ["class_token.0.weight", "patches.0.weight", "patches.0.bias", "pos_embedding.0.weight"]
    assert "encoder.1.0.self_attention.in_proj_weight" in keys
