"""Models exported on the CPU (TorchScript .pt, torch.export .pt2) run on CUDA and give the
compiled model's outputs there: a CNF (a BiLSTM and a chain CRF's portable twin, ragged
masks) and a U-Net (marked `cuda`; skip without a GPU)."""
import copy

import pytest
import torch
import torch.export.passes

import dagnet
from dagnet.export import export
from test_cuda_ops import DEVICE, exact_float32, needs_device  # noqa: F401 (a fixture)
from test_export_fields import inputs
from tests.conftest import SPECS

pytestmark = pytest.mark.cuda


def model_and_inputs(name: str):
    torch.manual_seed(0)
    if name == "cnf_tagger":
        frames, mask = inputs(5, 30)
        return dagnet.compile(SPECS / "cnf_tagger.yaml").eval(), {"frames": frames, "mask": mask}
    model = dagnet.compile(SPECS / "unet.yaml", overrides={"width": 4}).eval()
    return model, {"image": torch.randn(3, 3, 40, 56)}


def load(path, suffix: str):
    if suffix == ".pt":
        return torch.jit.load(str(path), map_location=DEVICE)
    # torch.export's own way to move a program: parameters, buffers and the devices in its graph
    return torch.export.passes.move_to_device_pass(torch.export.load(str(path)), DEVICE).module()


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
@pytest.mark.parametrize("name", ["cnf_tagger", "unet"])
def test_an_export_made_on_the_cpu_runs_on_the_device(tmp_path, name, suffix, exact_float32):  # noqa: F811
    needs_device()
    model, example = model_and_inputs(name)
    export(model, tmp_path / f"m{suffix}")
    on_device = {k: v.to(DEVICE) for k, v in example.items()}
    with torch.no_grad():
        expected = copy.deepcopy(model).to(DEVICE)(**on_device)
        got = load(tmp_path / f"m{suffix}", suffix)(**on_device)
    got = got if isinstance(got, torch.Tensor) else next(iter(got.values())) if isinstance(got, dict) else got[0]
    assert got.device.type == DEVICE.type
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
