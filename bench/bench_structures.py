"""Semi-Markov, dependency and CKY CRFs against torch-struct on CPU.

    python bench/bench_structures.py [--repeats 5] [--threads 1] [--out FILE] [--only NAME]

At the sizes users run (semi-Markov T=200, max_len=16, K=10, B=16; dependency N=40, B=32;
CKY N=30, L=20, B=16), full lengths: log Z forward + backward, and decode (torch-struct:
its ``argmax`` one-hots, without turning them into labels). Implementations run
alternately in one process, each block of timed runs (about 50 ms) after an untimed run;
the median of the repeats is reported, and the ratio dagnet / torch-struct (below 1: dagnet is faster).
Results are checked to agree first (log Z, gradients, the decoded structure). Peak memory:
each (structure, op, implementation) runs once in a fresh process, and its peak resident
set size (reset just before the run through /proc/self/clear_refs) less the resident set
before the run is reported (Linux), with the ratio dagnet / torch-struct.
torch-struct 0.5 predates torch 2: its ``Semiring.convert`` returns a view of a leaf that
it then fills in place, which torch now refuses, so it is patched to copy.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import warnings

import torch

from dagnet.fields.cky import CKYCRF
from dagnet.fields.dependency import DependencyCRF
from dagnet.fields.semi_markov import SemiMarkovCRF

warnings.filterwarnings("ignore", message=".*arg_constraints.*")


def torch_struct():
    import torch_struct as ts
    from torch_struct.semirings import semirings
    semirings.Semiring.convert = classmethod(lambda cls, p: p.unsqueeze(0).clone())
    return ts


def semi_markov_problem(B=16, T=200, L=16, K=10):
    """Our segment scores and transitions, and torch-struct's edges [b, n, length, label, previous label]
    (its first segment's previous label is free: we pin it to label 0, whose transitions are our start)."""
    g = torch.Generator().manual_seed(0)
    crf = SemiMarkovCRF(K, L, inputs="segments")
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(K, K, generator=g))
        crf.start.copy_(crf.transitions[0])
    seg = torch.randn(B, T, L, K, generator=g)
    past = (torch.arange(T)[:, None] + torch.arange(1, L + 1)) > T  # segments running past the end
    seg = seg.masked_fill(past[None, :, :, None], float("-inf"))

    def edges(s):
        e = s[..., None] + crf.transitions.t().detach()
        e = torch.cat([torch.full_like(e[:, :, :1], -1e5), e.clamp_min(-1e5)], 2)
        first = torch.zeros(K, dtype=torch.bool)
        first[1:] = True
        return torch.cat([e[:, :1].masked_fill(first, -1e5), e[:, 1:]], 1)

    return crf, seg, edges


def jobs(ts):
    out = {}
    for B, T, L, K in ((16, 200, 16, 10), (16, 200, 4, 5)):  # the second: where torch-struct fits
        crf, seg, edges = semi_markov_problem(B, T, L, K)
        out[f"semi-Markov T={T} max_len={L} K={K} B={B}"] = (
            seg,
            {"dagnet": lambda x, c=crf: c.log_partition(x),
             "torch-struct": lambda x, e=edges: ts.SemiMarkovCRF(e(x)).partition},
            {"dagnet": lambda x, c=crf: c.decode(x)[0], "torch-struct": lambda x, e=edges: ts.SemiMarkovCRF(e(x)).argmax},
            {"dagnet": lambda x, c=crf: c.decode(x)[1],
             "torch-struct": lambda x, e=edges: _dot(ts.SemiMarkovCRF(e(x)).argmax, e(x))},
        )
    g = torch.Generator().manual_seed(1)
    arcs = torch.randn(32, 40, 40, generator=g)
    dep = DependencyCRF(projective=True)
    out["dependency (projective) N=40 B=32"] = (
        arcs,
        {"dagnet": lambda x: dep.log_partition(x), "torch-struct": lambda x: ts.DependencyCRF(x, multiroot=False).partition},
        {"dagnet": lambda x: dep.decode(x)[0], "torch-struct": lambda x: ts.DependencyCRF(x, multiroot=False).argmax},
        {"dagnet": lambda x: dep.decode(x)[1], "torch-struct": lambda x: _dot(ts.DependencyCRF(x, multiroot=False).argmax, x)},
    )
    nonproj = DependencyCRF(projective=False)
    out["dependency (non-projective) N=40 B=32"] = (
        arcs,
        {"dagnet": lambda x: nonproj.log_partition(x),
         "torch-struct": lambda x: ts.NonProjectiveDependencyCRF(x, multiroot=False).partition},
        None, None,
    )
    spans = torch.randn(16, 30, 30, 20, generator=g)
    cky = CKYCRF(20)
    out["CKY N=30 L=20 B=16"] = (
        spans,
        {"dagnet": lambda x: cky.log_partition(x), "torch-struct": lambda x: ts.TreeCRF(x).partition},
        {"dagnet": lambda x: cky.decode(x)[0], "torch-struct": lambda x: ts.TreeCRF(x).argmax},
        {"dagnet": lambda x: cky.decode(x)[1], "torch-struct": lambda x: _dot(ts.TreeCRF(x).argmax, x)},
    )
    return out


