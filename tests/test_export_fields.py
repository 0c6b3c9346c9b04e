"""Structured nodes and recurrent layers in every deployment format. A field runs as its
portable twin (dagnet.fields.portable) in .py, .pt, .pt2 and .onnx files, which keep
batch, length and mask dynamic and give the compiled model's outputs, decoding too."""

import copy
import subprocess
import sys

import pytest
import torch

import dagnet
from dagnet import ops
from dagnet.emit import standalone_source
from dagnet.export import export
from tests.conftest import SPECS, import_file

FIELD_SPECS = ["cnf_tagger", "hcrf_gestures", "ldcrf_gestures"]
SIZES = [(3, 7), (5, 30), (1, 1)]  # (batch, length): none is the example's (2, 64)


def ragged(B: int, T: int, generator) -> torch.Tensor:
    """A mask with right padding, a full row and a gap."""
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    lengths[0] = T
    mask = torch.arange(T) < lengths[:, None]
    mask[-1, T // 2] = T == 1  # a gap (none in a sequence of one)
    return mask


def inputs(B, T, features=8, seed=0):
    g = torch.Generator().manual_seed(seed + B * T)
    return torch.randn(B, T, features, generator=g), ragged(B, T, g)


class Deployed(torch.nn.Module):
    """A compiled field spec with its field's decode as a second output."""

    def __init__(self, model):
        super().__init__()
        ir = model.dagnet_ir
        node = next(n for n in ir.order() if n.op != "input" and ops.get(n.op).family == "field")
        self.model = model
        self.potentials = dagnet.compile(ir, outputs=[node.inputs[0]])
        self.potentials.load_state_dict(model.state_dict(), strict=False)
        self.field = getattr(model, node.name)
        self.dagnet_ir = ir
        self.eval()

    def forward(self, frames, mask):
        labels = self.field.decode(self.potentials(frames=frames, mask=mask), mask)[0]
        return {"value": self.model(frames=frames, mask=mask), "decode": labels}


@pytest.fixture(scope="module", params=FIELD_SPECS)
def deployed(request, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    return Deployed(dagnet.compile(SPECS / f"{request.param}.yaml").eval()), folder


def check(got: dict, expected: dict):
    torch.testing.assert_close(got["value"], expected["value"], atol=1e-5, rtol=1e-5)
    assert torch.equal(got["decode"], expected["decode"])


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_every_format_equals_the_compiled_model(deployed, suffix):
    model, folder = deployed
    path = folder / f"m{suffix}"
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    export(model, path)
    if suffix == ".pt":
        run = torch.jit.load(str(path))
    elif suffix == ".pt2":
        run = torch.export.load(str(path)).module()
    else:
        session = ort.InferenceSession(str(path))

        def run(frames, mask):
            value, labels = session.run(None, {"frames": frames.numpy(), "mask": mask.numpy()})
            return {"value": torch.from_numpy(value), "decode": torch.from_numpy(labels)}
    for B, T in SIZES:
        frames, mask = inputs(B, T)
        with torch.no_grad():
            check(run(frames=frames, mask=mask), model(frames=frames, mask=mask))


STANDALONE = """
import importlib.util, sys
import torch
sys.modules["dagnet"] = None  # the file must need torch alone
spec = importlib.util.spec_from_file_location("standalone_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
args = torch.load(sys.argv[2])
model = getattr(module, args["class"])().eval()
model.load_state_dict(args["state"])
with torch.no_grad():
    out = [{"value": model(frames, mask), "decode": getattr(model, args["field"]).decode(potentials, mask)[0]}
           for frames, mask, potentials in args["inputs"]]
torch.save(out, sys.argv[3])
"""


def test_the_standalone_file_equals_the_compiled_model(deployed):
    """Run in a fresh, isolated interpreter (python -I) where dagnet cannot be imported."""
    model, folder = deployed
    compiled = model.model
    (folder / "model.py").write_text(standalone_source(compiled))
    cases = [inputs(B, T) for B, T in SIZES]
    with torch.no_grad():
        args = {"class": type(compiled).__name__, "state": compiled.state_dict(),
                "field": next(n for n, m in compiled.named_children() if m is model.field),
                "inputs": [(f, m, model.potentials(frames=f, mask=m)) for f, m in cases]}
        expected = [model(frames=f, mask=m) for f, m in cases]
    torch.save(args, folder / "args.pt")
    subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(folder / "model.py"), str(folder / "args.pt"),
                    str(folder / "out.pt")], check=True, timeout=300)
    for got, want in zip(torch.load(folder / "out.pt"), expected):
        check(got, want)


