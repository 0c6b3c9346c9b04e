"""CKYCRF against brute-force enumeration of every labelled binary tree, and torch-struct."""
import itertools

import pytest
import torch

from dagnet.fields.cky import NO_SPAN, CKYCRF

F64 = torch.float64


def bracketings(i, j):
    """Every full binary bracketing of words i..j as a list of spans."""
    if i == j:
        return [[(i, i)]]
    out = []
    for k in range(i, j):
        for left in bracketings(i, k):
            for right in bracketings(k + 1, j):
                out.append([(i, j)] + left + right)
    return out


def all_trees(n, N, L):
    """(labels (P, N, N), spans) for every labelled tree over the first n of N words."""
    trees = []
    for spans in bracketings(0, n - 1):
        for labs in itertools.product(range(L), repeat=len(spans)):
            y = torch.full((N, N), -1, dtype=torch.long)
            for a in range(n):
                y[a, a:n] = NO_SPAN
            for (a, b), l in zip(spans, labs):
                y[a, b] = l
            trees.append(y)
    return torch.stack(trees)


def scores_of(x, trees):
    x = x.expand(len(trees), *x.shape)
    return x.gather(-1, trees.clamp_min(0).unsqueeze(-1)).squeeze(-1).masked_fill(trees < 0, 0).flatten(1).sum(1)


def make(B=2, N=4, L=2, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, N, L, generator=g, dtype=F64) * scale


def test_queries_match_brute_force():
    crf = CKYCRF(2)
    x = make().requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    logz, marg, ent = crf.log_partition(x, mask), crf.marginals(x, mask), crf.entropy(x, mask)
    labels, best = crf.decode(x, mask)
    top, top_scores = crf.kbest(x, 4, mask)
    for b, n in enumerate([4, 3]):
        trees = all_trees(n, 4, 2)
        scores = scores_of(x[b], trees)
        torch.testing.assert_close(logz[b], torch.logsumexp(scores, 0))
        p = torch.softmax(scores, 0)
        torch.testing.assert_close(ent[b], -(p * p.log()).sum())
        (want,) = torch.autograd.grad(torch.logsumexp(scores, 0), x)
        torch.testing.assert_close(marg[b], want[b])
        order = scores.argsort(descending=True)
        torch.testing.assert_close(best[b], scores.max())
        assert torch.equal(labels[b], trees[order[0]])
        torch.testing.assert_close(top_scores[b], scores[order[:4]])
        assert torch.equal(top[b, 1], trees[order[1]])
        # nll: complete tree, and partial labels (one constituent known, the rest unknown)
        y = trees[order[2]]
        torch.testing.assert_close(crf.nll(x[b:b + 1], y[None], mask[b:b + 1], "none")[0],
                                   torch.logsumexp(scores, 0) - scores[order[2]])
        part = torch.full_like(y, -1)
        part[0, 1] = 1  # words 0..1 form a constituent labelled 1
        agree = trees[:, 0, 1] == 1
        torch.testing.assert_close(crf.nll(x[b:b + 1], part[None], mask[b:b + 1], "none")[0],
                                   torch.logsumexp(scores, 0) - torch.logsumexp(scores[agree], 0))
        part[0, 1], part[1, 2] = -1, NO_SPAN
        agree = trees[:, 1, 2] == NO_SPAN
        torch.testing.assert_close(crf.nll(x[b:b + 1], part[None], mask[b:b + 1], "none")[0],
                                   torch.logsumexp(scores, 0) - torch.logsumexp(scores[agree], 0))


def test_constraints_samples_and_gradcheck():
    crf = CKYCRF(2)
    x = make(B=1, N=3)
    trees = all_trees(3, 3, 2)
    scores = scores_of(x[0], trees)
    allowed = torch.ones(1, 3, 3, 2, dtype=torch.bool)
    allowed[0, 0, 2, 0] = False  # the sentence may not take label 0
    ok = trees[:, 0, 2] != 0
    torch.testing.assert_close(crf.log_partition(x, allowed=allowed)[0], torch.logsumexp(scores[ok], 0))
    draws = crf.sample(x, 3000, generator=torch.Generator().manual_seed(0))[:, 0]
    freq = torch.stack([(draws == t).all(-1).all(-1).double().mean() for t in trees])
    torch.testing.assert_close(freq, torch.softmax(scores, 0), atol=0.03, rtol=0)
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: crf.log_partition(a), (xg,))


