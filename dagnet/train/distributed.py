"""Data-parallel training with PyTorch's own torch.distributed: `launch` starts or joins the processes, `fit` does the rest.

Started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set),
`launch` joins the process group those variables describe, on one machine or many;
otherwise it spawns `nproc` local processes. Backend: gloo on CPU, nccl on GPUs.

A group is only as alive as its slowest member: every collective waits for all
ranks. So a rank that fails leaves its one-line reason in the group's store, the
survivors' next collective fails (the peer's sockets close, or after
DAGNET_DIST_TIMEOUT seconds of silence), and each survivor stops with a
`PeerFailed` naming the rank, instead of hanging.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT_ENV = "DAGNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600     # long enough for rank 0's checkpoint and plots, short enough to notice a dead node
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class PeerFailed(RuntimeError):
    """Another process of the group failed or vanished; this one stopped with it."""


def under_torchrun() -> bool:
    """True in a process that torchrun (or srun with the same variables) started."""
    return all(key in os.environ for key in TORCHRUN_ENV)


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


def decided_by_rank0(check: Callable[[], None]) -> None:
    """Run `check` on rank 0 alone and make every rank share its outcome: its error, raised everywhere.

    Whether a run directory may be created or resumed is one decision for the whole
    group: were each rank to look for itself, a rank could find the files rank 0 has
    just written (or, on a node without the shared disk, find nothing) and part ways
    with the others, which would then wait for it until the timeout.
    """
    rank, size = world()
    if size == 1:
        check()
        return
    outcome, failure = [None], None
    if rank == 0:
        try:
            check()
        except Exception as error:      # handed to the others as (type, message)
            outcome, failure = [(type(error), str(error))], error
    dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        kind, message = outcome[0]
        error = kind(message)
        error.reported_by_rank0 = True      # one process says it, not every one
        raise error


def launch(nproc: int, fn: Callable, *args, backend: str | None = None):
    """Run fn(*args) in each of `nproc` processes joined into one process group.

    Under torchrun this process is one of them: it joins the group and returns fn's
    result. Otherwise fn must be importable by name (a module-level function), since
    the processes are spawned; each gets an equal share of the CPU threads, and a
    process that fails is re-raised here as one PeerFailed line naming its rank.
    """
    if under_torchrun():
        return _run(fn, args, backend)
    port = _free_port()
    try:
        mp.spawn(_spawned, args=(nproc, port, fn, args, backend), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as error:     # the last line of its traceback: `Type: message`
        last = error.msg.strip().splitlines()[-1]
        peer = f"{PeerFailed.__module__}.{PeerFailed.__name__}: "     # a survivor that already names the rank
        raise PeerFailed(last.removeprefix(peer) if last.startswith(peer) else
                         f"rank {error.error_index} failed: {last}") from None
    except mp.ProcessExitedException as error:
        how = f"was killed by {error.signal_name}" if error.signal_name else f"exited with code {error.exit_code}"
        raise PeerFailed(f"rank {error.error_index} {how}; the other processes were stopped") from None
    return None


def _spawned(rank: int, nproc: int, port: int, fn: Callable, args: tuple, backend: str | None) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    _run(fn, args, backend)


def _run(fn: Callable, args: tuple, backend: str | None):
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())         # before nccl starts: each rank on its own GPU
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    rank, size = world()
    store = dist.distributed_c10d._get_default_store()
    try:
        result = fn(*args)
        # Leave together: a rank that tears down gloo while a peer is still finishing
        # (rank 0 writes the summary and plots) can abort the peer's transport thread.
        dist.barrier()
        return result
    except BaseException as error:
        if _broken_group(error):
            raise PeerFailed(_who_failed(store, rank, size, error)) from None
        _try(store.set, f"dagnet/failed/{rank}", f"{type(error).__name__}: {error}")
        raise
    finally:
        dist.destroy_process_group()


def _broken_group(error: BaseException) -> bool:
    """A collective that failed because a peer went away: NCCL says DistError, gloo a RuntimeError
    from its transport ("Connection closed by peer", "Timed out waiting ...")."""
    return isinstance(error, dist.DistError) or (type(error) is RuntimeError and "gloo" in str(error))


def _who_failed(store, rank: int, size: int, error: Exception, wait_s: float = 3.0) -> str:
    """One line naming the rank that broke the group: the reason it left in the store, or, for a
    rank that left none (killed, its machine gone), the ranks that do not answer a roll call."""
    others = [r for r in range(size) if r != rank]
    for r in others:
        if _try(store.check, [f"dagnet/failed/{r}"]):
            return f"rank {r} failed: {store.get(f'dagnet/failed/{r}').decode()}; rank {rank} stopped with it"
    _try(store.set, f"dagnet/alive/{rank}", "1")
    deadline = time.monotonic() + wait_s
    while True:
        silent = [r for r in others if not _try(store.check, [f"dagnet/alive/{r}"])]
        if not silent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if silent:
        names = ", ".join(map(str, silent))
        return f"rank {names} stopped answering (killed, or its machine is gone); rank {rank} stopped too ({first})"
    return f"the process group broke ({first}); rank {rank} stopped"


def _try(action: Callable, *args):
    """The store itself may be gone with the rank that hosted it: then nothing more can be learnt."""
    try:
        return action(*args)
    except Exception:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
