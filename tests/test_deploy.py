"""`dagnet export RUN -o F`: the run's best model, taking raw inputs when it trained on standardised ones,
and outputting its predicted labels next to the spec's outputs."""

import numpy as np
import pytest
import torch

from dagnet.cli import main
from dagnet.data import Standardized, load_dataset
from dagnet.train.from_spec import restore
from tests.conftest import SPECS

SPEC = str(SPECS / "digits_cnn.yaml")
FAST = ["--set", "width=8", "-o", "batch_size=128", "-o", "schedule.name=none"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("deploy") / "run"
    assert main(["train", SPEC, "--epochs", "1", "--out", str(run), "-o", "standardize=true", *FAST]) == 0
    return run


@pytest.fixture(scope="module")
def expected(run):
    """Raw digits, and the trained module's outputs on the same digits standardised as in training."""
    _, model, _, _, state = restore(run)
    assert set(state["data_stats"]) == {"image"}
    digits = load_dataset("digits")
    raw = torch.stack([digits[i]["image"] for i in range(6)])
    standardized = Standardized(digits, state["data_stats"])
    with torch.no_grad():
        logits = model(image=torch.stack([standardized[i]["image"] for i in range(6)]))["head"]
    assert not torch.allclose(logits, model(image=raw)["head"])      # the standardisation matters
    return raw, logits


def test_onnx_takes_raw_inputs(tmp_path, run, expected, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", str(run), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "standardizes image as in training" in capsys.readouterr().out
    raw, logits = expected
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [o.name for o in session.get_outputs()] == ["head", "labels"]
    got, labels = session.run(None, {"image": raw.numpy()})
    np.testing.assert_allclose(got, logits.numpy(), atol=1e-5)
    np.testing.assert_array_equal(labels, logits.argmax(1).numpy())


def test_every_other_format_takes_raw_inputs(tmp_path, run, expected):
    from dagnet.export import load_safetensors
    raw, logits = expected
    for suffix in (".pt2", ".pt", ".safetensors"):
        assert main(["export", str(run), "-o", str(tmp_path / f"m{suffix}")]) == 0
    loaded = {".pt2": torch.export.load(str(tmp_path / "m.pt2")).module(),
              ".pt": torch.jit.load(str(tmp_path / "m.pt")),
              ".safetensors": load_safetensors(tmp_path / "m.safetensors").eval()}
    with torch.no_grad():
        for suffix, model in loaded.items():
            got = model(image=raw)
            torch.testing.assert_close(got["head"], logits, msg=suffix)
            torch.testing.assert_close(got["labels"], logits.argmax(1), msg=suffix)


def test_safetensors_keep_the_spec_names_and_the_statistics(tmp_path, run):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    assert main(["export", str(run), "-o", str(tmp_path / "m.safetensors")]) == 0
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert "features.0.weight" in f.keys() and "dagnet.standardize" in f.metadata()
    # the file is also a --weights file, whose statistics come with it
    assert main(["compile", SPEC, "--set", "width=8", "-o", str(tmp_path / "again.pt"),
                 "--weights", str(tmp_path / "m.safetensors")]) == 0


def test_compile_with_a_run_checkpoint_bakes_in_its_statistics(tmp_path, run, expected, capsys):
    assert main(["compile", SPEC, "--set", "width=8", "-o", str(tmp_path / "m.pt"), "--weights",
                 str(run / "best.pt")]) == 0
    assert "standardizes image" in capsys.readouterr().out
    raw, logits = expected
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(raw), logits)


def test_a_run_without_standardisation_exports_the_plain_model(tmp_path, capsys):
    run = tmp_path / "plain"
    assert main(["train", SPEC, "--epochs", "1", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "-o", str(tmp_path / "m.pt")]) == 0
    assert "standardizes" not in capsys.readouterr().out
    _, model, _, _, _ = restore(run)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x)["head"], model(image=x)["head"])


def test_export_errors_are_one_line(tmp_path, run, capsys):
    assert main(["export", str(run), "-o", str(tmp_path / "m.py")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dagnet export: error: cannot export") and "\n" not in err
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "m.pt")]) == 1
    assert "is not a dagnet run directory" in capsys.readouterr().err
