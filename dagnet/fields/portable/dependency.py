"""Projective dependency CRF, portable: Eisner's inside, outside and argmax passes in plain torch.

The twin of ``dagnet.fields.DependencyCRF(projective=True)``, labelled or not, one root
child or several, with its conventions: arc scores (B, N, N[, R]) [head, modifier], the
root's arcs on the diagonal; heads (B, N) (``heads[m] = m`` for a child of the root), or
(B, N, 2) [head, relation]; -1 for words past the length and sentences with no tree.
A mask is read as lengths (the field takes prefix masks only). The non-projective field
has no twin (``DependencyCRF.refusal``).

A root token 0 is prepended (n = N + 1 tokens) and every chart is indexed [start, width]
(B, n, n), so the spans of one width are one column: complete C_r, C_l and incomplete I_r,
I_l items (dagnet.fields.dependency has the recursion). A pass is a loop over widths whose
step reads every span's terms at once, one gather per operand (index grids that depend
on the width alone, terms out of range masked), and writes one column per chart:

* inside (log Z) and its max-plus version keeping each item's best split (decode);
* outside (marginals, written out: an exported graph has no autograd), widest first: an
  item's outside score is the lse, over the items built from it, of their outside score
  plus the other part's inside score (I_r and I_l after C_r and C_l of the same width,
  which they build); an arc's marginal is exp(I + outside(I) - log Z);
* decode marks the items of the best tree widest first (an item is in it when an item in
  it was built from it at its back-pointer): back-pointers followed by gathers, with the
  field's ties (the lowest split).

The loop is a plain loop in eager and TorchScript and one traced loop (``scan``; ONNX
``Scan``) under torch.export, so batch, N and lengths stay dynamic. Imports only torch;
the private names start with ``_dependency_`` (a standalone model file pastes this in).
"""
from typing import List, Optional

import torch
import torch.nn as nn


def _dependency_exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _dependency_inference(x: torch.Tensor) -> torch.Tensor:
    """x, cut from autograd under export: an exported program runs forward only (and the
    ONNX exporter would otherwise trace the traced loops' backward too)."""
    if not torch.jit.is_scripting():
        if _dependency_exporting():
            return x.detach()
    return x


def _dependency_lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that is -inf, not NaN, where every term is -inf."""
    top = x.amax(dim, keepdim=True)
    top = top.masked_fill(top == float("-inf"), 0.0)
    return (x - top).exp().sum(dim).log() + top.squeeze(dim)


def _dependency_grid(chart: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (n, 1), columns (1, n)) of a chart (B, n, n): span starts and the step's term index."""
    i = torch.arange(chart.shape[1], device=chart.device)
    return i.view(-1, 1), i.view(1, -1)


