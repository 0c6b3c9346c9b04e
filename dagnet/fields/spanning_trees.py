"""Non-projective dependency trees: the matrix-tree theorem and maximum spanning arborescences.

Arc scores (N, N) or (B, N, N) follow :mod:`dagnet.fields.dependency`: ``x[h, m]`` for the arc
h -> m, the diagonal for root -> m. log Z is a log determinant (Koo et al. 2007), the best tree
Chu-Liu-Edmonds' (one root child by the penalty trick), the k best Lawler's partitioning of the
tree space over constrained best trees.
"""
from __future__ import annotations

import heapq
from typing import Optional

import numpy as np
import torch
from torch import Tensor

NEG_INF = float("-inf")


def matrix_tree_log_partition(arcs: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """log Z (B,) of non-projective trees over arc scores (B, N, N) (root on the diagonal),
    as a log determinant in float64; absent words are an identity block."""
    B, N, _ = arcs.shape
    x = arcs.double()
    present = torch.arange(N, device=arcs.device)[None] < lengths[:, None]
    both = present[:, :, None] & present[:, None, :]
    x = x.masked_fill(~both, NEG_INF)
    shift = x.amax(1, keepdim=True)  # per modifier: det scales by exp(shift_m)
    shift = shift.masked_fill(~torch.isfinite(shift), 0.0)
    weights = (x - shift).exp()
    eye = torch.eye(N, dtype=torch.bool, device=arcs.device)
    root = weights.diagonal(0, 1, 2)
    off = weights.masked_fill(eye, 0.0)
    lap = torch.diag_embed(off.sum(1)) - off  # L[m, m] = sum_h w[h, m], L[h, m] = -w[h, m]
    if multiroot:
        lap = lap + torch.diag_embed(root)
    else:
        lap = torch.cat([root.unsqueeze(1), lap[:, 1:]], 1)  # Koo et al.: row 0 <- root weights
    lap = lap + torch.diag_embed((~present).double())
    sign, logdet = torch.linalg.slogdet(lap)
    logz = torch.where(sign > 0, logdet, torch.full_like(logdet, NEG_INF)) + shift.squeeze(1).sum(-1)
    return torch.where(lengths == 0, torch.zeros_like(logz), logz).to(arcs.dtype)


def _laplacian(x: Tensor, lengths: Tensor, multiroot: bool) -> tuple:
    """(Laplacian (B, N, N), weights (B, N, N), per-modifier shift (B, N)) of arc scores x
    (no autograd: built in place): weights exp(x - shift) with the shift each modifier's
    largest arc score, so the largest weight in each column is 1 and
    det(L) = det(L(w)) exp(sum shift); absent words are an identity block."""
    B, N, _ = x.shape
    present = torch.arange(N, device=x.device)[None] < lengths[:, None]
    x = x.masked_fill(~(present[:, :, None] & present[:, None, :]), NEG_INF)
    shift = x.amax(1)
    shift.masked_fill_(~torch.isfinite(shift), 0.0)
    weights = x.sub_(shift[:, None, :]).exp_()
    root = weights.diagonal(0, 1, 2).clone()
    lap = weights.neg()                       # L[h, m] = -w[h, m]
    diag = lap.diagonal(0, 1, 2)
    diag.zero_()
    diag.sub_(lap.sum(1))                     # L[m, m] = sum_{h != m} w[h, m]
    if multiroot:
        diag.add_(root)
    else:
        lap[:, 0] = root                      # Koo et al.: row 0 <- root weights
    diag.add_((~present).to(x.dtype))
    return lap, weights, shift


class _MatrixTree(torch.autograd.Function):
    """log Z (B,) of non-projective trees by one LU factorisation of the shifted Laplacian,
    its gradient from the Laplacian's inverse (d log det L / d L = L^-T, chained through the
    Laplacian's assembly by hand): one factorisation and one solve, where autograd through
    ``slogdet`` factorises twice. In float64 whatever the input: on CPU LAPACK's float64 LU
    and solve run as fast as float32's at these sizes (N <= 100; bench/bench_structures.py),
    and float32 inputs at N = 100 keep marginals that sum to one."""

    @staticmethod
    def forward(ctx, arcs: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
        lap, weights, shift = _laplacian(arcs.double(), lengths, multiroot)
        lu, piv, _ = torch.linalg.lu_factor_ex(lap)
        pivots = lu.diagonal(0, 1, 2)
        N = arcs.shape[1]
        swaps = (piv != torch.arange(1, N + 1, device=arcs.device, dtype=piv.dtype)).sum(-1)
        negative = ((pivots < 0).sum(-1) + swaps) % 2 == 1       # no tree: det <= 0 in exact arithmetic
        logdet = pivots.abs().log().sum(-1)
        logz = torch.where(negative, torch.full_like(logdet, NEG_INF), logdet) + shift.sum(-1)
        logz = torch.where(lengths == 0, torch.zeros_like(logz), logz)
        ctx.multiroot = multiroot
        ctx.save_for_backward(weights, lu, piv)
        return logz.to(arcs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        weights, lu, piv = ctx.saved_tensors
        eye = torch.eye(lu.shape[-1], dtype=lu.dtype, device=lu.device).expand_as(lu)
        inverse = torch.linalg.lu_solve(lu, piv, eye)
        diag = inverse.diagonal(0, 1, 2)  # (B, N): [m, m]
        d = inverse.transpose(1, 2).neg()  # [h, m] = -inverse[m, h]: w[h, m] takes from L[h, m]
        d += diag[:, None, :]              # ... and adds to L[m, m]
        if ctx.multiroot:                  # a root weight adds to L[m, m]
            d.diagonal(0, 1, 2).copy_(diag)
        else:                              # row 0 holds the root weights instead of word 0's column
            d[:, :, 0] -= diag[:, None, 0]                   # no column sum for word 0
            d[:, 0, :] += inverse[:, :, 0]                  # no -w[0, m] in row 0
            d.diagonal(0, 1, 2).copy_(inverse[:, :, 0])     # root -> m: L[0, m]
        d = (d * weights).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return (d * grad.to(d.dtype)[:, None, None]).to(grad.dtype), None, None


def matrix_tree_fast(arcs: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """log Z (B,) as :func:`matrix_tree_log_partition`, its backward written out
    (:class:`_MatrixTree`): first-order differentiable only."""
    return _MatrixTree.apply(arcs, lengths, multiroot)


def chu_liu_edmonds(scores: np.ndarray) -> np.ndarray:
    """The maximum spanning arborescence rooted at 0 of scores (n, n) [head, modifier]:
    heads (n,), heads[0] = -1. -inf arcs are absent (the result then uses one if it must)."""
    n = len(scores)
    s = scores.copy()
    np.fill_diagonal(s, NEG_INF)
    s[:, 0] = NEG_INF
    heads = s.argmax(0)
    heads[0] = -1
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    in_cycle = np.zeros(n, bool)
    in_cycle[cycle] = True
    outside = np.flatnonzero(~in_cycle)  # contains 0
    c = len(outside)  # the contracted node's index in the smaller graph
    small = np.full((c + 1, c + 1), NEG_INF)
    small[:c, :c] = s[np.ix_(outside, outside)]
    cyc = np.array(cycle)
    # into the cycle from u: the best v, breaking v's cycle arc
    gain = s[np.ix_(outside, cyc)] - s[heads[cyc], cyc][None]
    enter = gain.argmax(1)
    small[:c, c] = gain[np.arange(c), enter]
    leave = s[np.ix_(cyc, outside)].argmax(0)  # out of the cycle to w: the best v
    small[c, :c] = s[cyc[leave], outside]
    sub = chu_liu_edmonds(small)
    out = heads.copy()
    for i, w in enumerate(outside[1:], 1):
        h = sub[i]
        out[w] = outside[h] if h < c else cyc[leave[i]]
    u = sub[c]
    out[cyc[enter[u]]] = outside[u]
    out[0] = -1
    return out


def _find_cycle(heads: np.ndarray) -> Optional[list]:
    n, state = len(heads), np.zeros(len(heads), int)  # 0 unseen, 1 on the path, 2 done
    state[0] = 2
    for start in range(1, n):
        path, v = [], start
        while state[v] == 0:
            state[v] = 1
            path.append(v)
            v = heads[v]
        if state[v] == 1:
            return path[path.index(v):]
        for p in path:
            state[p] = 2
    return None


def best_tree(arcs: np.ndarray, multiroot: bool) -> tuple:
    """(heads (N,) in the diagonal convention, score) of the best non-projective tree over
    arc scores (N, N); score -inf when no tree is possible."""
    N = len(arcs)
    if N == 0:
        return np.zeros(0, np.int64), 0.0
    full = np.full((N + 1, N + 1), NEG_INF)
    full[0, 1:] = np.diag(arcs)
    body = arcs.copy()
    np.fill_diagonal(body, NEG_INF)
    full[1:, 1:] = body
    search = full.copy()
    if not multiroot:  # one root child: lower every root arc by more than any two trees differ
        finite = full[np.isfinite(full)]
        if len(finite):
            search[0] -= (finite.max() - finite.min()) * (N + 1) + 1.0
    heads = chu_liu_edmonds(search)
    score = full[heads[1:], np.arange(1, N + 1)].sum()
    if not multiroot and (heads[1:] == 0).sum() != 1:
        score = NEG_INF
    out = heads[1:] - 1
    out[heads[1:] == 0] = np.flatnonzero(heads[1:] == 0)
    return out.astype(np.int64), float(score)


def kbest_trees(arcs: np.ndarray, k: int, multiroot: bool) -> list:
    """The k best non-projective trees [(score, heads)], best first, by Lawler's partitioning:
    each answer's subspace splits into subspaces that keep its first i-1 free arcs and ban the i-th."""
    N = len(arcs)
    found, queue, tick = [], [], 0

    def solve(include, exclude):
        x = arcs.copy()
        for h, m in exclude:
            x[h, m] = NEG_INF
        for h, m in include:
            keep = x[h, m]
            x[:, m] = NEG_INF
            x[h, m] = keep
        heads, score = best_tree(x, multiroot)
        return heads, score

    heads, score = solve((), ())
    if np.isfinite(score) or N == 0:
        heapq.heappush(queue, (-score, tick, heads, (), ()))
    while queue and len(found) < k:
        neg, _, heads, include, exclude = heapq.heappop(queue)
        found.append((-neg, heads))
        fixed = {m for _, m in include}
        free = [(int(heads[m]), m) for m in range(N) if m not in fixed]
        for i, arc in enumerate(free):
            inc, exc = include + tuple(free[:i]), exclude + (arc,)
            h2, s2 = solve(inc, exc)
            if np.isfinite(s2):
                tick += 1
                heapq.heappush(queue, (-s2, tick, h2, inc, exc))
    return found


