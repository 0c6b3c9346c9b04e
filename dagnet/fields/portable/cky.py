"""CKY CRF, portable: the inside, outside and CKY passes of dagnet.fields.CKYCRF in plain torch.

The twin of ``dagnet.fields.CKYCRF`` (no parameters) for every deployment format, with its
conventions: span scores (B, N, N, L) [i, j, label]; labels (B, N, N): a constituent's
label, -2 for a span not in the tree, -1 for i > j, words past the length and no tree.
A mask is read as lengths (the field takes prefix masks only).

Every chart is indexed [start, width] (B, N, N), so the spans of one width are one
column. A pass is a loop over widths whose step reads the terms of every span of the
width at once, one gather per operand (index grids that depend on the width alone,
terms out of range masked), reduces them and writes one column:

* inside (log Z): V[i, w] = lab[i, w] + lse_{k<w} V[i, k] + V[i+k+1, w-1-k], where lab
  is the log-sum-exp over labels;
* outside (marginals, written out: an exported graph has no autograd), widest first:
  O[a, w] = lse over the parents (a, a+d), d > w, and (a-1-e, a+w), e < a, of the
  parent's O + lab plus the sibling's V; a span's marginal is exp(V + O - log Z),
  shared among its labels by their softmax;
* CKY (decode): the max-plus inside pass keeping each span's best split (the lowest on
  ties, as the field), then a pass widest first marking the spans of the best tree (a
  span is in it when a parent in it splits there): back-pointers followed by gathers.

The loop is a plain loop in eager and TorchScript and one traced loop (``scan``; ONNX
``Scan``) under torch.export, so batch, N and lengths stay dynamic. Imports only
torch; the private names start with ``_cky_`` (a standalone model file pastes this in).
"""
from typing import List, Optional

import torch
import torch.nn as nn


def _cky_exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _cky_inference(x: torch.Tensor) -> torch.Tensor:
    """x, cut from autograd under export: an exported program runs forward only (and the
    ONNX exporter would otherwise trace the traced loops' backward too)."""
    if not torch.jit.is_scripting():
        if _cky_exporting():
            return x.detach()
    return x


def _cky_lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that is -inf, not NaN, where every term is -inf."""
    top = x.amax(dim, keepdim=True)
    top = top.masked_fill(top == float("-inf"), 0.0)
    return (x - top).exp().sum(dim).log() + top.squeeze(dim)


def _cky_grid(chart: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (n, 1), columns (1, n)) of a chart (B, n, n): span starts and the step's term index."""
    i = torch.arange(chart.shape[1], device=chart.device)
    return i.view(-1, 1), i.view(1, -1)


