"""Semi-Markov CRF: segmentations of a sequence into labelled segments, from one dynamic program.

A segmentation of positions 0..T-1 is a list of segments (start s, length l + 1 <= max_len,
label k) that tile the sequence; it scores

    score = start[k_1] + sum_i seg[s_i, l_i, k_i] + sum_i trans[k_{i-1}, k_i] + end[k_last]

Segment scores ``seg`` (B, T, L, K) come from the network, either directly (``inputs=
"segments"``) or as sums of per-position emissions (B, T, K) over the segment plus a
learned length model ``length`` (L, K) (``inputs="emissions"``, built with L shifted adds,
not a cumulative sum whose differences lose float32 precision at T = 1,000).

The dynamic program, written once over a semiring ((+), (x)) (:mod:`dagnet.fields.semiring`):

    beta_0[k]  = start[k]                                   a segment of label k may start at 0
    alpha_t[k] = (+)_l seg[t - l - 1, l, k] (x) beta_{t-l-1}[k]   the last segment ends at t
    beta_t[k]  = (+)_j alpha_t[j] (x) trans[j, k]            a segment of label k starts at t
    value      = (+)_k alpha_T[k] (x) end[k]                 at each example's own length T

The gradient of the value w.r.t. ``seg`` marks segments (marginals, the argmax, one k-best
path, one sample), which :func:`tags` turns into labels. O(T L K + T K^2) per example.
log Z itself (``log_partition``, ``nll``) runs the same recursion in plain tensors with its
backward recursion written out (:class:`_ForwardBackward`): no autograd tape over T steps.

Labels. ``targets="segments"`` (the structure itself): tags (B, T) in [0, 2K): ``k`` where
a segment of label k starts, ``K + k`` where it continues; ``-1`` unknown (partial
labels: summed out). ``targets="frames"``: a label per position in [0, K) (-1 unknown),
the segmentation being latent and summed out, so ``nll`` trains on per-frame labels;
``decode`` and ``kbest`` then give the frame labels of the best segmentations (two
segmentations can share them). :func:`segments` lists (start, end, label) triples.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from . import semiring as sr
from .protocol import Field, check_k

NEG_INF = float("-inf")
INPUTS = ("emissions", "segments")
TARGETS = ("segments", "frames")


def lengths_of(mask: Optional[Tensor], B: int, T: int, device) -> Tensor:
    """Per-example lengths from a prefix mask (B, T); a mask with holes is refused."""
    if mask is None:
        return torch.full((B,), T, dtype=torch.long, device=device)
    mask = mask.bool()
    lengths = mask.sum(1)
    prefix = torch.arange(T, device=mask.device) < lengths[:, None]
    if not bool((prefix == mask).all()):
        raise ValueError("this field takes ragged lengths: the mask must be a prefix (True then False) per example")
    return lengths


def segment_scores(emissions: Tensor, length: Tensor) -> Tensor:
    """seg (B, T, L, K): seg[b, t, l, k] = sum of emissions[b, t..t+l, k] + length[l, k];
    -inf for segments running past T."""
    B, T, K = emissions.shape
    L = length.shape[0]
    cols, run = [], emissions
    padded = torch.cat([emissions, emissions.new_full((B, L, K), NEG_INF)], 1)
    for l in range(L):
        if l:
            run = run + padded[:, l:l + T]
        cols.append(run)
    return torch.stack(cols, 2) + length


def semi_markov_dp(start: Tensor, trans: Tensor, end: Tensor, lengths: Tensor) -> sr.DP:
    """The segmentation dp (module doc) over segment scores (B, T, L, K): values (S, B)."""
    def dp(semiring: sr.Semiring, seg: Tensor) -> Tensor:
        B, T, L, K = seg.shape
        ending = ending_scores(seg)
        zero = semiring.convert(seg.new_full((B, K), NEG_INF))
        # history[:, :, l] = beta_{t - l}: the newest first
        history = torch.stack([semiring.mul_score(semiring.one((B, K), seg), start)]
                              + [zero] * (L - 1), 2)  # (S, B, L, K)
        finals = [semiring.mul_score(semiring.one((B,), seg), seg.flatten(1)[:, :0].sum(1))]  # length 0
        for t in range(T):
            alpha = semiring.sum(semiring.mul_score(history, ending[:, t]), -2)  # (S, B, K)
            finals.append(semiring.sum(semiring.mul_score(alpha, end), -1))
            if t + 1 < T:
                beta = semiring.sum(semiring.mul_score(alpha.unsqueeze(-1), trans), -2)
                history = torch.cat([beta.unsqueeze(2), history[:, :, :L - 1]], 2)
        stacked = torch.stack(finals, 1)  # (S, T + 1, B)
        index = lengths.view(1, 1, B).expand(stacked.shape[0], 1, B)
        return stacked.gather(1, index).squeeze(1)
    return dp


def ending_scores(seg: Tensor) -> Tensor:
    """(B, T, L, K): [t, l] = seg[t - l, l], the segment of length l + 1 ending at position t; -inf before 0."""
    B, T, L, K = seg.shape
    t_idx = torch.arange(T, device=seg.device)[:, None] - torch.arange(L, device=seg.device)
    ending = seg[:, t_idx.clamp_min(0), torch.arange(L, device=seg.device)]
    return ending.masked_fill((t_idx < 0)[None, :, :, None], NEG_INF)


def _finite(a: Tensor) -> Tensor:
    return a.masked_fill(a == NEG_INF, 0.0)


class _ForwardBackward(torch.autograd.Function):
    """log Z (B,) of the segmentation dp (module doc) on plain tensors, and its gradient (w.r.t. the
    ending segment scores and the start, transition and end scores) by the backward recursion
    written out: T steps with no autograd tape, whose per-step bookkeeping dominates otherwise."""

    @staticmethod
    def forward(ctx, ending, start, trans, end, lengths):
        B, T, L, K = ending.shape
        betas = [ending.new_full((B, K), NEG_INF)] * (L - 1) + [start.expand(B, K)]  # newest last
        alphas, finals = [], [ending.new_zeros(B)]
        for t in range(T):
            history = torch.stack(betas[-1:-L - 1:-1], 1)  # (B, L, K): beta_{t - l}
            alpha = torch.logsumexp(ending[:, t] + history, 1)
            alphas.append(alpha)
            finals.append(torch.logsumexp(alpha + end, -1))
            betas.append(torch.logsumexp(alpha[:, :, None] + trans, 1))
        ctx.save_for_backward(ending, trans, end, lengths, torch.stack(alphas, 1), torch.stack(betas[L - 1:], 1))
        return torch.stack(finals, 1).gather(1, lengths[:, None]).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ending, trans, end, lengths, alphas, betas = ctx.saved_tensors  # betas[:, t] = beta_t
        B, T, L, K = ending.shape
        g_ending = torch.zeros_like(ending)
        g_beta = ending.new_zeros(B, T + 1, K)
        g_trans, g_end = torch.zeros_like(trans), torch.zeros_like(end)
        last = (lengths - 1).clamp_min(0)
        rows = torch.arange(B, device=ending.device)
        grad = torch.where(lengths > 0, grad, torch.zeros_like(grad))
        at_end = alphas[rows, last] + end  # (B, K): d value / d (alpha_{len-1} + end)
        share = (at_end - _finite(torch.logsumexp(at_end, -1))[:, None]).exp() * grad[:, None]
        g_end += share.sum(0)
        g_alpha_end = ending.new_zeros(B, T, K)
        g_alpha_end[rows, last] = share
        for t in range(T - 1, -1, -1):
            alpha = alphas[:, t]
            g_alpha = g_alpha_end[:, t]
            if t + 1 < T:  # beta_{t+1}[k] = lse_j alpha_t[j] + trans[j, k]
                pair = ((alpha[:, :, None] + trans - _finite(betas[:, t + 1])[:, None, :]).exp()
                        * g_beta[:, t + 1, None, :])
                g_trans += pair.sum(0)
                g_alpha = g_alpha + pair.sum(2)
            lo = max(t - L + 1, 0)
            history = betas[:, lo:t + 1].flip(1)  # (B, l, K): beta_{t - l}
            n = history.shape[1]
            p = (ending[:, t, :n] + history - _finite(alpha)[:, None]).exp() * g_alpha[:, None]
            g_ending[:, t, :n] = p
            g_beta[:, lo:t + 1] += p.flip(1)
        return g_ending, g_beta[:, 0].sum(0) if ctx.needs_input_grad[1] else None, g_trans, g_end, None


def tags(indicators: Tensor, num_labels: int) -> Tensor:
    """Tags (B, T) from segment indicators (B, T, L, K): k at a segment's start, K + k inside, -1 elsewhere."""
    B, T, L, K = indicators.shape
    out = torch.full((B, T), -1, dtype=torch.long, device=indicators.device)
    b, t, l, k = (indicators > 0.5).nonzero(as_tuple=True)
    for extra in range(L):
        inside = l >= extra
        pos = t[inside] + extra
        out[b[inside], pos] = k[inside] + (num_labels if extra else 0)
    return out


