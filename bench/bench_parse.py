"""Parsing and checking a large spec: the DSL front end against the YAML one.

Builds a spec of N node statements (convolutions, norms, activations, residual
sums, a few chains and parameter expressions), writes it as DSL and as YAML,
and times, best of R runs: parse (text -> Spec) and load (parse + expand +
check, i.e. ``dagnet.load``). The target is under a second for 2,000 nodes.

    python bench/bench_parse.py [--nodes 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from dagnet.spec.dsl import load_dsl_spec  # noqa: E402
from dagnet.spec.yaml_printer import to_yaml  # noqa: E402
from dagnet.spec.yaml_loader import load_yaml_spec  # noqa: E402


def big_spec(nodes: int) -> str:
    """DSL text with ``nodes`` node statements in a long residual trunk."""
    lines = ["model big", "param width = 16, half = width // 2", "", "input image[width, H, W]", ""]
    prev = "image"
    for k in range(nodes):
        name = f"n{k}"
        if k % 5 == 0:
            lines.append(f"{name} = {prev} -> conv2d(width, 3, padding=1, bias=false)")
        elif k % 5 == 1:
            lines.append(f"{name} = {prev} -> batch_norm -> relu")
        elif k % 5 == 2:
            lines.append(f"{name} = {prev} -> conv2d(half * 2, 1, stride=1 if {k} > 0 else 2)")
        elif k % 5 == 3:
            lines.append(f"{name} = {prev} + n{k - 3}")
        else:
            lines.append(f"{name} = {prev} -> relu")
        prev = name
    lines += ["", f"output {prev}", ""]
    return "\n".join(lines)


def best(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dag = Path(tmp) / "big.dag"
        dag.write_text(big_spec(args.nodes))
        load_dsl_spec(dag)                                  # warm the parser cache
        yml = Path(tmp) / "big.yaml"
        yml.write_text(to_yaml(load_dsl_spec(dag)))
        ir = dagnet.load(dag)
        count = sum(1 for n in ir.graph.nodes if ir.node(n).op != "input")
        print(f"{args.nodes:,} node statements ({count:,} IR nodes), "
              f"{len(dag.read_text().splitlines()):,} DSL lines, "
              f"{len(yml.read_text().splitlines()):,} YAML lines; best of {args.repeats}")
        rows = [
            ("DSL  parse", best(lambda: load_dsl_spec(dag), args.repeats)),
            ("DSL  parse + check", best(lambda: dagnet.load(dag), args.repeats)),
            ("YAML parse", best(lambda: load_yaml_spec(yml), args.repeats)),
            ("YAML parse + check", best(lambda: dagnet.load(yml), args.repeats)),
        ]
    for label, seconds in rows:
        print(f"  {label:<20} {seconds * 1000:8.1f} ms")
    if args.nodes != 2000:
        return 0
    ok = rows[1][1] < 1.0
    print("target (2,000 nodes, DSL parse + check < 1 s):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
