"""Linear-chain CRF: exact sum-product and max-product over tag sequences.

A path y_0..y_{L-1} scores
    start[y_0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_{L-1}],
and p(y | x) = exp(score) / Z. Everything here is batched: emissions (B, T, K)
batch-first, potentials start/end (K,) or (B, K) and transitions (K, K) or
(B, K, K) as [from, to] (batched potentials serve the hidden CRF).

Masks select positions. The chain links consecutive *selected* positions, so
right padding, left padding and gaps all work: a gap is skipped, as if the
sequence were compacted. Unselected positions get marginal 0 and tag -1. A
sequence with nothing selected has one empty path: log Z = 0, score 0.

One primitive does the work: log Z over the paths that use only allowed tags
(``allowed`` (B, T, K), realised as -inf emissions). Partial labels
(tag -1 = unlabelled, summed out), constraints and the latent models in
latent.py are all "log Z(all) - log Z(allowed)".
"""
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import _logspace as ls
from . import semiring as sr
from ._logspace import gather_time, label_mask, pack, unpack
from .protocol import Field, check_k, reduce_loss

METHODS = ("auto", "linear", "parallel")


def _scan_shape(method: str, emit: Tensor) -> str:
    """"linear" or "parallel". The parallel scan pays on CPU when a time step has
    little work (B * K**2 small) and there are many steps; see docs/fields.md."""
    scan, _, numerics = method.partition("-")
    if scan not in METHODS or numerics not in ("", "exact", "scaled"):
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}, "
                         "optionally suffixed -exact or -scaled")
    B, T, K = emit.shape
    if scan == "auto":
        return "parallel" if T >= 256 and B * K * K <= 128 else "linear"
    return scan


def _resolve(method: str, emit: Tensor, start, end, trans) -> tuple:
    """(scan shape, emission shift): a shift selects the rescaled fast path, None the
    exact one; "-scaled" and "-exact" force the choice (for tests and benchmarks).
    (Exported models run dagnet.fields.portable instead, which decides nothing in Python.)"""
    numerics = method.partition("-")[2]
    scan = _scan_shape(method, emit)
    if numerics == "exact":
        return scan, None
    with torch.no_grad():
        if numerics == "scaled":
            return scan, ls.sequence_max(emit)
        return scan, ls.tame_shift(emit, start, end, trans)


def _potentials(shift, emit, start, end, trans) -> tuple:
    """start, end as (B, K) and transitions, in float64 on the rescaled path."""
    dtype = emit.dtype if shift is None else torch.float64
    B = emit.shape[0]
    return start.to(dtype).expand(B, -1), end.to(dtype).expand(B, -1), trans.to(dtype)


def _factors(emit, lengths, shift) -> Tensor:
    return ls.emission_factors(emit, lengths, shift).double()


def _backward(local, end, trans, lengths, scan, scaled: bool) -> Tensor:
    """Backward messages, by the forward recursion on each sequence reversed with
    transposed transitions: exact log beta_t (beta_{L-1} = end) from emissions, or,
    rescaled from emission factors, q_t up to a constant per position."""
    rev, trans = ls.reverse_within(local, lengths), trans.transpose(-1, -2)
    if scaled:
        return ls.reverse_within(ls.scaled_messages(rev, end, trans, scan)[0], lengths)
    return ls.reverse_within(ls.log_messages(rev, end, trans, scan), lengths)


def _log_z(alpha_last: Tensor, end: Tensor, lengths: Tensor) -> Tensor:
    """log Z = logsumexp(alpha_{L-1} + end); 0 for empty chains."""
    return ls.logsumexp(alpha_last + end, -1).masked_fill(lengths == 0, 0.0)


def _scaled_log_z(q, scale, x, shift, end, lengths) -> Tensor:
    """log Z from rescaled messages: alpha_{L-1} = log(q x)_{L-1} + scale_{L-1} + L shift."""
    last = ls.safe_log(ls.last(q, lengths) * ls.last(x, lengths))
    shifts = shift.view(-1, 1).to(q.dtype) * lengths[:, None]
    return _log_z(last + ls.last(scale[..., None], lengths) + shifts, end, lengths)


def _on_chain(lengths: Tensor, logz: Tensor, T: int) -> Tensor:
    """(B, T): position t is on a chain that has at least one path."""
    return ls.valid(lengths, T) & torch.isfinite(logz)[:, None]


