"""dagnet.train.fit end to end: run directory, exact resume, Ctrl-C, divergence, options, evaluate and predict."""

import csv
import json
import os
import signal

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torchcrf import CRF

from dagnet.fields.protocol import Field
from dagnet.data import ArrayDataset, AugmentConfig, Augmented, digits, gestures, shapes, split_dataset
from dagnet.train import (
    TrainConfig,
    TrainingDiverged,
    build_objective,
    evaluate,
    fit,
    infer_task,
    load_checkpoint,
    load_weights,
    predict,
)

LOSSES = [{"op": "cross_entropy", "output": "logits", "target": "label"}]
TASK = infer_task(LOSSES)


class DigitNet(nn.Module):
    """Small, with dropout so that resuming must restore the RNG too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 16, 10))

    def forward(self, image):
        return {"logits": self.head(nn.functional.max_pool2d(self.conv(image).relu(), 2))}


class Sabotaged(DigitNet):
    """Calls `action` on the n-th training forward pass."""

    def __init__(self, at_call, action):
        super().__init__()
        self.calls, self.at_call, self.action = 0, at_call, action

    def forward(self, image):
        outputs = super().forward(image)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                outputs = self.action(outputs)
        return outputs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Cores here are shared: OpenMP threads spin-waiting on each other make tiny models ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    full = digits()
    subset = ArrayDataset({k: v[:160] for k, v in full.columns.items()}, inputs=("image",))
    train, val = split_dataset(subset, 0.2, seed=0)
    return Augmented(train, AugmentConfig(translate=0.15), seed=0), val


CONFIG = {
    "epochs": 4, "batch_size": 24, "lr": 1e-2, "weight_decay": 1e-3, "seed": 3,
    "schedule": {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 0.5},
}


def train(run_dir, data, model=None, resume=False, **overrides):
    if model is None:
        torch.manual_seed(0)
        model = DigitNet()
    fit(model, build_objective(LOSSES, model), *data, CONFIG | overrides, run_dir, TASK, resume=resume,
        progress=False)
    return model


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_run_directory_layout(tmp_path, data, capsys):
    torch.manual_seed(0)
    model = DigitNet()
    summary = fit(model, build_objective(LOSSES, model), *data, CONFIG, tmp_path, TASK, data_stats={"image": {}})
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("events.out.tfevents."))
    assert names == ["best.pt", "config.yaml", "last.pt", "loss.png", "metrics.csv", "metrics.jsonl", "metrics.png",
                     "summary.json"]
    assert TrainConfig.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == TrainConfig.from_dict(CONFIG)
    records = _records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert set(records[0]) == {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr", "time"}
    assert [r["lr"] for r in records] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3])
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["progress"]["epoch"] == summary["best_epoch"]
    assert summary["best"]["val_loss"] == min(r["val_loss"] for r in records)
    assert best["data_stats"] == {"image": {}}
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    _assert_same_weights(model, _loaded(last["model"]))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "completed" and sum(map(sum, saved["confusion"])) == len(data[1])
    assert Image.open(tmp_path / "loss.png").size[0] > 100
    assert "epoch 4/4  train_loss" in capsys.readouterr().out  # plain lines when not on a terminal


def _loaded(state):
    model = DigitNet()
    model.load_state_dict(state)
    return model


def test_without_validation_best_follows_train_loss(tmp_path, data):
    torch.manual_seed(0)
    model = DigitNet()
    summary = fit(model, build_objective(LOSSES, model), data[0], None, CONFIG | {"epochs": 2}, tmp_path, TASK,
                  progress=False)
    assert set(_records(tmp_path)[0]) == {"epoch", "step", "train_loss", "lr", "time"}
    assert list(summary["best"]) == ["train_loss"]
    fresh = DigitNet()
    load_weights(fresh, tmp_path / "last.pt")
    _assert_same_weights(model, fresh)


def test_resume_matches_an_uninterrupted_run(tmp_path, data):
    straight = train(tmp_path / "straight", data)
    train(tmp_path / "split", data, epochs=2)
    resumed = train(tmp_path / "split", data, model=DigitNet(), resume=True)
    _assert_same_weights(straight, resumed)
    assert _records(tmp_path / "straight")[3]["train_loss"] == _records(tmp_path / "split")[3]["train_loss"]


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path, data):
    config = {"schedule": "cosine"}
    straight = train(tmp_path / "straight", data, **config)
    interrupt = Sabotaged(at_call=7, action=lambda out: os.kill(os.getpid(), signal.SIGINT) or out)
    torch.manual_seed(0)
    interrupt.load_state_dict(DigitNet().state_dict())
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split", data, model=interrupt, **config)
    state = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 1)  # 6 steps per epoch, stopped after 7
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train(tmp_path / "split", data, model=DigitNet(), resume=True, **config)
    _assert_same_weights(straight, resumed)
    assert [r["train_loss"] for r in _records(tmp_path / "straight")] == [
        r["train_loss"] for r in _records(tmp_path / "split")]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data):
    model = Sabotaged(at_call=9, action=lambda out: {"logits": out["logits"] * float("nan")})
    with pytest.raises(TrainingDiverged, match=r"non-finite \(loss nan\) at epoch 2, step 3 of 6, on the batch of samples \[\d+"):
        train(tmp_path, data, model=model)
    assert load_checkpoint(tmp_path / "last.pt")["progress"] == {"epoch": 1, "step": 0, "seen": 0, "sums": {}}
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_existing_runs_are_not_overwritten(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tmp_path, data, resume=True)
    train(tmp_path, data, epochs=1)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tmp_path, data, epochs=1)


def test_early_stopping_stops_after_patience(tmp_path, data):
    config = {"lr": 1e-9, "early_stopping": {"metric": "val_accuracy", "patience": 2, "min_delta": 0.5}}
    train(tmp_path, data, epochs=10, **config)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "early_stopped" and summary["epochs_completed"] == 3 and summary["best_epoch"] == 1


def test_grad_clip_bounds_each_update(tmp_path, data):
    torch.manual_seed(0)
    before = [p.detach().clone() for p in DigitNet().parameters()]
    model = train(tmp_path, data, epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, weight_decay=0.0,
                  grad_clip=1e-3, schedule="none")
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    assert 0 < moved <= 6 * 1e-3 + 1e-6  # 6 steps of at most lr * grad_clip


def test_l1_shrinks_weights(tmp_path, data):
    plain = train(tmp_path / "plain", data, epochs=2)
    sparse = train(tmp_path / "l1", data, epochs=2, l1=1e-2)
    assert sparse.head[2].weight.abs().sum() < 0.8 * plain.head[2].weight.abs().sum()
    assert "train_loss_with_l1" in _records(tmp_path / "l1")[0]


@pytest.mark.parametrize("overrides", [
    {"precision": "bf16", "optimizer": "sgd", "lr": 0.1, "nesterov": True, "schedule": "plateau"},
    {"precision": "fp16", "grad_clip": 1.0},
    {"compile": "eager", "deterministic": True, "num_workers": 1},
])
def test_options_train(tmp_path, data, overrides):
    train(tmp_path, data, epochs=2, **overrides)
    records = _records(tmp_path)
    assert records[1]["val_loss"] < records[0]["val_loss"]


def test_evaluate_and_predict_classification(tmp_path, data):
    model = train(tmp_path / "run", data, epochs=2)
    result = evaluate(model, data[1], TASK, objective=build_objective(LOSSES, model))
    assert result["accuracy"] == pytest.approx(_records(tmp_path / "run")[-1]["val_accuracy"])
    assert sum(map(sum, result["confusion"])) == len(data[1])
    path = predict(model, data[1], TASK, tmp_path / "out")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(data[1]) and rows[0].keys() >= {"index", "label", "p_0", "p_9"}
    assert sum(float(rows[5][f"p_{c}"]) for c in range(10)) == pytest.approx(1, abs=1e-4)


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, image):
        return {"scores": self.net(image)}


def test_segmentation_metrics_and_png_masks(tmp_path):
    train_set, val_set = split_dataset(shapes(num=40, size=16), 0.25, seed=0)
    losses = [{"op": "cross_entropy", "output": "scores", "target": "mask"}]
    model = Segmenter()
    fit(model, build_objective(losses, model), train_set, val_set, {"epochs": 1, "batch_size": 10}, tmp_path / "run",
        infer_task(losses), progress=False)
    record = _records(tmp_path / "run")[0]
    assert {"val_pixel_accuracy", "val_miou", "val_iou"} <= record.keys() and len(record["val_iou"]) == 4
    path = predict(model, val_set, infer_task(losses), tmp_path / "out")
    masks = sorted(path.iterdir())
    assert len(masks) == 10 and masks[0].name == "00000.png"
    assert Image.open(masks[0]).size == (16, 16) and np.asarray(Image.open(masks[0])).max() < 4


class GestureTagger(nn.Module):
    """Per-frame emissions and a chain CRF node (pytorch-crf, adapted to the node interface)."""

    def __init__(self, dim=8, tags=4):
        super().__init__()
        self.emit = nn.Linear(dim, tags)
        self.crf = ChainCRF(tags, batch_first=True)

    def forward(self, frames):
        return {"emissions": self.emit(frames)}


class ChainCRF(CRF, Field):
    """pytorch-crf behind the Field protocol: any module that implements it is a node."""

    exact = frozenset({"nll", "decode"})

    def __init__(self, num_tags, batch_first):
        super().__init__(num_tags, batch_first=batch_first)
        self.num_labels = num_tags

    def nll(self, emissions, tags, mask=None, reduction="mean"):
        return -CRF.forward(self, emissions, tags, mask=mask, reduction=reduction)

    def decode(self, emissions, mask=None):
        labels = torch.full(emissions.shape[:2], -1, dtype=torch.long)
        for row, path in enumerate(CRF.decode(self, emissions, mask)):
            labels[row, : len(path)] = torch.as_tensor(path)
        return labels, emissions.new_zeros(len(labels))


def test_sequence_crf_training_and_label_predictions(tmp_path):
    train_set, val_set = split_dataset(gestures(num=60), 0.25, seed=0)
    losses = [{"op": "crf_nll", "node": "crf", "potentials": "emissions", "target": "labels", "mask": "mask"}]
    model = GestureTagger()
    fit(model, build_objective(losses, model), train_set, val_set, {"epochs": 3, "batch_size": 15, "lr": 0.05},
        tmp_path / "run", infer_task(losses), progress=False)
    records = _records(tmp_path / "run")
    assert {"val_accuracy", "val_macro_f1"} <= records[-1].keys() and records[-1]["val_loss"] < records[0]["val_loss"]
    path = predict(model, val_set, infer_task(losses), tmp_path / "out")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [len(line["labels"]) for line in lines] == [len(val_set[i]["labels"]) for i in range(len(val_set))]


def test_nan_loss_batch_is_skipped_when_asked(tmp_path, data):
    model = Sabotaged(at_call=9, action=lambda out: {"logits": out["logits"] * float("nan")})
    train(tmp_path, data, model=model, on_nonfinite="skip")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert all(torch.isfinite(p).all() for p in model.parameters())   # the bad batch changed nothing
