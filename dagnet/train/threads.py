"""How many CPU threads a training process uses (`threads: auto | N`).

PyTorch starts one OpenMP thread per core. For a small model each parallel
region is a few microseconds of work, and the threads spend longer waking,
spinning and waiting for each other than computing; when another process
keeps the cores busy a spinning thread waits for a core that is not coming,
and a step becomes many times slower (the README demo beside a busy loop on
both cores: 15 s with two threads, 6 s with one; docs/benchmarks.md). `auto`
therefore counts the floating-point operations of one training step and uses
one thread below :data:`AUTO_ONE_THREAD_FLOPS`, and an equal share of the
cores per process above it. OMP_NUM_THREADS, when set, is the user's choice
already and `auto` keeps it (see `Trainer._threads`).
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Per training step (forward + backward, per process) on a 2-core machine: one thread
# was faster than two up to 5.5 GFLOP, quiet or loaded; two were faster on a quiet
# machine from 22 GFLOP (bench/bench_threads.py, docs/benchmarks.md "Threads").
AUTO_ONE_THREAD_FLOPS = 1e10


def step_flops(model: nn.Module, run_forward, batch_size: int) -> float:
    """Floating-point operations of one training step, estimated as 3x a forward pass (the backward
    pass costs about twice the forward) of `run_forward()` on one example, times `batch_size`."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()           # batch norm on one example, and no dropout draws from the generator
    # no parameter requires grad while counting: the counter's module tracker hooks the gradient of
    # every output that does, which fails under no_grad for a layer that returns a parameter itself
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            run_forward()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return 3.0 * counter.get_total_flops() * batch_size


def auto_threads(flops: float, processes: int = 1, cores: int | None = None) -> int:
    """The `auto` rule: one thread for a step under AUTO_ONE_THREAD_FLOPS, else the cores shared out."""
    if flops < AUTO_ONE_THREAD_FLOPS:
        return 1
    return max(1, (cores or os.cpu_count() or 1) // processes)


@contextlib.contextmanager
def using_threads(count: int):
    """`count` intra-op threads for the duration of a run only (the setting is process-global)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
