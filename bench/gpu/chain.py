"""Chain CRF on the device: nll forward + backward and Viterbi decode, against
pytorch-crf and torch-struct (each column only where the package imports).

dagnet runs three ways: ``auto`` (what a user gets), and the linear and the
parallel (log-depth) scans forced, which says where ``auto``'s rule, tuned on
CPUs, should put the switch on a GPU. ``bench_triton`` (a group of its own) times
the nll of bench/gpu/triton_chain.py's one-kernel forward scan (a prototype) against dagnet's. Inputs as in bench/bench_chain_crf.py:
scores 3 * N(0, 1), ragged lengths (at least T/2, the first full). Every
implementation is checked against dagnet before it is timed; the agreement is
a column of the table (a peer that disagrees is still timed, and says so).
"""
from __future__ import annotations

import warnings

import torch

from dagnet.fields.chain import ChainCRF

from . import triton_chain
from .common import Context, compare, relative_error

try:
    import torchcrf
except ImportError:
    torchcrf = None
try:
    import torch_struct
except ImportError:
    torch_struct = None
warnings.filterwarnings("ignore", message=".*arg_constraints.*")  # torch-struct's distributions

GOALS = {"pytorch-crf": 10.0, "torch-struct": 3.0}


def shapes(ctx: Context) -> list[tuple[int, int, int]]:
    return ctx.pick(full=[(64, 200, 20), (256, 512, 50), (16, 4000, 5)],
                    quick=[(64, 200, 20), (16, 4000, 5), (256, 512, 50)],
                    tiny=[(4, 12, 3), (2, 40, 2)])


