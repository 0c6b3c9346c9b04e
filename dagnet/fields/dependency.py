"""Dependency CRF: distributions over dependency trees of a sentence.

Potentials are arc scores (B, N, N) as in torch-struct: ``x[b, h, m]`` scores the arc
head h -> modifier m, and the diagonal ``x[b, m, m]`` the arc root -> m; labelled arcs
add a relation axis, (B, N, N, R). A tree is given by its heads (B, N): ``heads[m] = h``,
``heads[m] = m`` for the root's children; labelled trees as (B, N, 2) [head, relation].
-1 is unknown (partial labels: summed out). A tree's score is the sum of its arcs' scores.

Projective trees (``projective=True``): Eisner's O(N^3) dynamic program, written once over
a semiring (:mod:`dagnet.fields.semiring`), with a root token at position 0:

    I_r[i, j] = (+)_{i<=k<j} C_r[i, k] (x) C_l[k+1, j]  (x) arc[i -> j]      (incomplete)
    I_l[i, j] = (same sum)                               (x) arc[j -> i]
    C_r[i, j] = (+)_{i<k<=j} I_r[i, k] (x) C_r[k, j]                           (complete)
    C_l[i, j] = (+)_{i<=k<j} C_l[i, k] (x) I_l[k, j]
    value     = C_r[0, n]                      (several root children: ``multiroot``)
              = (+)_m arc[0 -> m] (x) C_l[1, m] (x) C_r[m, n]       (exactly one)

so log Z, marginals, the best tree, the k best, exact samples and the entropy all come
from it. Two hot paths run the same recursion on plain tensors instead: log Z with its
outside pass written out as the backward (:class:`_Eisner`), and decode as a max-plus pass
keeping back-pointers, then a backtrack (:func:`eisner_argmax`). Non-projective trees: the matrix-tree theorem (Koo et al. 2007; log Z as a log
determinant, in float64, shifted per modifier; marginals as its gradient; entropy as
log Z - E[score]), Chu-Liu-Edmonds for the best tree (one root child by the penalty trick:
every root arc lowered by more than any two trees differ), Lawler's partitioning of the
tree space over constrained MSTs for the k best, and ancestral sampling (draw each
word's head from its conditional, computed by the matrix-tree theorem).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import semiring as sr
from ._logspace import plain_logsumexp
from .protocol import Field, check_k
from .semi_markov import lengths_of
from .spanning_trees import best_tree, kbest_trees, matrix_tree_fast, matrix_tree_log_partition

NEG_INF = float("-inf")


# -- projective: Eisner over a semiring ---------------------------------------------------------

def with_root(potentials: Tensor) -> Tensor:
    """(B, N, N, ...) arc scores with the root on the diagonal -> (B, N+1, N+1, ...) with a root
    token 0: [0, m+1] = x[m, m], [h+1, m+1] = x[h, m] (h != m), -inf into the root and on the diagonal."""
    B, N = potentials.shape[:2]
    eye = torch.eye(N, dtype=torch.bool, device=potentials.device).view(1, N, N, *[1] * (potentials.dim() - 3))
    words = potentials.masked_fill(eye, NEG_INF)
    root = potentials.diagonal(0, 1, 2).movedim(-1, 1).unsqueeze(1)  # (B, 1, N, ...)
    body = torch.cat([root, words], 1)  # (B, N+1, N, ...)
    return torch.cat([torch.full_like(body[:, :, :1], NEG_INF), body], 2)


def eisner(lengths: Tensor, multiroot: bool, labelled: bool) -> sr.DP:
    """Eisner's dp (module doc) over arc scores (B, N, N[, R]): values (S, B)."""
    def dp(semiring: sr.Semiring, potentials: Tensor) -> Tensor:
        arcs = semiring.convert(with_root(potentials))
        if labelled:
            arcs = semiring.sum(arcs, -1)
        S, B, n = arcs.shape[0], arcs.shape[1], arcs.shape[2]
        zero = semiring.convert(potentials.new_full((B, n, n), NEG_INF))
        one = semiring.one((B, n), potentials)
        # charts [i, w] = span [i, i+w] (start-indexed) and [j, w] = span [j-w, j] (end-indexed)
        cr_s, cl_s, ir_s, il_s = (zero.clone() for _ in range(4))
        cr_e, cl_e, ir_e, il_e = (zero.clone() for _ in range(4))
        for chart in (cr_s, cl_s, cr_e, cl_e):
            chart[..., 0] = one
        for w in range(1, n):
            m = n - w
            split = semiring.sum(semiring.times(cr_s[:, :, :m, :w], cl_e[:, :, w:, :w].flip(-1)), -1)
            ir = semiring.times(split, arcs.diagonal(w, -2, -1))
            il = semiring.times(split, arcs.diagonal(-w, -2, -1))
            ir_s[:, :, :m, w], ir_e[:, :, w:, w] = ir, ir
            il_s[:, :, :m, w], il_e[:, :, w:, w] = il, il
            cr = semiring.sum(semiring.times(ir_s[:, :, :m, 1:w + 1], cr_e[:, :, w:, :w].flip(-1)), -1)
            cl = semiring.sum(semiring.times(cl_s[:, :, :m, :w], il_e[:, :, w:, 1:w + 1].flip(-1)), -1)
            cr_s[:, :, :m, w], cr_e[:, :, w:, w] = cr, cr
            cl_s[:, :, :m, w], cl_e[:, :, w:, w] = cl, cl
        if multiroot:
            return cr_s[:, :, 0].gather(-1, lengths.view(1, B, 1).expand(S, B, 1)).squeeze(-1)
        N = n - 1
        word = torch.arange(1, n, device=potentials.device)
        width = (lengths[:, None] - word).clamp_min(0)  # C_r[m, len]: start m, width len - m
        right = cr_s[:, :, 1:].gather(-1, width.view(1, B, N, 1).expand(S, B, N, 1)).squeeze(-1)
        terms = semiring.times(semiring.times(arcs[:, :, 0, 1:], cl_s[:, :, 1, :N]), right)
        valid = (word[None] <= lengths[:, None]).expand(S, B, N)
        value = semiring.sum(torch.where(valid, terms, zero[:, :, 0, 1:]), -1)
        return torch.where((lengths == 0).expand(S, B), semiring.one((B,), potentials), value)
    return dp


