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
from scipy.linalg import lapack
from torch import Tensor

NEG_INF = float("-inf")


def matrix_tree_log_partition(arcs: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
    """log Z (B,) of non-projective trees over arc scores (B, N, N) (root on the diagonal),
    as a log determinant in float64 (differentiable any number of times, through ``slogdet``);
    absent words are an identity block."""
    lap, _, shift = _laplacian(arcs.double(), lengths, multiroot)
    sign, logdet = torch.linalg.slogdet(lap)
    logz = torch.where(sign > 0, logdet, torch.full_like(logdet, NEG_INF)) + shift.sum(-1)
    return torch.where(lengths == 0, torch.zeros_like(logz), logz).to(arcs.dtype)


def _laplacian(x: Tensor, lengths: Tensor, multiroot: bool) -> tuple:
    """(Laplacian (B, N, N) float64, weights (B, N, N), per-modifier shift (B, N)) of arc scores
    x: weights exp(x - shift) in x's dtype, with the shift each modifier's largest arc score
    (a constant: log det L + sum shift does not depend on it), so the largest weight in each
    column is 1 and det(L) = det(L(w)) exp(sum shift); the diagonal is summed in float64, so L
    stays the exact Laplacian of the rounded weights. Absent words are an identity block."""
    B, N, _ = x.shape
    present = None
    if bool((lengths < N).any()):
        present = torch.arange(N, device=x.device)[None] < lengths[:, None]
        x = x.masked_fill(~(present[:, :, None] & present[:, None, :]), NEG_INF)
    shift = x.detach().amax(1, keepdim=True).nan_to_num_(neginf=0.0)  # a word with no head: column 0
    weights = torch.exp(x - shift)
    root = weights.diagonal(0, 1, 2)
    lap = weights.to(torch.float64, copy=True).neg_()  # L[h, m] = -w[h, m]
    diag = lap.diagonal(0, 1, 2)
    diag.copy_(weights.sum(1, dtype=torch.float64))
    if not multiroot:                         # L[m, m] = sum_{h != m} w[h, m]
        diag.sub_(root)
        lap[:, 0] = root                      # Koo et al.: row 0 <- root weights
    if present is not None:
        diag.add_(~present)
    return lap, weights, shift.squeeze(1)


def _lapack_log_det(lap: Tensor, inverse: bool) -> tuple:
    """LAPACK on each CPU matrix of lap (B, N, N) float64, factored in place: (log det (B,) as
    :func:`_log_det`, the inverses (B, N, N) or None). One dgesv (or dgetrf) call per matrix:
    at the sizes parsers see (N <= 100) LAPACK's own time per matrix is below what a batched
    torch call spends on it, and the bookkeeping runs in numpy (bench/bench_structures.py)."""
    a = lap.numpy()
    B, N, _ = a.shape
    pivots = np.empty((B, N), dtype=np.int32)
    inv = None
    if inverse:
        inv = np.empty_like(a)
        inv[:] = np.eye(N)
        for i in range(B):  # a[i].T is L^T in Fortran order: L^T X = I in place, so inv[i] = L^-1
            _, pivots[i], _, _ = lapack.dgesv(a[i].T, inv[i].T, overwrite_a=True, overwrite_b=True)
    else:
        for i in range(B):  # the same factors of L^T (the same determinant), without the inverse
            _, pivots[i], _ = lapack.dgetrf(a[i].T, overwrite_a=True)
    u = np.einsum("bii->bi", a)
    swaps = np.count_nonzero(pivots != np.arange(N, dtype=np.int32), axis=1)
    negative = (np.count_nonzero(u < 0, axis=1) + swaps) % 2 == 1
    with np.errstate(divide="ignore"):
        log_det = np.log(np.abs(u)).sum(1)
    log_det[negative] = NEG_INF
    return torch.from_numpy(log_det), None if inv is None else torch.from_numpy(inv)


def _by_lapack(lap: Tensor) -> bool:
    """Whether lap is factored by LAPACK matrix by matrix (CPU) or by torch's batched LU."""
    return lap.device.type == "cpu"


def _log_det(lu: Tensor, swaps: Tensor) -> Tensor:
    """log det (B,) from LU factors (B, N, N) and the number of row swaps (B,); -inf where the
    determinant is not positive (a sum of tree weights: no tree, up to rounding)."""
    pivots = lu.diagonal(0, 1, 2)
    negative = ((pivots < 0).sum(-1) + swaps) % 2 == 1
    return pivots.abs().log().sum(-1).masked_fill_(negative, NEG_INF)


class _MatrixTree(torch.autograd.Function):
    """log Z (B,) of non-projective trees by one LU factorisation of the shifted Laplacian,
    its gradient from the Laplacian's inverse (d log det L / d L = L^-T, chained through the
    Laplacian's assembly by hand). In float64 whatever the input: float32 loses whole digits
    of the marginals where a word's root weights are far below its arcs (the Laplacian is then
    nearly singular). On CPU one LAPACK call per matrix gives the factors and the inverse
    together; elsewhere the factors come from ``lu_factor_ex`` and the inverse from one
    ``lu_solve`` in the backward (autograd through ``slogdet`` would factorise twice)."""

    @staticmethod
    def forward(ctx, arcs: Tensor, lengths: Tensor, multiroot: bool) -> Tensor:
        lap, weights, shift = _laplacian(arcs.detach(), lengths, multiroot)
        if _by_lapack(lap):
            logz, inverse = _lapack_log_det(lap, inverse=ctx.needs_input_grad[0])
            ctx.save_for_backward(weights, inverse)
        else:
            lu, piv, _ = torch.linalg.lu_factor_ex(lap)
            logz = _log_det(lu, (piv != torch.arange(1, lap.shape[-1] + 1, device=piv.device)).sum(-1))
            ctx.save_for_backward(weights, lu, piv)
        ctx.no_tree = ~torch.isfinite(logz)   # no gradient: not the inverse of a singular matrix
        logz = logz.add_(shift.sum(-1)).masked_fill_(lengths == 0, 0.0)
        ctx.multiroot = multiroot
        return logz.to(arcs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        weights, *inverse_or_lu = ctx.saved_tensors
        if len(inverse_or_lu) == 1:
            inverse, = inverse_or_lu
        else:
            lu, piv = inverse_or_lu
            eye = torch.eye(lu.shape[-1], dtype=lu.dtype, device=lu.device).expand_as(lu)
            inverse = torch.linalg.lu_solve(lu, piv, eye)
        diag = inverse.diagonal(0, 1, 2)   # (B, N): [m, m]
        d = torch.sub(diag[:, None, :], inverse.mT)  # w[h, m] adds to L[m, m], takes from L[h, m]
        if ctx.multiroot:                  # a root weight adds to L[m, m]
            d.diagonal(0, 1, 2).copy_(diag)
        else:                              # row 0 holds the root weights instead of word 0's column
            d[:, :, 0] -= diag[:, None, 0]                   # no column sum for word 0
            d[:, 0, :] += inverse[:, :, 0]                  # no -w[0, m] in row 0
            d.diagonal(0, 1, 2).copy_(inverse[:, :, 0])     # root -> m: L[0, m]
        grad = grad.masked_fill(ctx.no_tree, 0.0).to(weights.dtype)
        d = d.to(weights.dtype).mul_(weights).mul_(grad[:, None, None])
        return d.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).to(grad.dtype), None, None


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


