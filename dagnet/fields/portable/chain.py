"""Portable chain-family fields: the chain, hidden and latent-dynamic CRFs in plain torch.

Twins of ``dagnet.fields.ChainCRF``, ``HiddenCRF`` and ``LatentDynamicCRF`` for every
deployment format (a standalone .py file, TorchScript .pt, torch.export .pt2, ONNX):
the same parameter and buffer names (state dicts load 1:1), the same queries with the
same arguments and conventions (mask True = the position exists; label -1 off the
chain), and one code path with no Python decision on tensor values or on the length:

* each sequence's selected positions are moved to the front by a permutation computed
  every time, gathered straight into the time-major layout the loops read;
* a loop over time is a plain loop in eager and TorchScript, and one traced loop
  (``scan``, ONNX ``Scan``) of _CHAIN_CHUNK unrolled steps per iteration under
  torch.export (.pt2, ONNX), so an exported program keeps batch, length and mask dynamic;
* the sum-product recursion m_{t+1}[j] = log sum_i exp(m_t[i] + e_t[i] + trans[i, j]) runs
  in rescaled probability space, in float64: q_{t+1} = (q_t * x_t) @ W with
  x_t = exp(e_t - max e_t) and W = exp(trans - max trans), one (B, K) x (K, K) product per
  step, renormalised every _CHAIN_CHUNK steps; the backward recursion runs in the same
  loop, as a second batch (the sequences reversed, the transitions transposed). A check
  afterwards proves the result exact (below), or the exact log-space recursion runs
  instead: chosen by ``torch.cond`` under export (ONNX ``If``), so only one of them runs;
* decoding is the max-plus recursion (exact in any dtype) and a backtrack that
  recomputes each argmax for the chosen tag only, as dagnet.fields does (same ties).

Exactness of the rescaled recursion. Every term of (q_t * x_t) @ W is a product of a
message entry, an emission factor and a transition factor. If every nonzero entry of
each message lies within e^-250 of that message's largest, which lies within e^±100,
every finite emission within 250 nats of its position's largest (80 when the scores
are float32: the factors are computed in their dtype) and every finite transition
within 100 of the largest, each term is 0 (a -inf score: a constraint, a masked tag)
or at least e^-700 > 2.2e-308, the smallest normal float64: nothing is flushed to zero
and sums of positive terms are exact to rounding. By induction over t, checking the
scores (in log space) and the messages the loop produced proves the whole result
exact; anything else (±1e4 scores, long runs of near-impossible states under
constraints) takes the exact path.

Imports only torch; a standalone model file holds this source verbatim, so the
private names start with ``_chain_`` (several such files can share one module).
TorchScript takes no global numbers, so the constants are written where they are used.
"""
from typing import List, Optional

import torch
import torch.nn as nn

_CHAIN_CHUNK = 8  # time steps per traced-loop iteration and between renormalisations


# -- ragged sequences: one permutation, computed every time ---------------------------