def test_the_cli_writes_a_crf_to_torchscript(tmp_path, capsys):
    from dagnet.cli import main
    target = tmp_path / "model.pt"
    assert main(["compile", str(SPECS / "cnf_tagger.yaml"), "-o", str(target)]) == 0
    frames, mask = inputs(2, 5)
    torch.manual_seed(0)
    loaded = torch.jit.load(str(target))
    assert loaded(frames, mask).shape == (2, 5, 4)


def test_the_export_of_a_field_without_a_twin_is_one_line(tmp_path):
    from dagnet.export import ExportError
    from dagnet.fields.protocol import Field

    class Lonely(Field):
        pass

    model = dagnet.compile(SPECS / "mlp.yaml").eval()
    model.add_module("lonely", Lonely())
    for suffix in (".pt", ".pt2", ".onnx"):
        with pytest.raises(ExportError, match="Lonely has no portable twin") as info:
            export(model, tmp_path / f"m{suffix}")
        assert "\n" not in str(info.value) and not (tmp_path / f"m{suffix}").exists()
    with pytest.raises(ExportError, match="Lonely"):
        standalone_source(model)


def test_the_export_of_a_tree_crf_without_a_fixed_tree_is_one_line(tmp_path):
    """A twin that covers some settings of its field refuses the others before writing."""
    from dagnet.export import ExportError
    from dagnet.fields.tree import TreeCRF

    model = dagnet.compile(SPECS / "mlp.yaml").eval()
    model.add_module("tree", TreeCRF(3))          # its tree comes with every call
    for suffix in (".pt", ".pt2", ".onnx"):
        with pytest.raises(ExportError, match="TreeCRF cannot be deployed .* fixed tree") as info:
            export(model, tmp_path / f"m{suffix}")
        assert "\n" not in str(info.value) and not (tmp_path / f"m{suffix}").exists()
    with pytest.raises(ExportError, match="fixed tree"):
        standalone_source(model)


# -- recurrent layers and attention: TorchScript, torch.export, ONNX, standalone .py ----------------

RECURRENT = """
dagnet: 1
name: recurrent
inputs:
  x: {shape: [T, 6]}
nodes:
  lstm: {op: lstm, in: x, hidden_size: 5, num_layers: 2, bidirectional: true}
  gru: {op: gru, in: lstm, hidden_size: 4, bidirectional: true}
  attended: {op: multihead_attention, in: [gru, gru, gru], num_heads: 2}
  out: {op: linear, in: attended, out_features: 3}
outputs: [out]
"""


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory):
    spec = tmp_path_factory.mktemp("recurrent") / "recurrent.yaml"
    spec.write_text(RECURRENT)
    torch.manual_seed(0)
    return dagnet.compile(spec).eval()


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_recurrent_and_attention_export(tmp_path, recurrent, suffix):
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    export(recurrent, tmp_path / f"m{suffix}")
    for B, T in SIZES:
        x = torch.randn(B, T, 6)
        with torch.no_grad():
            expected = recurrent(x=x)
            if suffix == ".pt":
                got = torch.jit.load(str(tmp_path / "m.pt"))(x)
            elif suffix == ".pt2":
                got = torch.export.load(str(tmp_path / "m.pt2")).module()(x=x)
            else:
                session = ort.InferenceSession(str(tmp_path / "m.onnx"))
                got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_recurrent_scan_equals_fused(recurrent):
    x = torch.randn(3, 13, 6, dtype=torch.float64)
    for layer in (recurrent.lstm, recurrent.gru):
        layer = copy.deepcopy(layer).double()
        torch.testing.assert_close(layer.scanned(x), layer.fused(x), atol=1e-12, rtol=1e-12)
        x = layer.fused(x)


def test_recurrent_and_attention_standalone_file(tmp_path, recurrent):
    from dagnet.emit import standalone_source
    path = tmp_path / "recurrent_model.py"
    path.write_text(standalone_source(recurrent))
    standalone = getattr(import_file(path, "recurrent_model"), type(recurrent).__name__)().eval()
    standalone.load_state_dict(recurrent.state_dict())
    x = torch.randn(3, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), recurrent(x=x))
