"""The README demo's training time (`dagnet train specs/digits_cnn.yaml`), quiet and on a loaded machine.

Trains the demo spec with the default settings (`threads: auto`) and with
`--threads N` (N = the cores: PyTorch's own default), alternating, first on the
machine as it is, then while a second process loads every core: a busy loop
per core, or a second demo training with PyTorch's default threads. Reports
the training seconds each run prints (the set-up, imports and data loading
excluded) and the median per case. Run without OMP_NUM_THREADS.

    python bench/bench_demo.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "digits_cnn.yaml"
BUSY = """
import multiprocessing, sys
def spin():
    while True:
        pass
if __name__ == "__main__":
    spinners = [multiprocessing.Process(target=spin) for _ in range(int(sys.argv[1]))]
    [p.start() for p in spinners]
    [p.join() for p in spinners]
"""
SECOND_TRAINING = ("import subprocess, sys, tempfile\nwhile True:\n"
                   "    with tempfile.TemporaryDirectory() as d:\n"
                   f"        subprocess.run([sys.executable, '-m', 'dagnet', 'train', {str(SPEC)!r}, '--threads', "
                   "sys.argv[1], '--out', d, '-o', 'loggers=[]'], stdout=subprocess.DEVNULL)\n")


def train_seconds(threads: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-m", "dagnet", "train", str(SPEC), "--out", out, *threads.split()],
                              cwd=ROOT, capture_output=True, text=True, check=True)
    return float(re.search(r"epochs in ([\d.]+) s", done.stdout).group(1))


def measure(cases: dict[str, str], rounds: int) -> dict[str, list[float]]:
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, flags in cases.items():
            times[name].append(train_seconds(flags))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loaded-only", action="store_true", help="skip the quiet case")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        sys.exit("bench_demo: unset OMP_NUM_THREADS (the thread count is what is measured)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # a timeout still stops the load below
    cores = str(os.cpu_count() or 1)
    cases = {"default (threads: auto)": "", f"--threads {cores} (PyTorch's default)": f"--threads {cores}"}
    loads = {} if args.loaded_only else {"quiet (the machine as it is)": None}
    loads |= {f"beside a busy loop on each of the {cores} cores": [sys.executable, "-c", BUSY, cores],
              "beside a second demo training (PyTorch's default threads)":
                  [sys.executable, "-c", SECOND_TRAINING, cores]}
    print(f"dagnet train specs/digits_cnn.yaml (15 epochs), training seconds; {cores} cores; "
          f"median of {args.rounds} alternating runs; load average before: {os.getloadavg()[0]:.1f}")
    for load_name, command in loads.items():
        load = command and subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        try:
            time.sleep(2 if load else 0)
            times = measure(cases, args.rounds)
        finally:
            if load:
                os.killpg(load.pid, 9)
                load.wait()
        print(f"{load_name}")
        for name, runs in times.items():
            print(f"  {name:36s} {statistics.median(runs):6.1f} s   runs: {', '.join(f'{t:.1f}' for t in runs)}")


if __name__ == "__main__":
    main()
