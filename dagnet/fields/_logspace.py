"""Chain kernels: fast log-semiring scans shared by the exact structured nodes (chain scans, the
max-product backtrack), and the small helpers every node uses (mask packing,
label masks, loss reduction, Gumbel-max sampling).

A chain's forward messages are a prefix product of matrices in a semiring:

    m_0 = start,    m_t[j] = (+)_i  (m_{t-1}[i] + emit_{t-1}[i] + trans[i, j])

where (+) is logsumexp for sum-product (log Z, marginals, sampling) and max
for max-product (Viterbi). The scans below compute every m_t (the *incoming*
message, before emission t is added) in three ways, each written once:

* ``scan_linear``   -- T sequential steps, any semiring, exact for every input
  (±1e4 scores, -inf entries).
* ``scan_scaled``   -- T sequential steps of the sum-product in rescaled
  probability space: one small matrix product per step instead of a
  (B, K, K) logsumexp, and messages kept as (q, log-scale) pairs so the
  backward pass needs no exp/log either. Exact to rounding when the
  potentials are *tame* (below); run in float64.
* ``scan_parallel`` -- log-depth prefix product of the per-step matrices, for
  long chains with few states; takes the semiring matmul as an argument.

Tameness. With all transition scores finite and every spread (max - min of
the finite entries of the transitions, of start, of end, and of each
sequence's emissions) at most ``SPREAD`` nats, every product formed by the
rescaled kernels is at least exp(-6 * SPREAD) / K**4 relative to its largest
term: e.g. after normalising, each state keeps mass >= exp(-R - r) / K**2
because it is reachable from the most likely state in one step. With
SPREAD = 80 that is above 1e-210, far from float64 underflow, so nothing that
matters is flushed to zero. Emission entries of -inf (masked tags) are exact
zeros and are allowed; -inf transitions (constraints) are not, since they can
cut the mixing argument, and send the caller to the exact log-space path.
``tame_shift`` makes the check.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .protocol import reduce_loss  # noqa: F401  (re-exported for the fields)
from .semiring import gumbel_argmax, logsumexp  # noqa: F401

SPREAD = 80.0
NEG_INF = float("-inf")


def safe_log(y: Tensor) -> Tensor:
    """log for y >= 0 with log 0 = -inf and a zero (not NaN) gradient there."""
    tiny = torch.finfo(y.dtype).tiny
    return y.clamp_min(tiny).log().masked_fill(y <= 0, NEG_INF)


def _shift(x: Tensor, dim) -> Tensor:
    """Max over ``dim`` (kept), with -inf replaced by 0 so ``x - shift`` is never NaN."""
    m = x.amax(dim, keepdim=True)
    return m.masked_fill(m == NEG_INF, 0.0)


def log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Exact log-semiring product: out[i, j] = logsumexp_k a[i, k] + b[k, j]."""
    return logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), -2)


def max_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Max-plus product: out[i, j] = max_k a[i, k] + b[k, j]."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).amax(-2)


