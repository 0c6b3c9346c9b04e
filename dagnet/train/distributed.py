"""Data-parallel training with PyTorch's own torch.distributed: `launch` starts the processes, `fit` does the rest.

Under torchrun (RANK and WORLD_SIZE set) `launch` only joins the process group;
otherwise it spawns `nproc` local processes. Backend: gloo on CPU, nccl on GPUs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", world()[0]))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (a no-op in one process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def all_gather(obj) -> list:
    """Every process's `obj`, in rank order."""
    if world()[1] == 1:
        return [obj]
    gathered = [None] * world()[1]
    dist.all_gather_object(gathered, obj)
    return gathered


def launch(nproc: int, fn: Callable, *args, backend: str | None = None) -> None:
    """Run fn(*args) in each of `nproc` processes joined into one process group.

    fn must be importable by name (a module-level function) since processes are
    spawned. Each process gets an equal share of the CPU threads.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        _run(fn, args, backend)
        return
    port = _free_port()
    mp.spawn(_spawned, args=(nproc, port, fn, args, backend), nprocs=nproc, join=True)


def _spawned(rank: int, nproc: int, port: int, fn: Callable, args: tuple, backend: str | None) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    _run(fn, args, backend)


def _run(fn: Callable, args: tuple, backend: str | None) -> None:
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method="env://")
    try:
        fn(*args)
        # Leave together: a rank that tears down gloo while a peer is still finishing
        # (rank 0 writes the summary and plots) can abort the peer's transport thread.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
