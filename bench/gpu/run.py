"""The GPU run: the CUDA tests, then every GPU benchmark, each group in a process of its own.

    python -m bench.gpu.run [--quick] [--tiny] [--budget SECONDS] [OUTDIR]

(bench/gpu/run.sh installs the carried wheels first, then runs this.) Writes
OUTDIR/results.json (every row, the device, each group's status and time),
OUTDIR/results.md (the tables), OUTDIR/pytest.log, and prints the tables last;
while a group runs, its rows so far are in OUTDIR/partial.json (and in the log).

Robustness: each group runs in a child process with a timeout, so a crash, a
hang or a CUDA error that poisons the context costs that group only; a group
that is killed keeps the rows it had written (the child rewrites its JSON after
every row); groups that no longer fit in the time budget are skipped, and say so.
``DAGNET_BENCH_DEVICE=cpu`` runs it all on the CPU (``--tiny``: tiny sizes, the
CI path of tests/test_gpu_script.py); the CUDA tests then skip.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Context, ResultsLog, bench_device, describe, markdown, run_group, write_atomic

ROOT = Path(__file__).resolve().parents[2]
BUDGET = {"full": 450.0, "quick": 160.0, "tiny": 150.0}     # seconds, under the 8 and 3 minutes asked


def _groups():
    from . import ceilings, chain, dense, models, train
    # name: (title, body, seconds it needs to start and at most gets, per mode (full, quick, tiny));
    # a cap of 0: not run in that mode
    return {
        "ceilings": ("Device ceilings: copy bandwidth and matrix-product rate", ceilings.bench,
                     (10, 10, 2), (20, 15, 20)),
        "chain": ("Chain CRF vs pytorch-crf and torch-struct", chain.bench, (20, 15, 5), (120, 30, 60)),
        "chain_triton": ("Chain CRF nll: dagnet vs a one-kernel Triton scan (prototype)", chain.bench_triton,
                         (20, 15, 5), (40, 0, 30)),
        "dense": ("Dense CRF, 21 labels, 5 iterations", dense.bench, (20, 15, 5), (60, 20, 60)),
        "train": ("dagnet train (fit) vs a hand-written AMP loop", train.bench, (20, 15, 5), (90, 25, 60)),
        "models": ("Compiled specs vs library modules, eager", models.bench_eager, (30, 20, 5), (90, 30, 90)),
        "models_compiled": ("Compiled specs vs library modules, torch.compile", models.bench_compiled,
                            (90, 90, 5), (600, 0, 90)),
    }


TESTS_CAP = {"full": 180, "quick": 55, "tiny": 90}


def run_child(names: list[str], mode: str, deadline: float, result: Path) -> int:
    """Inside the child: run its groups one after the other, writing the JSON as it goes."""
    device = bench_device()
    log = ResultsLog(result, {})
    statuses = [run_group(Context(device, mode, deadline, log), name, *_groups()[name][:2], needs=0)
                for name in names]
    return 0 if all(s == "ok" for s in statuses) else 1


def run_tests(mode: str, out: Path, timeout: float, device) -> dict:
    """pytest -m cuda over tests/test_cuda*.py (quick: the ops and fields only); the counts
    and the failures by name, read from a log written test by test (bench/gpu/pytest_log.py),
    so a run cut off at its time limit still reports what it did."""
    entry = {"title": "CUDA tests (pytest -m cuda)", "status": "running", "rows": [], "notes": []}
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_cuda*.py"))
    if mode == "quick":
        files = [f for f in files if f.endswith(("test_cuda_ops.py", "test_cuda_fields.py"))]
    env = {**os.environ}
    if device.type == "cpu":             # the CPU run (CI): the CUDA tests skip, even where a GPU is
        env["CUDA_VISIBLE_DEVICES"] = ""
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "tests.jsonl"
        env["DAGNET_PYTEST_LOG"] = str(progress)
        progress.touch()
        command = [sys.executable, "-m", "pytest", "-m", "cuda", *files, "-q", "-rfEs", "-p", "no:cacheprovider",
                   "-p", "bench.gpu.pytest_log", "-o", "addopts="]
        with open(out / "pytest.log", "w") as log:
            try:
                rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                    env=env).returncode
            except subprocess.TimeoutExpired:
                rc = None
        results = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    entry["seconds"] = round(time.time() - started, 1)
    counts = {kind: sum(r["outcome"] == kind for r in results) for kind in ("passed", "failed", "error", "skipped")}
    failed = [f"{r['test']}: {r.get('message', '')}" for r in results if r["outcome"] in ("failed", "error")]
    entry["rows"].append({"files": len(files), **counts, "seconds": entry["seconds"]})
    entry["notes"] += [f"failed: {name}" for name in failed[:40]]
    if len(failed) > 40:
        entry["notes"].append(f"... and {len(failed) - 40} more (pytest.log)")
    slowest = sorted(results, key=lambda r: -r["seconds"])[:3]
    if slowest and slowest[0]["seconds"] > 5:
        entry["notes"].append("slowest: " + ", ".join(f"{r['test']} {r['seconds']:.0f} s" for r in slowest))
    ran = counts["passed"] + counts["failed"] + counts["error"]
    if rc is None:
        entry["status"] = f"timed out after {timeout:.0f} s"
    elif ran == 0:
        entry["status"] = "ok" if counts["skipped"] else f"no tests ran (pytest exit {rc})"
        if counts["skipped"]:
            entry["notes"].append("every CUDA test skipped (no CUDA device)")
        else:                                # a collection error, say: its last lines
            entry["notes"] += (out / "pytest.log").read_text(errors="replace").strip().splitlines()[-5:]
    else:
        entry["status"] = "ok" if rc == 0 else "failed"
    print(f"== CUDA tests: {entry['status']}, {entry['rows'][0]}", flush=True)
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.environ.get("OUT") or str(ROOT / "bench" / "gpu" / "out"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no torch.compile: under 3 minutes")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU check of the script itself)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default by mode)")
    parser.add_argument("--skip", action="append", default=[], metavar="GROUP",
                        help="a group to leave out (repeatable; --skip=NAME through run.sh): tests, "
                             "ceilings, chain, chain_triton, dense, train, models, models_compiled")
    parser.add_argument("--group", help=argparse.SUPPRESS)          # in a child: the one group to run
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.group:
        return run_child(args.group.split(","), mode, args.deadline, Path(args.out))

    started = time.time()
    deadline = started + (args.budget or BUDGET[mode])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = bench_device()
    meta = {**describe(device), "mode": mode, "budget_s": round(deadline - started), "commit": _commit()}
    data = {"meta": meta, "groups": {}}

    def save():
        data["meta"]["elapsed_s"] = round(time.time() - started, 1)
        write_atomic(out / "results.json", json.dumps(data, indent=1, default=str) + "\n")
        write_atomic(out / "results.md", markdown(data))

    save()
    if "tests" not in args.skip:
        limit = max(10.0, min(TESTS_CAP[mode], deadline - time.time() - 60))
        data["groups"]["tests"] = run_tests(mode, out, limit, device)
        save()
    index = {"full": 0, "quick": 1, "tiny": 2}[mode]
    batch = []                      # tiny mode: the groups share one child (process starts dominate there)
    for name, (title, _, needs, caps) in _groups().items():
        cap, needs, left = caps[index], needs[index], deadline - time.time()
        if name in args.skip or not cap:
            data["groups"][name] = {"title": title, "status": f"not run in {mode} mode" if not cap else "skipped",
                                    "rows": [], "notes": []}
        elif left < needs:
            data["groups"][name] = {"title": title, "status": "skipped: time budget", "rows": [],
                                    "notes": [f"{left:.0f} s left, needs {needs} s"]}
        elif mode == "tiny":
            batch.append(name)
            continue
        else:
            data["groups"].update(_child([name], mode, min(cap, left), out / "partial.json"))
        save()
    if batch:
        data["groups"].update(_child(batch, mode, deadline - time.time(), out / "partial.json"))
    data["groups"] = {k: data["groups"][k] for k in ["tests", *_groups()] if k in data["groups"]}
    save()
    print("\n" + markdown(data), flush=True)
    print(f"total {time.time() - started:.0f} s; results in {out}", flush=True)
    return 0 if all(g["status"] == "ok" or g["status"].startswith(("skipped", "not run"))
                    for g in data["groups"].values()) else 1


def _child(names: list[str], mode: str, seconds: float, result: Path) -> dict:
    """Groups in a child process, killed after ``seconds``; what it wrote is kept."""
    command = [sys.executable, "-m", "bench.gpu.run", str(result), *([f"--{mode}"] if mode != "full" else []),
               "--group", ",".join(names), "--deadline", str(time.time() + seconds - 5)]
    started = time.time()
    try:
        rc = subprocess.run(command, cwd=ROOT, timeout=seconds + 5).returncode
    except subprocess.TimeoutExpired:
        rc = None
    try:
        written = json.loads(result.read_text())["groups"]
    except (OSError, ValueError, KeyError):
        written = {}
    result.unlink(missing_ok=True)           # merged into results.json below
    entries = {}
    for name in names:
        entry = written.get(name) or {"title": _groups()[name][0], "status": "running", "rows": [], "notes": []}
        if entry["status"] == "running":         # the child died or was killed before or in this group
            entry["status"] = f"killed after {seconds:.0f} s" if rc is None else f"crashed (exit {rc})"
            entry.setdefault("seconds", round(time.time() - started, 1))
        entries[name] = entry
    return entries


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
