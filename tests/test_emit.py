"""The emitted module: readable code, node-named state, outputs, standalone file, torch.compile."""


import pytest
import torch

import dagnet
from dagnet.emit import standalone_source
from tests.conftest import SPECS, import_file

TINY = """dagnet: 1
name: tiny-cnn
params: {classes: 10}
inputs:
  image: {shape: [3, H, W]}
nodes:
  c1: {op: conv2d, in: image, out_channels: 16, kernel_size: 3, padding: 1}
  a1: {op: relu, in: c1}
  gap: {op: adaptive_avg_pool2d, in: a1, output_size: 1}
  flat: {op: flatten, in: gap}
  logits: {op: linear, in: flat, out_features: classes}
outputs: [logits]
"""


def test_code_reads_like_hand_written_pytorch():
    code = dagnet.compile(TINY).code
    assert "def forward(self, image):" in code
    assert "c1 = self.c1(image)" in code
    assert "a1 = torch.relu(c1);  c1 = None" in code      # freed after its last consumer
    assert "logits = self.logits(flat)" in code


def test_state_dict_keys_follow_node_names():
    model = dagnet.compile(TINY)
    assert list(model.state_dict()) == ["c1.weight", "c1.bias", "logits.weight", "logits.bias"]


def test_several_outputs_return_a_dict():
    text = TINY.replace("outputs: [logits]", "outputs: [logits, flat]")
    out = dagnet.compile(text)(image=torch.randn(2, 3, 5, 5))
    assert set(out) == {"logits", "flat"} and out["flat"].shape == (2, 16)
    forced = dagnet.compile(TINY, as_dict=True)(image=torch.randn(1, 3, 4, 4))
    assert set(forced) == {"logits"}


@pytest.mark.parametrize("name", ["resnet18", "unet", "fcn8s"])
def test_standalone_file_matches_the_compiled_module(tmp_path, name):
    overrides = {"width": 4, "fc": 8} if name == "fcn8s" else {}
    model = dagnet.compile(SPECS / f"{name}.yaml", overrides=overrides).eval()
    source = standalone_source(model)
    imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert all(" torch" in line or line.startswith("from typing") for line in imports), imports
    path = tmp_path / "model.py"
    path.write_text(source)
    standalone = getattr(import_file(path), type(model).__name__)().eval()
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), model(image=x))


def test_torch_compile_runs_the_module():
    model = dagnet.compile(TINY)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(compiled(image=x), model(image=x))


def test_same_gradients_as_a_hand_written_module():
    torch.manual_seed(0)
    model = dagnet.compile(TINY)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    ref.load_state_dict(dict(zip(ref.state_dict(), model.state_dict().values())))
    x = torch.randn(3, 3, 7, 7)
    model(image=x).square().sum().backward()
    ref(x).square().sum().backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
