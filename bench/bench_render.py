"""Time `dagnet render` on ResNet-50 and DenseNet-121, collapsed and expanded.

    python bench/bench_render.py [--engines graphviz-pure,dot] [--formats svg,tex]

Reports the library time (figure + DOT + layout + output, after `dagnet.load`)
for each engine found, then the whole shell command collapsed (a fresh Python:
start-up, parsing, checking, drawing; no torch import), best of 5.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [("resnet50", {}), ("resnet50", {"expand": True}),
         ("densenet121", {}), ("densenet121", {"expand": True})]


def main(argv=None) -> int:
    import dagnet
    from dagnet.render import RenderError, render
    from dagnet.render.layout import find_engine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="graphviz-pure,dot")
    parser.add_argument("--formats", default="svg")
    parser.add_argument("--skip-slow-dot", action="store_true",
                        help="skip expanded DenseNet with system dot (old versions take minutes)")
    args = parser.parse_args(argv)
    engines = []
    for name in args.engines.split(","):
        try:
            engine = find_engine(name)
            engines.append(engine)
        except RenderError:
            print(f"({name}: not installed)")
    print(f"{'spec':12s} {'view':9s} {'engine':14s} {'fmt':4s} {'nodes':>6s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec, options in CASES:
            ir = dagnet.load(ROOT / "specs" / f"{spec}.yaml")
            view = "expanded" if options else "collapsed"
            for engine in engines:
                if args.skip_slow_dot and engine.name == "dot" and options and spec == "densenet121":
                    continue
                for fmt in args.formats.split(","):
                    start = time.perf_counter()
                    render(ir, Path(tmp) / f"fig.{fmt}", engine=engine.name, **options)
                    seconds = time.perf_counter() - start
                    nodes = len(ir.graph) if options else "-"
                    print(f"{spec:12s} {view:9s} {engine.name:14s} {fmt:4s} {nodes!s:>6s} {seconds:8.2f}",
                          flush=True)
        print(f"\n{'command':58s} {'seconds':>8s} (best of 5, a fresh process each)")
        for spec in ("resnet50", "densenet121"):
            command = ["dagnet", "render", f"specs/{spec}.yaml", "-o", f"{tmp}/{spec}.svg"]
            times = []
            for _ in range(5):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "dagnet", *command[1:]], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
            print(f"{' '.join(command[:3]) + ' -o ' + spec + '.svg':58s} {min(times):8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
