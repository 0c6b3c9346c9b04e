"""`dagnet import` from nn.Modules: torchvision, Hugging Face and plain user modules become specs whose
compiled models compute what the sources compute, folded into blocks and repeats."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from references import randomise, torchvision
from torch import nn

import dagnet
from dagnet.importer.graph import ImportModelError
from dagnet.importer.imported import TOLERANCE, import_model
from dagnet.importer.opaque import Unsupported
from dagnet.spec.frontends import parse_spec
from dagnet.spec.printer import to_dsl

ROOT = Path(__file__).resolve().parents[1]


def compiled(imported, tmp_path) -> nn.Module:
    """The imported spec compiled from its written text (as a user would), weights loaded."""
    path = imported.save(tmp_path / f"{imported.name}.dag")
    model = dagnet.compile(path).eval()
    model.load_state_dict(imported.state_dict())
    return model


def assert_equal_outputs(imported, tmp_path, source, *inputs):
    model = compiled(imported, tmp_path)
    names = [name for name, _, _ in imported.captured.inputs]
    with torch.no_grad():
        ours, theirs = model(**dict(zip(names, inputs))), source(*inputs)
    theirs = theirs if isinstance(theirs, torch.Tensor) else theirs[0]
    scale = max(1.0, theirs.abs().max().item())
    assert (ours - theirs).abs().max().item() <= TOLERANCE * scale


def repeats(text: str) -> list[str]:
    return re.findall(r"-> (\w+)(?:\([^)]*\))? \* (\d+)( dense)?", text)


# -- torchvision ---------------------------------------------------------------------------
def test_resnet18_imports_folded_with_equal_outputs_and_the_compiled_specs_keys(tmp_path):
    source = randomise(torchvision().models.resnet18()).eval()
    imported = import_model(source, name="resnet18")
    assert imported.verify() <= TOLERANCE
    text = imported.text()
    assert to_dsl(parse_spec(text, "resnet18.dag")) == text             # canonical: what `dagnet fmt` prints
    model = compiled(imported, tmp_path)
    assert list(model.state_dict()) == list(imported.state_dict())      # keys exactly the compiled spec's
    # the four stages, the first block of stages 2-4 strided with a projection: one parametrised block
    assert [(b, n) for b, n, _ in repeats(text)] == [("basic_block", "2")] * 4
    assert "stride=2 if i == 0 else 1" in text and "has_downsample=i == 0" in text
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x=x), source(x), rtol=0, atol=0)
    yaml_spec = imported.save(tmp_path / "resnet18.yaml")            # the same spec in YAML
    assert list(dagnet.compile(yaml_spec).state_dict()) == list(imported.state_dict())


def test_resnet50_is_short_with_its_stage_depths_as_repeats():
    imported = import_model(torchvision().models.resnet50().eval(), name="resnet50")
    text = imported.text()
    assert imported.statements() <= 50
    assert [n for _, n, _ in repeats(text)] == ["3", "4", "6", "3"]
    assert imported.verify() <= TOLERANCE


def test_densenet121_is_one_growth_layer_repeated_densely():
    imported = import_model(torchvision().models.densenet121().eval(), name="densenet121")
    text = imported.text()
    assert [(n, d) for _, n, d in repeats(text)] == [("6", " dense"), ("12", " dense"), ("24", " dense"),
                                                     ("16", " dense")]
    assert len({b for b, _, _ in repeats(text)}) == 1                    # one dense layer block for all four
    assert imported.verify() <= TOLERANCE


def test_vision_transformer_encoder_layer_repeated():
    tv = torchvision()
    source = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=12, num_heads=2, hidden_dim=16,
                                         mlp_dim=32, num_classes=5).eval()
    imported = import_model(source, example_inputs=torch.randn(2, 3, 32, 32), name="vit")
    assert [n for _, n, _ in repeats(imported.text())] == ["12"]
    assert "parameter" in imported.text()                  # the class token and position table, learned
    assert imported.verify() <= TOLERANCE


# -- Hugging Face -----------------------------------------------------------------------------
def test_bert_encoder_from_a_config_imports_through_torch_export(tmp_path):
    torchvision()                       # transformers imports torchvision; its op schemas first
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    source = transformers.BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    imported = import_model(source, example_inputs=(ids,), name="bert")
    assert imported.captured.inputs[0][2] == "int64"
    assert [n for _, n, _ in repeats(imported.text())] == ["3"]
    assert imported.verify() <= TOLERANCE
    other = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    assert_equal_outputs(imported, tmp_path, lambda i: source(i).last_hidden_state, other)


# -- plain user modules ----------------------------------------------------------------------------
class Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.proj(x)) + 0.5 * x


class UserNet(nn.Module):
    """Custom forward logic: a loop over a ModuleList, gating, scalar arithmetic, a concat, a view."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.gates = nn.ModuleList(Gate(8) for _ in range(3))
        self.side = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(12 * 4 * 4, 5)

    def forward(self, image):
        x = torch.relu(self.stem(image))
        for gate in self.gates:
            x = gate(x)
        x = torch.cat([x, self.side(image)], dim=1)
        x = nn.functional.adaptive_avg_pool2d(x, 4)
        return self.head(x.view(x.size(0), -1)) / 2 - 1


