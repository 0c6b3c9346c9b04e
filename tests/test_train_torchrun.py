"""`dagnet train` started by torchrun: one model trained by all processes, on one "node" or two.

Each run is compared with a single process on the same global batch: data-parallel
training averages the same gradients, so the weights agree to float tolerance. The
spec has no batch norm, whose statistics are per process without SyncBatchNorm.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from dagnet.train.checkpoint import load_checkpoint
from tests.conftest import ROOT

SPEC = """\
dagnet: 1
name: digits-mlp
inputs:
  image: {shape: [1, 8, 8]}
nodes:
  hidden: {in: image, seq: flatten -> linear(32) -> tanh}
  head: {in: hidden, op: linear, out_features: 10}
outputs: [head]
loss: {op: cross_entropy, output: head, target: label}
train:
  data: {name: digits}
  batch_size: 64
  optimizer: sgd
  lr: 0.1
  momentum: 0.5
  schedule: {name: none}
  val_split: 0.2
  seed: 3
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DAGNET_DIST_TIMEOUT": "60"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "digits_mlp.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def single(spec, tmp_path_factory):
    """The reference: two epochs in one process."""
    out = tmp_path_factory.mktemp("single") / "run"
    dagnet(["train", str(spec), "--epochs", "2", "--out", str(out)])
    return load_checkpoint(out / "last.pt")["model"]


def dagnet(args: list[str], launcher: list[str] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m dagnet ARGS` (under `launcher`, e.g. torchrun); fails the test with its stderr if it fails."""
    command = [*launcher, "-m", "dagnet", *args] if launcher else [sys.executable, "-m", "dagnet", *args]
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], port: int) -> list[subprocess.Popen]:
    """Two torchrun agents that meet at a c10d rendezvous on this machine, one process each.

    Node 0 starts first and hosts the rendezvous store, as the machine named by
    --rdzv-endpoint does on a cluster (here both could, being on the same host).
    """
    nodes = []
    for node in (0, 1):
        nodes.append(subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                                       "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                                       "-m", "dagnet", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        deadline = time.time() + 120
        while node == 0 and not _listening(port) and time.time() < deadline:
            time.sleep(0.1)
    return nodes


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def assert_same_weights(run, single) -> None:
    trained = load_checkpoint(run / "last.pt")["model"]
    for name, weight in single.items():
        assert torch.allclose(trained[name], weight, atol=1e-5), name


def assert_one_run(run, epochs: int) -> None:
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1))      # written once, by rank 0
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert len(load_checkpoint(run / "last.pt")["rng"]) == 2            # both processes' generators


def test_standalone_torchrun_trains_one_model(spec, single, tmp_path):
    run = tmp_path / "run"
    done = dagnet(["train", str(spec), "--epochs", "2", "--out", str(run)],
                  launcher=[*TORCHRUN, "--standalone", "--nproc-per-node", "2"])
    assert done.stdout.count("completed: 2 epochs") == 1                 # rank 0 reports
    assert_one_run(run, 2)
    assert_same_weights(run, single)


def test_two_nodes_train_one_model(spec, single, tmp_path):
    run = tmp_path / "run"
    nodes = two_nodes(["train", str(spec), "--epochs", "2", "--out", str(run)], free_port())
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    assert_one_run(run, 2)
    assert_same_weights(run, single)


@pytest.mark.slow
def test_resume_under_torchrun(spec, single, tmp_path):
    run, launcher = tmp_path / "run", [*TORCHRUN, "--standalone", "--nproc-per-node", "2"]
    dagnet(["train", str(spec), "--epochs", "1", "--out", str(run)], launcher=launcher)
    dagnet(["train", "--resume", str(run), "--epochs", "2"], launcher=launcher)
    assert_one_run(run, 2)
    assert_same_weights(run, single)

    again = subprocess.run([*launcher, "-m", "dagnet", "train", str(spec), "--out", str(run)], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    ours = [line for line in again.stderr.splitlines() if "dagnet train: error:" in line]
    assert again.returncode != 0 and len(ours) == 1 and "already holds a run" in ours[0], again.stderr[-3000:]


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_with_one_line(spec, tmp_path):
    run = tmp_path / "run"
    nodes = two_nodes(["train", str(spec), "--epochs", "500", "--out", str(run)], free_port())
    try:
        deadline = time.time() + 300
        while not (run / "last.pt").exists() and time.time() < deadline:    # training is under way
            time.sleep(0.2)
        worker = _worker_of(nodes[1].pid)
        os.kill(worker, signal.SIGKILL)
        _, stderr = nodes[0].communicate(timeout=120)
    finally:
        for node in nodes:
            node.kill()
    ours = [line for line in stderr.splitlines() if "dagnet train: error:" in line]
    assert len(ours) == 1 and "rank 1 stopped answering" in ours[0], stderr[-3000:]
    assert nodes[0].returncode != 0


def _worker_of(agent: int) -> int:
    """The training process a torchrun agent started (its only child running dagnet)."""
    children = subprocess.run(["pgrep", "-P", str(agent)], capture_output=True, text=True).stdout.split()
    return int(children[0])
