"""Semi-Markov, dependency and CKY CRFs against torch-struct and supar on CPU.

    python bench/bench_structures.py [--repeats 5] [--threads 1] [--out FILE] [--only NAME]

At the sizes users run (semi-Markov T=200, max_len=16, K=10, B=16; dependency N=40, B=32;
CKY N=30, L=20, B=16), full lengths: log Z forward + backward, and decode (torch-struct:
its ``argmax`` one-hots, without turning them into labels; supar: its ``argmax`` heads or
span lists). supar 1.1.4 has no semi-Markov CRF and scores unlabelled spans, so its CKY
gets each span's labels reduced first (logsumexp for log Z, max for decode) inside its
timed call. dagnet and one reference run alternately in one process, each block of timed
runs (about 50 ms) after an untimed run; the median of the repeats is reported, and the
ratio dagnet / reference (below 1: dagnet is faster). Results are checked to agree first
(log Z gradients, the best structures' scores). Peak memory: each (structure, op,
implementation) runs once in a fresh process, and its peak resident set size (reset just
before the run through /proc/self/clear_refs) less the resident set before the run is
reported (Linux), with the ratio dagnet / reference.
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
from dagnet.fields.dependency import DependencyCRF, with_root
from dagnet.fields.semi_markov import SemiMarkovCRF

warnings.filterwarnings("ignore", message=".*arg_constraints.*")
warnings.filterwarnings("ignore", message=".*non-tuple sequence.*")  # supar 1.1.4 on torch 2


REFERENCES = ("torch-struct", "supar")


def torch_struct():
    import torch_struct as ts
    from torch_struct.semirings import semirings
    semirings.Semiring.convert = classmethod(lambda cls, p: p.unsqueeze(0).clone())
    return ts


def supar_arcs(x):
    """Arc scores x[b, h, m] (root -> m on the diagonal) as supar's [b, dependent, head]: our
    root-token layout (:func:`with_root`) transposed, its -inf (self-loops, arcs into the root)
    raised to -1e5, since supar's Eisner backward turns -inf into NaN."""
    return with_root(x).mT.clamp_min(-1e5)


def supar_spans(x):
    """Span scores x[b, i, j] (words i..j) as supar's over fenceposts: [b, i, j + 1]."""
    return torch.nn.functional.pad(x, (1, 0, 0, 1))


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


def jobs(ts, sp=None):
    """{structure: (input, log Z fns, decode fns, best-score fns)}, each {implementation: fn};
    sp (supar.structs) None leaves supar out."""
    out = {}
    # the size, then two where torch-struct fits: one sentence, or shorter segments
    for B, T, L, K in ((16, 200, 16, 10), (1, 200, 16, 10), (16, 200, 4, 5)):
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
        {"dagnet": lambda x: nonproj.decode(x)[0]},
        {"dagnet": lambda x: nonproj.decode(x)[1]},
    )
    spans = torch.randn(16, 30, 30, 20, generator=g)
    cky = CKYCRF(20)
    out["CKY N=30 L=20 B=16"] = (
        spans,
        {"dagnet": lambda x: cky.log_partition(x), "torch-struct": lambda x: ts.TreeCRF(x).partition},
        {"dagnet": lambda x: cky.decode(x)[0], "torch-struct": lambda x: ts.TreeCRF(x).argmax},
        {"dagnet": lambda x: cky.decode(x)[1], "torch-struct": lambda x: _dot(ts.TreeCRF(x).argmax, x)},
    )
    if sp is not None:
        for name, cls in (("dependency (projective) N=40 B=32", sp.DependencyCRF),
                          ("dependency (non-projective) N=40 B=32", sp.MatrixTree)):
            logz, decode, best = out[name][1:]
            logz["supar"] = lambda x, c=cls: c(supar_arcs(x), multiroot=False).log_partition
            decode["supar"] = lambda x, c=cls: c(supar_arcs(x), multiroot=False).argmax
            best["supar"] = lambda x, c=cls: c(supar_arcs(x), multiroot=False).max
        logz, decode, best = out["CKY N=30 L=20 B=16"][1:]
        logz["supar"] = lambda x: sp.ConstituencyCRF(supar_spans(x.logsumexp(-1))).log_partition
        decode["supar"] = lambda x: sp.ConstituencyCRF(supar_spans(x.amax(-1))).argmax
        best["supar"] = lambda x: sp.ConstituencyCRF(supar_spans(x.amax(-1))).max
    return out


def supar():
    """supar.structs, or None where supar does not install."""
    try:
        import supar.structs
    except ImportError:
        return None
    return supar.structs


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


def check(name, x, logz, best, ref):
    """The reference's log Z gradients (the marginals) and best structures' scores must agree with
    dagnet's before timing; None if they do, else why the reference cannot run here."""
    pair = {impl: logz[impl] for impl in ("dagnet", ref)}
    try:
        grads = {impl: runner("log Z fwd+bwd", fn, x)() for impl, fn in pair.items()}
    except RuntimeError as exc:  # torch-struct's log-depth scan: (B, T/2, L K, L K, L K) products
        if "alloc" not in str(exc):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(exc))
        return f"out of memory (asked for {int(asked.group(1)) / 1e9:.1f} GB)" if asked else "out of memory"
    a, b = grads["dagnet"], grads[ref]
    if not torch.allclose(a, b, atol=2e-3, rtol=0):
        raise SystemExit(f"{name}: log Z gradients disagree with {ref} (max diff {float((a - b).abs().max()):.2e})")
    if ref in best:
        ours, theirs = (best[impl](x.detach()) for impl in ("dagnet", ref))
        if not torch.allclose(ours, theirs.to(ours.dtype), atol=1e-3, rtol=1e-5):
            raise SystemExit(f"{name}: best scores disagree with {ref} (max diff {float((ours - theirs).abs().max()):.2e})")
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
    x, logz, decode, _ = jobs(torch_struct(), supar())[name]
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


def _ratio(r: float) -> str:
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--only", help="run only the structures whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sp = supar()
    lines = ["| structure | op | reference | dagnet ms | reference ms | time ratio | dagnet peak MB "
             "| reference peak MB | memory ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name, (x, logz, decode, best) in jobs(torch_struct(), sp).items():
        if args.only and args.only not in name:
            continue
        for ref in REFERENCES:
            if ref not in logz and ref not in decode:
                continue
            failed = check(name, x, logz, best, ref) if ref in logz else None
            for op, fns in (("log Z fwd+bwd", logz), ("decode", decode)):
                if ref not in fns:
                    continue
                row = f"| {name} | {op} | {ref} |"
                if failed:
                    ms = median_ms({"dagnet": runner(op, fns["dagnet"], x)}, args.repeats)
                    row += f" {ms['dagnet']:.1f} | {failed} | - | {peak_mb(name, op, 'dagnet'):.0f} | - | - |"
                else:
                    ms = median_ms({impl: runner(op, fns[impl], x) for impl in ("dagnet", ref)}, args.repeats)
                    mb = {impl: peak_mb(name, op, impl) for impl in ("dagnet", ref)}
                    row += (f" {ms['dagnet']:.1f} | {ms[ref]:.1f} | {_ratio(ms['dagnet'] / ms[ref])} | {mb['dagnet']:.0f} "
                            f"| {mb[ref]:.0f} | {_ratio(mb['dagnet'] / max(mb[ref], 1))} |")
                lines.append(row)
                print(row, flush=True)
    text = "\n".join(lines)
    print(json.dumps({"threads": args.threads, "repeats": args.repeats}))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
