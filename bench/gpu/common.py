"""What every GPU benchmark shares: the device, the sizes of a mode, timing, and the results log.

Timing follows bench/bench_chain_crf.py: implementations alternate within one
process (the order swapped every round) and the median is reported, so drift
hits all of them alike. On CUDA each run is timed with CUDA events around it
(host gaps inside the run, such as pytorch-crf's per-step ``.item()``, count,
as they do for a user); on the CPU with ``time.perf_counter``.
"""
from __future__ import annotations

import json
import os
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

MODES = ("full", "quick", "tiny")


def bench_device() -> torch.device:
    """``DAGNET_BENCH_DEVICE`` (cpu, cuda, cuda:N), else CUDA when present, else the CPU."""
    name = os.environ.get("DAGNET_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"DAGNET_BENCH_DEVICE={name}, but torch sees no CUDA device")
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(run: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of ``run``, on the device's own clock."""
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        run()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)
    start = time.perf_counter()
    run()
    return 1e3 * (time.perf_counter() - start)


def compare(runs: dict[str, Callable[[], object]], device: torch.device, repeats: int,
            seconds: float = 30.0, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each run: ``warmup`` untimed calls each, then alternating
    rounds (order swapped every round) until ``repeats`` rounds or, after three, ``seconds``."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    started = time.perf_counter()
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[name].append(timed_ms(runs[name], device))
        if r >= 2 and time.perf_counter() - started > seconds:
            break
    return {name: statistics.median(ts) for name, ts in times.items()}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, in float64 on the CPU (NaN anywhere gives NaN)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def describe(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
    else:
        info.update(name=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    return info


@dataclass
class Context:
    """What a benchmark group gets: the device, the mode, the time left, and a place to put rows."""
    device: torch.device
    mode: str
    deadline: float                      # time.time() by which everything must be done
    log: "ResultsLog"
    group: str = ""

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"

    @property
    def quick(self) -> bool:
        return self.mode in ("quick", "tiny")

    def left(self) -> float:
        return self.deadline - time.time()

    def pick(self, full, quick, tiny):
        """The value for this mode."""
        return {"full": full, "quick": quick, "tiny": tiny}[self.mode]

    def row(self, **values) -> None:
        """One result row of the current group, written out at once."""
        self.log.add_row(self.group, values)

    def note(self, text: str) -> None:
        self.log.add_note(self.group, text)


@dataclass
class ResultsLog:
    """The results as JSON, rewritten whole after every row, so a run killed at any
    point leaves everything measured up to then."""
    path: Path
    meta: dict
    groups: dict = field(default_factory=dict)

    def start(self, group: str, title: str) -> None:
        self.groups[group] = {"title": title, "status": "running", "rows": [], "notes": []}
        self.flush()

    def add_row(self, group: str, row: dict) -> None:
        self.groups[group]["rows"].append(row)
        print(f"  [{group}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        self.flush()

    def add_note(self, group: str, text: str) -> None:
        self.groups[group]["notes"].append(text)
        print(f"  [{group}] {text}", flush=True)
        self.flush()

    def finish(self, group: str, status: str, seconds: float, error: str = "") -> None:
        entry = self.groups[group]
        entry.update(status=status, seconds=round(seconds, 1))
        if error:
            entry["error"] = error
        self.flush()

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"meta": self.meta, "groups": self.groups}, indent=1, default=str) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write whole or not at all: a run killed mid-write leaves the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(data: dict) -> str:
    """The results as Markdown: a header line, then one table per group."""
    meta = data["meta"]
    lines = [f"GPU benchmarks: {meta.get('name', meta.get('device'))}, torch {meta.get('torch')}"
             + (f", CUDA {meta['cuda']}" if meta.get("cuda") else "")
             + f", mode {meta.get('mode')}, {meta.get('date')}.", ""]
    for group in data["groups"].values():
        head = f"### {group['title']}"
        if group["status"] != "ok":
            head += f" ({group['status']})"
        lines += [head, ""]
        rows = group["rows"]
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
            lines.append("")
        lines += [f"- {note}" for note in group["notes"]]
        if group.get("error"):
            lines.append(f"- error: `{group['error'].strip().splitlines()[-1][:300]}`")
        if group["notes"] or group.get("error"):
            lines.append("")
    return "\n".join(lines) + "\n"


def run_group(ctx: Context, name: str, title: str, body: Callable[[Context], None],
              needs: float = 0.0) -> str:
    """Run one group in its own try block; skip it when less than ``needs`` seconds are left."""
    ctx.group = name
    ctx.log.start(name, title)
    started = time.time()
    if ctx.left() < needs:
        ctx.log.finish(name, "skipped", 0.0, f"time budget: {ctx.left():.0f} s left, needs {needs:.0f} s")
        return "skipped"
    print(f"== {title}", flush=True)
    try:
        body(ctx)
    except BaseException as error:          # a failed group must not lose the others
        if isinstance(error, KeyboardInterrupt):
            raise
        ctx.log.finish(name, "failed", time.time() - started, traceback.format_exc())
        print(traceback.format_exc(), flush=True)
        return "failed"
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    ctx.log.finish(name, "ok", time.time() - started)
    return "ok"
