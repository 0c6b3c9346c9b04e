"""Data-parallel training with 2 CPU processes (gloo) gives the weights of one process on the same global batch."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from dagnet.data import ArrayDataset, split_dataset
from dagnet.train import build_objective, fit, infer_task, launch, load_checkpoint
from dagnet.train.distributed import PeerFailed, world

LOSSES = [{"op": "cross_entropy", "output": "logits", "target": "label"}]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return {"logits": self.net(x)}


def train_tiny(run_dir: str) -> None:
    """Module-level so that spawned processes can import it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 6, generator=g)
    data = ArrayDataset({"x": x, "label": (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()}, inputs=("x",))
    train_set, val_set = split_dataset(data, 0.2, seed=0)  # 64 training examples: 8 global batches of 8
    torch.manual_seed(0)
    model = MLP()
    config = {"epochs": 3, "batch_size": 8, "optimizer": "sgd", "lr": 0.2, "momentum": 0.5, "seed": 1}
    fit(model, build_objective(LOSSES, model), train_set, val_set, config, run_dir, infer_task(LOSSES), progress=False)


def test_two_processes_match_one(tmp_path):
    launch(2, train_tiny, str(tmp_path / "ddp"))
    train_tiny(str(tmp_path / "single"))
    ddp, single = (load_checkpoint(tmp_path / name / "last.pt") for name in ("ddp", "single"))
    for name, weight in single["model"].items():
        assert torch.allclose(ddp["model"][name], weight, atol=1e-6), name
    assert len(ddp["rng"]) == 2  # each process's generators, for an exact resume
    ddp_log, single_log = (
        [json.loads(line) for line in Path(tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("ddp", "single")
    )
    assert len(ddp_log) == 3  # written once, by rank 0
    for a, b in zip(ddp_log, single_log):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-6 and a["val_accuracy"] == b["val_accuracy"]


def fail_on_rank_1() -> None:
    """Rank 1 fails before a collective that rank 0 then waits in."""
    if world()[0] == 1:
        raise ValueError("no data on this node")
    dist.barrier()


def test_a_failing_rank_is_named_in_one_line():
    with pytest.raises(PeerFailed, match=r"^rank 1 failed: ValueError: no data on this node"):
        launch(2, fail_on_rank_1)
