"""SIGKILL while a checkpoint is being written loses nothing beyond that checkpoint.

A training process is killed the moment a checkpoint's temporary file appears
(so, while it is being saved); `--resume` must then load the previous,
complete checkpoint and finish with exactly the weights of a run that was
never interrupted.
"""

import os
import signal
import subprocess
import sys
import time

import torch

from dagnet.cli import main
from dagnet.train.checkpoint import load_checkpoint
from tests.conftest import ROOT, SPECS

ARGS = [str(SPECS / "digits_cnn.yaml"), "--epochs", "5", "--set", "width=8",
        "-o", "batch_size=128", "-o", "schedule.name=none"]


def test_sigkill_during_save_then_resume(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dagnet", "train", *ARGS, "--out", str(killed)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            saving = any(p.name.endswith(".tmp") for p in killed.glob(".last.pt.*"))
            if saving and (killed / "last.pt").exists():     # a later save is being written
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed while saving"
    survivor = load_checkpoint(killed / "last.pt")          # complete, checksum verified
    assert 1 <= survivor["progress"]["epoch"] < 5

    assert main(["train", "--resume", str(killed), "--epochs", "5"]) == 0
    assert main(["train", *ARGS, "--out", str(straight)]) == 0
    a = load_checkpoint(straight / "last.pt")["model"]
    b = load_checkpoint(killed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
