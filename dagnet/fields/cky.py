"""CKY CRF: distributions over labelled binary constituency trees.

Potentials are span scores (B, N, N, L) as in torch-struct's ``TreeCRF``: ``x[b, i, j, l]``
scores the span of words i..j (inclusive) with label l. A tree is a full binary bracketing
of the N words: the N one-word spans, the whole sentence and N - 2 spans between, each with
one label; its score is the sum of its spans' scores. Trees are given as labels (B, N, N):
``labels[i, j] = l`` for a constituent, ``NO_SPAN`` (-2) for a span not in the tree, -1
unknown (partial labels: summed out) and for i > j or words past the length.

The inside pass, written once over a semiring (:mod:`dagnet.fields.semiring`), width by
width over every span at once:

    V[i, i]  = (+)_l x[i, i, l]
    V[i, j]  = ((+)_l x[i, j, l]) (x) (+)_{i<=k<j} V[i, k] (x) V[k+1, j]
    value    = V[0, n - 1]                     at each example's length n

so log Z, span marginals (its gradient), the best tree (CKY), the k best, exact samples
and the entropy come from it; O(N^3 + N^2 L) per sentence. log Z (with the outside pass
written out as its backward) and decode (back-pointers, then a backtrack) run the same
recursion on plain tensors. A span required by partial
labels is enforced by banning every span that crosses it (a full binary bracketing is a
maximal set of non-crossing spans, so it must then contain it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import semiring as sr
from .protocol import Field, check_k
from .semi_markov import lengths_of

NEG_INF = float("-inf")
NO_SPAN = -2


def inside(lengths: Tensor) -> sr.DP:
    """The inside pass (module doc) over span scores (B, N, N, L): values (S, B)."""
    def dp(semiring: sr.Semiring, potentials: Tensor) -> Tensor:
        B, N = potentials.shape[:2]
        labelled = semiring.sum(semiring.convert(potentials), -1)  # (S, B, N, N): the label of each span
        S = labelled.shape[0]
        zero = semiring.convert(potentials.new_full((B, N, N), NEG_INF))
        start, end = zero.clone(), zero.clone()  # [i, w] = span [i, i+w]; [j, w] = span [j-w, j]
        leaves = labelled.diagonal(0, -2, -1)
        start[..., 0], end[..., 0] = leaves, leaves
        for w in range(1, N):
            m = N - w
            split = semiring.sum(semiring.times(start[:, :, :m, :w], end[:, :, w:, :w].flip(-1)), -1)
            span = semiring.times(split, labelled.diagonal(w, -2, -1))
            start[:, :, :m, w], end[:, :, w:, w] = span, span
        value = start[:, :, 0].gather(-1, (lengths - 1).clamp_min(0).view(1, B, 1).expand(S, B, 1)).squeeze(-1)
        return torch.where((lengths == 0).expand(S, B), semiring.one((B,), potentials), value)
    return dp


def by_width(t: Tensor) -> Tensor:
    """(B, N, N) indexed [i, j] -> a contiguous copy indexed [i, w] = [i, i + w] (span start and
    width), so that each width's spans are one column and their splits two strided views
    (:class:`_InsideOutside`); 0 where i + w >= N."""
    B, N = t.shape[:2]
    return F.pad(t, (0, N)).as_strided((B, N, N), (2 * N * N, 2 * N + 1, 1)).clone()


def by_span(t: Tensor) -> Tensor:
    """The inverse of :func:`by_width`: [i, w] -> [i, j]; 0 where i > j."""
    B, N = t.shape[:2]
    out = t.new_zeros(B, N, 2 * N)
    out.as_strided((B, N, N), (2 * N * N, 2 * N + 1, 1)).copy_(t)
    return out[..., :N]


def splits(chart: Tensor, w: int) -> Tensor:
    """The split scores (B, N - w, w) of every span of width w in a chart [i, w] (:func:`by_width`):
    [i, k] = V[i, i + k] + V[i + k + 1, i + w], the right half read through a strided view of
    the same chart (torch-struct's trick)."""
    B, N = chart.shape[:2]
    m = N - w
    return chart.as_strided((B, m, w), (N * N, N, 1)) + chart.as_strided((B, m, w), (N * N, N, N - 1), N + w - 1)


class _InsideOutside(torch.autograd.Function):
    """log Z (B,) of span scores (B, N, N, L) by the inside pass in plain tensors, and its
    gradient (the span-label marginals) by the outside pass: no autograd tape through the
    charts, whose slice-by-slice backward costs a full chart per read.

    At the sizes parsers use (N = 30) the loop over widths costs in tensor operations (launch
    and interpreter overhead), not arithmetic, so each width does few: the chart is indexed
    by span start and width (:func:`by_width`), so a width's spans are one column, starts as
    the label sums and gets the split sums added in place; the forward keeps each width's
    split weights exp(V[i, k] + V[k+1, j] - shift) and their sums (O(B N^3 / 6) numbers), so
    the outside pass shares a span's gradient among its splits with one multiply.

    The label sums over the whole (B, N, N, L) block (half the time at these sizes) take one
    exp, shifted by each sentence's top score instead of each span's (a max over L is a slow
    reduction); the few spans whose sum falls below tiny^(3/4) (precision lost to underflow,
    or no label allowed) are summed again exactly. Their exp, kept, gives the label posteriors."""

    @staticmethod
    def forward(ctx, x: Tensor, lengths: Tensor) -> Tensor:
        B, N = x.shape[:2]
        low, tiny = torch.finfo(x.dtype).min, torch.finfo(x.dtype).tiny
        top = x.flatten(1).amax(1).clamp_min_(low).view(B, 1, 1, 1)
        posterior = (x - top).exp_()  # (B, N, N, L), unnormalized; i > j: junk, whose gradient is 0
        label_sum = posterior.sum(-1)
        lab = label_sum.log().add_(top.view(B, 1, 1))
        far = label_sum < tiny ** 0.75
        if far.any():
            x_far = x[far]
            exact = torch.logsumexp(x_far, -1)
            lab[far] = exact
            posterior[far] = (x_far - exact.clamp_min(low)[:, None]).exp_()
            label_sum[far] = 1.0
        chart = by_width(lab)  # [i, w] = V over span [i, i + w]
        weights, sums = [], []
        for w in range(1, N):
            a = splits(chart, w)
            shift = a.amax(-1, keepdim=True).clamp_min_(low)
            p = a.sub_(shift).exp_()
            total = p.sum(-1, keepdim=True)
            chart.as_strided((B, N - w, 1), (N * N, N, 1), w).add_(shift).add_(total.log())
            weights.append(p)
            sums.append(total.clamp_min_(tiny))  # no 0/0 where no split is possible
        value = chart[:, 0].gather(-1, (lengths - 1).clamp_min(0)[:, None]).squeeze(-1)
        value = torch.where(lengths == 0, torch.zeros_like(value), value)
        ctx.weights, ctx.sums = weights, sums
        ctx.save_for_backward(posterior, label_sum, lengths)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        posterior, label_sum, lengths = ctx.saved_tensors
        B, N = posterior.shape[:2]
        g = posterior.new_zeros(B, N, N)  # [i, w] = d value / d V over span [i, i + w]
        g[torch.arange(B), 0, (lengths - 1).clamp_min(0)] = torch.where(lengths > 0, grad, torch.zeros_like(grad))
        for w in range(N - 1, 0, -1):
            m = N - w
            # a span's mass shared among its splits by their weights, to both halves (not in
            # place on the weights: a retained graph runs this again)
            share = ctx.weights[w - 1] * (g.as_strided((B, m, 1), (N * N, N, 1), w) / ctx.sums[w - 1])
            g.as_strided((B, m, w), (N * N, N, 1)).add_(share)
            g.as_strided((B, m, w), (N * N, N, N - 1), N + w - 1).add_(share)
        marg = by_span(g) / label_sum  # d value / d lab, per unit of unnormalized posterior
        return posterior * marg[..., None], None


def cky_argmax(x: Tensor, lengths: Tensor) -> tuple:
    """The best trees (CKY): labels (B, N, N) and scores (B,), by a max-plus inside pass that keeps
    each span's best split and a backtrack per sentence (cheaper than a backward pass); only
    the spans of the best trees look up their label."""
    B, N = x.shape[:2]
    chart = by_width(x.amax(-1))
    best_split = []  # [w - 1][b][i]: k of span [i, i + w]'s best split (i, i + k), (i + k + 1, i + w)
    for w in range(1, N):
        best, k = splits(chart, w).max(-1)
        chart.as_strided((B, N - w), (N * N, N), w).add_(best)
        best_split.append(k.tolist())
    score = chart[:, 0].gather(-1, (lengths - 1).clamp_min(0)[:, None]).squeeze(-1)
    score = torch.where(lengths == 0, torch.zeros_like(score), score)
    found = lengths.masked_fill(~torch.isfinite(score), 0)  # a sentence with no tree: labels -1
    spans = []  # (b, i, j) of the best trees
    for b, n in enumerate(found.tolist()):
        stack = [(0, n - 1)] if n else []
        while stack:
            i, j = stack.pop()
            spans.append((b, i, j))
            if i < j:
                k = i + best_split[j - i - 1][b][i]
                stack += [(i, k), (k + 1, j)]
    word = torch.arange(N, device=x.device)
    inside_ = (word[:, None] <= word) & (word < found[:, None, None])
    labels = torch.full((B, N, N), -1, dtype=torch.long, device=x.device).masked_fill_(inside_, NO_SPAN)
    if spans:
        b, i, j = torch.tensor(spans, device=x.device).unbind(1)
        labels[b, i, j] = x[b, i, j].argmax(-1)
    return labels, score


def span_labels(indicators: Tensor, lengths: Tensor) -> Tensor:
    """Labels (..., N, N) from span indicators (..., N, N, L): the label, NO_SPAN, -1 outside."""
    N = indicators.shape[-2]
    chosen = indicators.sum(-1) > 0.5
    labels = indicators.argmax(-1).masked_fill(~chosen, NO_SPAN)
    i = torch.arange(N, device=labels.device)
    inside_ = (i[:, None] <= i[None, :]) & (i[None, :] < lengths.view(-1, *[1] * 2))
    return labels.masked_fill(~inside_.view(*labels.shape[:-2], N, N) if labels.dim() == 3
                              else ~inside_.unsqueeze(0), -1)


class CKYCRF(Field):
    """CRF over labelled binary constituency trees of span scores (B, N, N, L) (module doc).
    No parameters; every query takes ``allowed`` (B, N, N, L) bool: hard constraints on
    span labels (all False for a span bans it)."""

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "tree"

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels

    def _check(self, potentials, mask, allowed) -> tuple:
        if potentials.dim() != 4 or potentials.shape[1] != potentials.shape[2]:
            raise ValueError(f"span scores must be (B, N, N, L), got {tuple(potentials.shape)}")
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed.bool(), NEG_INF)
        return potentials, lengths_of(mask, potentials.shape[0], potentials.shape[1], potentials.device)

    def log_partition(self, potentials, mask=None, allowed=None) -> Tensor:
        x, lengths = self._check(potentials, mask, allowed)
        return _InsideOutside.apply(x, lengths)

    def marginals(self, potentials, mask=None, allowed=None) -> Tensor:
        """Span-label marginals (B, N, N, L) (inside-outside, as the gradient of log Z); differentiable."""
        x, lengths = self._check(potentials, mask, allowed)
        return sr.marginals(inside(lengths), x)

    def entropy(self, potentials, mask=None, allowed=None) -> Tensor:
        x, lengths = self._check(potentials, mask, allowed)
        return sr.entropy(inside(lengths), x)

    def score(self, potentials, labels, mask=None) -> Tensor:
        """The sum of the labelled spans' scores (B,) (not checked to be a tree)."""
        picked = potentials.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(labels < 0, 0.0).flatten(1).sum(1)

    def labels_allowed(self, labels: Tensor) -> Tensor:
        """(B, N, N, L) span labels consistent with (partial) labels (module doc)."""
        B, N, _ = labels.shape
        L = self.num_labels
        ok = (labels[..., None] < 0) | (labels[..., None] == torch.arange(L, device=labels.device))
        ok = ok & (labels != NO_SPAN)[..., None]
        banned = torch.zeros(B, N, N, dtype=torch.bool, device=labels.device)
        for b, i, j in (labels >= 0).nonzero().tolist():  # ban every span crossing a required one
            if i < j:
                banned[b, :i, i:j] = True
                banned[b, i + 1:j + 1, j + 1:] = True
        return ok & ~banned[..., None]

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        return self.log_partition(potentials, mask, self.labels_allowed(labels))

    @torch.no_grad()
    def decode(self, potentials, mask=None, allowed=None) -> tuple:
        """The best tree (CKY): labels (B, N, N) and its score (B,)."""
        x, lengths = self._check(potentials, mask, allowed)
        return cky_argmax(x, lengths)

    @torch.no_grad()
    def kbest(self, potentials, k: int, mask=None, allowed=None) -> tuple:
        """The k best trees (B, k, N, N) and scores (B, k), best first; missing ones -inf, labels -1."""
        x, lengths = self._check(potentials, mask, allowed)
        scores, chosen = sr.kbest(inside(lengths), x, check_k(k))
        labels = torch.stack([span_labels(c, lengths) for c in chosen], 1)
        return labels.masked_fill((scores == NEG_INF)[..., None, None], -1), scores

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, mask=None, generator=None, allowed=None) -> Tensor:
        """n exact samples (n, B, N, N), by sampling backward through the inside pass."""
        x, lengths = self._check(potentials, mask, allowed)
        B, N = x.shape[:2]
        ls = lengths.repeat(n)
        logz, chosen = sr.samples(inside(ls), x.repeat(n, 1, 1, 1), generator)
        labels = span_labels(chosen, ls).masked_fill(~torch.isfinite(logz)[:, None, None], -1)
        return labels.view(n, B, N, N)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}"