def _dot(one_hots, potentials):
    """The score of torch-struct's argmax structure: its parts' one-hots dotted with the potentials."""
    return (one_hots * potentials).flatten(1).sum(1)


def runner(op, fn, x):
    if op == "log Z fwd+bwd":
        def run():
            leaf = x.detach().clone().requires_grad_()
            fn(leaf).sum().backward()
            return leaf.grad
        return run
    return lambda: fn(x.detach())


def check(name, x, logz, best):
    """Gradients of log Z (the marginals) and the best structures' scores must agree before timing;
    None if they do, else why torch-struct cannot run here (it ran out of memory)."""
    try:
        grads = {impl: runner("log Z fwd+bwd", fn, x)() for impl, fn in logz.items()}
    except RuntimeError as exc:  # torch-struct's log-depth scan: (B, T/2, L K, L K, L K) products
        if "alloc" not in str(exc):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(exc))
        return f"out of memory (asked for {int(asked.group(1)) / 1e9:.1f} GB)" if asked else "out of memory"
    a, b = grads["dagnet"], grads["torch-struct"]
    if not torch.allclose(a, b, atol=2e-3, rtol=0):
        raise SystemExit(f"{name}: log Z gradients disagree (max diff {float((a - b).abs().max()):.2e})")
    if best is not None:
        ours, theirs = (best[impl](x.detach()) for impl in ("dagnet", "torch-struct"))
        if not torch.allclose(ours, theirs, atol=1e-3, rtol=1e-5):
            raise SystemExit(f"{name}: best scores disagree (max diff {float((ours - theirs).abs().max()):.2e})")
    return None


def median_ms(fns, repeats, block_s=0.05):
    """The median over repeats of the mean time of one call, in ms: each repeat runs every
    implementation in turn, one untimed call and then a block of calls lasting about block_s
    (so that a 2 ms call is not timed alone, within the timer's and the scheduler's noise)."""
    calls = {}
    for impl, run in fns.items():
        run()
        t0 = time.perf_counter()
        run()
        calls[impl] = max(1, round(block_s / max(time.perf_counter() - t0, 1e-6)))
    times = {impl: [] for impl in fns}
    for _ in range(repeats):
        for impl, run in fns.items():
            run()
            t0 = time.perf_counter()
            for _ in range(calls[impl]):
                run()
            times[impl].append((time.perf_counter() - t0) / calls[impl])
    return {impl: 1e3 * statistics.median(t) for impl, t in times.items()}


def peak_mb(name, op, impl) -> float:
    """The growth of peak RSS of one run of (structure, op, impl) in a fresh process, in MB."""
    code = (f"import sys; sys.argv=['x']; import bench.bench_structures as b; "
            f"print(b.one_peak({name!r}, {op!r}, {impl!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def one_peak(name, op, impl) -> float:
    x, logz, decode, _ = jobs(torch_struct())[name]
    run = runner(op, (logz if op == "log Z fwd+bwd" else decode)[impl], x)
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the resident set now
        f.write("5")
    run()
    return _status_mb("VmHWM") - before


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--only", help="run only the structures whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ts = torch_struct()
    lines = ["| structure | op | dagnet ms | torch-struct ms | time ratio | dagnet peak MB | torch-struct peak MB "
             "| memory ratio |", "|---|---|---|---|---|---|---|---|"]
    for name, (x, logz, decode, best) in jobs(ts).items():
        if args.only and args.only not in name:
            continue
        failed = check(name, x, logz, best)
        for op, fns in (("log Z fwd+bwd", logz), ("decode", decode)):
            if fns is None:
                continue
            if failed:
                ms = median_ms({"dagnet": runner(op, fns["dagnet"], x)}, args.repeats)
                mb = peak_mb(name, op, "dagnet")
                lines.append(f"| {name} | {op} | {ms['dagnet']:.1f} | {failed} | - | {mb:.0f} | - | - |")
            else:
                ms = median_ms({impl: runner(op, fn, x) for impl, fn in fns.items()}, args.repeats)
                mb = {impl: peak_mb(name, op, impl) for impl in fns}
                lines.append(f"| {name} | {op} | {ms['dagnet']:.1f} | {ms['torch-struct']:.1f} | "
                             f"{ms['dagnet'] / ms['torch-struct']:.2f} | {mb['dagnet']:.0f} | "
                             f"{mb['torch-struct']:.0f} | {mb['dagnet'] / max(mb['torch-struct'], 1):.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(json.dumps({"threads": args.threads, "repeats": args.repeats}))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