def _dependency_at(chart: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """chart (B, n, n) read at index grids [row, col] (n, n), clamped into the chart."""
    n = chart.shape[1]
    flat = row.clamp(0, n - 1) * n + col.clamp(0, n - 1)
    return chart.flatten(1).index_select(1, flat.flatten()).view(chart.shape)


def _dependency_col(chart: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Column w (B, n) of a chart (clamped: a width past the last writes nothing anyway)."""
    return chart.index_select(2, w.clamp(max=chart.shape[2] - 1).view(1)).squeeze(2)


def _dependency_put(chart: torch.Tensor, w: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """chart with column w set to values (B, n) where the span fits (start + w < n)."""
    row, col = _dependency_grid(chart)
    here = (col == w) & (row + w < chart.shape[1])
    if chart.dtype == torch.bool:  # ONNX Runtime has no Where over bools
        return (chart & ~here) | (values.unsqueeze(-1) & here)
    return torch.where(here, values.unsqueeze(-1), chart)


def _dependency_masked(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(out, float("-inf"))


# -- the passes: one step per width ----------------------------------------------------------
# charts: [I_r, I_l, C_r, C_l] (inside), + [best split, best C_r split, best C_l split] (viterbi);
# outside: [O(C_r), O(C_l), O(I_r), O(I_l), O(split)]; tree: [in C_r, in C_l, in I_r, in I_l].

def _dependency_inside(w: torch.Tensor, charts: List[torch.Tensor], arcs: List[torch.Tensor],
                       viterbi: bool) -> List[torch.Tensor]:
    """I_r[a, w] = split + arc[a -> a+w], I_l[a, w] = split + arc[a+w -> a] with
    split = (+)_{k<w} C_r[a, k] C_l[a+k+1, w-1-k]; C_r[a, w] = (+)_{1<=k<=w} I_r[a, k] C_r[a+k, w-k];
    C_l[a, w] = (+)_{k<w} C_l[a, k] I_l[a+k, w-k]: (+) is lse, or max keeping the argmax."""
    Ir, Il, Cr, Cl = charts[0], charts[1], charts[2], charts[3]
    a, e = _dependency_grid(Cr)
    splits = _dependency_masked(Cr + _dependency_at(Cl, a + e + 1, w - 1 - e), e >= w)
    split = splits.amax(-1) if viterbi else _dependency_lse(splits, -1)
    Ir = _dependency_put(Ir, w, split + _dependency_col(arcs[0], w))
    Il = _dependency_put(Il, w, split + _dependency_col(arcs[1], w))
    right = _dependency_masked(Ir + _dependency_at(Cr, a + e, w - e), (e < 1) | (e > w))
    left = _dependency_masked(Cl + _dependency_at(Il, a + e, w - e), e >= w)
    if viterbi:
        cr, kr = right.max(-1)
        cl, kl = left.max(-1)
        back = [_dependency_put(charts[4], w, splits.argmax(-1)), _dependency_put(charts[5], w, kr),
                _dependency_put(charts[6], w, kl)]
        return [Ir, Il, _dependency_put(Cr, w, cr), _dependency_put(Cl, w, cl)] + back
    Cr = _dependency_put(Cr, w, _dependency_lse(right, -1))
    return [Ir, Il, Cr, _dependency_put(Cl, w, _dependency_lse(left, -1))]


def _dependency_outside(w: torch.Tensor, charts: List[torch.Tensor], inside: List[torch.Tensor]) -> List[torch.Tensor]:
    """Outside scores of width w from the wider items (and I from C of the same width)."""
    oCr, oCl, oIr, oIl, oS = charts[0], charts[1], charts[2], charts[3], charts[4]
    Ir, Il, Cr, Cl = inside[0], inside[1], inside[2], inside[3]
    a, e = _dependency_grid(Cr)
    i, d = a - 1 - e, w + 1 + e  # the wider item (i, a+w) that starts e + 1 words to the left
    cr = torch.cat([
        # the split of (a, a+e), as its left part; C_r[i, a+w] = I_r[i, a] C_r[a, a+w]
        _dependency_masked(oS + _dependency_at(Cl, a + w + 1, e - w - 1), e <= w),
        _dependency_masked(_dependency_at(oCr, i, d) + _dependency_at(Ir, i, 1 + e), e >= a),
        _dependency_col(oCr, w).unsqueeze(-1)], -1)
    cl = torch.cat([
        # the split of (i, a+w), as its right part; C_l[a, a+e] = C_l[a, a+w] I_l[a+w, a+e]
        _dependency_masked(_dependency_at(oS, i, d) + _dependency_at(Cr, i, e), e >= a),
        _dependency_masked(oCl + _dependency_at(Il, a + w, e - w), e <= w),
        _dependency_col(oCl, w).unsqueeze(-1)], -1)
    oCr, oCl = _dependency_put(oCr, w, _dependency_lse(cr, -1)), _dependency_put(oCl, w, _dependency_lse(cl, -1))
    # C_r[a, a+e] = I_r[a, a+w] C_r[a+w, a+e]; C_l[a-e, a+w] = C_l[a-e, a] I_l[a, a+w]
    ir = _dependency_masked(oCr + _dependency_at(Cr, a + w, e - w), e < w)
    il = _dependency_masked(_dependency_at(oCl, a - e, w + e) + _dependency_at(Cl, a - e, e), e > a)
    oIr, oIl = _dependency_put(oIr, w, _dependency_lse(ir, -1)), _dependency_put(oIl, w, _dependency_lse(il, -1))
    split = torch.stack([_dependency_col(oIr, w) + _dependency_col(inside[4], w),
                         _dependency_col(oIl, w) + _dependency_col(inside[5], w)], -1)
    return [oCr, oCl, oIr, oIl, _dependency_put(oS, w, _dependency_lse(split, -1))]


def _dependency_tree(w: torch.Tensor, charts: List[torch.Tensor], back: List[torch.Tensor]) -> List[torch.Tensor]:
    """Whether each item of width w is in the best tree: an item in it was built from it (the
    same uses as in the outside pass), at its back-pointer."""
    tCr, tCl, tIr, tIl = charts[0], charts[1], charts[2], charts[3]
    ks, kr, kl = back[0], back[1], back[2]
    a, e = _dependency_grid(tCr)
    i, d = a - 1 - e, w + 1 + e
    tS = tIr | tIl
    cr = ((tS & (ks == w) & (e > w)).any(-1)
          | (_dependency_at(tCr, i, d) & (_dependency_at(kr, i, d) == 1 + e) & (e < a)).any(-1))
    cl = ((_dependency_at(tS, i, d) & (_dependency_at(ks, i, d) == e) & (e < a)).any(-1)
          | (tCl & (kl == w) & (e > w)).any(-1))
    tCr = _dependency_put(tCr, w, _dependency_col(tCr, w) | cr)
    tCl = _dependency_put(tCl, w, _dependency_col(tCl, w) | cl)
    ir = (tCr & (kr == w) & (e >= w)).any(-1)
    il = (_dependency_at(tCl, a - e, w + e) & (_dependency_at(kl, a - e, w + e) == e) & (e <= a)).any(-1)
    return [tCr, tCl, _dependency_put(tIr, w, ir), _dependency_put(tIl, w, il)]


def _dependency_step(kind: str, w: torch.Tensor, charts: List[torch.Tensor],
                     consts: List[torch.Tensor]) -> List[torch.Tensor]:
    if kind == "inside" or kind == "viterbi":
        return _dependency_inside(w, charts, consts, kind == "viterbi")
    if kind == "outside":
        return _dependency_outside(w, charts, consts)
    return _dependency_tree(w, charts, consts)


def _dependency_run(kind: str, widths: torch.Tensor, charts: List[torch.Tensor],
             consts: List[torch.Tensor]) -> List[torch.Tensor]:
    """The steps of a pass for the widths in order: a plain loop, or one traced loop under export."""
    if not torch.jit.is_scripting():
        if _dependency_exporting():
            return _dependency_traced(kind, widths, charts, consts)
    for t in range(widths.shape[0]):
        charts = _dependency_step(kind, widths[t], charts, consts)
    return charts


def _dependency_traced(kind, widths, charts, consts):
    from torch._higher_order_ops.scan import scan

    def body(carry, w):
        return _dependency_step(kind, w, list(carry), consts), w.clone()
    return list(scan(body, charts, widths)[0])


# -- the queries --------------------------------------------------------------------------------

def _dependency_lengths(mask: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    return mask.to(torch.bool).long().sum(1)


def _dependency_tokens(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Arc scores (B, N, N) with the root on the diagonal -> (B, n, n) [head, modifier] over the
    tokens (the root token 0 first), as the field's ``with_root``; -inf past the length."""
    N = x.shape[1]
    i = torch.arange(N, device=x.device)
    words = x.masked_fill(i.view(-1, 1) == i.view(1, -1), float("-inf"))
    body = torch.cat([x.diagonal(0, 1, 2).unsqueeze(1), words], 1)  # (B, n, N)
    arcs = torch.cat([torch.full_like(body[:, :, :1], float("-inf")), body], 2)
    t = torch.arange(N + 1, device=x.device).view(1, -1)
    past = t > lengths.view(-1, 1)
    return arcs.masked_fill(past.unsqueeze(1) | past.unsqueeze(2), float("-inf"))


def _dependency_by_width(arcs: torch.Tensor) -> List[torch.Tensor]:
    """[arc[a -> a+w], arc[a+w -> a]] as charts [a, w]; -inf past the last token."""
    a, e = _dependency_grid(arcs)
    out = a + e >= arcs.shape[1]
    return [_dependency_masked(_dependency_at(arcs, a, a + e), out), _dependency_masked(_dependency_at(arcs, a + e, a), out)]


def _dependency_start(arcs: torch.Tensor, extra: int) -> List[torch.Tensor]:
    """The charts before the first width: I -inf, C 0 at width 0 (and ``extra`` back-pointer charts);
    distinct tensors, as a traced loop's carry must be."""
    e = _dependency_grid(arcs)[1]
    empty = torch.zeros_like(arcs).masked_fill(e > 0, float("-inf"))
    back = [torch.zeros(arcs.shape, dtype=torch.long, device=arcs.device) for _ in range(extra)]
    return [torch.full_like(arcs, float("-inf")) for _ in range(2)] + [empty, empty.clone()] + back


def _dependency_root_terms(arcs: torch.Tensor, Cr: torch.Tensor, Cl: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """arc[0 -> m] + C_l[1, m] + C_r[m, len] for each word m (B, N): one root child; -inf past the length."""
    N = arcs.shape[1] - 1
    m = torch.arange(1, N + 1, device=arcs.device).view(1, -1)
    right = Cr[:, 1:].gather(2, (lengths.view(-1, 1) - m).clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return _dependency_masked(arcs[:, 0, 1:] + Cl[:, 1, :N] + right, m > lengths.view(-1, 1))


def _dependency_top(Cr: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """C_r[0, len] (B,): several root children."""
    return Cr[:, 0].gather(1, lengths.view(-1, 1)).squeeze(1)


def _dependency_root_outside(arcs: torch.Tensor, Cr: torch.Tensor, Cl: torch.Tensor,
                      lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outside scores (O(C_r), O(C_l)) of one root child m: C_r[m, len] and C_l[1, m] are each
    scored with the arc 0 -> m and the other part."""
    N = arcs.shape[1] - 1
    a, e = _dependency_grid(arcs)
    m = torch.arange(1, N + 1, device=arcs.device).view(1, -1)
    width = (lengths.view(-1, 1) - m).clamp_min(0)
    right = Cr[:, 1:].gather(2, width.unsqueeze(-1)).squeeze(-1)  # C_r[m, len]
    pad = torch.full_like(right[:, :1], float("-inf"))
    oCl = torch.cat([arcs[:, 0, 1:] + right, pad], 1).unsqueeze(1)  # at [1, m - 1]
    oCr = torch.cat([pad, arcs[:, 0, 1:] + Cl[:, 1, :N]], 1).unsqueeze(-1)  # at [m, len - m]
    none = torch.full_like(arcs, float("-inf"))
    at_len = e == torch.cat([torch.zeros_like(width[:, :1]), width], 1).unsqueeze(-1)
    return torch.where(at_len, oCr, none), torch.where(a == 1, oCl, none)


def _dependency_is(chart: torch.Tensor, row: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """(B, n, n) bool: True at [row[b], width[b]]."""
    a, e = _dependency_grid(chart)
    return (a == row.view(-1, 1, 1)) & (e == width.view(-1, 1, 1))


_DEPENDENCY_NON_PROJECTIVE = ("the non-projective tree's decoding, Chu-Liu-Edmonds, branches on the scores (it contracts "
                       "the cycles it finds, one at a time); a projective DependencyCRF deploys")


class DependencyCRF(nn.Module):
    """CRF over projective dependency trees of arc scores (B, N, N[, R]): the twin of
    ``dagnet.fields.DependencyCRF(projective=True)`` (no parameters). Every query takes
    ``allowed`` (B, N, N[, R]) bool."""

    def __init__(self, num_relations: int = 0, projective: bool = True, multiroot: bool = False):
        super().__init__()
        if not projective:
            raise ValueError(_DEPENDENCY_NON_PROJECTIVE)
        self.num_labels = self.num_relations = num_relations
        self.multiroot = multiroot
        self.labelled = num_relations > 0

    @classmethod
    def refusal(cls, field) -> str:
        """Why ``field`` has no twin, or "" (dagnet.fields.portable refuses to export it)."""
        return "" if field.projective else _DEPENDENCY_NON_PROJECTIVE

    @classmethod
    def from_field(cls, field):
        """The twin of a projective ``dagnet.fields.DependencyCRF``."""
        return cls(field.num_relations, field.projective, field.multiroot)

    def _inside(self, arcs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, List[torch.Tensor]]:
        """(log Z (B,), [I_r, I_l, C_r, C_l, arc_r, arc_l]) of token arc scores (B, n, n)."""
        by_width = _dependency_by_width(arcs)
        widths = torch.arange(1, arcs.shape[1] + 1, device=arcs.device)  # the last writes nothing
        charts = _dependency_run("inside", widths, _dependency_start(arcs, 0), by_width)
        if self.multiroot:
            logz = _dependency_top(charts[2], lengths)
        else:
            logz = _dependency_lse(_dependency_root_terms(arcs, charts[2], charts[3], lengths), -1)
        return logz.masked_fill(lengths == 0, 0.0), charts + by_width

    def _arcs(self, x: torch.Tensor, mask: Optional[torch.Tensor], allowed: Optional[torch.Tensor],
              viterbi: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the scores with ``allowed`` applied, their lengths, token arc scores (B, n, n): the
        relations summed out, or maximised out for ``viterbi``)."""
        if allowed is not None:
            x = x.masked_fill(~allowed, float("-inf"))
        lengths = _dependency_lengths(mask, x)
        if self.labelled:
            return x, lengths, _dependency_tokens(x.amax(-1) if viterbi else _dependency_lse(x, -1), lengths)
        return x, lengths, _dependency_tokens(x, lengths)

    @torch.jit.export
    def log_partition(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                      allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log Z (B,); 0 for an empty sentence."""
        _, lengths, arcs = self._arcs(_dependency_inference(potentials), mask, allowed, False)
        return self._inside(arcs, lengths)[0]

    @torch.jit.export
    def marginals(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Arc (and relation) marginals laid out like the scores, by the inside and outside passes;
        0 off the sentence and for a sentence with no tree."""
        x, lengths, arcs = self._arcs(_dependency_inference(potentials), mask, allowed, False)
        logz, inside = self._inside(arcs, lengths)
        Ir, Il, Cr, Cl = inside[0], inside[1], inside[2], inside[3]
        n = arcs.shape[1]
        start = torch.full_like(arcs, float("-inf"))
        if self.multiroot:
            oCr, oCl = start.masked_fill(_dependency_is(arcs, torch.zeros_like(lengths), lengths), 0.0), start
        else:
            oCr, oCl = _dependency_root_outside(arcs, Cr, Cl, lengths)
        charts = [oCr, oCl.clone(), start.clone(), start.clone(), start.clone()]
        widths = torch.arange(n - 1, 0, -1, device=arcs.device)
        outside = _dependency_run("outside", widths, charts, inside)
        found = (logz > float("-inf")) & (lengths > 0)
        shift = logz.masked_fill(~found, 0.0).view(-1, 1, 1)
        a, e = _dependency_grid(arcs)
        h, m = a, e  # token marginals [head, modifier] from I_r[h, m-h] (h < m) and I_l[m, h-m] (h > m)
        right = _dependency_at(Ir + outside[2], h, m - h).masked_fill(m <= h, float("-inf"))
        left = _dependency_at(Il + outside[3], m, h - m).masked_fill(m >= h, float("-inf"))
        tokens = torch.maximum(right, left)
        if not self.multiroot:
            terms = _dependency_root_terms(arcs, Cr, Cl, lengths)
            root = torch.cat([torch.full_like(terms[:, :1], float("-inf")), terms], 1).unsqueeze(1)
            tokens = torch.where(h == 0, root, tokens)
        tokens = (tokens - shift).exp().masked_fill(~found.view(-1, 1, 1), 0.0)
        eye = a[1:] == e[:, 1:]
        marg = torch.where(eye, tokens[:, :1, 1:], tokens[:, 1:, 1:])
        if not self.labelled:
            return marg
        total = _dependency_lse(x, -1).unsqueeze(-1)
        return marg.unsqueeze(-1) * (x - total.masked_fill(total == float("-inf"), 0.0)).exp()

    @torch.jit.export
    def decode(self, potentials: torch.Tensor, mask: Optional[torch.Tensor] = None,
               allowed: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The best tree: heads (B, N) or (B, N, 2), -1 for absent words, and its score (B,)."""
        x, lengths, arcs = self._arcs(potentials.detach(), mask, allowed, True)
        B, n = arcs.shape[0], arcs.shape[1]
        widths = torch.arange(1, n + 1, device=arcs.device)
        charts = _dependency_run("viterbi", widths, _dependency_start(arcs, 3), _dependency_by_width(arcs))
        Cr, Cl = charts[2], charts[3]
        no = torch.zeros(arcs.shape, dtype=torch.bool, device=arcs.device)
        if self.multiroot:
            score = _dependency_top(Cr, lengths)
            child = torch.zeros_like(lengths)  # no single root child
            tCr, tCl = _dependency_is(arcs, child, lengths), no
        else:
            score, child = _dependency_root_terms(arcs, Cr, Cl, lengths).max(-1)
            child = child + 1
            tCr, tCl = _dependency_is(arcs, child, lengths - child), _dependency_is(arcs, torch.ones_like(child), child - 1)
        found = ((score > float("-inf")) & (lengths > 0)).view(-1, 1, 1)
        tree = _dependency_run("tree", torch.arange(n - 1, 0, -1, device=arcs.device),
                        [tCr & found, tCl & found, no, no.clone()],
                        charts[4:])
        a, e = _dependency_grid(arcs)
        # the head of token t: t - e if I_r[t - e, e] is in the tree, t + e if I_l[t, e] is
        from_left = _dependency_at(tree[2], a - e, e) & (e <= a)
        none = torch.full_like(tree[3], -1, dtype=torch.long)
        head = torch.where(from_left, a - e, torch.where(tree[3], a + e, none)).amax(-1)  # (B, n)
        if not self.multiroot:
            head = head.masked_fill((a.view(1, -1) == child.view(-1, 1)) & found.view(-1, 1), 0)
        words = torch.arange(n - 1, device=arcs.device).view(1, -1)
        heads = torch.where(head[:, 1:] == 0, words, head[:, 1:] - 1).masked_fill(head[:, 1:] < 0, -1)
        index = heads.clamp_min(0).unsqueeze(1)  # (B, 1, N)
        if self.labelled:
            picked = x.gather(1, index.unsqueeze(-1).expand(B, 1, n - 1, x.shape[-1])).squeeze(1)  # (B, N, R)
            best, relation = picked.max(-1)
            labels = torch.stack([heads, relation.masked_fill(heads < 0, -1)], -1)
        else:
            best = x.gather(1, index).squeeze(1)
            labels = heads
        chosen = best.masked_fill(heads < 0, 0.0).sum(1)
        return labels, torch.where(score > float("-inf"), chosen, score).masked_fill(lengths == 0, 0.0)

    def _allowed(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, N[, R]) arcs consistent with partial labels, as the field's ``labels_allowed``."""
        heads = labels[..., 0] if self.labelled else labels
        h = torch.arange(heads.shape[1], device=labels.device).view(1, -1, 1)
        ok = (heads.unsqueeze(1) < 0) | (heads.unsqueeze(1) == h)  # [b, h, m]
        if self.labelled:
            rel = labels[..., 1].view(labels.shape[0], 1, -1, 1)
            r = torch.arange(self.num_relations, device=labels.device)
            ok = ok.unsqueeze(-1) & ((rel < 0) | (rel == r))
        return ok

    @torch.jit.export
    def nll(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> torch.Tensor:
        """-log p(labels | x) = log Z - log Z(trees that agree with the labels); -1 is summed out."""
        losses = self.log_partition(potentials, mask, None) - self.log_partition(potentials, mask, self._allowed(labels))
        if reduction == "mean":
            return losses.mean()
        if reduction == "sum":
            return losses.sum()
        if reduction == "none":
            return losses
        raise ValueError("unknown reduction '" + reduction + "'; expected one of mean, sum, none")

    def forward(self, potentials: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.nll(potentials, labels, mask, reduction)
