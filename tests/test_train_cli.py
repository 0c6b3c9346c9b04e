"""`dagnet train`, `eval` and `predict` from the command line on a real spec and real data."""

import json

import torch

from dagnet.cli import main
from dagnet.train.checkpoint import load_checkpoint
from tests.conftest import SPECS

SPEC = str(SPECS / "digits_cnn.yaml")
FAST = ["--set", "width=8", "-o", "batch_size=128", "-o", "schedule.name=none"]


def test_train_eval_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", SPEC, "--epochs", "2", "--out", str(run), *FAST]) == 0
    assert "completed: 2 epochs" in capsys.readouterr().out
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "spec.yaml", "spec.json", "loss.png"):
        assert (run / name).exists(), name
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and lines[-1]["val_accuracy"] > 0.5

    assert main(["eval", str(run), "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "confusion" in out
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] > 0.5

    assert main(["predict", str(run), "--data", "digits", "--out", str(tmp_path / "pred")]) == 0
    rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1798 and rows[0].startswith("index,label,p_0")


def test_resume_from_the_cli_equals_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(["train", SPEC, "--epochs", "2", "--out", str(straight), *FAST]) == 0
    assert main(["train", SPEC, "--epochs", "1", "--out", str(resumed), *FAST]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "2"]) == 0
    a, b = load_checkpoint(straight / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_with_checkpointing_ends_where_plain_training_does(tmp_path):
    """--checkpoint blocks trades memory for a recomputation, nothing else: the same
    weights and batch-norm statistics after two epochs (dropout masks are replayed)."""
    plain, recomputed = tmp_path / "a", tmp_path / "b"
    assert main(["train", SPEC, "--epochs", "2", "--out", str(plain), *FAST]) == 0
    assert main(["train", SPEC, "--epochs", "2", "--out", str(recomputed), "--checkpoint", "blocks", *FAST]) == 0
    a, b = load_checkpoint(plain / "last.pt")["model"], load_checkpoint(recomputed / "last.pt")["model"]
    assert list(a) == list(b) and any("running_mean" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_data_that_does_not_fit_names_the_sample(tmp_path, capsys):
    assert main(["train", str(SPECS / "lenet.yaml"), "--data", "digits", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "no loss" in err                         # lenet.yaml declares no loss
    spec = tmp_path / "lenet.yaml"
    spec.write_text((SPECS / "lenet.yaml").read_text()
                    + "loss: {op: cross_entropy, output: logits, target: label}\n")
    assert main(["train", str(spec), "--data", "digits", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "sample 0: 'image' has shape (1, 8, 8), expected (1, 28, 28)" in err


def test_out_of_range_labels_name_the_sample(tmp_path, capsys):
    spec = tmp_path / "five.yaml"
    spec.write_text((SPECS / "digits_cnn.yaml").read_text().replace("classes: 10", "classes: 5"))
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "sample" in err and "'label' holds labels" in err and "outside 0..4" in err
