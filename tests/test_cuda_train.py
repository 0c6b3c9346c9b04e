"""`dagnet train` on CUDA: a CNF (BiLSTM + chain CRF) and a ResNet with bf16 autocast, an
exact resume, and exports of a model trained there (marked `cuda`; skip without a GPU;
``DAGNET_CUDA_TEST_DEVICE=cpu`` runs them on the CPU, the CNF then in fp32: oneDNN has
no bf16 LSTM). Data-parallel training needs a GPU per process: with one GPU it is skipped.
"""
import json
import os

import pytest
import torch

from dagnet.cli import main
from dagnet.train.checkpoint import load_checkpoint
from test_cuda_ops import DEVICE, needs_device
from tests.conftest import SPECS

pytestmark = pytest.mark.cuda
# cuBLAS sizes its workspaces once, at the first matrix product of the process: ask for the
# deterministic size before any test runs one (`deterministic: true` sets it too late for that)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
RESNET = [str(SPECS / "resnet_digits.yaml"), "--set", "width=8", "-o", "batch_size=128", "-o", "schedule.name=none"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def trains(args, run, capsys) -> list[dict]:
    assert main(["train", *args, "--out", str(run), "--device", str(DEVICE), "-o", "loggers=[]"]) == 0
    assert f"training on {DEVICE.type}" in capsys.readouterr().out
    lines = metrics(run)
    assert all(torch.isfinite(torch.tensor(line["train_loss"])) for line in lines)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"], "the loss did not go down"
    return lines


def test_cnf_trains_with_bf16_autocast(tmp_path, capsys):
    needs_device()
    precision = "bf16" if DEVICE.type == "cuda" else "fp32"
    lines = trains([str(SPECS / "cnf_tagger.yaml"), "--epochs", "3", "--precision", precision,
                    "-o", "data.num=96"], tmp_path / "cnf", capsys)
    assert len(lines) == 3 and 0 <= lines[-1]["val_macro_f1"] <= 1
    state = load_checkpoint(tmp_path / "cnf" / "last.pt")["model"]
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_resnet_trains_with_bf16_autocast_and_predicts(tmp_path, capsys):
    needs_device()
    run = tmp_path / "resnet"
    lines = trains([*RESNET, "--epochs", "2", "--precision", "bf16"], run, capsys)
    assert lines[-1]["val_accuracy"] > 0.2
    assert main(["eval", str(run), "--device", str(DEVICE), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] > 0.2


def test_resume_on_the_device_equals_an_uninterrupted_run(tmp_path):
    """With deterministic kernels (cuDNN, cuBLAS workspace) an interrupted run resumed on the
    device ends on the weights of a straight one, bit for bit."""
    needs_device()
    straight, resumed = tmp_path / "a", tmp_path / "b"
    common = [*RESNET, "--device", str(DEVICE), "--precision", "bf16", "-o", "deterministic=true", "-o", "loggers=[]"]
    assert main(["train", *common, "--epochs", "2", "--out", str(straight)]) == 0
    assert main(["train", *common, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "2"]) == 0
    a, b = load_checkpoint(straight / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [line["train_loss"] for line in metrics(straight)] == [line["train_loss"] for line in metrics(resumed)]


def test_data_parallel_needs_a_gpu_per_process(tmp_path):
    needs_device()
    if DEVICE.type != "cuda" or torch.cuda.device_count() < 2:
        pytest.skip("DDP with NCCL needs one GPU per process: NCCL refuses two ranks on one GPU, so with "
                    "one GPU data-parallel training cannot run (tests/test_train_distributed.py covers "
                    "the logic on CPU processes with gloo)")
    run = tmp_path / "ddp"
    assert main(["train", *RESNET, "--epochs", "1", "--nproc", "2", "--device", "cuda", "--out", str(run),
                 "-o", "loggers=[]"]) == 0
    assert len(metrics(run)) == 1
