"""Portable semi-Markov CRF: segmentations into labelled segments of up to ``max_len``, in plain torch.

The twin of ``dagnet.fields.SemiMarkovCRF`` for every deployment format: the same
parameters (``start``, ``end``, ``transitions`` [from, to], the length model ``length``
(L, K)) and buffer (``allowed_transitions``), both input modes (per-position emissions
(B, T, K), or segment scores (B, T, L, K)), both label kinds (begin/inside tags, or frame
labels), and one code path with no Python decision on tensor values or on the length.

With beta_t[k] the score of the prefixes before t where a segment of label k starts at t
(beta_0 = start) and alpha_t[k] that of the prefixes whose last segment, of label k, ends
at t, the field's recursions are

    alpha_t[k] = (+)_l seg[t - l, l, k] (x) beta_{t-l}[k],   beta_{t+1}[k] = (+)_j alpha_t[j] (x) trans[j, k]

and log Z = logsumexp_k alpha_{n-1}[k] + end[k] at each length n (0 for n = 0). Marginals
come from the outside pass written out, not from autograd: with gamma_t[k] the score of
what follows a segment of label k ending at t (end[k] at t = n - 1, -inf past it),

    delta_t[k] = logsumexp_l seg[t, l, k] + gamma_{t+l}[k],   gamma_t[k] = logsumexp_j trans[k, j] + delta_{t+1}[j],

segment (s, l, k) has probability exp(beta_s[k] + seg[s, l, k] + gamma_{s+l}[k] - log Z), and
a position's label marginals sum those of the segments covering it. Sum-product runs in
float64; decoding is the max-plus recursion in the potentials' dtype (the field's sums,
the field's ties: the lowest length, then the lowest label) and a backtrack over time.

Each loop over time is a plain loop in eager and TorchScript, and one traced loop
(``scan``, ONNX ``Scan``) under torch.export, so an exported program keeps batch, length
and mask dynamic. The mask must be a prefix per example, as the field requires (it refuses
a mask with holes; here each example's length is its mask's row sum).

Imports only torch; a standalone model file holds this source verbatim, so the private
names start with ``_semi_markov_``.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn


def _semi_markov_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that is -inf, not NaN, where every term is -inf (in every format)."""
    top = x.amax(dim, keepdim=True)
    top = top.masked_fill(top == float("-inf"), 0.0)
    return (x - top).exp().sum(dim).log() + top.squeeze(dim)


def _semi_markov_windows(x: torch.Tensor, fill: float, max_len: int, op: str) -> torch.Tensor:
    """(B, T, L, K) from x (B, T, K): [t, l] = x[t] op ... op x[t + l] (op "add" or "and"),
    x taken as ``fill`` past T; built with L shifted ops, as the field does (same sums)."""
    B, T, K = x.shape
    padded = torch.cat([x, torch.full((B, max_len, K), fill, dtype=x.dtype, device=x.device)], 1)
    cols: List[torch.Tensor] = []
    run = x
    for l in range(max_len):
        if l > 0:
            run = run + padded[:, l:l + T] if op == "add" else run & padded[:, l:l + T]
        cols.append(run)
    return torch.stack(cols, 2)


def _semi_markov_ending(seg: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, L, K): [t, l] = seg[t - l, l], the segment of length l + 1 ending at t; ``fill`` before 0."""
    T, L = seg.shape[1], seg.shape[2]
    t = torch.arange(T, device=seg.device).unsqueeze(1) - torch.arange(L, device=seg.device)
    ending = seg[:, t.clamp_min(0), torch.arange(L, device=seg.device)]
    return ending.masked_fill((t < 0).unsqueeze(0).unsqueeze(-1), fill)


def _semi_markov_at(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x (T, B, K) at time t (B,) per example, clamped to [0, T - 1]: (B, K)."""
    index = t.clamp(0, x.shape[0] - 1).view(1, -1, 1).expand(1, x.shape[1], x.shape[2])
    return x.gather(0, index).squeeze(0)


def _semi_markov_reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError("unknown reduction '" + reduction + "'; expected one of mean, sum, none")


# -- one step of each recursion: the plain loops and the traced ones share them -------------

