"""One thread or all cores? Training step time against the step's FLOPs, quiet and beside another job.

For CNNs from tiny (the README demo's size) to large, times a training step
(forward, backward, AdamW) with 1 thread and with one per core, alternating,
median of the rounds; then again while a second process trains a CNN with
PyTorch's default threads (the "shared machine" case). The FLOPs per step are
dagnet.train.threads.step_flops, the number `threads: auto` compares with
AUTO_ONE_THREAD_FLOPS. Run without OMP_NUM_THREADS: the thread count is what
is measured.

    python bench/bench_threads.py [--rounds 3] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from dagnet.train.threads import AUTO_ONE_THREAD_FLOPS, step_flops

# (width, image side); batch 64, one input channel, ten classes
MODELS = [(8, 8), (32, 8), (32, 16), (64, 16), (64, 32), (64, 64)]
BATCH = 64

LOAD = """
import torch, torch.nn as nn
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                    nn.Flatten(), nn.Linear(32 * 16 * 16, 10))
opt = torch.optim.AdamW(net.parameters())
x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64,))
while True:
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
"""


def cnn(width: int, side: int) -> nn.Module:
    """The shape of specs/digits_cnn.yaml: three 3x3 convolutions with batch norm, two poolings, a linear head."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, width), *block(width, width), nn.MaxPool2d(2), *block(width, 2 * width),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * (side // 4) ** 2, 10))


def seconds_per_step(model, optimizer, x, y, threads: int, budget: float) -> float:
    torch.set_num_threads(threads)
    steps, started = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < budget:
        if steps == 2:                      # two warm-up steps
            started = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return (time.perf_counter() - started) / (steps - 2)


def measure(rounds: int, budget: float) -> list[tuple]:
    cores = os.cpu_count() or 1
    rows = []
    for width, side in MODELS:
        torch.manual_seed(0)
        model = cnn(width, side)
        optimizer = torch.optim.AdamW(model.parameters())
        x, y = torch.randn(BATCH, 1, side, side), torch.randint(0, 10, (BATCH,))
        flops = step_flops(model, lambda: model(x[:1]), BATCH)
        times = {1: [], cores: []}
        for _ in range(rounds):
            for threads in times:
                times[threads].append(seconds_per_step(model, optimizer, x, y, threads, budget))
        one, many = (statistics.median(times[t]) for t in (1, cores))
        rows.append((width, side, flops, one, many))
    return rows


def report(title: str, rows: list[tuple], cores: int) -> None:
    print(f"{title}\n  model (width, side)   GFLOP/step   1 thread ms   {cores} threads ms   {cores}T / 1T   auto")
    for width, side, flops, one, many in rows:
        auto = 1 if flops < AUTO_ONE_THREAD_FLOPS else cores
        print(f"  cnn({width:3d}, {side:2d})x{BATCH}        {flops / 1e9:9.3f}   {one * 1e3:11.2f}   "
              f"{many * 1e3:12.2f}   {many / one:8.2f}   {auto}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget of one measurement")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        sys.exit("bench_threads: unset OMP_NUM_THREADS (the thread count is what is measured)")
    cores = os.cpu_count() or 1
    print(f"{cores} cores, torch {torch.__version__}, batch {BATCH}, median of {args.rounds} alternating rounds; "
          f"auto: 1 thread below {AUTO_ONE_THREAD_FLOPS / 1e9:g} GFLOP/step")
    report("quiet machine", measure(args.rounds, args.seconds), cores)
    load = subprocess.Popen([sys.executable, "-c", LOAD])
    try:
        time.sleep(2)
        report("beside a second training (PyTorch's default threads)", measure(args.rounds, args.seconds), cores)
    finally:
        load.kill()
        load.wait()


if __name__ == "__main__":
    main()