def _cky_at(chart: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """chart (B, n, n) read at index grids [row, col] (n, n), clamped into the chart."""
    n = chart.shape[1]
    flat = row.clamp(0, n - 1) * n + col.clamp(0, n - 1)
    return chart.flatten(1).index_select(1, flat.flatten()).view(chart.shape)


def _cky_col(chart: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Column w (B, n) of a chart (clamped: a width past the last writes nothing anyway)."""
    return chart.index_select(2, w.clamp(max=chart.shape[2] - 1).view(1)).squeeze(2)


def _cky_put(chart: torch.Tensor, w: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """chart with column w set to values (B, n) where the span fits (start + w < n)."""
    row, col = _cky_grid(chart)
    here = (col == w) & (row + w < chart.shape[1])
    if chart.dtype == torch.bool:  # ONNX Runtime has no Where over bools
        return (chart & ~here) | (values.unsqueeze(-1) & here)
    return torch.where(here, values.unsqueeze(-1), chart)


def _cky_splits(V: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[i, k] = V[i, k] + V[i+k+1, w-1-k]: span (i, i+w) split after i+k; -inf for k >= w."""
    a, e = _cky_grid(V)
    return (V + _cky_at(V, a + e + 1, w - 1 - e)).masked_fill(e >= w, float("-inf"))


# -- the passes: one step per width ----------------------------------------------------------

def _cky_step(kind: str, w: torch.Tensor, charts: List[torch.Tensor], consts: List[torch.Tensor]) -> List[torch.Tensor]:
    """One width of a pass: "inside" ([V]; [lab]), "viterbi" ([V, best split]; [lab]),
    "outside" ([O]; [V, lab]) or "tree" ([in the best tree]; [best split])."""
    if kind == "inside":
        V = charts[0]
        return [_cky_put(V, w, _cky_lse(_cky_splits(V, w), -1) + _cky_col(consts[0], w))]
    if kind == "viterbi":
        V, K = charts[0], charts[1]
        best, k = _cky_splits(V, w).max(-1)
        return [_cky_put(V, w, best + _cky_col(consts[0], w)), _cky_put(K, w, k)]
    a, e = _cky_grid(charts[0])
    if kind == "outside":
        O, V = charts[0], consts[0]
        above = O + consts[1]
        # parent (a, a+e) with right sibling (a+w+1, a+e); parent (a-1-e, a+w) with left sibling (a-1-e, a-1)
        right = (above + _cky_at(V, a + w + 1, e - w - 1)).masked_fill(e <= w, float("-inf"))
        left = (_cky_at(above, a - 1 - e, w + 1 + e) + _cky_at(V, a - 1 - e, e)).masked_fill(e >= a, float("-inf"))
        terms = torch.cat([right, left, _cky_col(O, w).unsqueeze(-1)], -1)
        return [_cky_put(O, w, _cky_lse(terms, -1))]
    T, K = charts[0], consts[0]
    # (a, a+e) split after a+w (its left part), or (a-1-e, a+w) split after a-1 (its right part)
    left = T & (K == w) & (e > w)
    right = _cky_at(T, a - 1 - e, w + 1 + e) & (_cky_at(K, a - 1 - e, w + 1 + e) == e) & (e < a)
    return [_cky_put(T, w, _cky_col(T, w) | left.any(-1) | right.any(-1))]


def _cky_run(kind: str, widths: torch.Tensor, charts: List[torch.Tensor],
             consts: List[torch.Tensor]) -> List[torch.Tensor]:
    """The steps of a pass for the widths in order: a plain loop, or one traced loop under export."""
    if not torch.jit.is_scripting():
        if _cky_exporting():
            return _cky_traced(kind, widths, charts, consts)
    for t in range(widths.shape[0]):
        charts = _cky_step(kind, widths[t], charts, consts)
    return charts


def _cky_traced(kind, widths, charts, consts):
    from torch._higher_order_ops.scan import scan

    def body(carry, w):
        return _cky_step(kind, w, list(carry), consts), w.clone()
    return list(scan(body, charts, widths)[0])


# -- the queries --------------------------------------------------------------------------------

def _cky_lengths(mask: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    return mask.to(torch.bool).long().sum(1)


def _cky_by_width(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Span scores (B, n, n) [i, j] as a chart [i, w] = [i, i+w]; -inf past the length."""
    a, e = _cky_grid(x)
    past = (a + e).unsqueeze(0) >= lengths.view(-1, 1, 1)
    return _cky_at(x, a, a + e).masked_fill(past, float("-inf"))


def _cky_by_span(chart: torch.Tensor) -> torch.Tensor:
    """A chart [i, w] as (B, n, n) [i, j] = [i, j - i] (junk where i > j)."""
    i, j = _cky_grid(chart)
    return _cky_at(chart, i.expand(-1, chart.shape[1]), j - i)


def _cky_root(chart: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The whole sentence's entry (B,) of a chart: [0, length - 1]."""
    return chart[:, 0].gather(1, (lengths - 1).clamp_min(0).view(-1, 1)).squeeze(1)


def _cky_at_root(chart: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n, n) bool: True at the whole sentence, [0, length - 1]."""
    a, e = _cky_grid(chart)
    return (a == 0) & (e == (lengths - 1).view(-1, 1, 1))


def _cky_inside(lab: torch.Tensor, kind: str, extra: List[torch.Tensor]) -> List[torch.Tensor]:
    """The inside (or viterbi) pass over label scores lab [i, w]: its final charts."""
    e = _cky_grid(lab)[1]
    V = lab.masked_fill(e > 0, float("-inf"))
    widths = torch.arange(1, lab.shape[1] + 1, device=lab.device)  # at least one step; the last writes nothing
    return _cky_run(kind, widths, [V] + extra, [lab])


def _cky_log_z(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log Z (B,), the inside chart V, the label chart lab) of span scores x (B, N, N, L)."""
    lab = _cky_by_width(_cky_lse(x, -1), lengths)
    V = _cky_inside(lab, "inside", [])[0]
    return _cky_root(V, lengths).masked_fill(lengths == 0, 0.0), V, lab


def _cky_allowed(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, N, N, L) span labels consistent with partial labels, as the field's ``labels_allowed``:
    a required span (a label >= 0, i < j) bans every span crossing it, (a, c) with
    a < i <= c < j or i < a <= j < c, counted by products with triangular matrices."""
    N = labels.shape[1]
    tags = torch.arange(num_labels, device=labels.device)
    ok = ((labels.unsqueeze(-1) < 0) | (labels.unsqueeze(-1) == tags)) & (labels != -2).unsqueeze(-1)
    i = torch.arange(N, device=labels.device)
    lt = (i.view(-1, 1) < i.view(1, -1)).float()  # [a, b] = a < b
    required = ((labels >= 0) & (lt > 0)).float()  # R[i, j]
    # a < i <= c < j: sum_i [a<i] [i<=c] sum_j R[i, j] [j>c]; i < a <= j < c: sum_j [a<=j] (sum_i [i<a] R[i, j]) [j<c]
    inner = lt @ ((1.0 - lt.t()) * (required @ lt.t()))
    outer = ((1.0 - lt.t()) * (lt.t() @ required)) @ lt
    return ok & ((inner + outer) == 0).unsqueeze(-1)


def _cky_reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError("unknown reduction '" + reduction + "'; expected one of mean, sum, none")


class CKYCRF(nn.Module):
    """CRF over labelled binary constituency trees of span scores (B, N, N, L): the twin of
    ``dagnet.fields.CKYCRF`` (no parameters). Every query takes ``allowed`` (B, N, N, L) bool."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels

    @classmethod
    def from_field(cls, field):
        """The twin of a ``dagnet.fields.CKYCRF``."""
        return cls(field.num_labels)

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                      allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log Z (B,); 0 for an empty sentence."""
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed, float("-inf"))
        return _cky_log_z(_cky_inference(potentials), _cky_lengths(mask, potentials))[0]

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Span-label marginals (B, N, N, L) by the inside and outside passes; 0 off the sentence."""
        x = _cky_inference(potentials)
        if allowed is not None:
            x = x.masked_fill(~allowed, float("-inf"))
        lengths = _cky_lengths(mask, x)
        logz, V, lab = _cky_log_z(x, lengths)
        O = torch.zeros_like(lab).masked_fill(~_cky_at_root(lab, lengths), float("-inf"))
        O = _cky_run("outside", torch.arange(x.shape[1] - 1, -1, -1, device=x.device), [O], [V, lab])[0]
        found = (logz > float("-inf")) & (lengths > 0)
        span = (V + O - logz.masked_fill(~found, 0.0).view(-1, 1, 1)).exp().masked_fill(~found.view(-1, 1, 1), 0.0)
        total = _cky_lse(x, -1).unsqueeze(-1)
        share = (x - total.masked_fill(total == float("-inf"), 0.0)).exp()
        i, j = _cky_grid(span)
        return _cky_by_span(span).masked_fill(j < i, 0.0).unsqueeze(-1) * share

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
               allowed: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The best tree (CKY): labels (B, N, N) and its score (B,), -inf (labels -1) if none."""
        x = potentials.detach()
        if allowed is not None:
            x = x.masked_fill(~allowed, float("-inf"))
        lengths = _cky_lengths(mask, x)
        lab = _cky_by_width(x.amax(-1), lengths)
        V, K = _cky_inside(lab, "viterbi", [torch.zeros(lab.shape, dtype=torch.long, device=x.device)])
        score = _cky_root(V, lengths).masked_fill(lengths == 0, 0.0)
        found = (score > float("-inf")) & (lengths > 0)
        T = _cky_at_root(V, lengths) & found.view(-1, 1, 1)
        T = _cky_run("tree", torch.arange(x.shape[1] - 1, -1, -1, device=x.device), [T], [K])[0]
        i, j = _cky_grid(V)
        inside = (j >= i) & (j < lengths.view(-1, 1, 1)) & found.view(-1, 1, 1)
        labels = x.argmax(-1).masked_fill(~_cky_by_span(T), -2)
        return labels.masked_fill(~inside, -1), score

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """-log p(labels | x) = log Z - log Z(trees that agree with the labels); -1 is summed out."""
        allowed = _cky_allowed(labels, self.num_labels)
        clamped = self.log_partition(potentials, mask, allowed)
        return _cky_reduce(self.log_partition(potentials, mask, None) - clamped, reduction)

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)