def segments(labels: Tensor, num_labels: int) -> List[List[Tuple[int, int, int]]]:
    """(start, end exclusive, label) per segment per example, from tags (B, T) (targets="segments")."""
    out = []
    for row in labels.tolist():
        segs = []
        for t, tag in enumerate(row):
            if tag < 0:
                continue
            if tag < num_labels or not segs or segs[-1][1] != t:
                segs.append([t, t + 1, tag % num_labels])
            else:
                segs[-1][1] = t + 1
        out.append([tuple(s) for s in segs])
    return out


class SemiMarkovCRF(Field):
    """Semi-Markov CRF over segments of up to ``max_len`` positions with ``num_labels`` labels
    (module doc). Potentials: emissions (B, T, K) or segment scores (B, T, max_len, K).

    ``allowed_transitions`` (K, K) bool forbids label bigrams between consecutive segments;
    queries take ``allowed`` (B, T, K) (labels allowed per position) or, for segment inputs,
    (B, T, max_len, K) (segments allowed)."""

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "sequence"

    def __init__(self, num_labels: int, max_len: int, inputs: str = "emissions", targets: str = "segments",
                 allowed_transitions=None):
        super().__init__()
        if inputs not in INPUTS or targets not in TARGETS:
            raise ValueError(f"inputs must be one of {INPUTS} and targets one of {TARGETS}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.num_labels, self.max_len, self.inputs, self.targets = num_labels, max_len, inputs, targets
        self.transitions = nn.Parameter(torch.empty(num_labels, num_labels).uniform_(-0.1, 0.1))
        self.start = nn.Parameter(torch.zeros(num_labels))
        self.end = nn.Parameter(torch.zeros(num_labels))
        self.length = nn.Parameter(torch.zeros(max_len, num_labels))
        allowed = None if allowed_transitions is None else torch.as_tensor(allowed_transitions, dtype=torch.bool)
        self.register_buffer("allowed_transitions", allowed)

    # -- the segment scores and the dp --------------------------------------------------------

    def segment_scores(self, potentials: Tensor, allowed: Optional[Tensor] = None) -> Tensor:
        """(B, T, L, K) segment scores of the potentials, -inf where ``allowed`` forbids."""
        length = self.length.to(potentials.dtype)
        if self.inputs == "emissions":
            if allowed is not None and allowed.dim() == 3:
                potentials = potentials.masked_fill(~allowed.bool(), NEG_INF)
            return segment_scores(potentials, length)
        if potentials.dim() != 4 or potentials.shape[2] != self.max_len:
            raise ValueError(f"segment scores must be (B, T, {self.max_len}, K), got {tuple(potentials.shape)}")
        seg = potentials + length
        if allowed is not None:
            if allowed.dim() == 3:  # labels per position: a segment needs its label allowed throughout
                allowed = self._segments_allowed(allowed.bool())
            seg = seg.masked_fill(~allowed.bool(), NEG_INF)
        return seg

    def _segments_allowed(self, frame_ok: Tensor) -> Tensor:
        """(B, T, L, K): segment (t, l, k) allowed iff label k is allowed at t..t+l."""
        B, T, K = frame_ok.shape
        pad = torch.cat([frame_ok, frame_ok.new_zeros(B, self.max_len, K)], 1)
        cols, run = [], frame_ok
        for l in range(self.max_len):
            if l:
                run = run & pad[:, l:l + T]
            cols.append(run)
        return torch.stack(cols, 2)

    def _transitions(self, dtype) -> Tensor:
        trans = self.transitions.to(dtype)
        if self.allowed_transitions is not None:
            trans = trans.masked_fill(~self.allowed_transitions, NEG_INF)
        return trans

    def _dp(self, potentials: Tensor, mask) -> sr.DP:
        B, T = potentials.shape[:2]
        lengths = lengths_of(mask, B, T, potentials.device)
        return semi_markov_dp(self.start.to(potentials.dtype), self._transitions(potentials.dtype),
                              self.end.to(potentials.dtype), lengths)

    def _log_z(self, seg: Tensor, mask) -> Tensor:
        """log Z over segment scores (B, T, L, K), by the hand-written forward-backward."""
        B, T = seg.shape[:2]
        lengths = lengths_of(mask, B, T, seg.device)
        return _ForwardBackward.apply(ending_scores(seg), self.start.to(seg.dtype), self._transitions(seg.dtype),
                                      self.end.to(seg.dtype), lengths)

    def _composed(self, potentials, mask, allowed=None) -> sr.DP:
        """The dp over the potentials themselves (through the segment scores), for gradients w.r.t. them."""
        inner = self._dp(potentials, mask)
        return lambda semiring, x: inner(semiring, self.segment_scores(x, allowed))

    def _absent(self, labels: Tensor, mask) -> Tensor:
        return labels.masked_fill(~mask.bool(), -1) if mask is not None else labels

    # -- the queries ---------------------------------------------------------------------------

    def log_partition(self, potentials, mask=None, allowed=None) -> Tensor:
        return self._log_z(self.segment_scores(potentials, allowed), mask)

    def marginals(self, potentials, mask=None, allowed=None) -> Tensor:
        """Marginals laid out like the potentials: per-position label marginals (B, T, K) for
        emissions, segment marginals (B, T, L, K) for segment scores; differentiable."""
        return sr.marginals(self._composed(potentials, mask, allowed), potentials)

    def entropy(self, potentials, mask=None, allowed=None) -> Tensor:
        return sr.entropy(self._composed(potentials, mask, allowed), potentials)

    def labels_allowed(self, labels: Tensor) -> Tensor:
        """(B, T, L, K) segments consistent with (partial) labels: per frame (targets="frames"),
        or tags (targets="segments": a segment starts at a start tag, continues over inside tags
        of its label, and is followed by a start)."""
        K, L = self.num_labels, self.max_len
        B, T = labels.shape
        free = labels < 0
        if self.targets == "frames":
            frame_ok = free[..., None] | (labels[..., None] == torch.arange(K, device=labels.device))
            return self._segments_allowed(frame_ok)
        ks = torch.arange(K, device=labels.device)
        begin_ok = free[..., None] | (labels[..., None] == ks)
        inside_ok = free[..., None] | (labels[..., None] == ks + K)
        # a segment ending at t + l must be followed by a start (or the end): next_ok[t + l + 1]
        next_ok = torch.cat([free | (labels < K), labels.new_ones(B, L + 1, dtype=torch.bool)], 1)
        body = self._segments_allowed(inside_ok)  # inside_ok over t..t+l
        pad_body = torch.cat([body, body.new_zeros(B, 1, L, K)], 1)
        cols = []
        for l in range(L):
            ok = begin_ok
            if l:
                ok = ok & pad_body[:, 1:T + 1, l - 1]
            after = next_ok[:, l + 1:l + 1 + T]
            cols.append(ok & after[..., None])
        return torch.stack(cols, 2)

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        seg = self.segment_scores(potentials).masked_fill(~self.labels_allowed(self._absent(labels, mask)), NEG_INF)
        return self._log_z(seg, mask)

    def score(self, potentials, labels, mask=None) -> Tensor:
        """log of the summed weight of the segmentations the labels describe: one segmentation's
        score for complete tags, a sum over segmentations for frame labels."""
        return self.clamped_log_partition(potentials, labels, mask)

    def _labels(self, indicators: Tensor) -> Tensor:
        labelled = tags(indicators, self.num_labels)
        if self.targets == "frames":
            labelled = torch.where(labelled >= 0, labelled % self.num_labels, labelled)
        return labelled

    @torch.no_grad()
    def decode(self, potentials, mask=None, allowed=None) -> tuple:
        """The best segmentation as labels (B, T) (-1 past each length) and its score (B,)."""
        seg = self.segment_scores(potentials, allowed)
        score, chosen = sr.best(self._dp(potentials, mask), seg)
        return self._labels(chosen), score

    @torch.no_grad()
    def kbest(self, potentials, k: int, mask=None, allowed=None) -> tuple:
        """The k best segmentations (B, k, T) and scores (B, k), best first; missing ones -inf, labels -1."""
        seg = self.segment_scores(potentials, allowed)
        scores, chosen = sr.kbest(self._dp(potentials, mask), seg, check_k(k))
        labels = torch.stack([self._labels(c) for c in chosen], 1)
        return labels.masked_fill((scores == NEG_INF)[..., None], -1), scores

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, mask=None, generator=None, allowed=None) -> Tensor:
        """n exact samples (n, B, T) by forward filtering, backward sampling."""
        B, T = potentials.shape[:2]
        seg = self.segment_scores(potentials, allowed).repeat(n, 1, 1, 1)
        rep_mask = None if mask is None else mask.repeat(n, 1)
        logz, chosen = sr.samples(self._dp(seg, rep_mask), seg, generator)
        labels = self._labels(chosen).masked_fill(~torch.isfinite(logz)[:, None], -1)
        return labels.view(n, B, T)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, max_len={self.max_len}, inputs={self.inputs}, targets={self.targets}"
