"""`dagnet train --weights FILE`: fine-tuning starts from trained (or imported) weights, tensor by
name and shape; a new or resized head starts fresh; a file of another model is a one-line error."""

import json

import torch

import dagnet
from dagnet.cli import main
from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.from_spec import start_from
from tests.conftest import SPECS

SPEC = str(SPECS / "digits_cnn.yaml")
FAST = ["--set", "width=8", "-o", "batch_size=128", "-o", "schedule.name=none"]


def _first_epoch(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


def test_fine_tuning_starts_from_the_weights_and_resized_heads_start_fresh(tmp_path, capsys):
    base, fresh, tuned = tmp_path / "base", tmp_path / "fresh", tmp_path / "tuned"
    assert main(["train", SPEC, "--epochs", "3", "--out", str(base), *FAST]) == 0
    assert main(["train", SPEC, "--epochs", "1", "--out", str(fresh), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", SPEC, "--epochs", "1", "--out", str(tuned), "--weights", str(base / "best.pt"), *FAST]) == 0
    assert "started from" in capsys.readouterr().out
    assert _first_epoch(tuned)["train_loss"] < 0.5 * _first_epoch(fresh)["train_loss"]

    trained = load_checkpoint(base / "best.pt")["model"]
    five = dagnet.compile(SPEC, overrides={"width": 8, "classes": 5})
    before = {k: v.clone() for k, v in five.state_dict().items()}
    line = start_from(five, base / "best.pt")
    resized = {k for k, v in five.state_dict().items() if k in trained and v.shape != trained[k].shape}
    assert resized and all(k.startswith("head.2.") for k in resized) and "resized: head.2." in line
    for k, v in five.state_dict().items():
        assert torch.equal(v, before[k] if k in resized else trained[k]), k


def test_weights_of_another_model_are_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, other)
    assert main(["train", SPEC, "--epochs", "1", "--out", str(tmp_path / "r"), "--weights", str(other), *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of its 1 tensors fits the model" in err[0]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