def _semi_markov_sum_step(history: torch.Tensor, ending: torch.Tensor, trans: torch.Tensor):
    """history (B, L, K) = beta_{t-l}, ending (B, L, K) = seg[t - l, l]: alpha_t, and the next history."""
    alpha = _semi_markov_logsumexp(ending + history, 1)
    beta = _semi_markov_logsumexp(alpha.unsqueeze(2) + trans, 1)
    return alpha, torch.cat([beta.unsqueeze(1), history[:, :-1]], 1)


def _semi_markov_max_step(history: torch.Tensor, ending: torch.Tensor, trans: torch.Tensor):
    """The max-plus step: alpha_t, its best lengths (B, K), the best previous label of each
    label starting at t + 1 (B, K), and the next history."""
    alpha, length = (ending + history).max(1)
    beta, previous = (alpha.unsqueeze(2) + trans).max(1)
    return alpha, length, previous, torch.cat([beta.unsqueeze(1), history[:, :-1]], 1)


def _semi_markov_outside_step(gammas: torch.Tensor, delta: torch.Tensor, seg: torch.Tensor, last: torch.Tensor,
                              trans: torch.Tensor, end: torch.Tensor):
    """Back one position t: gammas (B, L, K) = gamma_{t+1+l}, delta = delta_{t+1}, seg (B, L, K) =
    seg[t, l], ``last`` (B, 1): t = n - 1. Returns gamma_{t+l} and delta_t. (Past n - 1, every
    segment is -inf, so are delta and gamma.)"""
    gamma = _semi_markov_logsumexp(trans + delta.unsqueeze(1), 2)
    gamma = torch.where(last, end.expand_as(gamma), gamma)
    gammas = torch.cat([gamma.unsqueeze(1), gammas[:, :-1]], 1)
    return gammas, _semi_markov_logsumexp(seg + gammas, 1)


def _semi_markov_back_step(k: torch.Tensor, s: torch.Tensor, t: torch.Tensor, length: torch.Tensor,
                           previous: torch.Tensor, lengths: torch.Tensor, final: torch.Tensor):
    """Back one position t of the best segmentation: label k and start s (B,) of the segment
    holding t + 1; ``length``, ``previous`` (B, K): the max step's choices at t. A new
    segment ends at t at the last position (label ``final``) or where the one after starts."""
    new = (t == lengths - 1) | (t < s)
    k = torch.where(t == lengths - 1, final, torch.where(new, previous.gather(1, k.unsqueeze(1)).squeeze(1), k))
    s = torch.where(new, t - length.gather(1, k.unsqueeze(1)).squeeze(1), s)
    return k, s


# -- the loops over time ---------------------------------------------------------------------

def _semi_markov_exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _semi_markov_traced(step, init, xs):
    """``carry, outs = step(carry, [x[t] for x in xs])`` for every t as one traced loop
    (``scan``; ONNX ``Scan``): the step outputs stacked over time. The outputs are fresh
    tensors (scan refuses outputs that alias the carry or the inputs)."""
    from torch._higher_order_ops.scan import scan

    def body(carry, x):
        carry, outs = step(list(carry), list(x))
        return carry, [out.clone(memory_format=torch.contiguous_format) for out in outs]
    return scan(body, list(init), list(xs))[1]


# under export only (TorchScript never compiles these): each loop's step for _semi_markov_traced

def _semi_markov_traced_forward(ending, history, trans):
    def step(carry, x):
        alpha, history = _semi_markov_sum_step(carry[0], x[0], trans)
        return [history], [alpha, carry[0][:, 0]]
    alphas, betas = _semi_markov_traced(step, [history], [ending])
    return alphas, betas


def _semi_markov_traced_outside(seg, last, gammas, delta, trans, end):
    def step(carry, x):
        gammas, delta = _semi_markov_outside_step(carry[0], carry[1], x[0], x[1], trans, end)
        return [gammas, delta], [gammas]
    return _semi_markov_traced(step, [gammas, delta], [seg, last])[0]


def _semi_markov_traced_viterbi(ending, history, trans):
    def step(carry, x):
        alpha, length, previous, history = _semi_markov_max_step(carry[0], x[0], trans)
        return [history], [alpha, length, previous]
    alphas, best, previous = _semi_markov_traced(step, [history], [ending])
    return alphas, best, previous


