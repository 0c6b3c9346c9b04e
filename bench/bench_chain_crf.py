"""Chain CRF speed against pytorch-crf (and torch-struct, if installed) on CPU.

    python bench/bench_chain_crf.py [--repeats 7] [--threads 1] [--out FILE]

For each shape: nll forward + backward and Viterbi decode, with ragged
lengths (every sequence at least T/2 long, the first full). Implementations
run alternately in one process and the median of the repeats is reported,
so machine noise hits all of them alike; each timed run follows an untimed
one of the same implementation (steady state, as in training). Before timing, results are checked
to agree (nll, gradients, decoded tags); a mismatch aborts the run.
torch-struct's decode time is its ``argmax`` (edge one-hots) only, without
turning them back into tags. One intra-op thread by default: on a small shared
machine, threading these small per-step ops mostly measures thread contention.
"""
import argparse
import statistics
import time
import warnings

import torch
import torchcrf

from dagnet.fields.chain import ChainCRF

try:
    import torch_struct
except ImportError:  # optional column
    torch_struct = None
warnings.filterwarnings("ignore", message=".*arg_constraints.*")  # torch-struct's distributions

SHAPES = [(32, 50, 10), (64, 200, 20), (16, 1000, 5)]


def make_problem(B, T, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    ours = ChainCRF(K)
    theirs = torchcrf.CRF(K, batch_first=True)
    with torch.no_grad():
        for mine, other in ((ours.start, theirs.start_transitions),
                            (ours.end, theirs.end_transitions),
                            (ours.transitions, theirs.transitions)):
            mine.copy_(torch.randn(mine.shape, generator=g))
            other.copy_(mine)
    emissions = torch.randn(B, T, K, generator=g).mul_(3).requires_grad_()
    tags = torch.randint(K, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T) < lengths[:, None]
    return ours, theirs, emissions, tags, lengths, mask


def struct_potentials(crf, emissions, lengths):
    """torch-struct edge scores phi[b, n, y_{n+1}, y_n] with start and end folded in."""
    B, T, K = emissions.shape
    phi = crf.transitions.t() + emissions[:, 1:, :, None]
    first = crf.start + emissions[:, 0]
    phi = phi + torch.nn.functional.pad(first[:, None, None, :], (0, 0, 0, 0, 0, T - 2))
    at_end = (torch.arange(T - 1) == (lengths - 2)[:, None]).to(phi.dtype)
    return (phi + at_end[..., None, None] * crf.end[:, None]).contiguous()


def runners(ours, theirs, emissions, tags, lengths, mask):
    def nll_ours():
        emissions.grad = None
        ours.nll(emissions, tags, mask, reduction="sum").backward()
        return emissions.grad

    def nll_theirs():
        emissions.grad = None
        (-theirs(emissions, tags, mask)).backward()
        return emissions.grad

    def decode_ours():
        with torch.no_grad():
            return ours.decode(emissions, mask)[0]

    def decode_theirs():
        with torch.no_grad():
            out = torch.full(tags.shape, -1)
            for b, path in enumerate(theirs.decode(emissions, mask)):
                out[b, : len(path)] = torch.tensor(path)
            return out

    jobs = {"nll fwd+bwd": {"dagnet": nll_ours, "pytorch-crf": nll_theirs},
            "decode": {"dagnet": decode_ours, "pytorch-crf": decode_theirs}}
    if torch_struct is not None:
        parts = torch_struct.LinearChain.to_parts(tags, emissions.shape[-1], lengths)

        def nll_struct():
            emissions.grad = None
            phi = struct_potentials(ours, emissions, lengths)
            dist = torch_struct.LinearChainCRF(phi, lengths)
            (-dist.log_prob(parts.to(emissions.dtype))).sum().backward()
            return emissions.grad

        def decode_struct():
            with torch.no_grad():
                phi = struct_potentials(ours, emissions, lengths)
                return torch_struct.LinearChainCRF(phi, lengths).argmax

        jobs["nll fwd+bwd"]["torch-struct"] = nll_struct
        jobs["decode"]["torch-struct"] = decode_struct
    return jobs


def struct_tags(edges, mask):
    """Tags from torch-struct's edge one-hots [b, n, y_{n+1}, y_n]."""
    rest = edges.sum(-1).argmax(-1)
    first = edges[:, :1].sum(-2).argmax(-1)
    return torch.cat([first, rest], 1).masked_fill(~mask, -1)


def check(jobs, mask):
    """Every implementation must agree before it is timed."""
    for op, impls in jobs.items():
        ref = impls["dagnet"]().clone()
        for name, run in impls.items():
            out = run().clone()
            if name == "torch-struct" and op == "decode":
                out = struct_tags(out, mask)
            ok = torch.equal(out, ref) if op == "decode" else torch.allclose(
                out, ref, rtol=0, atol=5e-3)
            if not ok:
                raise SystemExit(f"{op}: {name} disagrees with dagnet")


def median_ms(jobs, repeats):
    """Median time per implementation, in steady state as in a training loop. The
    implementations alternate within each repeat; each runs once untimed right before
    its timed run, so that none pays for the one before it (after torch-struct frees
    gigabytes, the next run's allocations page-fault afresh)."""
    times = {op: {name: [] for name in impls} for op, impls in jobs.items()}
    for op, impls in jobs.items():
        for _ in range(repeats):
            for name, run in impls.items():
                run()
                t0 = time.perf_counter()
                run()
                times[op][name].append(time.perf_counter() - t0)
    return {op: {name: 1e3 * statistics.median(ts) for name, ts in d.items()}
            for op, d in times.items()}


def table(rows, peers):
    head = "| B, T, K | op | dagnet ms |" + "".join(f" {p} ms | speedup vs {p} |" for p in peers)
    lines = [head + " results match |", "|" + "---|" * (4 + 2 * len(peers))]
    for shape, op, ms in rows:
        cells = "".join(f" {ms[p]:.2f} | {ms[p] / ms['dagnet']:.1f}x |" for p in peers)
        lines.append(f"| {shape} | {op} | {ms['dagnet']:.2f} |{cells} yes |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for B, T, K in SHAPES:
        problem = make_problem(B, T, K)
        jobs = runners(*problem)
        check(jobs, problem[-1])
        for op, ms in median_ms(jobs, args.repeats).items():
            rows.append((f"{B}, {T}, {K}", op, ms))
    peers = ["pytorch-crf"] + (["torch-struct"] if torch_struct is not None else [])
    text = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
            f"median of {args.repeats}\n\n" + table(rows, peers))
    if torch_struct is None:
        text += "\n\n(torch-struct not installed: column skipped)"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
