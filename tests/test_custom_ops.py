"""The custom-op example of docs/custom_ops.md works from the command line, end to end."""

import sys

import pytest
import torch

import dagnet
from dagnet import ops
from dagnet.cli import main
from tests.conftest import ROOT, import_file

EXAMPLES = ROOT / "examples" / "plugins"
SPEC = str(EXAMPLES / "swish_mlp.yaml")


@pytest.fixture
def swish(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield ["--plugin", "dagnet_swish"]
    ops.OPS.pop("swish", None)
    sys.modules.pop("dagnet_swish", None)


def test_the_doc_shows_the_example_as_it_is():
    doc = (ROOT / "docs" / "custom_ops.md").read_text()
    assert "```python\n" + (EXAMPLES / "dagnet_swish.py").read_text() + "```\n" in doc


def test_without_the_plugin_the_op_is_unknown(capsys):
    assert main(["check", SPEC]) == 1
    assert "Custom ops load with --plugin MODULE" in capsys.readouterr().err


def test_summary_train_eval_render(swish, tmp_path, capsys):
    assert main([*swish, "summary", SPEC]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 9,098" in out and "MACs per example: 9,216" in out
    run = tmp_path / "run"
    assert main([*swish, "train", SPEC, "--out", str(run), "--epochs", "2"]) == 0
    assert (run / "best.pt").exists()
    assert main([*swish, "eval", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main([*swish, "render", SPEC, "-o", str(tmp_path / "swish.svg")]) == 0


def test_the_slope_learns(swish):
    assert main([*swish, "check", SPEC]) == 0
    model = dagnet.compile(SPEC)
    model(image=torch.randn(4, 1, 8, 8)).square().sum().backward()
    beta = dict(model.named_parameters())["h2.1.beta"]
    assert beta.shape == (64,) and torch.all(beta == 0.5) and beta.grad.abs().sum() > 0


def test_a_standalone_file_imports_the_plugin(swish, tmp_path):
    out = tmp_path / "swish_mlp.py"
    assert main([*swish, "compile", SPEC, "-o", str(out)]) == 0
    source = out.read_text()
    assert "from dagnet_swish import Swish\n" in source
    assert source.splitlines()[0].endswith("Imports torch and the plugin module dagnet_swish.\"\"\"")
    net = import_file(out, "swish_mlp_standalone").SwishMlp()
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert sum(p.numel() for p in net.parameters()) == 9_098


def test_a_plugin_function_is_imported_too(tmp_path, monkeypatch):
    (tmp_path / "double_ops.py").write_text(
        "from dagnet.ops import FunctionCall, OpDef, register\n\n\ndef double(x):\n    return 2 * x\n\n\n"
        "register(OpDef('double', 'activation', '2x', (), lambda ins, a: ins[0],\n"
        "               lambda ins, a: FunctionCall(double)))\n")
    (tmp_path / "m.yaml").write_text("dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n"
                                     "  y: {op: double, in: x}\noutputs: [y]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = tmp_path / "m.py"
        assert main(["--plugin", "double_ops", "compile", str(tmp_path / "m.yaml"), "-o", str(out)]) == 0
        assert "from double_ops import double as double_ops_double\n" in out.read_text()
        x = torch.randn(2, 4)
        torch.testing.assert_close(import_file(out, "double_standalone").M()(x), 2 * x)        # the class is named after the spec
    finally:
        ops.OPS.pop("double", None)
        sys.modules.pop("double_ops", None)
