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


def test_entry_points_load_only_with_the_flag(tmp_path, monkeypatch, capsys):
    """An installed package's `dagnet.ops` entry point, as pip would leave it."""
    (tmp_path / "my_dagnet_ops.py").write_text(PLUGIN)
    (tmp_path / "model.yaml").write_text(SPEC)
    info = tmp_path / "my_dagnet_ops-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-dagnet-ops\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dagnet.ops]\nswish = my_dagnet_ops\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["check", str(tmp_path / "model.yaml")]) == 1
        assert not (tmp_path / "imported").exists()
        assert main(["--entry-point-plugins", "check", str(tmp_path / "model.yaml")]) == 0
        assert (tmp_path / "imported").read_text() == "yes"
    finally:
        ops.OPS.pop("swish_test", None)
        sys.modules.pop("my_dagnet_ops", None)
