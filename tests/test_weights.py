"""`--weights`: dagnet checkpoints, safetensors (dagnet's and plain) and saved state dicts, read safely;
a file that does not fit names the file and the first key that differs, with a hint."""

import pytest
import torch

import dagnet
from dagnet.cli import main
from dagnet.train import CheckpointError, save_checkpoint
from dagnet.weights import load_weights_file, read_weights
from tests.conftest import SPECS

SPEC = SPECS / "digits_cnn.yaml"


def _model(seed=0, width=4):
    torch.manual_seed(seed)
    return dagnet.compile(SPEC, overrides={"width": width}).eval()


@pytest.fixture
def trained():
    return _model(seed=1)


def _same(model, other):
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x), other(image=x))


def _save(kind, path, state):
    if kind == "state_dict":
        torch.save(state, path)
    elif kind == "nested":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif kind == "checkpoint":
        save_checkpoint(path, {"model": state, "data_stats": {}})
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))


@pytest.mark.parametrize("kind, suffix", [("state_dict", ".pth"), ("nested", ".pt"), ("checkpoint", ".pt"),
                                          ("safetensors", ".safetensors")])
def test_every_format_loads(tmp_path, trained, kind, suffix):
    if kind == "safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"w{suffix}"
    _save(kind, path, trained.state_dict())
    model = _model()
    load_weights_file(model, path)
    _same(model, trained)


def test_dagnets_own_safetensors_load_as_weights(tmp_path, trained):
    pytest.importorskip("safetensors")
    from dagnet.export import export
    export(trained, tmp_path / "m.safetensors")
    model = _model()
    load_weights_file(model, tmp_path / "m.safetensors")
    _same(model, trained)


def test_pickled_objects_are_refused_without_running(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "object.pt")   # a module object, not a state dict
    with pytest.raises(CheckpointError, match="holds Python objects.*nothing in it was run"):
        read_weights(tmp_path / "object.pt")
    torch.save({"epoch": 3}, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="none.pt holds no state dict"):
        read_weights(tmp_path / "none.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    pytest.importorskip("safetensors")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a safetensors file"):
        read_weights(tmp_path / "bad.safetensors")


def _error(tmp_path, state) -> str:
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as info:
        load_weights_file(_model(), tmp_path / "w.pt")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "w.pt") in message
    return message


def test_missing_and_unexpected_keys(tmp_path, trained):
    state = trained.state_dict()
    missing = {k: v for k, v in state.items() if k != "head.2.bias"}
    assert "the model's `head.2.bias` is missing from it" in _error(tmp_path, missing)
    assert "holds `extra.weight`, which the model does not have" in _error(tmp_path, state | {"extra.weight": state["head.2.bias"]})


def test_shape_mismatch_names_both_shapes(tmp_path):
    message = _error(tmp_path, _model(width=8).state_dict())
    assert "`features.0.weight` has shape (8, 1, 3, 3) in the file but (4, 1, 3, 3) in the model" in message
    assert "--set" in message


def test_hints_for_torchvision_and_ddp_names(tmp_path, trained):
    torchvision_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3),
                        "fc.weight": torch.zeros(1000, 512)}
    message = _error(tmp_path, torchvision_like)
    assert "looks like a torchvision state dict" in message and "`conv1.weight` -> `features.0.weight`" in message
    ddp = {f"module.{k}": v for k, v in trained.state_dict().items()}
    assert "`module.` prefix" in _error(tmp_path, ddp)


def test_compile_weights_error_is_one_line(tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.pt")
    args = ["compile", str(SPEC), "--set", "width=4", "-o", str(tmp_path / "m.pt"), "--weights", str(tmp_path / "w.pt")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dagnet compile: error: ") and "\n" not in err and "w.pt does not fit" in err


def test_malformed_metadata_json_is_one_line_naming_the_entry(tmp_path, capsys):
    from safetensors.torch import save_file
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"dagnet.standardize": "{not json"})
    assert main(["compile", str(SPECS / "mlp.yaml"), "-o", str(tmp_path / "m.onnx"), "--weights", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metadata `dagnet.standardize` is not valid JSON" in err


@pytest.mark.parametrize("kind", ["state_dict", "safetensors", "checkpoint"])
def test_compile_takes_weights_from_a_file(tmp_path, trained, kind):
    path = tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pt")
    _save(kind, path, trained.state_dict())
    _same(trained, dagnet.compile(SPEC, overrides={"width": 4}, weights=path).eval())


def test_compile_takes_a_state_dict_and_names_a_misfit(trained):
    _same(trained, dagnet.compile(SPEC, overrides={"width": 4}, weights=trained.state_dict()).eval())
    with pytest.raises(CheckpointError, match="state dict given.*shape"):
        dagnet.compile(SPEC, overrides={"width": 8}, weights=trained.state_dict())