def problem(B: int, T: int, K: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    crfs = {name: ChainCRF(K, method=method) for name, method in
            (("dagnet", "auto"), ("dagnet linear", "linear"), ("dagnet parallel", "parallel"))}
    start, end, trans = (torch.randn(K, generator=g), torch.randn(K, generator=g), torch.randn(K, K, generator=g))
    for crf in crfs.values():
        with torch.no_grad():
            crf.start.copy_(start), crf.end.copy_(end), crf.transitions.copy_(trans)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    p = {"crfs": {k: v.to(device) for k, v in crfs.items()},
         "emissions": (3 * torch.randn(B, T, K, generator=g)).to(device).requires_grad_(),
         "tags": torch.randint(K, (B, T), generator=g).to(device),
         "lengths": lengths.to(device),
         "mask": (torch.arange(T) < lengths[:, None]).to(device)}
    if torchcrf is not None:
        theirs = torchcrf.CRF(K, batch_first=True)
        with torch.no_grad():
            theirs.start_transitions.copy_(start), theirs.end_transitions.copy_(end)
            theirs.transitions.copy_(trans)
        p["pytorch-crf"] = theirs.to(device)
    return p


def struct_potentials(crf: ChainCRF, emissions, lengths):
    """torch-struct edge scores phi[b, n, y_{n+1}, y_n], start and end folded in."""
    B, T, K = emissions.shape
    phi = crf.transitions.t() + emissions[:, 1:, :, None]
    first = crf.start + emissions[:, 0]
    phi = phi + torch.nn.functional.pad(first[:, None, None, :], (0, 0, 0, 0, 0, T - 2))
    at_end = (torch.arange(T - 1, device=emissions.device) == (lengths - 2)[:, None]).to(phi.dtype)
    return (phi + at_end[..., None, None] * crf.end[:, None]).contiguous()


def struct_tags(edges, mask):
    """Tags from torch-struct's edge one-hots [b, n, y_{n+1}, y_n]."""
    rest = edges.sum(-1).argmax(-1)
    first = edges[:, :1].sum(-2).argmax(-1)
    return torch.cat([first, rest], 1).masked_fill(~mask, -1)


def jobs(p: dict, triton: bool = False) -> dict:
    """{op: {implementation: run}}; each run returns what is compared (gradient or tags).
    ``triton``: dagnet against the Triton prototype only (its own group: a kernel fault that
    poisons the CUDA context then costs that group alone)."""
    e, tags, mask, lengths = p["emissions"], p["tags"], p["mask"], p["lengths"]
    nll, decode = {}, {}
    for name, crf in p["crfs"].items():
        def nll_dagnet(crf=crf):
            e.grad = None
            crf.nll(e, tags, mask, reduction="sum").backward()
            return e.grad

        def decode_dagnet(crf=crf):
            with torch.no_grad():
                return crf.decode(e, mask)[0]
        nll[name], decode[name] = nll_dagnet, decode_dagnet
    if "pytorch-crf" in p:
        theirs = p["pytorch-crf"]

        def nll_theirs():
            e.grad = None
            (-theirs(e, tags, mask)).backward()
            return e.grad

        def decode_theirs():
            with torch.no_grad():
                return theirs.decode(e, mask)        # its API: a list of lists on the host
        nll["pytorch-crf"], decode["pytorch-crf"] = nll_theirs, decode_theirs
    if torch_struct is not None:
        crf, K = p["crfs"]["dagnet"], e.shape[-1]
        parts = torch_struct.LinearChain.to_parts(tags, K, lengths).to(e.dtype)

        def nll_struct():
            e.grad = None
            dist = torch_struct.LinearChainCRF(struct_potentials(crf, e, lengths), lengths)
            (-dist.log_prob(parts)).sum().backward()
            return e.grad

        def decode_struct():
            with torch.no_grad():
                return torch_struct.LinearChainCRF(struct_potentials(crf, e, lengths), lengths).argmax
        nll["torch-struct"], decode["torch-struct"] = nll_struct, decode_struct
    if triton:
        crf = p["crfs"]["dagnet"]

        def nll_triton():
            e.grad = None
            triton_chain.nll(e, tags, crf.start, crf.end, crf.transitions, mask).backward()
            return e.grad
        return {"nll fwd+bwd": {"dagnet": nll["dagnet"], "triton scan (prototype)": nll_triton}}
    return {"nll fwd+bwd": nll, "decode": decode}


def as_tags(out, mask: torch.Tensor) -> torch.Tensor:
    if isinstance(out, list):                       # pytorch-crf
        tags = torch.full(mask.shape, -1, dtype=torch.long)
        for b, path in enumerate(out):
            tags[b, :len(path)] = torch.tensor(path)
        return tags
    if out.dim() == 4:                              # torch-struct's edge one-hots
        return struct_tags(out, mask).cpu()
    return out.cpu()


def agreement(op: str, out, ref, mask) -> str:
    if op == "decode":
        same = (as_tags(out, mask) == as_tags(ref, mask))[mask.cpu()].float().mean()
        return f"{100 * float(same):.2f}% tags"
    return f"grad rel err {relative_error(out, ref):.1e}"


def bench_triton(ctx: Context) -> None:
    """dagnet's nll against bench/gpu/triton_chain.py's one-kernel scan, at the same shapes."""
    if not triton_chain.available(ctx.device):
        ctx.note("Triton is not installed or cannot run on this device: nothing to time")
        return
    bench(ctx, triton=True)


def bench(ctx: Context, triton: bool = False) -> None:
    if not triton and torchcrf is None:
        ctx.note("pytorch-crf is not installed: its column is missing")
    if not triton and torch_struct is None:
        ctx.note("torch-struct is not installed: its column is missing")
    repeats, seconds = ctx.pick((15, 12.0), (5, 3.0), (3, 1.0))
    for B, T, K in shapes(ctx):
        if ctx.left() < ctx.pick(20, 6, 1):
            ctx.note(f"({B}, {T}, {K}) and later shapes skipped: time budget")
            break
        p = problem(B, T, K, ctx.device)
        for op, runs in jobs(p, triton).items():
            try:
                measure(ctx, (B, T, K), op, runs, p["mask"], repeats, seconds)
            except Exception as error:           # noqa: BLE001 -- the next shape and op still run
                ctx.note(f"({B}, {T}, {K}) {op} failed: {type(error).__name__}: "
                         f"{(str(error).splitlines() or [''])[0][:200]}")
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
        del p


def measure(ctx: Context, shape, op: str, runs: dict, mask, repeats: int, seconds: float) -> None:
    """Check every implementation against dagnet, then time them; one row each."""
    B, T, K = shape
    ref = runs["dagnet"]()
    ref = ref.clone() if isinstance(ref, torch.Tensor) else ref
    agree = {}
    for name, run in list(runs.items()):
        try:
            out = run()
            agree[name] = agreement(op, out, ref, mask)
        except Exception as error:               # noqa: BLE001 -- a peer that fails is a note, not the end
            if name == "dagnet":
                raise
            ctx.note(f"({B}, {T}, {K}) {op}: {name} failed: {type(error).__name__}: "
                     f"{(str(error).splitlines() or [''])[0][:200]}")
            del runs[name]
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    ms = compare(runs, ctx.device, repeats, seconds)
    for name, t in ms.items():
        row = {"B, T, K": f"{B}, {T}, {K}", "op": op, "implementation": name, "ms": t,
               "dagnet (auto) speedup": t / ms["dagnet"], "agreement": agree[name]}
        if name in GOALS:
            row["goal"] = f">= {GOALS[name]:g}x: {'met' if t / ms['dagnet'] >= GOALS[name] else 'missed'}"
        ctx.row(**row)
