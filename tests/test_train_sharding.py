"""`strategy: fsdp`: the model sharded per top-level block trains to the weights of one process, and its
torch.distributed.checkpoint shards resume and evaluate on another number of processes."""

import pytest
import torch
import torch.distributed.fsdp

from dagnet.cli import main
from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.from_spec import restore
from dagnet.weights import read_weights
from tests.conftest import SPECS
from tests.test_train_torchrun import SPEC

pytestmark = pytest.mark.skipif(not hasattr(torch.distributed.fsdp, "fully_shard"),
                                reason=f"torch {torch.__version__} has no FSDP2 fully_shard (torch >= 2.6)")


def test_fsdp_on_two_processes_resumed_on_one_matches_one_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = tmp_path / "digits_mlp.yaml"
    spec.write_text(SPEC)
    sharded, single = tmp_path / "fsdp", tmp_path / "single"
    assert main(["train", str(spec), "--epochs", "1", "--nproc", "2", "-o", "strategy=fsdp",
                 "--out", str(sharded)]) == 0
    assert sorted(p.name for p in (sharded / "last.dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    epoch_1 = (sharded / "last.pt").read_bytes()
    assert main(["train", "--resume", str(sharded), "--epochs", "2"]) == 0      # one process now
    assert main(["train", str(spec), "--epochs", "2", "--out", str(single)]) == 0

    assert load_checkpoint(sharded / "last.pt")["model"] == {}      # the weights are in the shards
    weights = restore(sharded)[1].state_dict()                       # as `dagnet eval` reads them
    for name, weight in load_checkpoint(single / "last.pt")["model"].items():
        assert torch.allclose(weights[name], weight, atol=1e-5), name
        assert torch.equal(read_weights(sharded / "last.pt").state[name], weights[name])   # as --weights does

    (sharded / "last.pt").write_bytes(epoch_1)      # as if a crash had come between the two saves of epoch 2
    assert main(["train", "--resume", str(sharded), "--epochs", "3"]) == 1
    assert "last.dcp holds epoch 2, step 0 but" in capsys.readouterr().err


def test_a_ddp_run_does_not_resume_as_fsdp(tmp_path, capsys):
    spec = tmp_path / "digits_mlp.yaml"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "-o", "strategy=fsdp"]) == 1
    assert "saved with strategy: ddp; resume it with -o strategy=ddp" in capsys.readouterr().err


def test_fsdp_refuses_a_crf_whose_loss_reads_its_parameters(tmp_path, capsys):
    args = ["train", str(SPECS / "cnf_tagger.yaml"), "--epochs", "1", "-o", "strategy=fsdp", "--out", str(tmp_path / "run")]
    assert main(args) == 1
    assert "fsdp cannot shard the structured node 'crf'" in capsys.readouterr().err