def _reduce(a: Tensor) -> Tensor:
    return plain_logsumexp(a)


def _lse_share(a: Tensor) -> tuple:
    """log-sum-exp over the next-to-last axis and each term's share of it (a softmax, written over
    ``a``): one exp per term. A column of -inf sums to -inf with shares 0 (the shift is clamped to
    the lowest finite float, and the sum, 0 there and at least 1 elsewhere, to 1 before dividing)."""
    shift = a.amax(-2, keepdim=True).clamp_min_(torch.finfo(a.dtype).min)
    mass = a.sub_(shift).exp_().sum(-2)
    total = mass.log().add_(shift.squeeze(-2))
    return total, a.div_(mass.clamp_min_(1.0).unsqueeze(-2))


def _share(terms: Tensor, total: Tensor) -> Tensor:
    """Each term's share of its log-sum over the last axis (given the total): a softmax."""
    return (terms - total).exp_()


def _finite(a: Tensor) -> Tensor:
    return a.masked_fill(a == NEG_INF, 0.0)


class _Eisner(torch.autograd.Function):
    """Eisner's inside pass (module doc) in the log semiring on plain tensors, and its gradient
    by the outside pass written out: no autograd tape through the charts, whose slice-by-slice
    backward costs a whole chart per read.

    At sentence sizes the cost is the number of tensor ops and their short rows, so the charts
    keep the batch as their last, contiguous axis (every op runs over rows of w * B floats and
    reduces across rows), and are stacked for the steps to share them: start-indexed
    ``S = [I_r, C_r, C_l]`` ([i, w] = span [i, i+w], I_r one column left, at w-1) and end-indexed,
    pre-flipped ``E = [C_r, C_l, I_l]`` ([j, n-1-w] = span [j-w, j], I_l one column right, at
    n-w). Per width w, with m = n - w spans,

        split      = lse(S[1, :m, :w]    + E[1, w:, m:])         (C_r[i, k] with C_l[k+1, j])
        (I_r, I_l) = split + (arc[i -> i+w], arc[i+w -> i])       one add, two writes
        (C_r, C_l) = lse(S[0::2, :m, :w] + E[0::2, w:, m:])      one add and lse for both

    and the two results land in S[1:3] and E[0:2] with one write each. The forward keeps each
    reduction's softmax shares (about B N^3 / 2 floats), so the backward is a product and two
    scatter-adds per reduction."""

    @staticmethod
    def forward(ctx, x: Tensor, lengths: Tensor, multiroot: bool, labelled: bool) -> Tensor:
        lab = _reduce(x) if labelled else x
        arcs = with_root(lab)
        B, n = arcs.shape[:2]
        # [., h, m, b]; diagonal w: (arc[i -> i+w], arc[i+w -> i]) as (2, m, B)
        pair = torch.stack((arcs, arcs.mT)).permute(0, 2, 3, 1).contiguous()
        S, E = x.new_full((3, n, n, B), NEG_INF), x.new_full((3, n, n, B), NEG_INF)
        S[1:3, :, 0] = 0.0
        E[0:2, :, n - 1] = 0.0
        shares = [None]  # shares[w]: (split's, (C_r, C_l)'s)
        for w in range(1, n):
            m = n - w
            split, split_share = _lse_share(S[1, :m, :w] + E[1, w:, m:])
            inc = split + pair.diagonal(w, 1, 2).mT
            S[0, :m, w - 1], E[2, w:, m] = inc[0], inc[1]
            comp, comp_share = _lse_share(S[0::2, :m, :w] + E[0::2, w:, m:])
            S[1:3, :m, w], E[0:2, w:, m - 1] = comp, comp
            shares.append((split_share, comp_share))
        cr_s, cl_s = S[1].permute(2, 0, 1), S[2].permute(2, 0, 1)  # (B, n, n) views
        if multiroot:
            value = cr_s[:, 0].gather(-1, lengths[:, None]).squeeze(-1)
            top = None
        else:
            top = _root_terms(arcs, cr_s, cl_s, lengths)
            value = _reduce(top)
        value = torch.where(lengths == 0, torch.zeros_like(value), value)
        ctx.flags = (multiroot, labelled)
        ctx.shares = shares
        ctx.save_for_backward(x, lab, lengths, top if top is not None else x.new_zeros(0))
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        multiroot, labelled = ctx.flags
        x, lab, lengths, top = ctx.saved_tensors
        B, n = x.shape[0], x.shape[1] + 1
        grad = torch.where(lengths > 0, grad, torch.zeros_like(grad))
        gS, gE = x.new_zeros(3, n, n, B), x.new_zeros(3, n, n, B)  # gradients of the charts S, E
        g_pair = x.new_zeros(2, n, n, B)  # of pair
        g_cr_s, g_cl_s, g_arcs = gS[1].permute(2, 0, 1), gS[2].permute(2, 0, 1), g_pair[0].permute(2, 0, 1)
        if multiroot:
            g_cr_s[torch.arange(B, device=x.device), 0, lengths] += grad
        else:
            N = n - 1
            mass = _share(top, _finite(_reduce(top))[:, None]) * grad[:, None]  # (B, N)
            g_arcs[:, 0, 1:] += mass
            g_cl_s[:, 1, :N] += mass
            width = (lengths[:, None] - torch.arange(1, n, device=x.device)).clamp_min(0)
            g_cr_s[:, 1:].scatter_add_(-1, width[..., None], mass[..., None])
        for w in range(n - 1, 0, -1):
            m = n - w
            split_share, comp_share = ctx.shares[w]
            g_comp = gS[1:3, :m, w] + gE[0:2, w:, m - 1]
            share = comp_share * g_comp.unsqueeze(-2)
            gS[0::2, :m, :w].add_(share)
            gE[0::2, w:, m:].add_(share)
            g_inc = torch.stack((gS[0, :m, w - 1], gE[2, w:, m]))
            g_pair.diagonal(w, 1, 2).mT.add_(g_inc)
            share = split_share * g_inc.sum(0).unsqueeze(-2)
            gS[1, :m, :w].add_(share)
            gE[1, w:, m:].add_(share)
        g_arcs = (g_pair[0] + g_pair[1].transpose(0, 1)).permute(2, 0, 1)
        g_lab = g_arcs[:, 1:, 1:].clone()  # back through with_root: [h+1, m+1] -> [h, m], [0, m+1] -> [m, m]
        g_lab.diagonal(0, -2, -1).copy_(g_arcs[:, 0, 1:])
        if labelled:
            g_lab = g_lab[..., None] * _share(x, _finite(lab)[..., None])
        return g_lab, None, None, None