def test_a_user_module_with_custom_forward_logic(tmp_path):
    source = randomise(UserNet()).eval()
    imported = import_model(source, example_inputs=torch.randn(2, 3, 16, 16))
    assert ("gate", "3", "") in repeats(imported.text())
    assert imported.verify() <= TOLERANCE
    assert_equal_outputs(imported, tmp_path, source, torch.randn(4, 3, 16, 16))


class Odd(nn.Module):
    """Names no spec may use as they are: ModuleDict keys with spaces, a DSL keyword, a leading digit."""

    def __init__(self):
        super().__init__()
        self.parts = nn.ModuleDict({"1st conv": nn.Conv2d(3, 4, 3), "input": nn.ReLU(), "for-each": nn.Conv2d(4, 2, 1)})

    def forward(self, x):
        for part in self.parts.values():
            x = part(x)
        return x


def test_names_are_made_legal(tmp_path):
    imported = import_model(Odd().eval(), example_inputs=torch.randn(2, 3, 8, 8))
    text = imported.text(format="yaml")
    assert "1st conv" not in text and "for-each" not in text
    assert imported.verify() <= TOLERANCE
    (tmp_path / "odd.yaml").write_text(text)
    assert list(dagnet.compile(tmp_path / "odd.yaml").state_dict()) == list(imported.state_dict())


