"""`dagnet import` over every torchvision classification model: how many import with equal outputs,
how short the specs are, how long it takes.

    PYTHONPATH=. python -m bench.bench_import                 # every model (each in its own process)
    PYTHONPATH=. python -m bench.bench_import resnet50 vit_b_16
    PYTHONPATH=. python -m bench.bench_import --markdown results.json   # the table for docs/benchmarks.md

Each model is built with random weights, in eval mode, imported from its
instance (the same path as ``dagnet import torchvision.models:NAME``), and the
compiled spec's outputs are compared with torchvision's on two random 3x224x224
images (float32): equal means a max abs diff <= 1e-4 x the outputs' scale.
Statements are the imported DSL's; flat nodes are the ops captured (what
``--flat`` writes, one statement each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TIMEOUT = 900


# the largest (300 M - 650 M parameters) run last
HEAVY = ("vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_y_16gf", "vgg19_bn",
         "vgg19", "vgg16_bn", "vgg16", "wide_resnet101_2", "efficientnet_b7", "resnext101_64x4d")


def models() -> list[str]:
    from dagnet.importer.imported import _torchvision_ready
    _torchvision_ready()
    import torchvision
    names = sorted(torchvision.models.list_models(module=torchvision.models))
    return sorted(names, key=lambda n: (n in HEAVY, HEAVY.index(n) if n in HEAVY else 0, n)[::-1][::-1])


def one(name: str) -> dict:
    """Import one model and verify it; the row of the table."""
    import torch

    from dagnet.importer.imported import _torchvision_ready, import_model
    _torchvision_ready()
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    row = {"model": name, "params": sum(p.numel() for p in model.parameters())}
    start = time.perf_counter()
    try:
        imported = import_model(model, name=name)
        row.update(statements=imported.statements(), flat_nodes=len(imported.captured.ops),
                   unsupported=sorted({op.args["source_op"] for op in imported.unsupported}))
        imported.verify()
        row.update(ok=True, max_abs_diff=imported.max_abs_diff, scale=imported.scale)
    except Exception as error:      # noqa: BLE001 - every failure is a row of the table, with why
        row.update(ok=False, why=f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def run_all(names: list[str], out: Path) -> list[dict]:
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {r["model"] for r in rows}
    for name in names:
        if name in done:
            continue
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.bench_import", "--one", name], capture_output=True,
                                  text=True, timeout=TIMEOUT, env=env, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"model": name, "ok": False,
                                                       "why": (proc.stderr.strip().splitlines() or ["crashed"])[-1]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "ok": False, "why": f"timed out after {TIMEOUT} s"}
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    return rows


HEADLINE = {"resnet50": "stage depths 3, 4, 6, 3 as `bottleneck(...) * N`",
            "densenet121": "one `dense_layer * N dense`, N = 6, 12, 24, 16",
            "vit_b_16": "`encoder_block * 12`"}


def markdown(rows: list[dict]) -> str:
    ok = [r for r in rows if r.get("ok")]
    by_name = {r["model"]: r for r in rows}
    lines = [(f"Imported with outputs equal to torchvision's: **{len(ok)} / {len(rows)}** "
              f"({100 * len(ok) / max(len(rows), 1):.0f}%)."), ""]
    failed = [r for r in rows if not r.get("ok")]
    if failed:
        lines += ["Not imported:", ""]
        lines += [f"* {r['model']}: {r.get('why', '')}" + (f" (unmapped: {', '.join(r['unsupported'])})"
                                                         if r.get("unsupported") else "") for r in failed]
        lines.append("")
    lines += ["| model | statements | flat nodes | folded as |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {by_name[name].get('statements', '')} | {by_name[name].get('flat_nodes', '')} | {what} |"
              for name, what in HEADLINE.items() if name in by_name]
    lines += ["",
             "| model | params | statements | flat nodes | max abs diff | seconds | result |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: r["model"]):
        diff = f"{r['max_abs_diff']:.2g}" if r.get("max_abs_diff") is not None else ""
        result = "equal" if r.get("ok") else r.get("why", "").replace("|", "\\|")
        lines.append(f"| {r['model']} | {r.get('params', 0) / 1e6:.1f} M | {r.get('statements', '')} | "
                     f"{r.get('flat_nodes', '')} | {diff} | {r.get('seconds', '')} | {result} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models (default: all of torchvision.models.list_models)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench_import.json", help="results, resumed if present")
    parser.add_argument("--markdown", metavar="JSON", help="print the table of a results file")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    rows = run_all(args.names or models(), Path(args.out))
    print(markdown(rows))


if __name__ == "__main__":
    main()
