"""Exported models give the compiled model's outputs, at sizes other than the example's."""

from pathlib import Path

import numpy as np
import pytest
import torch

import dagnet
from dagnet.export import export
from tests.conftest import SPECS


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return dagnet.compile(SPECS / "unet.yaml", overrides={"width": 4}).eval()


def test_torchscript(tmp_path, unet):
    export(unet, tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), unet(image=x))


def test_torch_export_keeps_symbolic_sizes_dynamic(tmp_path, unet):
    export(unet, tmp_path / "m.pt2")
    program = torch.export.load(str(tmp_path / "m.pt2"))
    x = torch.randn(1, 3, 72, 48)               # batch and size differ from the example's
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image=x), unet(image=x))


def test_onnx(tmp_path, unet):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    export(unet, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = torch.randn(2, 3, 48, 40)
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, unet(image=x).numpy(), atol=1e-5)


def test_unknown_suffix(tmp_path, unet):
    with pytest.raises(ValueError, match="use one of .pt, .pt2, .onnx"):
        export(unet, tmp_path / "m.bin")


def test_safetensors_holds_spec_and_weights(tmp_path):
    pytest.importorskip("safetensors")
    from dagnet.export import load_safetensors
    torch.manual_seed(1)
    model = dagnet.compile(SPECS / "resnet18.yaml", overrides={"classes": 7}).eval()   # imports a block file
    export(model, tmp_path / "m.safetensors")
    loaded = load_safetensors(tmp_path / "m.safetensors").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image=x), model(image=x))
    assert loaded(image=x).shape == (1, 7)


def test_a_refusal_writes_nothing(tmp_path, capsys):
    from dagnet.cli import main
    for target in ("m.tflite", "sub/m.pt2"):     # a format dagnet does not write; a folder that is not there
        assert main(["compile", str(SPECS / "cnf_tagger.yaml"), "-o", str(tmp_path / target)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("dagnet compile: error: ") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_export_failing_midway_leaves_no_file(tmp_path, unet, monkeypatch):
    def crash(module, path, _extra_files=None):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("disk full")
    monkeypatch.setattr(torch.jit, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export(unet, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []
