"""dagnet.train.checkpoint: atomic writes, weights_only loading, digests, RNG states."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from dagnet.train import CheckpointError, load_checkpoint, save_checkpoint
from dagnet.train.checkpoint import digest, rng_state, set_rng_state


def _payload():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(), "epoch": 3}


def test_round_trip_loads_with_weights_only(tmp_path):
    payload = _payload()
    sha = save_checkpoint(tmp_path / "last.pt", payload)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["meta"]["sha256"] == sha and raw["epoch"] == 3
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(loaded["model"]["weight"], payload["model"]["weight"])
    assert list(tmp_path.iterdir()) == [tmp_path / "last.pt"]  # no temporary file left behind


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    raw = torch.load(path, weights_only=True)
    raw["model"]["weight"][0, 0] += 1  # a silently changed value, re-saved with the old metadata
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not a dagnet-checkpoint"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    real_save = torch.save

    def crash_midway(obj, f):
        real_save(obj, f)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_digest_sees_values_dtypes_and_structure():
    base = {"a": torch.zeros(3), "b": [1, 2.0, None]}
    assert digest(base) == digest({"b": [1, 2.0, None], "a": torch.zeros(3)})
    assert digest(base) != digest({"a": torch.zeros(3, dtype=torch.float64), "b": [1, 2.0, None]})
    assert digest(base) != digest({"a": torch.zeros(3), "b": [1, 2.0]})
    assert digest({"x": torch.zeros(2, dtype=torch.bfloat16)}) != digest({"x": torch.ones(2, dtype=torch.bfloat16)})


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    np.random.normal()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = torch.rand(3), np.random.rand(3), random.random(), np.random.normal()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = torch.rand(3), np.random.rand(3), random.random(), np.random.normal()
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]
