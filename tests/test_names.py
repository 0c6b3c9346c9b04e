"""The naming rule (dagnet.spec.names) and what reaches generated code: a spec is data, never code."""

import ast
import json
import subprocess
import sys

import pytest
import torch
import torch.fx as fx
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import dagnet
from dagnet.emit import class_name, emit, standalone_source
from dagnet.errors import SpecError
from dagnet.spec.names import MODULE_ATTRIBUTES, legal_name, name_problem
from tests.conftest import import_file

MARKER = "dagnet_payload_ran"

# fx wrote module paths into `getattr(self, "...")` unescaped: this name ran `touch` on the
# first forward call of the compiled module
PAYLOAD = f'training"),getattr(__import__("os"),"system")("touch {MARKER}"),getattr(self,"training'


def tiny(node="c1", inp="x", name="tiny", out=None):
    """A two-node spec with the node, input and model names given; every string JSON-quoted."""
    n, i = json.dumps(node), json.dumps(inp)
    return (f"dagnet: 1\nname: {json.dumps(name)}\ninputs:\n  {i}: {{shape: [4]}}\n"
            f"nodes:\n  {n}: {{op: linear, in: {i}, out_features: 3}}\n"
            f"  act: {{op: relu, in: {n}}}\noutputs: [{json.dumps(out or 'act')}]\n")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dagnet", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_the_code_execution_payload_is_a_located_error_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.yaml").write_text(tiny(node=PAYLOAD))
    result = run("check", "model.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("model.yaml:6:3: error: node `training\"),getattr(")
    assert "is not an ASCII identifier" in result.stderr
    with pytest.raises(SpecError):
        dagnet.compile(tmp_path / "model.yaml")
    assert not (tmp_path / MARKER).exists()


def test_the_emitter_refuses_a_path_the_rule_would_have_refused(tmp_path, monkeypatch):
    """An IR built by hand (not by expand) cannot smuggle code through fx either."""
    monkeypatch.chdir(tmp_path)
    ir = dagnet.load(tiny())
    node = ir.node("c1")
    node.name = PAYLOAD
    with pytest.raises(ValueError, match="not a dotted identifier"):
        emit(ir)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("name, problem", [
    ("forward", "attribute of every PyTorch module"),
    ("training", "attribute of every PyTorch module"),
    ("parameters", "attribute of every PyTorch module"),
    ("_modules", "attribute of every PyTorch module"),
    ("graph", "attribute of every PyTorch module"),
    ("__class__", "starts with `__`"),
    ("class", "Python keyword"),
    ("None", "Python keyword"),
    ('a"b', "not an ASCII identifier"),
    ("a\nb", "not an ASCII identifier"),
    ("a\\b", "not an ASCII identifier"),
    ("a\u2028b", "not an ASCII identifier"),
    ("", "is empty"),
    ("ℌ", "not an ASCII identifier"),        # NFKC would fold it to `H`, another node's name
    ("a²", "not an ASCII identifier"),
    ("a.b", "contains a dot"),
    ("x" * 200, "characters long"),
])
def test_illegal_node_names_are_located_errors_with_a_legal_suggestion(name, problem):
    with pytest.raises(SpecError) as caught:
        dagnet.load(tiny(node=name))
    errors = getattr(caught.value, "errors", [caught.value])
    mine = [e for e in errors if problem in e.message]
    assert len(mine) == 1, [e.message for e in errors]
    assert mine[0].loc.line == 6 and mine[0].loc.col == 3
    suggestion = mine[0].hint.split("`")[1]
    assert name_problem(suggestion) is None
    dagnet.load(tiny(node=suggestion))          # the suggestion works as it is


def test_inputs_follow_the_same_rule():
    with pytest.raises(SpecError, match="input `self` is an attribute of every PyTorch module"):
        dagnet.load(tiny(inp="self"))


def test_one_error_for_a_bad_name_however_often_it_is_used():
    with pytest.raises(SpecError) as caught:
        dagnet.load(tiny(node="eval", out="eval"))
    assert [e.message for e in caught.value.errors] == ["node `eval` is an attribute of every PyTorch module"]


def test_blocks_and_parameters_follow_the_same_rule():
    """Less the module attributes: `half` and `type` never become attributes of the module."""
    text = """dagnet: 1
params: {__w: 3, half: 2}
blocks:
  class:
    params: {lambda: 2, type: 1}
    inputs: [a-b]
    nodes: {y: {op: relu, in: a-b}}
    outputs: [y]
inputs: {x: {shape: [4]}}
nodes: {b: {block: class, in: x}}
outputs: [b]
"""
    with pytest.raises(SpecError) as caught:
        dagnet.load(text)
    found = sorted((e.loc.line, e.message) for e in caught.value.errors if "rename" in (e.hint or ""))
    assert found == [(2, "parameter `__w` starts with `__` (reserved for Python's own names)"),
                     (4, "block `class` is a Python keyword"),
                     (4, "block `class`'s input `a-b` is not an ASCII identifier "
                         "(letters, digits and `_`, not starting with a digit)"),
                     (5, "block `class`'s parameter `lambda` is a Python keyword")]


def test_the_dsl_front_end_meets_the_same_rule(tmp_path):
    path = tmp_path / "m.dag"
    path.write_text('input x[4]\nforward = x -> linear(3)\noutput forward\n')
    result = run("check", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "node `forward` is an attribute of every PyTorch module" in result.stderr


def _from_torch(attribute) -> bool:
    """Defined by torch (or an instance attribute), not set on nn.Module by another library in this
    process: transformers adds `nn.Module.smart_apply` when it builds a model (the import tests)."""
    module = getattr(attribute, "__module__", None)
    return not callable(attribute) or module is None or module.split(".")[0] == "torch"


def test_the_reserved_list_covers_what_the_installed_torch_defines():
    module, graph_module = nn.Module(), fx.GraphModule(nn.Module(), fx.Graph())
    live = set(dir(module)) | set(vars(module)) | set(dir(graph_module)) | set(vars(graph_module))
    live = {n for n in live if _from_torch(getattr(type(graph_module), n, None))}
    missing = {n for n in live if not n.startswith("__")} - MODULE_ATTRIBUTES
    assert not missing, f"add to MODULE_ATTRIBUTES: {sorted(missing)}"


@given(st.text(max_size=40))
def test_legal_name_always_gives_a_legal_name(text):
    assert name_problem(legal_name(text)) is None


@pytest.mark.parametrize("name", ["3d-unet", "none", "C:\\Users\\me\\net", 'x"""; import os; os.system("touch '
                                  + MARKER + '"); """', "caf\u00e9 \u2028# line", "", "ℌ", "lone \udc80 surrogate"])
def test_any_model_name_gives_a_standalone_file_that_imports_and_runs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    model = dagnet.compile(tiny(name=name))
    source = standalone_source(model, header=f"{name}: generated from C:\\specs\\{name}.yaml")
    ast.parse(source)
    assert class_name(name).isidentifier()
    path = tmp_path / "model.py"
    path.write_text(source)
    generated = import_file(path)
    assert not (tmp_path / MARKER).exists()
    standalone = getattr(generated, type(model).__name__)()
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(standalone(x), model(x=x))
    assert generated.__doc__.startswith(f"{name}: generated from C:\\specs\\")


def test_the_cli_writes_a_standalone_file_from_a_hostile_path(tmp_path):
    folder = tmp_path / 'a"""b\\c'
    folder.mkdir()
    (folder / "m.yaml").write_text(tiny(name='q"""\u2028#'))
    result = run("compile", folder / "m.yaml", "-o", tmp_path / "model.py")
    assert result.returncode == 0, result.stderr
    ast.parse((tmp_path / "model.py").read_text())


def test_the_dsl_model_string_reaches_generated_code_only_escaped(tmp_path):
    path = tmp_path / "m.dag"
    path.write_text('model "x\\"\\"\\"\\nimport os\\n"\ninput x[4]\ny = x -> linear(3)\noutput y\n')
    model = dagnet.compile(path)
    tree = ast.parse(standalone_source(model))
    assert not any(isinstance(n, ast.Import) and n.names[0].name == "os" for n in tree.body)


def test_non_finite_floats_are_written_as_python_can_read_them():
    from dagnet.emit import _constants, _literal
    assert eval(_literal([float("inf"), -float("inf"), (1.5,)])) == [float("inf"), -float("inf"), (1.5,)]
    assert _constants("def forward(self, x):\n    return torch.clamp(x, max = inf)\n") == ['inf = float("inf")']
    with pytest.raises(TypeError):
        _literal(object())


def test_an_export_with_a_tampered_embedded_spec_is_checked_again_on_load(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file
    from dagnet.export import load_safetensors, save_safetensors
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(tiny())
    save_safetensors(dagnet.compile(tmp_path / "m.yaml"), tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    files = json.loads(meta["dagnet.files"])
    files["m.yaml"] = tiny(node=PAYLOAD)
    meta["dagnet.files"] = json.dumps(files)
    save_file(load_file(tmp_path / "m.safetensors"), tmp_path / "evil.safetensors", metadata=meta)
    with pytest.raises(SpecError, match="is not an ASCII identifier"):
        load_safetensors(tmp_path / "evil.safetensors")
    assert not (tmp_path / MARKER).exists()


def test_an_input_dtype_is_one_of_the_known_element_types():
    """Later stages look the dtype up on `torch`: only known names may get there."""
    with pytest.raises(SpecError, match="input `x` has unknown dtype `load`"):
        dagnet.load(tiny().replace("{shape: [4]}", "{shape: [4], dtype: load}"))
    with pytest.raises(SpecError, match="did you mean `int64`"):
        dagnet.load(tiny().replace("{shape: [4]}", "{shape: [4], dtype: int46}"))