def test_float32_long_sentence():
    crf = CKYCRF(3)
    x = make(B=1, N=100, L=3, scale=10.0).float()
    logz = crf.log_partition(x)
    labels, best = crf.decode(x)
    assert torch.isfinite(logz).all() and bool((best <= logz + 1e-2).all())
    assert int((labels >= 0).sum()) == 2 * 100 - 1  # N leaves + N - 1 internal constituents
    torch.testing.assert_close(crf.score(x, labels), best, rtol=1e-5, atol=1e-2)


def test_agrees_with_torch_struct():
    ts = pytest.importorskip("torch_struct")
    from torch_struct.semirings import semirings
    semirings.Semiring.convert = classmethod(lambda cls, p: p.unsqueeze(0).clone())  # torch >= 2 compat
    x = make(B=3, N=6, L=3)
    theirs = ts.TreeCRF(x.clone())
    ours = CKYCRF(3)
    torch.testing.assert_close(ours.log_partition(x), theirs.partition, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.marginals(x), theirs.marginals, rtol=1e-4, atol=1e-4)
    labels, _ = ours.decode(x)
    assert torch.equal((labels >= 0), theirs.argmax.sum(-1) > 0.5)


def test_outside_pass_written_out_matches_autograd_through_the_inside_pass():
    """log Z's hand-written backward (split weights kept from the forward) against autograd
    through the semiring inside pass: ragged lengths, banned spans (some with no label left,
    so whole chart cells are -inf) and a retained graph run twice."""
    from dagnet.fields import semiring as sr
    from dagnet.fields.cky import inside
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, 6, 3, generator=g, dtype=torch.float64) * 2
    allowed = torch.ones_like(x, dtype=torch.bool)
    allowed[0, 1, 3] = False                  # span (1, 3): no label at all
    allowed[1, 0, 2, :2] = False
    x = x.masked_fill(~allowed, float("-inf"))
    mask = torch.arange(6)[None] < torch.tensor([6, 4, 1])[:, None]
    crf = CKYCRF(3)
    a = x.clone().requires_grad_()
    logz = crf.log_partition(a, mask)
    (logz * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)).sum().backward(retain_graph=True)
    lengths = mask.sum(1)
    ref_logz = inside(lengths)(sr.LOG, x)[0]
    ref = sr.marginals(inside(lengths), x)
    torch.testing.assert_close(logz, ref_logz)
    weights = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)[:, None, None, None]
    torch.testing.assert_close(a.grad, (ref * weights).nan_to_num(0.0))
    first = a.grad.clone()
    (logz * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(a.grad, 2 * first)


def test_float32_spans_far_below_the_top_score():
    """log Z's label sums are shifted by each sentence's top score: spans whose labels all lie
    far below it (underflow in float32) and spans with no label allowed are summed exactly."""
    x = make(B=2, N=5, L=3, seed=3)
    x[0, 1, 3] += 300.0     # one span far above the rest: every other label sum underflows
    x[1, 0, 1] -= 200.0
    x[1, 2, 2, :] = float("-inf")  # a word with no label: no tree
    crf = CKYCRF(3)
    ref = x.clone().requires_grad_()
    crf.log_partition(ref).sum().backward()
    a = x.float().requires_grad_()
    logz = crf.log_partition(a)
    logz.sum().backward()
    torch.testing.assert_close(logz, crf.log_partition(x).float())
    assert logz[1] == float("-inf")
    torch.testing.assert_close(a.grad[0], ref.grad[0].float(), rtol=1e-4, atol=1e-5)