def _semi_markov_traced_backtrack(positions, best, previous, k, s, lengths, final):
    def step(carry, x):
        k, s = _semi_markov_back_step(carry[0], carry[1], x[0], x[1], x[2], lengths, final)
        return [k, s], [k, s]
    labels, starts = _semi_markov_traced(step, [k, s], [positions, best, previous])
    return labels, starts


def _semi_markov_first(ending: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The history before position 0 (B, L, K): beta_0 = start, then nothing."""
    B, L, K = ending.shape[1], ending.shape[2], ending.shape[3]
    return torch.cat([start.view(1, 1, K).expand(B, 1, K),
                      torch.full((B, L - 1, K), float("-inf"), dtype=ending.dtype, device=ending.device)], 1)


def _semi_markov_forward(ending: torch.Tensor, start: torch.Tensor, trans: torch.Tensor):
    """alphas and betas (T, B, K) of the sum-product recursion; ending (T, B, L, K)."""
    T = ending.shape[0]
    history = _semi_markov_first(ending, start)
    if not torch.jit.is_scripting():
        if _semi_markov_exporting():
            return _semi_markov_traced_forward(ending, history, trans)
    alphas: List[torch.Tensor] = []
    betas: List[torch.Tensor] = []
    for t in range(T):
        betas.append(history[:, 0])
        alpha, history = _semi_markov_sum_step(history, ending[t], trans)
        alphas.append(alpha)
    return torch.stack(alphas), torch.stack(betas)


def _semi_markov_outside(seg: torch.Tensor, lengths: torch.Tensor, trans: torch.Tensor,
                         end: torch.Tensor) -> torch.Tensor:
    """gamma_{t+l} (T, B, L, K) by the outside recursion run back from the last position;
    seg (T, B, L, K) time-major, -inf for segments past each length."""
    T, B, L, K = seg.shape
    last = (torch.arange(T, device=seg.device).unsqueeze(1) == lengths - 1).unsqueeze(-1).flip(0)  # (T, B, 1)
    seg = seg.flip(0)
    gammas = torch.full((B, L, K), float("-inf"), dtype=seg.dtype, device=seg.device)
    delta = torch.full((B, K), float("-inf"), dtype=seg.dtype, device=seg.device)
    if not torch.jit.is_scripting():
        if _semi_markov_exporting():
            return _semi_markov_traced_outside(seg, last, gammas, delta, trans, end).flip(0)
    out: List[torch.Tensor] = []
    for t in range(T):
        gammas, delta = _semi_markov_outside_step(gammas, delta, seg[t], last[t], trans, end)
        out.append(gammas)
    return torch.stack(out).flip(0)


def _semi_markov_viterbi(ending: torch.Tensor, start: torch.Tensor, trans: torch.Tensor):
    """alphas, best lengths and best previous labels (T, B, K) of the max-plus recursion."""
    T = ending.shape[0]
    history = _semi_markov_first(ending, start)
    if not torch.jit.is_scripting():
        if _semi_markov_exporting():
            return _semi_markov_traced_viterbi(ending, history, trans)
    alphas: List[torch.Tensor] = []
    best: List[torch.Tensor] = []
    previous: List[torch.Tensor] = []
    for t in range(T):
        alpha, length, before, history = _semi_markov_max_step(history, ending[t], trans)
        alphas.append(alpha)
        best.append(length)
        previous.append(before)
    return torch.stack(alphas), torch.stack(best), torch.stack(previous)


def _semi_markov_backtrack(best: torch.Tensor, previous: torch.Tensor, lengths: torch.Tensor,
                           final: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels and segment starts (T, B) of the best segmentation, walking back from the last
    position; past each length, whatever the walk carries (the caller masks it)."""
    T, B = best.shape[0], best.shape[1]
    positions = torch.arange(T, device=best.device).view(T, 1).expand(T, B).flip(0)
    best, previous = best.flip(0), previous.flip(0)
    k = torch.zeros_like(final)
    s = torch.zeros_like(final)
    if not torch.jit.is_scripting():
        if _semi_markov_exporting():
            labels, starts = _semi_markov_traced_backtrack(positions, best, previous, k, s, lengths, final)
            return labels.flip(0), starts.flip(0)
    labels: List[torch.Tensor] = []
    starts: List[torch.Tensor] = []
    for t in range(T):
        k, s = _semi_markov_back_step(k, s, positions[t], best[t], previous[t], lengths, final)
        labels.append(k)
        starts.append(s)
    return torch.stack(labels).flip(0), torch.stack(starts).flip(0)


# -- the field ---------------------------------------------------------------------------------

class SemiMarkovCRF(nn.Module):
    """Semi-Markov CRF over segments of up to ``max_len`` positions with ``num_labels`` labels:
    the twin of ``dagnet.fields.SemiMarkovCRF``, potentials emissions (B, T, K)
    (``inputs="emissions"``) or segment scores (B, T, max_len, K) (``"segments"``)."""

    def __init__(self, num_labels: int, max_len: int, inputs: str = "emissions", targets: str = "segments",
                 allowed_transitions: Optional[torch.Tensor] = None):
        super().__init__()
        self.num_labels, self.max_len, self.inputs, self.targets = num_labels, max_len, inputs, targets
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels))
        self.start = nn.Parameter(torch.zeros(num_labels))
        self.end = nn.Parameter(torch.zeros(num_labels))
        self.length = nn.Parameter(torch.zeros(max_len, num_labels))
        self.register_buffer("allowed_transitions",
                             None if allowed_transitions is None else allowed_transitions.bool().clone())

    @classmethod
    def from_field(cls, field):
        """The twin of a ``dagnet.fields.SemiMarkovCRF``, with a copy of its state."""
        twin = cls(field.num_labels, field.max_len, field.inputs, field.targets, field.allowed_transitions)
        twin = twin.to(field.start)
        twin.load_state_dict(field.state_dict())
        return twin

    def _transitions(self, dtype: torch.dtype) -> torch.Tensor:
        trans = self.transitions.to(dtype)
        if self.allowed_transitions is not None:
            trans = trans.masked_fill(~self.allowed_transitions, float("-inf"))
        return trans

    def segment_scores(self, potentials: torch.Tensor, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, L, K) segment scores, -inf where ``allowed`` (B, T, K) labels per position,
        or (B, T, L, K) segments, forbids."""
        length = self.length.to(potentials.dtype)
        if self.inputs == "emissions":
            if allowed is not None:
                potentials = potentials.masked_fill(~allowed.to(torch.bool), float("-inf"))
            return _semi_markov_windows(potentials, float("-inf"), self.max_len, "add") + length
        seg = potentials + length
        if allowed is not None:
            allowed = allowed.to(torch.bool)
            if allowed.dim() == 3:  # a segment needs its label allowed throughout
                allowed = _semi_markov_windows(allowed, 0.0, self.max_len, "and")
            seg = seg.masked_fill(~allowed, float("-inf"))
        return seg

    def _scores(self, potentials: torch.Tensor, mask: Optional[torch.Tensor],
                allowed: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Segment scores (B, T, L, K), cut from autograd (an exported program runs forward
        only, and the ONNX exporter would otherwise trace the loops' backward too), -inf for
        segments past each length (whatever the padding holds), and the lengths (B,)."""
        B, T = potentials.shape[0], potentials.shape[1]
        if mask is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=potentials.device)
        else:
            lengths = mask.to(torch.bool).long().sum(1)
        last = torch.arange(T, device=potentials.device).unsqueeze(1) + torch.arange(self.max_len, device=potentials.device)
        fits = (last < lengths.view(B, 1, 1)).unsqueeze(-1)
        return self.segment_scores(potentials, allowed).detach().masked_fill(~fits, float("-inf")), lengths

    def _log_z(self, seg: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log Z (B,) in float64 over segment scores (B, T, L, K)."""
        seg = seg.double()
        ending = _semi_markov_ending(seg, float("-inf")).transpose(0, 1)
        alphas = _semi_markov_forward(ending, self.start.detach().double(), self._transitions(torch.float64).detach())[0]
        logz = _semi_markov_logsumexp(_semi_markov_at(alphas, lengths - 1) + self.end.detach().double(), -1)
        return logz.masked_fill(lengths == 0, 0.0)

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                      allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log Z (B,); with ``allowed``, over the segmentations it allows."""
        seg, lengths = self._scores(potentials, mask, allowed)
        return self._log_z(seg, lengths).to(potentials.dtype)

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Marginals laid out like the potentials: p(position t in a segment of label k) (B, T, K)
        for emissions, p(segment (t, l, k)) (B, T, L, K) for segment scores; 0 past each length."""
        seg, lengths = self._scores(potentials, mask, allowed)
        seg = seg.double()
        start, end = self.start.detach().double(), self.end.detach().double()
        trans = self._transitions(torch.float64).detach()
        alphas, betas = _semi_markov_forward(_semi_markov_ending(seg, float("-inf")).transpose(0, 1), start, trans)
        logz = _semi_markov_logsumexp(_semi_markov_at(alphas, lengths - 1) + end, -1)
        gammas = _semi_markov_outside(seg.transpose(0, 1), lengths, trans, end).transpose(0, 1)  # (B, T, L, K)
        score = betas.transpose(0, 1).unsqueeze(2) + seg + gammas - logz.view(-1, 1, 1, 1)
        possible = (torch.isfinite(logz) & (lengths > 0)).view(-1, 1, 1, 1)
        segments = torch.where(possible, score, torch.full_like(score, float("-inf"))).exp()
        if self.inputs == "segments":
            return segments.to(potentials.dtype)
        # position t lies in segment (t - l, l', k) for l <= l': sum each start's segments of length > l
        longer = segments.flip(2).cumsum(2).flip(2)
        return _semi_markov_ending(longer, 0.0).sum(2).to(potentials.dtype)

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
               allowed: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The best segmentation as labels (B, T), -1 past each length (tags k / K + k at a
        segment's start / inside it, or frame labels), and its score (B,)."""
        seg, lengths = self._scores(potentials, mask, allowed)
        T, dtype = seg.shape[1], seg.dtype
        ending = _semi_markov_ending(seg, float("-inf")).transpose(0, 1)
        alphas, best, previous = _semi_markov_viterbi(ending, self.start.detach().to(dtype),
                                                      self._transitions(dtype).detach())
        score, final = (_semi_markov_at(alphas, lengths - 1) + self.end.detach().to(dtype)).max(-1)
        labels, starts = _semi_markov_backtrack(best, previous, lengths, final)
        labels, starts = labels.t(), starts.t()
        positions = torch.arange(T, device=potentials.device)
        if self.targets == "segments":
            labels = torch.where(starts == positions, labels, labels + self.num_labels)
        labels = labels.masked_fill(positions >= lengths.unsqueeze(1), -1)
        return labels, score.masked_fill(lengths == 0, 0.0)

    def labels_allowed(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, T, L, K) segments consistent with (partial) labels (-1 unknown): frame labels, or
        tags (a segment starts at a start tag, continues over inside tags of its label and is
        followed by a start or the end)."""
        K, L = self.num_labels, self.max_len
        B, T = labels.shape[0], labels.shape[1]
        free = labels < 0
        ks = torch.arange(K, device=labels.device)
        if self.targets == "frames":
            return _semi_markov_windows(free.unsqueeze(-1) | (labels.unsqueeze(-1) == ks), 0.0, L, "and")
        begin = free.unsqueeze(-1) | (labels.unsqueeze(-1) == ks)
        body = _semi_markov_windows(free.unsqueeze(-1) | (labels.unsqueeze(-1) == ks + K), 0.0, L, "and")
        body = torch.cat([body, torch.zeros(B, 1, L, K, dtype=torch.bool, device=labels.device)], 1)
        after = torch.cat([free | (labels < K), torch.ones(B, L + 1, dtype=torch.bool, device=labels.device)], 1)
        cols: List[torch.Tensor] = []
        for l in range(L):
            ok = begin
            if l > 0:
                ok = ok & body[:, 1:T + 1, l - 1]
            cols.append(ok & after[:, l + 1:l + 1 + T].unsqueeze(-1))
        return torch.stack(cols, 2)

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """-log p(labels | x) = log Z - log Z(segmentations that agree with labels); -1 is summed out."""
        B = potentials.shape[0]
        seg, lengths = self._scores(potentials, mask, None)
        if mask is not None:
            labels = labels.masked_fill(~mask.to(torch.bool), -1)
        clamped = seg.masked_fill(~self.labels_allowed(labels), float("-inf"))
        logz = self._log_z(torch.cat([seg, clamped]), torch.cat([lengths, lengths]))
        return _semi_markov_reduce((logz[:B] - logz[B:]).to(potentials.dtype), reduction)

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)