def _chain_layout(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For mask (B, T): lengths (B,), ``order`` (B, T), the original position of each packed
    slot (selected positions first, each group in time order), and ``slot``, its inverse."""
    selected = mask.long()
    before = selected.cumsum(1) - selected
    lengths = selected.sum(1)
    t = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0).expand_as(before)
    slot = torch.where(mask, before, lengths.unsqueeze(1) + t - before)
    return lengths, torch.zeros_like(slot).scatter(1, slot, t), slot


def _chain_flip(s: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Packed slot s (B, T) of the same position in the sequence reversed within its length."""
    last = lengths.unsqueeze(1) - 1
    return torch.where(s <= last, last - s, s)


def _chain_gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (..., K) read at rows ``rows`` of its flattening to (-1, K): shape rows.shape + (K,).
    (index_select of rows: several times faster than gather on CPU.)"""
    K = x.shape[-1]
    return x.reshape(-1, K).index_select(0, rows.flatten()).view(rows.shape + (K,))


def _chain_rows(order: torch.Tensor, lengths: torch.Tensor, groups: int, backward: bool) -> torch.Tensor:
    """(T, G, B) rows of emissions (groups, B, T, K) flattened, read in packed time-major
    order: every group forward, or (one group) forward and reversed within each length."""
    B, T = order.shape
    base = torch.arange(B, device=order.device).unsqueeze(1) * T
    forward = (order + base).t()
    if backward:
        t = torch.arange(T, device=order.device).unsqueeze(0).expand(B, T)
        return torch.stack([forward, (order.gather(1, _chain_flip(t, lengths)) + base).t()], 1)
    return forward.unsqueeze(1) + torch.arange(groups, device=order.device).view(1, -1, 1) * (B * T)


def _chain_unpack_rows(slot: torch.Tensor) -> torch.Tensor:
    """(B, T) rows of a packed time-major (T, B, ...) result, flattened, holding each
    original position."""
    return slot * slot.shape[0] + torch.arange(slot.shape[0], device=slot.device).unsqueeze(1)


def _chain_top(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over ``dim`` (kept), with -inf replaced by 0 so that ``x - top`` is never NaN."""
    top = x.amax(dim, keepdim=True)
    return top.masked_fill(top == float("-inf"), 0.0)


def _chain_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that is -inf, not NaN, where every term is -inf."""
    top = _chain_top(x, dim)
    return (x - top).exp().sum(dim).log() + top.squeeze(dim)


def _chain_reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError("unknown reduction '" + reduction + "'; expected one of mean, sum, none")


# -- loops over time ---------------------------------------------------------------------
# Each loop is a plain loop (eager, TorchScript) and, in functions that run only under
# export and that TorchScript never compiles, a step for _chain_traced.

def _chain_exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _chain_renormalise(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q / max(q) per row, and log max(q) (0 for rows of zeros)."""
    top = q.amax(-1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    return q / top, top.log()


def _chain_scaled_loop(x: torch.Tensor, w: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Incoming messages u (T, G, B, K) of q_{t+1} = (q_t * x_t) @ w[g], renormalised after
    every _CHAIN_CHUNK steps, and the log-normalisers (n, G, B, 1) of chunks 0, 1, ..."""
    if not torch.jit.is_scripting():
        if _chain_exporting():
            return _chain_traced_scaled(x, w, q)
    us: List[torch.Tensor] = []
    norms: List[torch.Tensor] = []
    for t in range(x.shape[0]):
        us.append(q)
        q = torch.bmm(q * x[t], w)
        if t % 8 == 7:  # _CHAIN_CHUNK
            q, norm = _chain_renormalise(q)
            norms.append(norm)
    norms.append(torch.zeros_like(q[..., :1]))  # one after the last: never empty
    return torch.stack(us), torch.stack(norms)


def _chain_exact_loop(e: torch.Tensor, into: torch.Tensor, m: torch.Tensor, gate: Optional[torch.Tensor]) -> torch.Tensor:
    """Incoming log-messages (T, G, K, B) of m_{t+1}[j] = logsumexp_i m_t[i] + e_t[i] + into[g, i, j]
    (transitions [from, to]), laid out (from, to, batch): the reduction runs over an outer axis, every operand
    contiguous. Under export with a ``gate``, each chunk of steps runs only where it is true."""
    if not torch.jit.is_scripting():
        if _chain_exporting():
            return _chain_traced_exact(e, into, m, gate)
    ms: List[torch.Tensor] = []
    for t in range(e.shape[0]):
        ms.append(m)
        m = _chain_logsumexp((m + e[t]).unsqueeze(2) + into.unsqueeze(-1), 1)
    return torch.stack(ms)


def _chain_max_loop(e: torch.Tensor, into: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Max-plus incoming messages (T, K, B): m_{t+1}[j] = max_i m_t[i] + e_t[i] + into[i, j]
    (transitions [from, to]), laid out (from, to, batch) as in dagnet.fields."""
    if not torch.jit.is_scripting():
        if _chain_exporting():
            return _chain_traced_max(e, into, m)
    ms: List[torch.Tensor] = []
    for t in range(e.shape[0]):
        ms.append(m)
        m = ((m + e[t]).unsqueeze(1) + into.unsqueeze(-1)).amax(0)
    return torch.stack(ms)


def _chain_backtrack_loop(v: torch.Tensor, into: torch.Tensor, inside: torch.Tensor,
                          tag: torch.Tensor) -> torch.Tensor:
    """Tags (T, B) walking back from the last tag ``tag`` (B,): y_t = argmax_i v_t[i] + trans[i, y_{t+1}]
    where ``inside`` (T, B) (t < L - 1), else y_{t+1}; v (T, B, K), into = trans.t() (to, from)."""
    v, inside = v.flip(0), inside.flip(0)
    if not torch.jit.is_scripting():
        if _chain_exporting():
            return _chain_traced_backtrack(v, into, inside, tag).flip(0)
    tags: List[torch.Tensor] = []
    for t in range(v.shape[0]):
        tag = torch.where(inside[t], (into.index_select(0, tag) + v[t]).argmax(-1), tag)
        tags.append(tag)
    return torch.stack(tags).flip(0)


def _chain_traced(step, init, xs, chunk_end=None, gate=None):
    """``carry, outs = step(carry, [x[t] for x in xs])`` for every t, as one traced loop
    (``scan``; ONNX ``Scan``) of _CHAIN_CHUNK unrolled steps per iteration, then
    ``carry, outs = chunk_end(carry)`` after each chunk. The time axis is extended to whole
    chunks by repeating its last step (those steps come after every real one and are
    dropped), by indexing rather than padding: export then proves every size it needs for
    any T >= 1 (two chunks at least: the loop's length is never specialised to 1). With
    ``gate`` (a bool tensor), each chunk runs under ``torch.cond`` (ONNX ``If``) only where it
    is true, else passes the carry through; ``step``'s outputs must then be its incoming
    carry. Returns the step outputs stacked over time, then the chunk outputs stacked."""
    from torch._higher_order_ops.scan import scan
    size, steps, device = _CHAIN_CHUNK, xs[0].shape[0], xs[0].device
    chunks = steps // size + 2
    index = torch.arange(chunks, device=device).unsqueeze(1) * size + torch.arange(size, device=device)
    padded = [x[index.clamp_max(steps - 1)] for x in xs]  # (chunks, size, ...)

    def run(carry, chunk):
        outs = []
        for i in range(size):
            carry, out = step(carry, [x[i] for x in chunk])
            outs.append(out)
        per_chunk = []
        if chunk_end is not None:
            carry, per_chunk = chunk_end(carry)
        return list(carry) + [torch.stack(column) for column in zip(*outs)] + per_chunk

    def fresh(outs):  # cond's branches give new tensors, in one memory layout
        return [t.clone(memory_format=torch.contiguous_format) for t in outs]

    def gated(carry, chunk):
        skip = lambda carry, chunk: fresh(list(carry) + [c.unsqueeze(0).expand((size,) + c.shape) for c in carry])  # noqa: E731
        return torch.cond(gate, lambda carry, chunk: fresh(run(carry, chunk)), skip, (carry, chunk))

    def body(carry, chunk):
        out = run(carry, chunk) if gate is None else gated(carry, chunk)
        return out[:len(carry)], out[len(carry):]

    ys = scan(body, init, padded)[1]
    n = len(ys) - (0 if chunk_end is None else 1)
    kept = torch.arange(steps, device=device)
    return [y.flatten(0, 1).index_select(0, kept) for y in ys[:n]] + ys[n:]


def _chain_traced_scaled(x, w, q):
    def step(carry, x_t):
        return [torch.bmm(carry[0] * x_t[0], w)], [carry[0]]

    def chunk_end(carry):
        q, norm = _chain_renormalise(carry[0])
        return [q], [norm]
    u, norms = _chain_traced(step, [q], [x], chunk_end)
    return u, norms


def _chain_traced_exact(e, into, m, gate):
    def step(carry, e_t):
        return [_chain_logsumexp((carry[0] + e_t[0]).unsqueeze(2) + into.unsqueeze(-1), 1)], [carry[0]]
    return _chain_traced(step, [m], [e], gate=gate)[0]


def _chain_traced_max(e, into, m):
    def step(carry, e_t):
        return [((carry[0] + e_t[0]).unsqueeze(1) + into.unsqueeze(-1)).amax(0)], [carry[0]]
    return _chain_traced(step, [m], [e])[0]


def _chain_traced_backtrack(v, into, inside, tag):
    def step(carry, x_t):
        tag = torch.where(x_t[1], (into.index_select(0, carry[0]) + x_t[0]).argmax(-1), carry[0])
        return [tag], [tag]
    return _chain_traced(step, [tag], [v, inside])[0]


def _chain_inference(*tensors):
    """The tensors, cut from autograd: an exported program runs forward only, and the
    ONNX exporter would otherwise trace the traced loops' backward too."""
    return [t.detach() for t in tensors]


def _chain_choose(risky, exact, fast, operands):
    """``exact(*operands, fast)`` where ``risky``, else ``fast``: torch.cond, so that the
    exported program runs one of them (ONNX ``If``). Both branches give fast's shape,
    as it is: the program then keeps every size as dynamic as its inputs'."""
    return torch.cond(risky, lambda *args: exact(*args).reshape(args[-1].shape), lambda *args: args[-1].clone(),
                      tuple(operands) + (fast,))


def _chain_traced_fallback(risky, exact, fast, e, rows, start, trans, lengths, extra):
    """Under export: ``exact(m, e, rows, lengths, extra, fast)`` with m the exact messages
    (``_chain_exact``) where ``risky``, else ``fast``. In .pt2 the whole exact path is one
    branch of a cond; in ONNX, where a Scan inside an If does not convert, the exact loop
    runs each chunk under an If of its own and only its end is a branch."""
    if torch.onnx.is_in_onnx_export():
        m = _chain_exact(e, rows, start, trans, risky)
        return _chain_choose(risky, exact, fast, (m, e, rows, lengths, extra))

    def whole(e, rows, start, trans, lengths, extra, fast):
        return exact(_chain_exact(e, rows, start, trans, None), e, rows, lengths, extra, fast)
    return _chain_choose(risky, whole, fast, (e, rows, start, trans, lengths, extra))


# -- the chain's dynamic programs ---------------------------------------------------------

def _chain_prepare(e: torch.Tensor, mask: Optional[torch.Tensor], backward: bool):
    """Emissions e (G, B, T, K) in their original layout, read into packed time-major
    order (T, G', B, K) (G' = G, or 2 with ``backward``). Returns the rows and the layout
    (lengths, slot), the emission factors x = exp(e - max e) (float64), the shifts
    max e (T, G', B, 1) and whether some finite emission lies too far below its shift."""
    G, B, T, K = e.shape
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=e.device)
    mask = mask.to(torch.bool)
    e = e.masked_fill(~mask.unsqueeze(-1), 0.0)  # nothing at unselected positions (NaN, -inf) leaks in
    lengths, order, slot = _chain_layout(mask)
    rows = _chain_rows(order, lengths, G, backward)
    h = _chain_top(e, -1)
    d = e - h
    spread = 250.0 if e.dtype == torch.float64 else 80.0
    wide = torch.nan_to_num(d, neginf=0.0).min() < -spread  # (NaN shows in the messages)
    x = _chain_gather_rows(d.exp(), rows).double()
    shifts = h.reshape(-1).index_select(0, rows.flatten()).view(rows.shape + (1,)).double()
    return rows, lengths, slot, e, x, shifts, wide


def _chain_scaled(x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor, trans: torch.Tensor):
    """The rescaled forward recursion, float64: x (T, G, B, K) emission factors, start (G, K),
    trans (G, K, K) [from, to]. Returns the incoming messages u (T, G, B, K), their log
    scales (T, G, B, 1): alpha_t = log(u_t x_t) + scale_t + the emission shifts up to t,
    and ``risky``: a bool tensor, false only if the result is proven exact (module doc)."""
    T, G, B, K = x.shape
    c = _chain_top(trans.flatten(1), -1).unsqueeze(-1)  # (G, 1, 1)
    s = _chain_top(start, -1)  # (G, 1)
    q = (start - s).exp().unsqueeze(1).expand(G, B, K).contiguous()
    u, log_norms = _chain_scaled_loop(x, (trans - c).exp(), q)
    steps = torch.arange(T, device=x.device)
    norms = torch.cat([torch.zeros_like(log_norms[:1]), log_norms.cumsum(0)]).index_select(0, torch.div(
        steps, 8, rounding_mode="floor"))  # _CHAIN_CHUNK
    scale = norms + steps.view(-1, 1, 1, 1).to(x.dtype) * c.unsqueeze(0) + s.view(1, G, 1, 1)
    # the check: messages where they are used (t < L), within e^-249 of their largest,
    # which lies within e^±99; transitions within 100 nats, start within 250. (e^-249 is
    # made in float64 at run time: ONNX would round a constant this small through float32.)
    top = u.amax(-1, keepdim=True)
    floor = top * torch.full_like(top, -249.0).exp()
    small = torch.nan_to_num(floor / u, posinf=0.0).amax(-1) > 1.0  # 0 < u < e^-249 top
    log_top = top.squeeze(-1).log()
    fine = ~small & (log_top >= -99.0) & (log_top <= 99.0)
    used = (steps.unsqueeze(1) < lengths).unsqueeze(1)
    risky = (used & ~fine).any() | _chain_wide(trans, c, 100.0) | _chain_wide(start, s, 250.0)
    return u, scale, risky


def _chain_wide(scores: torch.Tensor, top: torch.Tensor, spread: float) -> torch.Tensor:
    """Whether a finite score lies more than ``spread`` below ``top``, or any is NaN."""
    return ~((scores >= top - spread) | (scores == float("-inf"))).all()


def _chain_exact(e: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, trans: torch.Tensor,
                 gate: Optional[torch.Tensor]) -> torch.Tensor:
    """Incoming log-messages m (T, G, B, K), float64, by the log-space recursion, of the
    emissions e (G, B, T, K) read at ``rows`` (under export, computed only where ``gate``)."""
    e_t = _chain_gather_rows(e, rows).double().permute(0, 1, 3, 2).contiguous()  # (T, G, K, B)
    G, K, B = e_t.shape[1], e_t.shape[2], e_t.shape[3]
    m = start.view(G, K, 1).expand(G, K, B).contiguous()
    m = _chain_exact_loop(e_t, trans, m, gate)
    return m.permute(0, 1, 3, 2)


def _chain_log_z(e: torch.Tensor, mask: Optional[torch.Tensor], start: torch.Tensor, end: torch.Tensor,
                 trans: torch.Tensor) -> torch.Tensor:
    """log Z (G, B), float64, of emissions e (G, B, T, K) under start, end (G, K) and
    transitions (G, K, K) [from, to]; 0 for empty chains."""
    if not torch.jit.is_scripting():
        if _chain_exporting():
            e, start, end, trans = _chain_inference(e, start, end, trans)
    start, end, trans = start.double(), end.double(), trans.double()
    rows, lengths, _, e, x, shifts, wide = _chain_prepare(e, mask, False)
    u, scale, risky = _chain_scaled(x, lengths, start, trans)
    risky = risky | wide
    T, G, B, K = u.shape
    index = (lengths - 1).clamp_min(0).view(1, 1, B, 1)
    last = (u * x).gather(0, index.expand(1, G, B, K)).squeeze(0)
    alpha = last.log() + (scale + shifts.cumsum(0)).gather(0, index.expand(1, G, B, 1)).squeeze(0)
    logz = _chain_logsumexp(alpha + end.unsqueeze(1), -1)
    if not torch.jit.is_scripting():
        if _chain_exporting():
            logz = _chain_traced_fallback(risky, _chain_exact_log_z, logz, e, rows, start, trans, lengths, end)
            return logz.masked_fill(lengths == 0, 0.0)
    if bool(risky):
        logz = _chain_exact_log_z(_chain_exact(e, rows, start, trans, None), e, rows, lengths, end, logz)
    return logz.masked_fill(lengths == 0, 0.0)


def _chain_exact_log_z(m: torch.Tensor, e: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
                       end: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    alpha = m + _chain_gather_rows(e, rows).double()  # (T, G, B, K)
    G, B, K = alpha.shape[1], alpha.shape[2], alpha.shape[3]
    index = (lengths - 1).clamp_min(0).view(1, 1, B, 1).expand(1, G, B, K)
    return _chain_logsumexp(alpha.gather(0, index).squeeze(0) + end.unsqueeze(1), -1)


def _chain_marginals(e: torch.Tensor, mask: Optional[torch.Tensor], start: torch.Tensor, end: torch.Tensor,
                     trans: torch.Tensor) -> torch.Tensor:
    """Node marginals (B, T, K), float64, of emissions e (B, T, K): the forward and the
    backward recursion (the forward one on each sequence reversed, transitions
    transposed, end for start) run as one batch of 2; 0 off the chain and on chains
    with no path."""
    if not torch.jit.is_scripting():
        if _chain_exporting():
            e, start, end, trans = _chain_inference(e, start, end, trans)
    rows, lengths, slot, e, x, _, wide = _chain_prepare(e.unsqueeze(0), mask, True)
    start2 = torch.stack([start, end]).double()
    trans2 = torch.stack([trans, trans.t()]).double()
    u, _, risky = _chain_scaled(x, lengths, start2, trans2)
    risky = risky | wide
    forward = _chain_gather_rows(u[:, 0] * x[:, 0], _chain_unpack_rows(slot))
    backward = _chain_gather_rows(u[:, 1], _chain_unpack_rows(_chain_flip(slot, lengths)))
    on = (slot < lengths.unsqueeze(1)).unsqueeze(-1)
    r = (forward * backward).masked_fill(~on, 0.0)  # each position's marginals, up to a factor
    total = r.sum(-1, keepdim=True)
    mu = r * (1.0 / torch.where(total > 0, total, torch.ones_like(total)))
    if not torch.jit.is_scripting():
        if _chain_exporting():
            return _chain_traced_fallback(risky, _chain_exact_marginals, mu, e, rows, start2, trans2, lengths, slot)
    if bool(risky):
        mu = _chain_exact_marginals(_chain_exact(e, rows, start2, trans2, None), e, rows, lengths, slot, mu)
    return mu


def _chain_exact_marginals(m: torch.Tensor, e: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
                           slot: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    alpha = m[:, 0] + _chain_gather_rows(e, rows[:, 0]).double()  # (T, B, K)
    scores = _chain_gather_rows(alpha, _chain_unpack_rows(slot)) \
        + _chain_gather_rows(m[:, 1], _chain_unpack_rows(_chain_flip(slot, lengths)))
    logz = _chain_logsumexp(scores, -1).unsqueeze(-1)
    on = (slot < lengths.unsqueeze(1)).unsqueeze(-1) & (logz > float("-inf"))
    return (scores - logz.masked_fill(~on, 0.0)).masked_fill(~on, float("-inf")).exp()


def _chain_viterbi(e: torch.Tensor, mask: Optional[torch.Tensor], start: torch.Tensor, end: torch.Tensor,
                   trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MAP tags (B, T), -1 off the chain, and their scores (B,) (the search's, not
    differentiable): the max-plus recursion in the emissions' dtype, then a backtrack
    y_t = argmax_i v_t[i] + trans[i, y_{t+1}] that breaks ties to the lowest tag, as
    dagnet.fields does."""
    e, start, end, trans = e.detach(), start.detach(), end.detach(), trans.detach()
    B, T, K = e.shape
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=e.device)
    mask = mask.to(torch.bool)
    lengths, order, slot = _chain_layout(mask)
    e_t = _chain_gather_rows(e.masked_fill(~mask.unsqueeze(-1), 0.0), _chain_rows(order, lengths, 1, False)[:, 0])
    m = _chain_max_loop(e_t.transpose(1, 2).contiguous(), trans, start.view(K, 1).expand(K, B).contiguous())
    v = (m.transpose(1, 2) + e_t).contiguous()  # (T, B, K): the best score of a prefix ending in each tag
    index = (lengths - 1).clamp_min(0).view(1, B, 1).expand(1, B, K)
    score, tag = (v.gather(0, index).squeeze(0) + end).max(-1)
    inside = torch.arange(T, device=e.device).unsqueeze(1) < lengths - 1
    tags = _chain_backtrack_loop(v, trans.t().contiguous(), inside, tag)  # (T, B), packed
    tags = tags.reshape(-1).index_select(0, _chain_unpack_rows(slot).flatten()).view(B, T)
    return tags.masked_fill(~mask, -1), score.masked_fill(lengths == 0, 0.0)


def _chain_pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([x, y])


# -- the fields ---------------------------------------------------------------------------

class ChainCRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags, emissions (B, T, K): the twin of
    ``dagnet.fields.ChainCRF`` (``start``, ``end``, ``transitions`` [from, to], and the
    ``allowed_*`` buffers when constrained). ``method`` is kept, and not needed."""

    def __init__(self, num_tags: int, constraints=None, method: str = "auto"):
        super().__init__()
        self.num_labels = self.num_tags = num_tags
        self.method = method
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        if isinstance(constraints, torch.Tensor):  # allowed transitions only
            every = torch.ones(num_tags, dtype=torch.bool)
            constraints = (every, constraints, every)
        for k, name in enumerate(("start", "transitions", "end")):
            self.register_buffer("allowed_" + name, None if constraints is None else constraints[k].bool().clone())

    @classmethod
    def from_field(cls, field):
        """The twin of a ``dagnet.fields.ChainCRF``, with a copy of its state."""
        constraints = None
        if field.allowed_transitions is not None:
            constraints = (field.allowed_start, field.allowed_transitions, field.allowed_end)
        twin = cls(field.num_tags, constraints, field.method).to(field.start)
        twin.load_state_dict(field.state_dict())
        return twin

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start, end, transitions) with the constraints applied (-inf where disallowed)."""
        start, end, trans = self.start, self.end, self.transitions
        if self.allowed_start is not None:
            start = start.masked_fill(~self.allowed_start, float("-inf"))
        if self.allowed_end is not None:
            end = end.masked_fill(~self.allowed_end, float("-inf"))
        if self.allowed_transitions is not None:
            trans = trans.masked_fill(~self.allowed_transitions, float("-inf"))
        return start, end, trans

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                      allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log Z (B,); with ``allowed`` (B, T, K) bool, over the paths using only allowed tags."""
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed, float("-inf"))
        start, end, trans = self.potentials()
        logz = _chain_log_z(potentials.unsqueeze(0), mask, start.unsqueeze(0), end.unsqueeze(0), trans.unsqueeze(0))
        return logz.squeeze(0).to(potentials.dtype)

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """p(y_t = k | x) (B, T, K); 0 where the position does not exist."""
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed, float("-inf"))
        start, end, trans = self.potentials()
        return _chain_marginals(potentials, mask, start, end, trans).to(potentials.dtype)

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP tags (B, T), -1 off the chain, and their scores (B,)."""
        start, end, trans = self.potentials()
        return _chain_viterbi(potentials, mask, start, end, trans)

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """-log p(labels | x) = log Z - log Z(paths that agree with labels); -1 is summed out."""
        tags = torch.arange(self.num_tags, device=labels.device)
        allowed = (labels.unsqueeze(-1) == tags) | (labels < 0).unsqueeze(-1)
        start, end, trans = self.potentials()
        logz = _chain_log_z(_chain_pair(potentials, potentials.masked_fill(~allowed, float("-inf"))), mask,
                            _chain_pair(start, start), _chain_pair(end, end), _chain_pair(trans, trans))
        return _chain_reduce((logz[0] - logz[1]).to(potentials.dtype), reduction)

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)


class HiddenCRF(nn.Module):
    """Sequence classifier with a latent chain of ``num_hidden`` part states: the twin of
    ``dagnet.fields.HiddenCRF`` (``bias`` (Y), ``start``, ``end``, ``hidden`` (Y, H),
    ``transitions`` (Y, H, H)). The Y label chains run as one batch of Y."""

    def __init__(self, num_labels: int, num_hidden: int, method: str = "auto"):
        super().__init__()
        self.num_labels, self.num_hidden, self.method = num_labels, num_hidden, method
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.start = nn.Parameter(torch.zeros(num_labels, num_hidden))
        self.end = nn.Parameter(torch.zeros(num_labels, num_hidden))
        self.hidden = nn.Parameter(torch.zeros(num_labels, num_hidden))
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_hidden, num_hidden))

    @classmethod
    def from_field(cls, field):
        """The twin of a ``dagnet.fields.HiddenCRF``, with a copy of its state."""
        twin = cls(field.num_labels, field.num_hidden, field.method).to(field.bias)
        twin.load_state_dict(field.state_dict())
        return twin

    @torch.jit.export
    def label_scores(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """bias[y] + log sum_h exp s(y, h) (B, Y): unnormalised log p(y | x)."""
        e = potentials.unsqueeze(0) + self.hidden.unsqueeze(1).unsqueeze(1)  # (Y, B, T, H)
        logz = _chain_log_z(e, mask, self.start, self.end, self.transitions)
        return (logz.t() + self.bias).to(potentials.dtype)

    @torch.jit.export
    def log_prob(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log p(y | x) (B, Y), the hidden chain summed out: the op's value."""
        return torch.log_softmax(self.label_scores(potentials, mask), -1)

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.logsumexp(self.label_scores(potentials, mask), -1)

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """p(y | x) (B, Y)."""
        return self.log_prob(potentials, mask).exp()

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The most probable label per sequence (B,) and its score (B,)."""
        scores, labels = self.label_scores(potentials, mask).max(-1)
        return labels, scores

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """-log p(label | x); label -1 (unlabelled) gives 0."""
        scores = self.label_scores(potentials, mask)
        logz = torch.logsumexp(scores, -1)
        chosen = scores.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)
        return _chain_reduce(logz - torch.where(labels >= 0, chosen, logz), reduction)

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)


class LatentDynamicCRF(nn.Module):
    """Sequence labeller whose labels each own ``hidden_per_label`` hidden states: the twin
    of ``dagnet.fields.LatentDynamicCRF``; ``chain`` is the ChainCRF over the hidden states."""

    def __init__(self, num_labels: int, hidden_per_label: int, method: str = "auto"):
        super().__init__()
        self.num_labels, self.hidden_per_label = num_labels, hidden_per_label
        self.chain = ChainCRF(num_labels * hidden_per_label, method=method)
        owner = torch.arange(num_labels * hidden_per_label) // hidden_per_label
        self.register_buffer("owner", owner, persistent=False)  # the label of each hidden state

    @classmethod
    def from_field(cls, field):
        """The twin of a ``dagnet.fields.LatentDynamicCRF``, with a copy of its state."""
        twin = cls(field.num_labels, field.hidden_per_label, field.chain.method).to(field.owner.device)
        twin.chain = ChainCRF.from_field(field.chain)
        return twin

    def _allowed(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, T, L h): the hidden states of each position's label; all where unlabelled."""
        return (self.owner == labels.unsqueeze(-1)) | (labels < 0).unsqueeze(-1)

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.chain.log_partition(potentials, mask)

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Label marginals (B, T, L): hidden marginals summed over each label's block."""
        hidden = self.chain.marginals(potentials, mask)
        return hidden.view(hidden.shape[0], hidden.shape[1], self.num_labels, self.hidden_per_label).sum(-1)

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
               method: str = "marginal") -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (B, T), -1 off the chain, and their scores (B,): the most probable label per
        position ("marginal", the paper's) or the labels of the Viterbi hidden path ("viterbi")."""
        if method == "viterbi":
            hidden = self.chain.decode(potentials, mask)[0]
            labels = torch.where(hidden >= 0, torch.div(hidden, self.hidden_per_label, rounding_mode="floor"), hidden)
        elif method == "marginal":
            labels = self.marginals(potentials, mask).argmax(-1)
            if mask is not None:
                labels = labels.masked_fill(~mask.to(torch.bool), -1)
        else:
            raise ValueError("unknown decode method '" + method + "'; expected 'marginal' or 'viterbi'")
        return labels, self.chain.log_partition(potentials, mask, self._allowed(labels))

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """log Z - log Z(hidden paths inside the labels' blocks); -1 allows every block."""
        start, end, trans = self.chain.potentials()
        restricted = potentials.masked_fill(~self._allowed(labels), float("-inf"))
        logz = _chain_log_z(_chain_pair(potentials, restricted), mask, _chain_pair(start, start),
                            _chain_pair(end, end), _chain_pair(trans, trans))
        return _chain_reduce((logz[0] - logz[1]).to(potentials.dtype), reduction)

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)