def scaled_log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Log-semiring product through BLAS: shift rows of a and columns of b to 0 max,
    multiply probabilities, shift back. Exact for tame inputs (module doc)."""
    ra, cb = _shift(a, -1), _shift(b, -2)
    return safe_log((a - ra).exp() @ (b - cb).exp()) + ra + cb


def scan_linear(emit: Tensor, start: Tensor, trans: Tensor, reduce) -> Tensor:
    """Incoming messages m (B, T, K) by T sequential semiring steps.

    emit (B, T, K), start (B, K), trans (K, K) or (B, K, K) as [from, to].
    ``reduce(x, 0)`` is the semiring sum over the leading axis. Each step is
    laid out (from, to, batch) so that the reduction runs over the outermost
    axis and every operand is contiguous: about 7x faster on CPU than the
    textbook (batch, from, to) broadcast for K = 20.
    """
    emit_t = emit.permute(1, 2, 0).contiguous()  # (T, K, B): T contiguous slices (K, B)
    step = trans.unsqueeze(-1) if trans.dim() == 2 else trans.permute(1, 2, 0)
    m = start.t().contiguous()  # (K, B)

    out = [m]
    for e in emit_t.unbind(0)[:-1]:
        m = reduce((m + e).unsqueeze(1) + step, 0)
        out.append(m)
    return torch.stack(out).permute(2, 0, 1)


def row_sum(x: Tensor) -> Tensor:
    """x.sum(-1, keepdim=True) as a product with ones: several times faster on CPU
    for the short last axes (K states) used here."""
    return x @ x.new_ones(x.shape[-1], 1)


def normalise(r: Tensor) -> Tensor:
    """r / sum(r) over the last axis; rows of zeros stay zero."""
    return r / row_sum(r).clamp_min(torch.finfo(r.dtype).tiny)


def scan_scaled(x: Tensor, q0: Tensor, weights: Tensor) -> tuple:
    """The sum-product forward recursion in rescaled probability space.

    x (B, T, K) are emission factors exp(emit - shift), q0 (B, K) the start
    factors, weights = exp(trans - c) (K, K) or (B, K, K). Returns q (B, T, K)
    and log n (B, T - 1) of
        p = q_{t-1} * x_{t-1},  n = sum(p),  q_t = (p @ weights) / n,
    so that m_t = log q_t + S_t with S_t = S_{t-1} + log n_{t-1} + shift + c.
    One (B, K) x (K, K) product per step and no exp/log in the loop.
    """
    tiny = torch.finfo(x.dtype).tiny
    if weights.dim() == 2:
        step = torch.mm
    else:
        step = lambda p, w: torch.bmm(p.unsqueeze(1), w).squeeze(1)  # noqa: E731
    x_t = x.transpose(0, 1).contiguous().unbind(0)  # time-major: contiguous slices
    ones = x.new_ones(x.shape[-1], 1)
    q, qs, norms = q0, [q0], []
    for x_step in x_t[:-1]:
        p = q * x_step
        n = torch.mm(p, ones).clamp_min_(tiny)  # row sums; 0 only if no tag is allowed
        q = step(p, weights).div_(n)
        qs.append(q)
        norms.append(n)
    log_norms = torch.cat(norms, -1).log() if norms else x.new_zeros(x.shape[0], 0)
    return torch.stack(qs, 1), log_norms


def prefix_products(w: Tensor, matmul) -> Tensor:
    """Inclusive prefix products p_t = w_0 w_1 ... w_t along dim 1, in log depth.

    Work-efficient odd/even recursion: multiply neighbours pairwise, recurse on
    the n/2 pair products (giving the prefixes that end at odd t), then one
    more product fills in the even t. 2 log2(n) batched matmuls in total.
    """
    n = w.shape[1]
    if n <= 1:
        return w
    odd = prefix_products(matmul(w[:, 0:n - 1:2], w[:, 1:n:2]), matmul)
    even = torch.cat([w[:, :1], matmul(odd[:, :(n - 1) // 2], w[:, 2:n:2])], 1)
    if odd.shape[1] < even.shape[1]:  # n odd: pad so the two interleave
        odd = torch.cat([odd, odd[:, :1]], 1)
    return torch.stack([even, odd], 2).flatten(1, 2)[:, :n]


def scan_parallel(emit: Tensor, start: Tensor, trans: Tensor, matmul) -> Tensor:
    """Incoming messages (B, T, K) from the prefix products of the step matrices
    w_t[i, j] = emit_t[i] + trans[i, j]:  m_{t+1} = start (x) w_0 (x) ... (x) w_t."""
    if trans.dim() == 3:
        trans = trans.unsqueeze(1)
    w = emit[:, :-1].unsqueeze(-1) + trans
    prefix = prefix_products(w, matmul)
    later = matmul(start[:, None, None, :], prefix).squeeze(-2)
    return torch.cat([start.unsqueeze(1), later], 1)


def sequence_max(emit: Tensor) -> Tensor:
    """Largest emission of each sequence (B, 1, 1); 0 where every entry is -inf."""
    return _shift(emit, (1, 2))


def tame_shift(emit: Tensor, *potentials: Tensor) -> Optional[Tensor]:
    """The emission shift (``sequence_max``) under which the rescaled kernels are
    exact, or None when the potentials are not tame (module doc). Spreads are taken
    per sequence, a cheap and slightly stronger condition than per position; NaN or
    +inf anywhere makes a spread NaN or inf, hence not tame."""
    ok = [torch.isfinite(x).all() & (x.amax() - x.amin() <= SPREAD) for x in potentials]
    hi, lo = emit.amax((1, 2)), emit.amin((1, 2))
    if bool((lo == NEG_INF).any()):  # masked tags: the spread is over the finite entries
        lo = emit.masked_fill(emit == NEG_INF, float("inf")).amin((1, 2))
    ok.append((hi - lo <= SPREAD).all())
    return sequence_max(emit) if bool(torch.stack(ok).all()) else None


def log_messages(emit: Tensor, start: Tensor, trans: Tensor, scan: str) -> Tensor:
    """Exact incoming log-messages m (B, T, K) of a chain: m_0 = start, alpha_t = m_t + emit_t."""
    if scan == "parallel":
        return scan_parallel(emit, start, trans, log_matmul)
    return scan_linear(emit, start, trans, logsumexp)


def emission_factors(emit: Tensor, lengths: Tensor, shift: Tensor) -> Tensor:
    """x = exp(emit - shift), and x = 0 past each sequence's length so that padding
    drops out of every product formed from x. Tame inputs keep x within [e^-SPREAD, 1]:
    float32 range suffices here; the float64 is for the products."""
    on = valid(lengths, emit.shape[1]).unsqueeze(-1).to(emit.dtype)
    return (emit - shift).exp() * on


def scaled_messages(x: Tensor, start: Tensor, trans: Tensor, scan: str) -> tuple:
    """Messages for the emissions log x as (q, scale), m_t = log q_t + scale_t (tame inputs)."""
    if scan == "parallel":
        m = scan_parallel(safe_log(x), start, trans, scaled_log_matmul)
        scale = _shift(m, -1)
        return (m - scale).exp(), scale.squeeze(-1)
    c = trans.amax((-2, -1), keepdim=True)
    s = start.amax(-1, keepdim=True)
    q, log_norms = scan_scaled(x, (start - s).exp(), (trans - c).exp())
    return q, torch.cat([s, log_norms + c.reshape(-1, 1)], 1).cumsum(1)


def rows_into(transitions: Tensor, end: Tensor):
    """tag (..., B) -> (..., B, K + 1): the score of every tag, and of END (index K),
    into ``tag``. END is a virtual tag after each sequence: tag i -> END scores
    end[i], END -> END scores 0, END -> a real tag is impossible."""
    K = transitions.shape[-1]
    if transitions.dim() == 3 or end.dim() == 2:  # per-sequence potentials
        B = end.shape[0] if end.dim() == 2 else transitions.shape[0]
        transitions, end = transitions.expand(B, K, K), end.expand(B, K)
    never = torch.full_like(end, NEG_INF).unsqueeze(-1)  # END -> a real tag
    into = torch.cat([transitions.transpose(-1, -2), never], -1)  # [to, from]: (.., K, K + 1)
    to_end = torch.cat([end, torch.zeros_like(end[..., :1])], -1).unsqueeze(-2)
    into = torch.cat([into, to_end], -2).contiguous()  # (.., K + 1, K + 1)
    if into.dim() == 2:
        return lambda tag: into.index_select(0, tag.flatten()).view(tag.shape + (K + 1,))
    batch = torch.arange(into.shape[0], device=into.device)
    return lambda tag: into[batch, tag]


@torch.no_grad()
def backtrack(v, end, transitions, lengths, pick) -> Tensor:
    """Walk back from END after the last position: y_t = pick(v_t + trans[:, y_{t+1}]),
    where past each sequence only END is possible, so y_{L-1} = pick(v_{L-1} + end)
    with no special case for ragged ends. v (T, ..., B, K) is time-major so each step
    reads one contiguous slice; returns (..., B, T), -1 off the chain."""
    T, K = v.shape[0], v.shape[-1]
    rows = rows_into(transitions, end)
    past = torch.arange(T, device=v.device)[:, None] >= lengths  # (T, B)
    only_end = torch.full((K + 1,), NEG_INF, dtype=v.dtype, device=v.device)
    only_end[K] = 0.0
    v = torch.cat([v, torch.full_like(v[..., :1], NEG_INF)], -1)
    v = torch.where(past.view((T,) + (1,) * (v.dim() - 3) + (-1, 1)), only_end, v)
    tag = torch.full(v.shape[1:-1], K, dtype=torch.long, device=v.device)
    out = []
    for v_t in reversed(v.unbind(0)):
        tag = pick(rows(tag).add_(v_t))
        out.append(tag)
    return torch.stack(out[::-1], -1).masked_fill(~valid(lengths, T), -1)


# Shared helpers: ragged sequences, labels, losses, sampling.

class Packed(NamedTuple):
    """Emissions with the selected positions moved to the front (stable), zeros after."""

    emissions: Tensor  # (B, T, K)
    lengths: Tensor  # (B,) selected positions per sequence
    order: Optional[Tensor]  # (B, T) original position of each slot; None if already packed
    time: int  # T of the caller's tensors (0-length time axes are padded to 1)


def pack(emissions: Tensor, mask: Optional[Tensor]) -> Packed:
    """Compact each sequence's selected positions to the front; zero the rest, so
    that nothing a caller left in unselected positions (NaN, -inf) leaks in."""
    B, T, K = emissions.shape
    if mask is None or T == 0:
        mask = torch.ones(B, T, dtype=torch.bool, device=emissions.device)
    if T == 0:  # one empty slot keeps every kernel's indexing valid
        emissions, mask = emissions.new_zeros(B, 1, K), mask.new_zeros(B, 1)
    mask = mask.bool()
    lengths = mask.sum(1)
    if bool(mask.all()):
        return Packed(emissions, lengths, None, T)
    prefix = valid(lengths, mask.shape[1])
    order = None
    if not torch.equal(mask, prefix):
        order = pack_order(mask)
        emissions = gather_time(emissions, order)
    padding = (~prefix).flatten().nonzero().squeeze(1)  # zero whole rows: cheaper than where
    emissions = emissions.reshape(-1, K).index_fill(0, padding, 0.0).view(emissions.shape)
    return Packed(emissions, lengths, order, T)


def pack_order(mask: Tensor) -> Tensor:
    """(B, T): the original position of each packed slot, selected positions first, each
    group in time order. Slot of a selected t: (selected before t); of an unselected t:
    L + (unselected before t). Inverted by one scatter; no sort, no data-dependent shape."""
    selected = mask.long()
    before = selected.cumsum(1) - selected
    t = torch.arange(mask.shape[1], device=mask.device).expand_as(before)
    slot = torch.where(mask, before, selected.sum(1, keepdim=True) + t - before)
    return torch.empty_like(slot).scatter_(1, slot, t)


def _flat_order(order: Tensor) -> Tensor:
    B, T = order.shape
    return (order + T * torch.arange(B, device=order.device)[:, None]).flatten()


def gather_time(x: Tensor, order: Optional[Tensor]) -> Tensor:
    """x[b, order[b, t]] for x (B, T, ...): a reordering of each sequence's time axis.
    (index_select on the flattened rows: several times faster than gather on CPU.)"""
    if order is None:
        return x
    rows = x.reshape((-1,) + x.shape[2:]).index_select(0, _flat_order(order))
    return rows.view(x.shape)


def unpack(x: Tensor, packed: Packed) -> Tensor:
    """Inverse of ``pack`` for a packed-layout result x (B, T, ...)."""
    if packed.order is not None:
        rows = x.reshape((-1,) + x.shape[2:])
        x = torch.index_copy(torch.empty_like(rows), 0, _flat_order(packed.order), rows)
        x = x.view(packed.order.shape + rows.shape[1:])
    return x[:, : packed.time]


def label_mask(tags: Tensor, num_tags: int) -> Tensor:
    """allowed (B, T, K): only the given tag where tags >= 0, every tag where tags == -1."""
    one_hot = torch.nn.functional.one_hot(tags.clamp_min(0), num_tags).bool()
    return one_hot | (tags < 0).unsqueeze(-1)


def valid(lengths: Tensor, T: int) -> Tensor:
    """(B, T): t < length."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of x (B, T, ...) within its length; padding stays in place."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return gather_time(x, index)


def last(x: Tensor, lengths: Tensor) -> Tensor:
    """x[..., b, L_b - 1, :] for x (..., B, T, K); position 0 for empty sequences."""
    index = (lengths - 1).clamp_min(0).view(-1, 1, 1)
    return x.gather(-2, index.expand(x.shape[:-2] + (1, x.shape[-1]))).squeeze(-2)


def plain_logsumexp(a: Tensor) -> Tensor:
    """logsumexp over the last axis for the hand-written passes (no autograd): fewer kernels
    than torch.logsumexp, and -inf where every term is -inf (the shift is clamped to the
    lowest finite float, so no -inf - -inf)."""
    shift = a.amax(-1, keepdim=True).clamp_min_(torch.finfo(a.dtype).min)
    return (a - shift).exp_().sum(-1).log_().add_(shift.squeeze(-1))
