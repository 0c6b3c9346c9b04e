"""Fill docs/benchmarks.md's GPU section from a GPU run's results.json.

    python -m bench.gpu.report OUTDIR/results.json [--docs docs/benchmarks.md]

The section sits between ``<!-- gpu:begin -->`` and ``<!-- gpu:end -->`` (appended
if absent); the rest of the page is kept. It holds the date, the device and the
script's tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import markdown

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"
HOW = ("`bash bench/gpu/run.sh [--quick] OUTDIR` on a machine with a GPU (`make gpu-wheels` first, to carry "
       "lark, pytorch-crf and torch-struct there): the CUDA tests (`pytest -m cuda`), then these benchmarks, "
       "each group in a process of its own; ratios are medians of alternating runs in one process, timed "
       "with CUDA events. `python -m bench.gpu.report OUTDIR/results.json` writes this section.")


def section(data: dict) -> str:
    meta = data["meta"]
    device = meta.get("name", meta.get("device"))
    head = (f"## GPU\n\nRun on {meta.get('date')} on {device}"
            + (f" ({meta['memory_gib']} GiB, compute capability {meta['capability']})" if "capability" in meta else "")
            + f", torch {meta.get('torch')}, commit {meta.get('commit') or 'unknown'}, {meta.get('mode')} mode, "
            f"{meta.get('elapsed_s', '?')} s in all. {HOW}\n\n")
    body = markdown(data).split("\n", 2)[2]          # the tables, without the one-line header
    return head + body.replace("\n### ", "\n#### ").replace("### ", "#### ", 1)


def write(docs: Path, text: str) -> None:
    old = docs.read_text() if docs.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    docs.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    if data["meta"].get("device", "").startswith("cpu"):
        print("report: these results are from the CPU, not a GPU: the section is left as it is", file=sys.stderr)
        return 1
    write(args.docs, section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