def _exact_marginals(alpha, beta, logz, lengths) -> Tensor:
    """p(y_t = k) = exp(alpha_t[k] + beta_t[k] - log Z); 0 off the chain or if Z = 0."""
    logp = alpha + beta - logz.masked_fill(~torch.isfinite(logz), 0.0)[:, None, None]
    on = _on_chain(lengths, logz, alpha.shape[1])
    return logp.masked_fill(~on[..., None], ls.NEG_INF).exp()


def _exact_stats(m, e, end, trans, lengths, logz, g, scan) -> tuple:
    """Node marginals and g-weighted edge counts sum_t g_b xi_t[i, j] per sequence, with
    xi_t[i, j] = exp(alpha_{t-1}[i] + trans[i, j] + emit_t[j] + beta_t[j] - log Z)."""
    beta = _backward(e, end, trans, lengths, scan, False)
    alpha = m + e
    mu = _exact_marginals(alpha, beta, logz, lengths)
    edge = ~_on_chain(lengths, logz, e.shape[1])[:, 1:, None]
    left = alpha[:, :-1].masked_fill(edge, ls.NEG_INF)
    right = (e + beta)[:, 1:].masked_fill(edge, ls.NEG_INF) - logz.masked_fill(
        ~torch.isfinite(logz), 0.0)[:, None, None]
    B, T1, K = left.shape
    t4 = trans if trans.dim() == 2 else trans.unsqueeze(1)
    chunk = max(1, T1 // K)  # (B, chunk, K, K) at a time keeps memory O(B T K)
    counts = left.new_zeros(B, K, K)
    for s in range(0, T1, chunk):
        x = left[:, s:s + chunk, :, None] + t4 + right[:, s:s + chunk, None, :]
        counts = counts + x.exp().sum(1)
    return mu, counts * g[:, None, None]


def _scaled_stats(q, x, end, trans, lengths, logz, g, scan) -> tuple:
    """``_exact_stats`` in rescaled probability space, with no exp or log per entry.
    r_t = q_t x_t qb_t is the node marginal up to a constant per position, so
    mu_t = r_t / sum r_t; likewise xi_t[i, j] is (q x)_{t-1}[i] W[i, j] (x qb)_t[j]
    with W = exp(trans - c), divided by its sum z_t. If Z = 0 every product is 0
    (tame inputs underflow nowhere), and so is every marginal."""
    tiny = torch.finfo(x.dtype).tiny
    qb = _backward(x, end, trans, lengths, scan, True)
    qx, xqb = q * x, x * qb
    r = q * xqb
    mu = r / ls.row_sum(r).clamp_min(tiny)
    weights = (trans - trans.amax((-2, -1), keepdim=True)).exp()
    left, right = qx[:, :-1], xqb[:, 1:]
    z = ls.row_sum((left @ weights) * right).squeeze(-1).clamp_min(tiny)
    coef = (g[:, None] / z).masked_fill(~_on_chain(lengths, logz, x.shape[1])[:, 1:], 0.0)
    spec = "bti,btj->ij" if trans.dim() == 2 else "bti,btj->bij"
    return mu, torch.einsum(spec, left * coef[..., None], right) * weights


def _sum_to(x: Tensor, like: Tensor) -> Tensor:
    """Reduce a per-sequence gradient (B, ...) to the shape of a shared parameter."""
    return x if x.dim() == like.dim() else x.sum(0)


class _LogPartition(torch.autograd.Function):
    """log Z of packed chains. The backward pass is the backward (beta) messages:
    d log Z / d emit = node marginals, d / d trans = summed edge marginals,
    d / d start, end = first and last node marginals. No tape through the steps;
    it stores the forward messages, O(B T K)."""

    @staticmethod
    def forward(ctx, emit, start, end, trans, lengths, scan, shift):
        s, n, w = _potentials(shift, emit, start, end, trans)
        if shift is None:
            m = ls.log_messages(emit, s, w, scan)
            logz = _log_z(ls.last(m, lengths) + ls.last(emit, lengths), n, lengths)
            saved = (m, emit)
        else:
            x = _factors(emit, lengths, shift)
            q, scale = ls.scaled_messages(x, s, w, scan)
            logz = _scaled_log_z(q, scale, x, shift, n, lengths)
            saved = (q, x)
        ctx.save_for_backward(start, end, trans, lengths, logz, *saved)
        ctx.path = (scan, shift is not None, emit.dtype)
        return logz.to(emit.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        start, end, trans, lengths, logz, fwd, local = ctx.saved_tensors
        scan, scaled, dtype = ctx.path
        g = grad.to(local.dtype)
        n, w = end.to(g.dtype).expand(g.shape[0], -1), trans.to(g.dtype)
        stats = _scaled_stats if scaled else _exact_stats
        with torch.inference_mode():  # builds no graph: skip autograd's bookkeeping
            mu, counts = stats(fwd, local, n, w, lengths, logz, g, scan)
        mu, counts = mu.clone(), counts.clone()  # normal tensors again
        d_start, d_end = mu[:, 0] * g[:, None], ls.last(mu, lengths) * g[:, None]
        return ((mu * g[:, None, None]).to(dtype), _sum_to(d_start, start).to(start.dtype),
                _sum_to(d_end, end).to(end.dtype), _sum_to(counts, trans).to(trans.dtype),
                None, None, None)


def _restrict(emissions: Tensor, allowed: Optional[Tensor]) -> Tensor:
    return emissions if allowed is None else emissions.masked_fill(~allowed, ls.NEG_INF)


def log_partition(emissions, start, end, transitions, mask=None, allowed=None,
                  method="auto") -> Tensor:
    """log Z (B,) over the paths whose tag at every selected position is allowed
    (``allowed`` (B, T, K) bool; None allows all)."""
    packed = pack(_restrict(emissions, allowed), mask)
    scan, shift = _resolve(method, packed.emissions, start, end, transitions)
    return _LogPartition.apply(packed.emissions, start, end, transitions, packed.lengths,
                               scan, shift)


def marginals(emissions, start, end, transitions, mask=None, allowed=None,
              method="auto") -> Tensor:
    """Node marginals p(y_t = k | x) (B, T, K), differentiable by autograd."""
    packed = pack(_restrict(emissions, allowed), mask)
    L = packed.lengths
    scan, shift = _resolve(method, packed.emissions, start, end, transitions)
    e = packed.emissions
    s, n, w = _potentials(shift, e, start, end, transitions)
    if shift is not None:
        x = _factors(e, L, shift)
        q = ls.scaled_messages(x, s, w, scan)[0] * x
        mu = ls.normalise(q * _backward(x, n, w, L, scan, True))
    else:
        alpha = ls.log_messages(e, s, w, scan) + e
        logz = _log_z(ls.last(alpha, L), n, L)
        mu = _exact_marginals(alpha, _backward(e, n, w, L, scan, False), logz, L)
    return unpack(mu.to(emissions.dtype), packed)


def path_score(emissions, tags, start, end, transitions, mask=None) -> Tensor:
    """Score (B,) of the tag paths ``tags`` (B, T), read at the selected positions."""
    B, T, K = emissions.shape
    if T == 0:
        return emissions.new_zeros(B)
    y = tags.clamp_min(0)
    packed = pack(emissions.gather(2, y.unsqueeze(-1)), mask)  # each chosen tag's emission
    L = packed.lengths
    valid = ls.valid(L, T)
    y = gather_time(y, packed.order).masked_fill(~valid, 0)
    flat = transitions.reshape(-1, K * K).expand(B, -1)
    steps = flat.gather(1, y[:, :-1] * K + y[:, 1:]).masked_fill(~valid[:, 1:], 0.0)
    first = start.expand(B, -1).gather(1, y[:, :1]).squeeze(1)
    final = end.expand(B, -1).gather(1, ls.last(y.unsqueeze(-1), L)).squeeze(1)
    return packed.emissions.sum((1, 2)) + steps.sum(1) + (first + final).masked_fill(L == 0, 0.0)


def nll(emissions, tags, start, end, transitions, mask=None, reduction="mean",
        method="auto") -> Tensor:
    """-log p(tags | x) = log Z(all) - log Z(paths consistent with tags); tag -1 is
    unlabelled and summed out. Fully labelled batches take the one-path shortcut."""
    logz = log_partition(emissions, start, end, transitions, mask, method=method)
    labelled = tags >= 0 if mask is None else (tags >= 0) | ~mask.bool()
    if bool(labelled.all()):
        gold = path_score(emissions, tags, start, end, transitions, mask)
    else:
        allowed = label_mask(tags, emissions.shape[-1])
        gold = log_partition(emissions, start, end, transitions, mask, allowed, method)
    return reduce_loss(logz - gold, reduction)


def viterbi(emissions, start, end, transitions, mask=None, method="auto"):
    """MAP paths: tags (B, T) LongTensor (-1 off the chain) and their scores (B,).
    The search runs in inference mode; the score is then read off the path, so it
    is differentiable (structured perceptron, max-margin losses)."""
    with torch.inference_mode():
        packed = pack(emissions, mask)
        e, L = packed.emissions, packed.lengths
        s = start.expand(e.shape[0], -1)
        if _scan_shape(method, e) == "parallel":
            m = ls.scan_parallel(e, s, transitions, ls.max_matmul)
        else:
            m = ls.scan_linear(e, s, transitions, lambda x, dim: x.amax(dim))
        v = (m + e).transpose(0, 1).contiguous()  # best prefix score per tag, time-major
        tags = unpack(ls.backtrack(v, end, transitions, L, lambda x: x.argmax(-1)), packed)
    tags = tags.clone()  # a normal tensor again
    return tags, path_score(emissions, tags, start, end, transitions, mask)


def semiring_dp(start, end, transitions, lengths) -> sr.DP:
    """The chain's dynamic program over any semiring, for packed emissions (B, T, K):
    alpha_0 = start + emit_0, alpha_t[j] = (+)_i alpha_{t-1}[i] (x) trans[i, j] (x) emit_t[j],
    value = (+)_j alpha_{L-1}[j] (x) end[j]; an empty chain has the one empty path."""
    def dp(semiring: sr.Semiring, emit: Tensor) -> Tensor:
        B, T, K = emit.shape
        trans = transitions.to(emit.dtype)
        alpha = semiring.convert(start.to(emit.dtype) + emit[:, 0])  # (S, B, K)
        for t in range(1, T):
            step = semiring.sum(semiring.mul_score(alpha.unsqueeze(-1), trans), -2)
            alpha = torch.where((t < lengths)[:, None], semiring.mul_score(step, emit[:, t]), alpha)
        value = semiring.sum(semiring.mul_score(alpha, end.to(emit.dtype)), -1)  # (S, B)
        return torch.where(lengths == 0, semiring.one((B,), value), value)
    return dp


def _repeat(x: Tensor, n: int, batched_dim: int) -> Tensor:
    """Potentials for n copies of the batch: repeated if they are per sequence."""
    return x.repeat((n,) + (1,) * (x.dim() - 1)) if x.dim() == batched_dim else x


def entropy(emissions, start, end, transitions, mask=None) -> Tensor:
    """H(p(y | x)) (B,) in nats, by the entropy semiring; 0 for chains with one path or none."""
    packed = pack(emissions, mask)
    dp = semiring_dp(start, end, transitions, packed.lengths)
    return sr.entropy(dp, packed.emissions)


@torch.no_grad()
def kbest(emissions, start, end, transitions, k: int, mask=None):
    """The k highest-scoring paths: tags (B, k, T) and scores (B, k), best first, by
    the k-max semiring. Missing paths (fewer than k exist) score -inf, with tags -1."""
    packed = pack(emissions, mask)
    dp = semiring_dp(start, end, transitions, packed.lengths)
    scores, chosen = sr.kbest(dp, packed.emissions, check_k(k))  # (B, k), (k, B, T, K)
    tags = sr.recover(chosen).masked_fill((scores == ls.NEG_INF).t()[..., None], -1)
    return torch.stack([unpack(t, packed) for t in tags], 1), scores


@torch.no_grad()
def sample(emissions, start, end, transitions, n: int = 1, mask=None, generator=None) -> Tensor:
    """n exact samples (n, B, T) from p(y | x), by the sampling semiring (forward
    filtering, backward sampling). Off-chain positions, and chains with Z = 0, get -1."""
    packed = pack(emissions, mask)
    B, T, K = packed.emissions.shape
    dp = semiring_dp(_repeat(start, n, 2), _repeat(end, n, 2), _repeat(transitions, n, 3),
                     packed.lengths.repeat(n))
    logz, chosen = sr.samples(dp, packed.emissions.repeat(n, 1, 1), generator)
    tags = sr.recover(chosen).masked_fill(~torch.isfinite(logz)[:, None], -1).view(n, B, T)
    return torch.stack([unpack(t, packed) for t in tags])


class Constraints(NamedTuple):
    """Allowed-structure masks (True = allowed); disallowed scores become -inf."""

    start: Tensor  # (K,) tags that may begin a sequence
    transitions: Tensor  # (K, K) [from, to]
    end: Tensor  # (K,) tags that may end a sequence


def bio_constraints(tag_names: Sequence[str]) -> Constraints:
    """BIO (IOB2) rules: I-x only continues B-x or I-x, so never starts a sequence."""
    def parse(name):
        if name == "O":
            return "O", None
        prefix, _, kind = name.partition("-")
        if prefix not in ("B", "I") or not kind:
            raise ValueError(f"tag {name!r} is not BIO: expected 'O', 'B-<type>' or 'I-<type>'")
        return prefix, kind

    tags = [parse(name) for name in tag_names]
    inside = torch.tensor([p == "I" for p, _ in tags])
    follows = torch.tensor([[q != "I" or (p != "O" and k == kind) for q, kind in tags]
                            for p, k in tags])
    return Constraints(~inside, follows, torch.ones(len(tags), dtype=torch.bool))


class ChainCRF(Field):
    """Linear-chain CRF over ``num_tags`` tags with emissions (B, T, K) batch-first.

    Parameters ``start`` (K), ``end`` (K), ``transitions`` (K, K) [from, to],
    initialised and laid out as pytorch-crf's, which this matches exactly.
    ``constraints``: a ``Constraints`` or a (K, K) allowed-transition bool
    tensor; disallowed scores are -inf (zero gradient, never NaN).
    ``method``: "auto", "linear" or "parallel" (see docs/fields.md).
    """

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "sequence"

    def __init__(self, num_tags: int, constraints=None, method: str = "auto"):
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_labels = self.num_tags = num_tags
        self.method = method
        self.start = nn.Parameter(torch.empty(num_tags))
        self.end = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        if isinstance(constraints, Tensor):
            every = torch.ones(num_tags, dtype=torch.bool)
            constraints = Constraints(every, constraints, every)
        for name in ("start", "transitions", "end"):
            allowed = None if constraints is None else getattr(constraints, name).bool()
            self.register_buffer(f"allowed_{name}", allowed)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.start, self.end, self.transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    def potentials(self) -> tuple:
        """(start, end, transitions) with the constraints applied."""
        def restrict(score, allowed):
            return score if allowed is None else score.masked_fill(~allowed, ls.NEG_INF)
        return (restrict(self.start, self.allowed_start), restrict(self.end, self.allowed_end),
                restrict(self.transitions, self.allowed_transitions))

    def log_partition(self, potentials, mask=None, allowed=None) -> Tensor:
        """log Z (B,); with ``allowed`` (B, T, K) bool, over the paths using only allowed tags."""
        return log_partition(potentials, *self.potentials(), mask, allowed, self.method)

    def marginals(self, potentials, mask=None, allowed=None) -> Tensor:
        return marginals(potentials, *self.potentials(), mask, allowed, self.method)

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        return self.log_partition(potentials, mask, label_mask(labels, self.num_tags))

    def nll(self, potentials, labels, mask=None, reduction="mean") -> Tensor:
        return nll(potentials, labels, *self.potentials(), mask, reduction, self.method)

    def score(self, potentials, labels, mask=None) -> Tensor:
        return path_score(potentials, labels, *self.potentials(), mask)

    def decode(self, potentials, mask=None) -> tuple:
        """MAP tags (B, T), -1 off the chain, and their scores (B,)."""
        return viterbi(potentials, *self.potentials(), mask, self.method)

    def kbest(self, potentials, k: int, mask=None) -> tuple:
        """The k best paths (B, k, T) and their scores (B, k), best first."""
        return kbest(potentials, *self.potentials(), k, mask)

    def sample(self, potentials, n: int = 1, mask=None, generator=None) -> Tensor:
        return sample(potentials, *self.potentials(), n, mask, generator)

    def entropy(self, potentials, mask=None) -> Tensor:
        return entropy(potentials, *self.potentials(), mask)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, method={self.method!r}"