# -- unsupported ops -------------------------------------------------------------------------------------
class Spectral(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.mystery = Unsupported("onnx::NonMaxSuppression", "node nms_7", [(3, 8, 8)])

    def forward(self, x):
        x = self.mystery(self.conv(x))
        return torch.cumsum(x, dim=3)


def test_unsupported_ops_become_opaque_nodes_and_one_error_lists_them(tmp_path):
    imported = import_model(Spectral().eval(), example_inputs=torch.randn(2, 3, 8, 8))
    found = {op.args["source_op"]: op.args["location"] for op in imported.unsupported}
    assert found == {"onnx::NonMaxSuppression": "node nms_7", "Tensor.cumsum": "cumsum"} or \
        set(found) == {"onnx::NonMaxSuppression", "torch.cumsum"}
    text = imported.text()
    assert text.count("unsupported(") == 2
    with pytest.raises(ImportModelError, match=r"2 op\(s\) have no dagnet equivalent.*NonMaxSuppression"):
        imported.verify()
    spec = imported.save(tmp_path / "spectral.dag")
    dagnet.load(spec)                                   # it checks: shapes flow through the opaque nodes
    dot = tmp_path / "spectral.dot"
    result = subprocess.run([sys.executable, "-m", "dagnet", "render", str(spec), "-o", str(dot)],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert "unsupported" in dot.read_text()


def test_the_unsupported_op_checks_and_renders_but_refuses_to_run(tmp_path):
    spec = tmp_path / "opaque.dag"
    spec.write_text('model opaque\n\ninput x[3, 8]\n\n'
                    'y = x -> unsupported("torch.fft_rfft", location="body.fft", shape=[3, 5])\n\noutput y\n')
    ir = dagnet.load(spec)
    assert ir.node("y").shape == (3, 5)
    model = dagnet.compile(spec)
    with pytest.raises(NotImplementedError, match=r"torch.fft_rfft at body.fft has no dagnet equivalent"):
        model(x=torch.randn(2, 3, 8))


def test_a_wrong_weight_is_a_mismatch_error():
    imported = import_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(),
                            example_inputs=torch.randn(2, 3, 8, 8))
    key = next(k for k in imported.weights if k.endswith("weight"))
    imported.weights[key] = imported.weights[key] + 1
    with pytest.raises(ImportModelError, match="outputs differ"):
        imported.verify()


# -- the command -----------------------------------------------------------------------------------------
def run_cli(capsys, *args) -> tuple[int, str, str]:
    from dagnet.cli import main
    code = main(["import", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_imports_verifies_and_writes_safetensors_with_the_spec(tmp_path, capsys):
    torchvision()
    out = tmp_path / "r18.safetensors"
    code, stdout, stderr = run_cli(capsys, "torchvision.models:resnet18", "-o", str(out), "--kwargs",
                                   '{"num_classes": 10}', "--input", "image=3,64,64")
    assert code == 0, stderr
    assert re.search(r"wrote .*: 15 statements for 69 ops", stdout)
    assert "verified: max abs diff 0 " in stdout
    from dagnet.export import load_safetensors
    model = load_safetensors(out).eval()
    source = torchvision().models.resnet18(num_classes=10).eval()
    assert model(image=torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in source.parameters())


def test_cli_errors_are_one_line(tmp_path, capsys):
    torchvision()
    for args, message in ((("torchvision.models:no_such_model", "-o", "x.dag"), "cannot import"),
                          (("not a source", "-o", "x.dag"), "package.module:callable"),
                          (("torchvision.models:alexnet", "-o", str(tmp_path / "x.txt")), "use .dag, .yaml or"),
                          (("torchvision.models:alexnet", "-o", "x.dag", "--input", "image=3,x"), "NAME=C,H,W"),
                          (("torchvision.models:alexnet", "-o", "x.dag", "--kwargs", "{"), "not valid JSON")):
        code, _, stderr = run_cli(capsys, *args)
        assert code == 1
        assert stderr.count("\n") == 1 and stderr.startswith("dagnet import: error: ") and message in stderr, stderr


def test_cli_lists_every_unsupported_op_in_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    code, _, stderr = run_cli(capsys, "test_import_module:Spectral", "-o", str(tmp_path / "s.dag"),
                                   "--input", "x=3,8,8")
    assert code == 1 and (tmp_path / "s.dag").exists()
    assert stderr.count("\n") == 1 and "2 op(s) have no dagnet equivalent" in stderr


def test_an_onnx_file_imports_through_its_front_end_with_blocks(tmp_path, capsys):
    pytest.importorskip("onnx")
    source = torchvision().models.resnet18(num_classes=10).eval()
    path = tmp_path / "r18.onnx"
    torch.onnx.export(source, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"])
    code, stdout, stderr = run_cli(capsys, str(path), "-o", str(tmp_path / "r18.dag"))
    assert code == 0, stderr
    assert "verified: max abs diff" in stdout
    text = (tmp_path / "r18.dag").read_text()
    assert "input image[3, 32, 32]" in text and len(repeats(text)) == 4
    model = dagnet.compile(tmp_path / "r18.dag").eval()
    imported = import_model(str(path))
    model.load_state_dict(imported.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x), source(x), rtol=1e-4, atol=1e-4)   # BN folded by the exporter


def test_a_flat_graph_gets_its_repeats_back(tmp_path):
    """Without module paths (an ONNX file without scopes, a Caffe net), back-to-back repeated
    runs of ops are found and written as repeated blocks."""
    from dagnet.importer.capture import capture
    from dagnet.importer.fold import folded_spec
    from dagnet.importer.imported import Imported, _weights
    source = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[m for _ in range(5) for m in
                           (nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())], nn.Flatten()).eval()
    x = torch.randn(2, 3, 8, 8)
    captured = capture(randomise(source), (x,), "flat")
    for op in captured.ops:
        op.scope = ()
    spec, paths = folded_spec(captured)
    imported = Imported("flat", spec, _weights(captured, paths), captured, source, (x,), paths=paths)
    assert [n for _, n, _ in repeats(imported.text())] == ["5"]
    assert imported.statements() < len(captured.ops)
    assert imported.verify() <= TOLERANCE


def test_a_caffe_prototxt_imports_and_verifies(tmp_path, capsys):
    from test_import_caffe import LENET
    (tmp_path / "lenet.prototxt").write_text(LENET)
    code, stdout, stderr = run_cli(capsys, str(tmp_path / "lenet.prototxt"), "-o", str(tmp_path / "lenet.yaml"))
    assert code == 0, stderr
    assert "verified: max abs diff 0 " in stdout
    assert "dagnet: 1" in (tmp_path / "lenet.yaml").read_text()


class TwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.split = Unsupported("caffe:Python", "net.prototxt:12", [(2, 4, 4), (1, 4, 4)])
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        a, b = self.split(x)
        return self.conv(a) + b


def test_an_unsupported_leaf_with_two_outputs_is_two_opaque_nodes(tmp_path):
    imported = import_model(TwoOut().eval(), example_inputs=torch.randn(2, 3, 4, 4))
    assert [op.shape for op in imported.unsupported] == [(2, 4, 4), (1, 4, 4)]
    assert {op.args["location"] for op in imported.unsupported} == {"net.prototxt:12"}
    dagnet.load(imported.save(tmp_path / "two.dag"))           # checks: every shape is known


def test_gpt2_its_transposed_conv1d_weights_and_causal_mask():
    """GPT-2 keeps its projections as Conv1D ([in, out] weights, converted for dagnet's linear), masks
    attention causally (written `is_causal=true`) and returns a key/value cache (left out)."""
    torchvision()
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    source = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    imported = import_model(source, example_inputs=(ids,), name="gpt2")
    text = imported.text()
    assert "is_causal=true" in text and [n for _, n, _ in repeats(text)] == ["2"]
    conv1d = source.h[0].attn.c_attn
    ours = next(v for k, v in imported.state_dict().items() if v.shape == conv1d.weight.t().shape)
    assert torch.equal(ours, conv1d.weight.t())
    assert imported.verify() <= TOLERANCE
