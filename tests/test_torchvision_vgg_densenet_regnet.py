"""VGG (with and without batch norm), DenseNet and RegNet written as specs compute what
torchvision's models compute, with torchvision's weights copied in: one spec per
family, the variant chosen by spec parameters."""

import pytest

from references import assert_same_outputs, marked_slow, spec_parameters, torchvision

VGG = {"vgg11": {"convs1": 1, "convs2": 1, "convs3": 2, "convs4": 2, "convs5": 2},
       "vgg13": {"convs3": 2, "convs4": 2, "convs5": 2},
       "vgg16": {},
       "vgg19": {"convs3": 4, "convs4": 4, "convs5": 4}}


def regnet(widths, depths, groups, se_ratio=0.25):
    """Spec parameters of a RegNet: its stage widths, depths and group widths."""
    params = {"se_ratio": se_ratio}
    for k, (w, d, g) in enumerate(zip(widths, depths, groups), 1):
        params.update({f"width{k}": w, f"depth{k}": d, f"group{k}": g})
    return params


# torchvision constructor -> (spec, spec parameters that choose the variant, parameter count)
FAMILIES = {
    **{name: ("vgg16", params, count) for (name, params), count in zip(
        VGG.items(), (132_863_336, 133_047_848, 138_357_544, 143_667_240))},
    **{f"{name}_bn": ("vgg16", {**params, "bn": True}, count) for (name, params), count in zip(
        VGG.items(), (132_868_840, 133_053_736, 138_365_992, 143_678_248))},
    "densenet121": ("densenet121", {}, 7_978_856),
    "densenet161": ("densenet121", {"growth": 48, "stem": 96, "depth3": 36, "depth4": 24}, 28_681_000),
    "densenet169": ("densenet121", {"depth3": 32, "depth4": 32}, 14_149_480),
    "densenet201": ("densenet121", {"depth3": 48, "depth4": 32}, 20_013_928),
    "regnet_y_400mf": ("regnet", {}, 4_344_144),
    "regnet_x_400mf": ("regnet", regnet([32, 64, 160, 400], [1, 2, 7, 12], [16] * 4, 0), 5_495_976),
    "regnet_y_800mf": ("regnet", regnet([64, 144, 320, 784], [1, 3, 8, 2], [16] * 4), 6_432_512),
    "regnet_x_800mf": ("regnet", regnet([64, 128, 288, 672], [1, 3, 7, 5], [16] * 4, 0), 7_259_656),
    "regnet_y_1_6gf": ("regnet", regnet([48, 120, 336, 888], [2, 6, 17, 2], [24] * 4), 11_202_430),
    "regnet_x_1_6gf": ("regnet", regnet([72, 168, 408, 912], [2, 4, 10, 2], [24] * 4, 0), 9_190_136),
    "regnet_y_3_2gf": ("regnet", regnet([72, 216, 576, 1512], [2, 5, 13, 1], [24] * 4), 19_436_338),
    "regnet_x_3_2gf": ("regnet", regnet([96, 192, 432, 1008], [2, 6, 15, 2], [48] * 4, 0), 15_296_552),
    "regnet_y_8gf": ("regnet", regnet([224, 448, 896, 2016], [2, 4, 10, 1], [56] * 4), 39_381_472),
    "regnet_x_8gf": ("regnet", regnet([80, 240, 720, 1920], [2, 5, 15, 1], [80, 120, 120, 120], 0),
                     39_572_648),
    "regnet_y_16gf": ("regnet", regnet([224, 448, 1232, 3024], [2, 4, 11, 1], [112] * 4), 83_590_140),
    "regnet_x_16gf": ("regnet", regnet([256, 512, 896, 2048], [2, 6, 13, 1], [128] * 4, 0), 54_278_536),
    "regnet_y_32gf": ("regnet", regnet([232, 696, 1392, 3712], [2, 5, 12, 1], [232] * 4), 145_046_770),
    "regnet_x_32gf": ("regnet", regnet([336, 672, 1344, 2520], [2, 7, 13, 1], [168] * 4, 0), 107_811_560),
}
# 55-145 M parameters: 3-12 s each; vgg11_bn (7-8 s) stays unmarked as the VGG check
SLOW = {c for c in FAMILIES if c.startswith("vgg") and c != "vgg11_bn"} | {
    "regnet_y_16gf", "regnet_x_16gf", "regnet_y_32gf", "regnet_x_32gf"}


@pytest.mark.parametrize("constructor", sorted(FAMILIES))
def test_parameter_counts_match_torchvision(constructor):
    spec, params, count = FAMILIES[constructor]
    assert spec_parameters(spec, params) == count


@pytest.mark.parametrize("constructor", marked_slow(FAMILIES, SLOW))
def test_outputs_equal_torchvision_with_its_weights(constructor):
    spec, params, _ = FAMILIES[constructor]
    assert_same_outputs(getattr(torchvision().models, constructor)(), spec, params)
