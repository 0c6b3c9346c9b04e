"""How a run behaves: threads, metrics.csv and TensorBoard, loggers, accumulation, keep_best,
--new-version, devices, and what fit takes (tuple datasets, DataLoaders, tensor-returning models)."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dagnet.cli import main
from dagnet.train import build_objective, fit, infer_task, load_checkpoint
from dagnet.train import loggers as loggers_module
from dagnet.train import threads as threads_module
from dagnet.train.threads import auto_threads, step_flops
from tests.conftest import ROOT, SPECS

LOSSES = [{"op": "cross_entropy", "output": "logits", "target": "label"}]
QUIET = {"loggers": [], "lr": 0.05, "optimizer": "sgd", "momentum": 0.0}


def tuples(n=64, dim=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long() * (classes > 2))


def linear(dim=6, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, classes))     # forward(input) -> tensor


def train(tmp_path, name="run", data=None, val=None, model=None, **config):
    model = model or linear()
    config = {"epochs": 3, "batch_size": 16, **QUIET, **config}
    summary = fit(model, build_objective(LOSSES, model), data or tuples(), val, config, tmp_path / name,
                  infer_task(LOSSES), progress=False)
    return model, summary


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- threads ---------------------------------------------------------------------

def test_auto_threads_rule():
    small, large = threads_module.AUTO_ONE_THREAD_FLOPS / 10, threads_module.AUTO_ONE_THREAD_FLOPS * 10
    assert auto_threads(small, processes=1, cores=8) == 1
    assert auto_threads(large, processes=1, cores=8) == 8
    assert auto_threads(large, processes=2, cores=8) == 4
    assert auto_threads(large, processes=4, cores=2) == 1


def test_step_flops_counts_forward_and_backward():
    model = nn.Linear(10, 5)
    # 2 * 10 * 5 per example forward; backward about twice that; batch 8
    assert step_flops(model, lambda: model(torch.randn(1, 10)), 8) == 3 * 100 * 8
    assert model.training      # left as it was


def test_step_flops_of_a_model_with_a_parameter_layer():
    """The `parameter` op returns a view of its weight (expanded over the batch); under no_grad the
    FLOP counter's module tracker cannot hook such an output's gradient unless nothing requires grad."""
    from dagnet.ops.functional import LearnedTensor
    model = nn.Sequential()
    model.head, model.weights = nn.Linear(10, 4), LearnedTensor([4, 5], init="normal")

    def run():
        x = torch.randn(1, 10)
        return model.head(x)[:, None] @ model.weights(x)

    assert step_flops(model, run, 2) == 3 * (2 * 10 * 4 + 2 * 4 * 5) * 2
    assert all(p.requires_grad for p in model.parameters())    # left as they were


class ThreadSpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer, self.seen = nn.Linear(6, 3), set()

    def forward(self, input):
        if self.training:           # not the forward pass that counts FLOPs
            self.seen.add(torch.get_num_threads())
        return self.layer(input)


@pytest.mark.parametrize("setting, threshold, expected", [
    ("auto", None, 1), ("auto", 0.0, os.cpu_count()), (2, None, 2)])
def test_threads_setting_applies_during_the_run_only(tmp_path, monkeypatch, setting, threshold, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if threshold is not None:
        monkeypatch.setattr(threads_module, "AUTO_ONE_THREAD_FLOPS", threshold)
    before = torch.get_num_threads()
    model, _ = train(tmp_path, model=ThreadSpy(), epochs=1, threads=setting)
    assert model.seen == {expected} and torch.get_num_threads() == before


# -- metrics.csv, TensorBoard, loggers ------------------------------------------------

def test_metrics_csv_matches_the_log(tmp_path):
    train(tmp_path, val=tuples(32, seed=1))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    expected = records(tmp_path / "run")
    assert list(rows[0])[:4] == ["epoch", "step", "train_loss", "val_loss"] and "val_accuracy" in rows[0]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [int(r["step"]) for r in rows] == [4, 8, 12]
    for row, record in zip(rows, expected):
        assert float(row["val_loss"]) == pytest.approx(record["val_loss"])


def test_metrics_csv_after_resume_holds_each_epoch_once(tmp_path):
    train(tmp_path, epochs=2)
    model = linear()
    fit(model, build_objective(LOSSES, model), tuples(), None, {"epochs": 4, "batch_size": 16, **QUIET},
        tmp_path / "run", resume=True, progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_tensorboard_events_are_written_and_readable(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    model = linear()
    fit(model, build_objective(LOSSES, model), tuples(), tuples(32, seed=1), {"epochs": 3, "batch_size": 16},
        tmp_path / "run", infer_task(LOSSES))
    assert "TensorBoard: tensorboard --logdir" in capsys.readouterr().out
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert {"train/loss", "val/loss", "val/accuracy", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8, 12]
    expected = [r["val_accuracy"] for r in records(tmp_path / "run")]
    assert [e.value for e in events.Scalars("val/accuracy")] == pytest.approx(expected)


class ListLogger:
    def __init__(self, run_dir=None, resume_step=0):
        self.params, self.metrics, self.closed = None, [], False

    def log_params(self, params):
        self.params = params

    def log_metrics(self, metrics, step):
        self.metrics.append((step, metrics["train_loss"]))

    def close(self):
        self.closed = True


def test_a_logger_passed_to_fit_or_registered_by_name(tmp_path, monkeypatch):
    mine = ListLogger()
    model = linear()
    fit(model, build_objective(LOSSES, model), tuples(), None, {"epochs": 2, "batch_size": 16, **QUIET},
        tmp_path / "a", loggers=[mine], progress=False)
    assert mine.params["epochs"] == 2 and [s for s, _ in mine.metrics] == [4, 8] and mine.closed
    assert isinstance(mine, loggers_module.Logger)

    made = []
    monkeypatch.setitem(loggers_module._REGISTRY, "listing", lambda run, step: made.append(ListLogger()) or made[-1])
    train(tmp_path, "b", epochs=2, loggers=["listing"])
    assert len(made) == 1 and len(made[0].metrics) == 2
    with pytest.raises(ValueError, match="no logger 'mlfow'.*register_logger"):
        train(tmp_path, "c", loggers=["mlfow"])
    assert not (tmp_path / "c").exists()       # refused before anything was written


# -- accumulation, keep_best ------------------------------------------------------

@pytest.mark.parametrize("n, batch, accumulate", [(30, 8, 4), (40, 10, 2)])
def test_accumulated_update_equals_one_big_batch(tmp_path, n, batch, accumulate):
    """SGD without momentum: equal weights after an epoch mean equal gradients at every update
    (the last group of 30 = 8 + 8 + 8 + 6 is weighted by its examples, not its batches)."""
    data = tuples(n)
    small, _ = train(tmp_path, "small", data=data, epochs=1, batch_size=batch, accumulate=accumulate)
    big, _ = train(tmp_path, "big", data=data, epochs=1, batch_size=batch * accumulate)
    for a, b in zip(small.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(small[0].weight, linear()[0].weight)     # it trained


def top_k_files(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in run.glob("epoch=*.pt")}


def test_keep_best_keeps_the_k_best_and_survives_resume(tmp_path):
    run = tmp_path / "run"
    settings = {"batch_size": 16, **QUIET, "lr": 0.5, "keep_best": 2, "early_stopping": {"metric": "val_loss"}}
    model = linear()
    args = (build_objective(LOSSES, model), tuples(), tuples(32, seed=1))
    fit(model, *args, {"epochs": 3, **settings}, run, progress=False)
    fit(model, *args, {"epochs": 6, **settings}, run, resume=True, progress=False)
    log = records(run)
    best = sorted(log, key=lambda r: (r["val_loss"], r["epoch"]))[:2]
    files = top_k_files(run)
    assert sorted(files) == sorted(f"epoch={r['epoch']:03d}-val_loss={r['val_loss']:.4g}.pt" for r in best)
    best_name = f"epoch={best[0]['epoch']:03d}-val_loss={best[0]['val_loss']:.4g}.pt"
    assert files[best_name] == (run / "best.pt").stat().st_ino
    assert load_checkpoint(run / best_name)["progress"]["epoch"] == best[0]["epoch"]


# -- the command line: --new-version, devices -------------------------------------

SPEC = str(SPECS / "digits_cnn.yaml")
FAST = ["--set", "width=4", "--epochs", "1", "-o", "batch_size=256", "-o", "loggers=[]"]


def test_new_version_eval_predict_device(tmp_path, capsys):
    parent = tmp_path / "runs"
    for n in range(2):
        assert main(["train", SPEC, *FAST, "--out", str(parent), "--new-version"]) == 0
        assert f"run in {parent / f'version_{n}'}" in capsys.readouterr().out
    assert sorted(p.name for p in parent.iterdir()) == ["version_0", "version_1"]
    run = parent / "version_0"
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    assert "accuracy:" in capsys.readouterr().out
    assert main(["predict", str(run), "--data", "digits", "--out", str(tmp_path / "p"), "--device", "cpu"]) == 0
    assert (tmp_path / "p" / "predictions.csv").exists()

    if torch.backends.mps.is_available():
        return
    for command in (["eval", str(run)], ["predict", str(run), "--data", "digits", "--out", str(tmp_path / "q")],
                    ["train", SPEC, *FAST, "--out", str(tmp_path / "r")]):
        capsys.readouterr()
        assert main([*command, "--device", "mps"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "mps asked for, but this machine has no Apple-silicon GPU" in err
    assert main(["eval", str(run), "--device", "tpu"]) == 1
    assert "must be auto, cpu, cuda, cuda:N or mps, got 'tpu'" in capsys.readouterr().err


# -- what fit takes -----------------------------------------------------------------

def test_fit_takes_tuple_datasets_dataloaders_and_tensor_outputs(tmp_path):
    _, summary = train(tmp_path, "tuples", val=tuples(32, seed=1), epochs=4)
    assert summary["status"] == "completed" and summary["last"]["val_accuracy"] > 0.5

    loader = DataLoader(tuples(), batch_size=8, shuffle=True)      # its batch size; fit's order
    train(tmp_path, "loader", data=loader, epochs=1)
    assert records(tmp_path / "loader")[0]["step"] == 8

    with pytest.raises(ValueError, match="example 0 has 3 fields, but the model and losses read 2: input, label"):
        train(tmp_path, "bad", data=TensorDataset(torch.randn(8, 6), torch.zeros(8).long(), torch.zeros(8)))


def test_docs_training_examples_run_as_written(tmp_path, monkeypatch):
    """Every ```python block of docs/training.md, run in order in one namespace, from a fresh folder."""
    text = (ROOT / "docs" / "training.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    (tmp_path / "specs").symlink_to(SPECS)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), namespace)