def _root_terms(arcs: Tensor, cr_s: Tensor, cl_s: Tensor, lengths: Tensor) -> Tensor:
    """arc[0 -> m] + C_l[1, m] + C_r[m, len] for each word m (B, N) from the start-indexed charts
    C_r, C_l; -inf past the length."""
    B, n = arcs.shape[:2]
    word = torch.arange(1, n, device=arcs.device)
    width = (lengths[:, None] - word).clamp_min(0)
    right = cr_s[:, 1:].gather(-1, width[..., None]).squeeze(-1)
    terms = arcs[:, 0, 1:] + cl_s[:, 1, :n - 1] + right
    return terms.masked_fill(word[None] > lengths[:, None], NEG_INF)


def eisner_argmax(x: Tensor, lengths: Tensor, multiroot: bool) -> tuple:
    """The best projective trees over (relation-maximised) arc scores (B, N, N): heads (B, N) in the
    diagonal convention (-1 past the length) and scores (B,), by a max-plus forward pass that keeps
    back-pointers and a backtrack per sentence (cheaper than a backward pass)."""
    arcs = with_root(x)
    B, n = arcs.shape[:2]
    cr_s, cr_e, cl_s, cl_e, ir_s, il_e = (x.new_full((B, n, n), NEG_INF) for _ in range(6))
    back = {name: torch.zeros(B, n, n, dtype=torch.long, device=x.device) for name in ("split", "cr", "cl")}
    cr_s[:, :, 0] = cl_s[:, :, 0] = cr_e[:, :, n - 1] = cl_e[:, :, n - 1] = 0.0
    for w in range(1, n):
        m = n - w
        split, back["split"][:, :m, w] = (cr_s[:, :m, :w] + cl_e[:, w:, m:]).max(-1)
        ir_s[:, :m, w] = split + arcs.diagonal(w, -2, -1)
        il_e[:, w:, m - 1] = split + arcs.diagonal(-w, -2, -1)
        cr, back["cr"][:, :m, w] = (ir_s[:, :m, 1:w + 1] + cr_e[:, w:, m:]).max(-1)
        cl, back["cl"][:, :m, w] = (cl_s[:, :m, :w] + il_e[:, w:, m - 1:n - 1]).max(-1)
        cr_s[:, :m, w], cr_e[:, w:, m - 1] = cr, cr
        cl_s[:, :m, w], cl_e[:, w:, m - 1] = cl, cl
    if multiroot:
        score, first = cr_s[:, 0].gather(-1, lengths[:, None]).squeeze(-1), None
    else:
        score, first = _root_terms(arcs, cr_s, cl_s, lengths).max(-1)
        first = first.tolist()
    score = torch.where(lengths == 0, torch.zeros_like(score), score)
    split, bcr, bcl = (back[k].tolist() for k in ("split", "cr", "cl"))  # lists: fast scalar access
    heads = [[-1] * n for _ in range(B)]

    def complete(b, i, j, right):
        while i != j:
            if right:  # C_r[i, j] = I_r[i, k] C_r[k, j]
                k = i + 1 + bcr[b][i][j - i]
                incomplete(b, i, k, True)
                i = k
            else:  # C_l[i, j] = C_l[i, k] I_l[k, j]
                k = i + bcl[b][i][j - i]
                incomplete(b, k, j, False)
                j = k

    def incomplete(b, i, j, right):
        if right:
            heads[b][j] = i
        else:
            heads[b][i] = j
        k = i + split[b][i][j - i]
        complete(b, i, k, True)
        complete(b, k + 1, j, False)

    for b, length in enumerate(lengths.tolist()):
        if not np.isfinite(float(score[b])) or length == 0:
            continue
        if multiroot:
            complete(b, 0, length, True)
        else:
            m = first[b] + 1
            heads[b][m] = 0
            complete(b, 1, m, False)
            complete(b, m, length, True)
    heads = np.array(heads, dtype=np.int64).reshape(B, n)
    words = heads[:, 1:] - 1  # root token 0 -> the diagonal convention
    root = heads[:, 1:] == 0
    words[root] = np.nonzero(root)[1]
    words[heads[:, 1:] < 0] = -1
    return torch.as_tensor(words, device=x.device), score


