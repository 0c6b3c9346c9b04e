"""`dagnet train`'s loop (dagnet.train.fit, what the command runs) against a hand-written
AMP loop on the device: the same compiled ResNet-18 (10 classes) on the same synthetic
images, the same batch size, AdamW, bf16 autocast on CUDA (fp32 on the CPU), no
validation. fit's time includes everything it does besides (checkpoints, metrics log,
plots, TensorBoard). Runs alternate, best of the rounds per side. Goal: samples/s
ratio fit / hand-written >= 0.97.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import dagnet
from dagnet.train import build_objective, fit, infer_task

from .common import Context, sync

ROOT = Path(__file__).resolve().parents[2]
LOSSES = [{"op": "cross_entropy", "output": "fc", "target": "label"}]
GOAL = 0.97


class Images(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return dagnet.compile(dagnet.load(ROOT / "specs" / "resnet18.yaml", {"classes": 10, "width": width}))


def hand_written(net, x, y, device, epochs, batch_size, lr, bf16) -> None:
    net.to(device).train()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for _ in range(epochs):
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with amp:
                loss = F.cross_entropy(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
    sync(device)


def with_fit(net, x, y, device, epochs, batch_size, lr, bf16) -> None:
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "adamw",
              "device": str(device), "precision": "bf16" if bf16 else "fp32"}
    with tempfile.TemporaryDirectory() as run_dir:
        fit(net, build_objective(LOSSES, net), Images(x, y), None, config, run_dir, infer_task(LOSSES),
            progress=False)
    sync(device)


def bench(ctx: Context) -> None:
    n, size, batch, width, rounds = ctx.pick((16384, 64, 256, 64, 2), (4096, 64, 256, 64, 1),
                                             (64, 16, 16, 8, 1))
    bf16 = ctx.device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    runs = {"hand-written": hand_written, "dagnet fit": with_fit}
    for run in runs.values():                        # warm-up: cuDNN autotuning, allocator, imports
        run(model(width), x[:4 * batch], y[:4 * batch], ctx.device, 1, batch, 1e-3, bf16)
    seconds = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            net = model(width)
            started = time.perf_counter()
            runs[name](net, x, y, ctx.device, 1, batch, 1e-3, bf16)
            seconds[name].append(time.perf_counter() - started)
    rate = {name: n / min(s) for name, s in seconds.items()}
    ratio = rate["dagnet fit"] / rate["hand-written"]
    ctx.row(model=f"resnet18 (width {width}), {size}x{size}", samples=n, batch=batch,
            precision="bf16 autocast" if bf16 else "fp32",
            **{"hand-written samples/s": rate["hand-written"], "fit samples/s": rate["dagnet fit"],
               "ratio": ratio, "goal": f">= {GOAL}: {'met' if ratio >= GOAL else 'missed'}"})
