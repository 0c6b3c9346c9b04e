"""Every example spec checks, compiles and runs; the classic ones match torchvision's counts."""

import pytest
import torch

import dagnet
from dagnet.dims import substitute
from dagnet.export import example_inputs
from dagnet.summary import summarize
from tests.conftest import SPECS

EXAMPLES = sorted(p for p in SPECS.glob("*.yaml"))

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
    "vgg16": 138_357_544,
}


@pytest.mark.parametrize("name, count", sorted(TORCHVISION_PARAMS.items()))
def test_parameter_counts_match_torchvision(name, count):
    ir = dagnet.load(SPECS / f"{name}.yaml")
    assert sum(r.params for r in summarize(ir)) == count


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_compiles_and_runs(path):
    small = {"fcn8s": {"width": 4, "fc": 16}, "vgg16": {"classes": 10}, "unet": {"width": 4}}.get(path.stem, {})
    ir = dagnet.load(path, small)
    model = dagnet.compile(ir).eval()
    sizes = {"H": 40, "W": 48, "T": 12}
    with torch.no_grad():
        out = model(**example_inputs(ir, batch=2, dims=sizes))
    outs = out if isinstance(out, dict) else {next(iter(ir.outputs)): out}
    for key, value in outs.items():
        expected = substitute(ir.node(ir.outputs[key]).shape, sizes)
        assert tuple(value.shape) == (2, *expected)


def test_resnet50_spec_is_short():
    lines = [l for l in (SPECS / "resnet50.yaml").read_text().splitlines()]
    assert len(lines) < 60


def test_resnet_state_dict_follows_block_paths():
    keys = dagnet.compile(SPECS / "resnet18.yaml").state_dict().keys()
    assert "layer3.1.body.0.weight" in keys
    assert "layer2.0.shortcut.0.weight" in keys
    assert "layer2.1.shortcut.0.weight" not in keys      # identity shortcut: no parameters
    assert "fc.weight" in keys