def tree_labels(indicators: Tensor, labelled: bool) -> Tensor:
    """Heads (..., N) (or (..., N, 2) [head, relation]) from arc indicators (..., N, N[, R]); -1 where none."""
    arcs = indicators.sum(-1) if labelled else indicators
    chosen = arcs.sum(-2) > 0.5
    heads = arcs.argmax(-2).masked_fill(~chosen, -1)
    if not labelled:
        return heads
    rel = indicators.gather(-3, heads.clamp_min(0)[..., None, :, None].expand(
        *heads.shape[:-1], 1, heads.shape[-1], indicators.shape[-1])).squeeze(-3).argmax(-1)
    return torch.stack([heads, rel.masked_fill(~chosen, -1)], -1)


class DependencyCRF(Field):
    """CRF over dependency trees (module doc): ``projective`` (Eisner) or not (matrix-tree
    theorem, Chu-Liu-Edmonds), ``multiroot`` or exactly one root child, ``num_relations``
    > 0 for labelled arcs (B, N, N, R). No parameters: the scores come from the network
    (e.g. a biaffine scorer). Every query takes ``allowed`` (B, N, N[, R]) bool: hard
    constraints on arcs (and their relations)."""

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "tree"

    def __init__(self, num_relations: int = 0, projective: bool = True, multiroot: bool = False):
        super().__init__()
        self.num_labels = self.num_relations = num_relations
        self.projective, self.multiroot = projective, multiroot
        self.labelled = num_relations > 0

    def _check(self, potentials: Tensor, mask, allowed) -> tuple:
        want = 4 if self.labelled else 3
        if potentials.dim() != want or potentials.shape[1] != potentials.shape[2]:
            raise ValueError(f"arc scores must be (B, N, N{', R' if self.labelled else ''}), "
                             f"got {tuple(potentials.shape)}")
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed.bool(), NEG_INF)
        return potentials, lengths_of(mask, potentials.shape[0], potentials.shape[1], potentials.device)

    def _dp(self, lengths) -> sr.DP:
        if self.projective:
            return eisner(lengths, self.multiroot, self.labelled)

        def log_only(semiring, x):  # the matrix-tree theorem answers the log semiring only
            arcs = torch.logsumexp(x, -1) if self.labelled else x
            return matrix_tree_log_partition(arcs, lengths, self.multiroot).unsqueeze(0)
        return log_only

    def log_partition(self, potentials, mask=None, allowed=None) -> Tensor:
        x, lengths = self._check(potentials, mask, allowed)
        if self.projective:
            return _Eisner.apply(x, lengths, self.multiroot, self.labelled)
        arcs = torch.logsumexp(x, -1) if self.labelled else x
        return matrix_tree_fast(arcs, lengths, self.multiroot)

    def marginals(self, potentials, mask=None, allowed=None) -> Tensor:
        """Arc (and relation) marginals laid out like the potentials; differentiable."""
        x, lengths = self._check(potentials, mask, allowed)
        return sr.marginals(self._dp(lengths), x)

    def entropy(self, potentials, mask=None, allowed=None) -> Tensor:
        x, lengths = self._check(potentials, mask, allowed)
        if self.projective:
            return sr.entropy(self._dp(lengths), x)
        marg = sr.marginals(self._dp(lengths), x)
        expected = torch.where(marg > 0, marg * x, torch.zeros_like(x)).flatten(1).sum(1)
        return self.log_partition(x, mask) - expected

    def score(self, potentials, labels, mask=None) -> Tensor:
        """The sum of the given arcs' scores (B,) over the present words (not checked to be a tree)."""
        B, N = potentials.shape[:2]
        present = torch.ones(B, N, dtype=torch.bool, device=potentials.device) if mask is None else mask.bool()
        heads = (labels[..., 0] if self.labelled else labels).clamp_min(0)
        index = heads[:, None, :, None] if self.labelled else heads[:, None, :]
        picked = potentials.gather(1, index.expand(B, 1, N, *potentials.shape[3:])).squeeze(1)  # (B, N[, R])
        if self.labelled:
            picked = picked.gather(-1, labels[..., 1].clamp_min(0)[..., None]).squeeze(-1)
        return picked.masked_fill(~present, 0.0).sum(1)

    def labels_allowed(self, labels: Tensor) -> Tensor:
        """(B, N, N[, R]) arcs consistent with (partial) labels: a known head bans the others."""
        heads = labels[..., 0] if self.labelled else labels
        B, N = heads.shape
        h = torch.arange(N, device=labels.device)
        ok = (heads[:, None, :] < 0) | (heads[:, None, :] == h[None, :, None])  # [b, h, m]
        if self.labelled:
            rel = labels[..., 1]
            r = torch.arange(self.num_relations, device=labels.device)
            ok = ok[..., None] & ((rel[:, None, :, None] < 0) | (rel[:, None, :, None] == r))
        return ok

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        return self.log_partition(potentials, mask, self.labels_allowed(labels))

    def _absent(self, labels: Tensor, lengths: Tensor) -> Tensor:
        N = labels.shape[-2] if self.labelled else labels.shape[-1]
        gone = torch.arange(N, device=labels.device) >= lengths[:, None]
        return labels.masked_fill(gone[..., None] if self.labelled else gone, -1)

    def _numpy_arcs(self, x: Tensor) -> np.ndarray:
        return (x.amax(-1) if self.labelled else x).detach().double().cpu().numpy()

    def _with_relations(self, heads: Tensor, x: Tensor) -> Tensor:
        if not self.labelled:
            return heads
        B, N = heads.shape[-2:]
        h = heads.clamp_min(0)
        rows = x.unsqueeze(0).expand(heads.shape[0], *x.shape) if heads.dim() == 3 else x
        best = rows.gather(-3, h[..., None, :, None].expand(*h.shape[:-1], 1, N, x.shape[-1])).squeeze(-3).argmax(-1)
        return torch.stack([heads, best.masked_fill(heads < 0, -1)], -1)

    @torch.no_grad()
    def decode(self, potentials, mask=None, allowed=None) -> tuple:
        """The best tree: heads (B, N) or (B, N, 2), -1 for absent words, and its score (B,)."""
        x, lengths = self._check(potentials, mask, allowed)
        if self.projective:
            heads, score = eisner_argmax(x.amax(-1) if self.labelled else x, lengths, self.multiroot)
            labels = self._with_relations(heads, x)
        else:
            arcs, heads, score = self._numpy_arcs(x), [], []
            for b, n in enumerate(lengths.tolist()):
                hd, s = best_tree(arcs[b, :n, :n], self.multiroot)
                heads.append(np.pad(hd, (0, x.shape[1] - n), constant_values=-1))
                score.append(s)
            labels = self._with_relations(torch.as_tensor(np.stack(heads), device=x.device), x)
            score = x.new_tensor(score)
        labels = self._absent(labels, lengths)
        return labels, torch.where(torch.isfinite(score), self.score(x, labels, mask), score)

    @torch.no_grad()
    def kbest(self, potentials, k: int, mask=None, allowed=None) -> tuple:
        """The k best trees (B, k, N[, 2]) and scores (B, k), best first; missing ones -inf, labels -1."""
        x, lengths = self._check(potentials, mask, allowed)
        check_k(k)
        B, N = x.shape[:2]
        if self.projective:
            scores, chosen = sr.kbest(self._dp(lengths), x, k)
            labels = tree_labels(chosen, self.labelled).transpose(0, 1)
        else:
            arcs = self._numpy_arcs(x)
            heads = np.full((B, k, N), -1, np.int64)
            scores = x.new_full((B, k), NEG_INF)
            for b, n in enumerate(lengths.tolist()):
                for r, (s, hd) in enumerate(kbest_trees(arcs[b, :n, :n], k, self.multiroot)):
                    heads[b, r, :n], scores[b, r] = hd, s
            labels = self._with_relations(torch.as_tensor(heads, device=x.device), x)
        missing = (scores == NEG_INF)
        labels = labels.masked_fill(missing.view(B, k, *[1] * (labels.dim() - 2)), -1)
        return labels, scores

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, mask=None, generator=None, allowed=None) -> Tensor:
        """n exact samples (n, B, N[, 2]): projective by backward sampling through Eisner,
        non-projective ancestrally (each word's head from its conditional marginals)."""
        x, lengths = self._check(potentials, mask, allowed)
        B, N = x.shape[:2]
        xs, ls = x.repeat(n, *[1] * (x.dim() - 1)), lengths.repeat(n)
        if self.projective:
            logz, chosen = sr.samples(self._dp(ls), xs, generator)
            labels = tree_labels(chosen, self.labelled)
        else:
            logz, labels = self._ancestral(xs, ls, generator)
        labels = self._absent(labels, ls).masked_fill(
            ~torch.isfinite(logz).view(-1, *[1] * (labels.dim() - 1)), -1)
        return labels.view(n, B, *labels.shape[1:])

    def _ancestral(self, x: Tensor, lengths: Tensor, generator) -> tuple:
        arcs = torch.logsumexp(x, -1) if self.labelled else x
        dp = self._dp(lengths)
        logz = matrix_tree_log_partition(arcs, lengths, self.multiroot)
        N = arcs.shape[1]
        heads = torch.full(arcs.shape[:2], -1, dtype=torch.long, device=x.device)
        for m in range(N):
            marg = sr.marginals(lambda s, a: dp(s, a.unsqueeze(-1)) if self.labelled else dp(s, a), arcs)
            pick = sr.gumbel_argmax(marg[:, :, m].log(), generator)
            present = m < lengths
            heads[:, m] = torch.where(present, pick, -1)
            keep = torch.nn.functional.one_hot(pick, N).bool() | ~present[:, None]
            arcs = arcs.clone()
            arcs[:, :, m] = arcs[:, :, m].masked_fill(~keep, NEG_INF)
        if not self.labelled:
            return logz, heads
        rel_scores = x.gather(1, heads.clamp_min(0)[:, None, :, None].expand(-1, 1, N, x.shape[-1])).squeeze(1)
        rel = sr.gumbel_argmax(rel_scores, generator).masked_fill(heads < 0, -1)
        return logz, torch.stack([heads, rel], -1)

    def extra_repr(self) -> str:
        kind = "projective" if self.projective else "non-projective"
        return f"{kind}, multiroot={self.multiroot}, num_relations={self.num_relations}"
