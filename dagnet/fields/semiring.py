"""Semirings, and every query of an exact structure from one dynamic program.

A structure's dynamic program (chain: forward recursion; tree: inside pass)
is written once, as a function ``dp(semiring, potentials) -> (S, B)`` that
only ever *sums* (``semiring.sum``), *multiplies* (``semiring.times``) and
multiplies by a plain score (``semiring.mul_score``). Values carry a leading
semiring axis of size S. Running it in a different semiring answers a
different query (the approach of torch-struct, Rush 2020):

=============  ==================================  =================================================
semiring       sum, product                        dp value, and its gradient w.r.t. the potentials
=============  ==================================  =================================================
``LOG``        logsumexp, +                        log Z; gradient: the marginals
``MAX``        max, +                              best score; gradient: the argmax's indicators
``KMax(k)``    top-k of the union, top-k of sums   the k best scores; gradient of the r-th: path r
``ENTROPY``    (log Z, H) pairs                    the entropy of p(y | x), in nats
``Sampled``    logsumexp, sampling backward        log Z; gradient: the indicators of one exact sample
=============  ==================================  =================================================

The gradients are the structure-recovery step: backpropagating through a
max that routes its gradient to one argument traces back the argmax (no
back-pointers to keep), and through a logsumexp whose backward draws one
argument in proportion to its weight traces an exact sample (forward
filtering, backward sampling). :func:`recover` turns those indicators into
labels; :func:`best`, :func:`kbest`, :func:`samples` and :func:`entropy`
are the queries, each a few lines over any ``dp``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

NEG_INF = float("-inf")


class _LogSumExp(torch.autograd.Function):
    """logsumexp whose gradient is 0, not NaN, where every term is -inf."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:
        out = torch.logsumexp(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, out = ctx.saved_tensors
        # d/dx_i logsumexp(x) = softmax(x)_i = exp(x_i - out); (-inf) - (-inf) is NaN -> 0.
        weights = (x - out.unsqueeze(ctx.dim)).exp().nan_to_num(nan=0.0)
        return grad.unsqueeze(ctx.dim) * weights, None


def logsumexp(x: Tensor, dim: int) -> Tensor:
    return _LogSumExp.apply(x, dim)


def gumbel_argmax(logits: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A draw from softmax(logits) over the last axis, by the Gumbel-max trick;
    rows that are all -inf draw index 0. The one categorical sampler of dagnet.fields."""
    noise = torch.empty_like(logits).exponential_(generator=generator).log().neg()
    return (logits + noise).argmax(-1)


class _SampledLogSumExp(torch.autograd.Function):
    """Forward: logsumexp. Backward: the incoming gradient goes, whole, to one
    argument drawn from softmax(x); so backpropagating a DP built of these
    from its root draws an exact sample, top down."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int, generator) -> Tensor:
        ctx.save_for_backward(x)
        ctx.dim, ctx.generator = dim, generator
        return torch.logsumexp(x, dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        logits = x.movedim(ctx.dim, -1)
        drawn = gumbel_argmax(logits, ctx.generator)
        one_hot = torch.nn.functional.one_hot(drawn, logits.shape[-1]).to(x.dtype).movedim(-1, ctx.dim)
        return grad.unsqueeze(ctx.dim) * one_hot, None, None


class Semiring:
    """A commutative semiring over scores in log space, values with a leading axis of
    size ``size``. The base class is the log semiring's algebra of plain scores:
    ``times`` is +, ``mul_score`` adds a plain score to every slot."""

    size = 1
    #: times is elementwise +, so a product of many values is an index_add
    additive = True

    def convert(self, scores: Tensor) -> Tensor:
        """Plain scores (...) -> semiring values (S, ...)."""
        return scores.unsqueeze(0)

    def one(self, shape, like: Tensor) -> Tensor:
        return like.new_zeros((self.size,) + tuple(shape))

    def times(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def mul_score(self, a: Tensor, scores: Tensor) -> Tensor:
        """a (x) convert(scores), for plain scores broadcast against a's non-semiring axes."""
        return a + scores

    def sum(self, a: Tensor, dim: int) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


class LogSemiring(Semiring):
    def sum(self, a: Tensor, dim: int) -> Tensor:
        return logsumexp(a, dim)


class MaxSemiring(Semiring):
    def sum(self, a: Tensor, dim: int) -> Tensor:
        return a.max(dim).values  # max(dim) routes the gradient to one argument, amax splits ties


class Sampled(LogSemiring):
    """The log semiring whose gradient draws one exact sample (module doc)."""

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def sum(self, a: Tensor, dim: int) -> Tensor:
        return _SampledLogSumExp.apply(a, dim, self.generator)


class KMax(Semiring):
    """The k best scores, best first (-inf fills missing ones). The sum of lists is the
    top k of their union; the product, the top k of the k * k pairwise sums."""

    additive = False

    def __init__(self, k: int):
        self.size = k

    def convert(self, scores: Tensor) -> Tensor:
        rest = scores.new_full((self.size - 1,) + scores.shape, NEG_INF)
        return torch.cat([scores.unsqueeze(0), rest])

    def one(self, shape, like: Tensor) -> Tensor:
        return self.convert(like.new_zeros(tuple(shape)))

    def times(self, a: Tensor, b: Tensor) -> Tensor:
        pairs = a.unsqueeze(1) + b.unsqueeze(0)  # (k, k, ...)
        return pairs.flatten(0, 1).topk(self.size, dim=0).values

    def sum(self, a: Tensor, dim: int) -> Tensor:
        dim = dim if dim >= 0 else a.dim() + dim
        stacked = a.movedim(dim, 1).flatten(0, 1)  # (k * n, ...)
        if stacked.shape[0] < self.size:  # fewer candidates than k: pad with impossible ones
            pad = stacked.new_full((self.size - stacked.shape[0],) + stacked.shape[1:], NEG_INF)
            stacked = torch.cat([stacked, pad])
        return stacked.topk(self.size, dim=0).values

    def __repr__(self) -> str:
        return f"KMax({self.size})"


class EntropySemiring(Semiring):
    """Pairs (log mass a, entropy h) of a set of labellings (Li & Eisner 2009, in log
    space). The sum of sets weights each set's entropy by its share and adds the
    entropy of the shares; the product adds both parts. ``mul_score`` scales the
    mass of every labelling alike, which leaves h unchanged."""

    size = 2

    def convert(self, scores: Tensor) -> Tensor:
        return torch.stack([scores, torch.zeros_like(scores)])

    def mul_score(self, a: Tensor, scores: Tensor) -> Tensor:
        mass, h = a.unbind(0)
        return torch.stack([mass + scores, h.expand_as(mass + scores)])

    def sum(self, a: Tensor, dim: int) -> Tensor:
        mass, h = a.unbind(0)
        total = logsumexp(mass, dim)
        finite = torch.isfinite(total)
        log_share = mass - total.masked_fill(~finite, 0.0).unsqueeze(dim)
        possible = mass > NEG_INF
        log_share = log_share.masked_fill(~possible, 0.0)  # no NaN from -inf - -inf below
        share = log_share.exp().masked_fill(~possible, 0.0)
        return torch.stack([total, (share * (h - log_share)).sum(dim)])


LOG, MAX, ENTROPY = LogSemiring(), MaxSemiring(), EntropySemiring()

DP = Callable[[Semiring, Tensor], Tensor]


def scatter_times(semiring: Semiring, values: Tensor, index: Tensor, size: int) -> Tensor:
    """out[:, i] = the semiring product of values[:, j] over every j with index[j] = i
    (``one`` where none): how a tree multiplies its children's messages into their
    parents, and a forest its trees."""
    out = semiring.one((size,) + values.shape[2:], values)
    if semiring.additive:
        return out.index_add(1, index, values)
    rank = _rank_within_groups(index)  # a non-additive product: one child of each parent per round
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        pick = (rank == r).nonzero().squeeze(1)
        into = index[pick]
        merged = semiring.times(out[:, into], values[:, pick])
        out = out.index_copy(1, into, merged)
    return out


def _rank_within_groups(index: Tensor) -> Tensor:
    """For each j, how many earlier j' share its index (0, 1, 2, ... within each group)."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    starts = torch.ones_like(sorted_index, dtype=torch.bool)
    starts[1:] = sorted_index[1:] != sorted_index[:-1]
    position = torch.arange(len(index), device=index.device)
    first = torch.cummax(torch.where(starts, position, 0), 0).values
    rank = torch.empty_like(index)
    rank[order] = position - first
    return rank


# -- every query from one dp -----------------------------------------------------------------

def _gradient(value: Tensor, potentials: Tensor, retain: bool = False, create: bool = False) -> Tensor:
    """d value.sum() / d potentials; zeros where the value does not depend on them (nothing present)."""
    if not value.requires_grad:
        return torch.zeros_like(potentials)
    (grad,) = torch.autograd.grad(value.sum(), potentials, retain_graph=retain or create, create_graph=create,
                                  allow_unused=True)
    return torch.zeros_like(potentials) if grad is None else grad


def _traced(dp: DP, semiring: Semiring, potentials: Tensor) -> tuple:
    """The dp's value (S, B) in ``semiring`` over a fresh leaf copy of the potentials, for its gradients."""
    leaf = potentials.detach().requires_grad_()
    return dp(semiring, leaf), leaf


def log_partition(dp: DP, potentials: Tensor) -> Tensor:
    return dp(LOG, potentials)[0]


def marginals(dp: DP, potentials: Tensor) -> Tensor:
    """d log Z / d potentials; differentiable, in the potentials and in the parameters the
    dp closes over, unless grad mode is off."""
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        leaf = potentials if potentials.requires_grad else potentials.detach().requires_grad_()
        return _gradient(dp(LOG, leaf)[0], leaf, create=differentiable)


def entropy(dp: DP, potentials: Tensor) -> Tensor:
    return dp(ENTROPY, potentials)[1]


def best(dp: DP, potentials: Tensor) -> tuple:
    """The best score (B,) and the indicators of one labelling that attains it."""
    with torch.enable_grad():
        values, leaf = _traced(dp, MAX, potentials)
        return values[0].detach(), _gradient(values[0], leaf)


def kbest(dp: DP, potentials: Tensor, k: int) -> tuple:
    """The k best scores (B, k) and their labellings' indicators (k, *potentials.shape)."""
    with torch.enable_grad():
        values, leaf = _traced(dp, KMax(k), potentials)  # (k, B)
        finite = torch.isfinite(values)
        picks = [_gradient(values[r].masked_fill(~finite[r], 0.0), leaf, retain=r < k - 1) for r in range(k)]
    return values.detach().t(), torch.stack(picks)


def samples(dp: DP, potentials: Tensor, generator: Optional[torch.Generator] = None) -> tuple:
    """log Z (B,) and the indicators of one exact sample per example."""
    with torch.enable_grad():
        values, leaf = _traced(dp, Sampled(generator), potentials)
        logz = values[0]
        return logz.detach(), _gradient(logz.masked_fill(~torch.isfinite(logz), 0.0), leaf)


def recover(indicators: Tensor) -> Tensor:
    """Labels (...) from indicators (..., K) over the last axis: the chosen state, -1 where none."""
    chosen = indicators.sum(-1) > 0.5
    return indicators.argmax(-1).masked_fill(~chosen, -1)
