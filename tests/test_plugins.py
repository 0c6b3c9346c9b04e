"""Custom ops come only through an explicit plugin; a spec alone never imports code."""

import sys

import pytest

from dagnet import ops
from dagnet.cli import main

PLUGIN = '''
from pathlib import Path
import torch.nn.functional as F
from dagnet.ops import Arg, FunctionCall, OpDef, register

Path(__file__).with_name("imported").write_text("yes")
register(OpDef("swish_test", "activation", "x * sigmoid(beta x)", (Arg("beta", "float", 1.0),),
               lambda ins, a: ins[0], lambda ins, a: FunctionCall(F.silu)))
'''

SPEC = "dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n  a: {op: swish_test, in: x}\noutputs: [a]\n"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "my_dagnet_ops.py").write_text(PLUGIN)
    (tmp_path / "model.yaml").write_text(SPEC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    ops.OPS.pop("swish_test", None)
    sys.modules.pop("my_dagnet_ops", None)


def test_spec_alone_imports_nothing(plugin_dir, capsys):
    assert main(["check", str(plugin_dir / "model.yaml")]) == 1
    assert "unknown op `swish_test`" in capsys.readouterr().err
    assert not (plugin_dir / "imported").exists()


def test_plugin_flag_registers_ops(plugin_dir, capsys):
    assert main(["--plugin", "my_dagnet_ops", "check", str(plugin_dir / "model.yaml")]) == 0
    assert (plugin_dir / "imported").read_text() == "yes"
