"""TreeCRF against brute-force enumeration of every labelling."""
import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dagnet.fields import semiring as sr
from dagnet.fields.tree import TreeCRF, inside, tile_schedule, tree_schedule

F64 = torch.float64
NEG = float("-inf")
#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
PARENTS = [-1, 0, 0, 1, 1, 2]


def enumerate_labellings(pot, pair, parents, mask=None):
    """(labellings (P, N_present), scores (P,), present nodes) for each example."""
    B, N, K = pot.shape
    out = []
    for b in range(B):
        par = parents[b] if parents.dim() == 2 else parents
        present = torch.ones(N, dtype=torch.bool) if mask is None else mask[b]
        nodes = present.nonzero().flatten()
        ys = torch.tensor(list(itertools.product(range(K), repeat=len(nodes))),
                          dtype=torch.long).reshape(K ** len(nodes), len(nodes))
        full = torch.zeros(len(ys), N, dtype=torch.long)
        full[:, nodes] = ys
        scores = pot[b, nodes].gather(1, ys.t()).sum(0)
        for n in nodes.tolist():
            p = int(par[n])
            if p >= 0 and present[p]:
                scores = scores + pair[full[:, p], full[:, n]]
        out.append((ys, scores, nodes))
    return out


def brute(pot, pair, parents, mask=None):
    B, N, K = pot.shape
    enum = enumerate_labellings(pot, pair, parents, mask)
    logz = torch.stack([torch.logsumexp(s, 0) for _, s, _ in enum])
    marg = torch.zeros(B, N, K, dtype=pot.dtype)
    for b, (ys, scores, nodes) in enumerate(enum):
        p = torch.softmax(scores, 0)
        for i, n in enumerate(nodes.tolist()):
            marg[b, n] = torch.zeros(K, dtype=pot.dtype).index_add(0, ys[:, i], p)
    return logz, marg, enum


def make(K=3, seed=0, parents=PARENTS, B=2, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    crf = TreeCRF(K, parents).double()
    with torch.no_grad():
        crf.pairwise.copy_(torch.randn(K, K, generator=g, dtype=F64) * scale)
    pot = (torch.randn(B, 6, K, generator=g, dtype=F64) * scale).requires_grad_()
    return crf, pot


def test_fixed_tree_matches_enumeration():
    crf, pot = make()
    logz, marg, enum = brute(pot, crf.pairwise, torch.tensor(PARENTS))
    got = crf.log_partition(pot)
    torch.testing.assert_close(got, logz)
    grads = torch.autograd.grad(got.sum(), [pot, crf.pairwise])
    want = torch.autograd.grad(logz.sum(), [pot, crf.pairwise])
    for g, w in zip(grads, want):  # the outside pass is the gradient
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(crf.marginals(pot), marg)
    torch.testing.assert_close(crf.marginals(pot), grads[0])
    states, score = crf.decode(pot)
    for b, (ys, scores, _) in enumerate(enum):
        assert torch.equal(states[b], ys[scores.argmax()])
        torch.testing.assert_close(score[b], scores.max())


def test_per_example_forests_and_masks():
    parents = torch.tensor([[-1, 0, 1, 2, 3, 4],      # a chain
                            [-1, 0, 0, -1, 3, 3],     # a forest of two trees
                            [3, 3, 0, -1, 2, 2]])     # root last, shuffled order
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1]]).bool()
    crf, pot = make(B=3, parents=None, seed=1)
    logz, marg, enum = brute(pot, crf.pairwise, parents, mask)  # in example 2, 4 and 5 lose
    torch.testing.assert_close(crf.log_partition(pot, mask, parents=parents), logz)  # parent 2: roots
    torch.testing.assert_close(crf.marginals(pot, mask, parents=parents), marg)
    grad, = torch.autograd.grad(crf.log_partition(pot, mask, parents=parents).sum(), pot)
    torch.testing.assert_close(grad, marg)  # the outside pass on a forest
    states, _ = crf.decode(pot, mask, parents=parents)
    assert states[1, 5] == -1 and states[2, 2] == -1
    for b, (ys, scores, nodes) in enumerate(enum):
        assert torch.equal(states[b, nodes], ys[scores.argmax()])


def test_gradcheck_inside_pass():
    crf, pot = make(seed=2)
    levels = tree_schedule(torch.tensor([PARENTS, [-1, 0, 1, 2, 3, 4]]))
    pair = crf.pairwise.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, w: sr.log_partition(inside(w, levels), p), (pot, pair))


def test_tiled_schedule_equals_the_batched_one():
    one = tree_schedule(torch.tensor([PARENTS]))
    many = tree_schedule(torch.tensor([PARENTS] * 3))
    for a, b in zip(tile_schedule(one, 3, 6), many):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_partial_labels():
    crf, pot = make(seed=3)
    labels = torch.tensor([[0, -1, 2, 1, -1, 0], [-1, -1, -1, -1, -1, 1]])
    _, _, enum = brute(pot, crf.pairwise, torch.tensor(PARENTS))
    want = []
    for (ys, scores, _), y in zip(enum, labels):
        ok = ((y < 0) | (ys == y)).all(1)
        want.append(torch.logsumexp(scores, 0) - torch.logsumexp(scores[ok], 0))
    torch.testing.assert_close(crf.nll(pot, labels, reduction="none"), torch.stack(want))


def test_extreme_potentials_are_exact_and_never_nan():
    crf, pot = make(seed=4)
    with torch.no_grad():
        pot.mul_(1e4)
        pot[0, 3, :2] = NEG
        crf.pairwise[0, 1] = NEG
        crf.pairwise[2, 2] = -1e4
    logz, marg, _ = brute(pot, crf.pairwise, torch.tensor(PARENTS))
    got = crf.log_partition(pot)
    torch.testing.assert_close(got, logz)
    grads = torch.autograd.grad(got.sum(), [pot, crf.pairwise])
    assert all(torch.isfinite(g).all() for g in grads) and grads[1][0, 1] == 0
    torch.testing.assert_close(crf.marginals(pot), marg)
    impossible = torch.tensor([[0, 0, 0, 0, 0, 0], [0] * 6])  # node 3 can't be 0 in example 0
    loss = crf.nll(pot, impossible, reduction="none")
    assert loss[0] == float("inf") and torch.isfinite(loss[1])


def test_sampling_matches_the_distribution():
    crf, pot = make(K=2, seed=5, parents=[-1, 0, 0, 1, -1, 4], B=1)
    draws = crf.sample(pot, n=20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 1, 6)
    _, scores, _ = enumerate_labellings(pot, crf.pairwise, crf.parents)[0]
    codes = (draws[:, 0] * 2 ** torch.arange(5, -1, -1)).sum(1)
    freq = torch.bincount(codes, minlength=64).to(F64) / 20000
    torch.testing.assert_close(freq, torch.softmax(scores, 0).detach(), atol=0.01, rtol=0)


def test_bad_trees_are_reported():
    with pytest.raises(ValueError, match="cycle"):
        tree_schedule(torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        tree_schedule(torch.tensor([[-1, 0, 5]]))
    with pytest.raises(ValueError, match="pass parents"):
        TreeCRF(2).log_partition(torch.zeros(1, 3, 2))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(2, 3), st.integers(0, 2**31 - 1))
def test_property_random_trees(N, K, seed):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(N, generator=g)  # parents come earlier in a random order
    parents = torch.full((N,), -1, dtype=torch.long)
    for i in range(1, N):
        if torch.rand((), generator=g) < 0.85:
            parents[order[i]] = order[torch.randint(i, (), generator=g)]
    crf = TreeCRF(K, parents).double()
    pot = torch.randn(2, N, K, generator=g, dtype=F64) * 2
    logz, marg, _ = brute(pot, crf.pairwise.detach(), parents)
    torch.testing.assert_close(crf.log_partition(pot), logz)
    torch.testing.assert_close(crf.marginals(pot), marg)


# -- every query of the one semiring DP against enumeration, on tiny forests ------------------

#   fixed: 0 <- 1 <- {3, 4}, 0 <- 2; node 1 absent in example 0, so 3 and 4 become roots
#   per example: [2, -1, -1, 2, 1] is the forest {2 <- 0, 2 <- 3}, {1 <- 4}; node 2 absent in
#   example 1, so 0 and 3 become roots
SMALL = [-1, 0, 0, 1, 1]
FORESTS = torch.tensor([[-1, 0, 0, 1, 1], [2, -1, -1, 2, 1]])
SMALL_MASK = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 0, 1, 1]]).bool()


def small_case(per_example, K=3, seed=10):
    """(crf, potentials (2, 5, K), keywords for the queries, parents for the enumeration)."""
    g = torch.Generator().manual_seed(seed)
    crf = TreeCRF(K, None if per_example else SMALL).double()
    with torch.no_grad():
        crf.pairwise.copy_(torch.randn(K, K, generator=g, dtype=F64))
    pot = torch.randn(2, 5, K, generator=g, dtype=F64)
    if per_example:
        return crf, pot, {"mask": SMALL_MASK, "parents": FORESTS}, FORESTS
    return crf, pot, {"mask": SMALL_MASK}, torch.tensor(SMALL)


BOTH = pytest.mark.parametrize("per_example", [False, True], ids=["fixed", "per-example"])


@BOTH
def test_entropy_is_minus_sum_p_log_p(per_example):
    crf, pot, kw, parents = small_case(per_example)
    enum = enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"])
    want = torch.stack([-(torch.softmax(s, 0) * torch.log_softmax(s, 0)).sum() for _, s, _ in enum])
    torch.testing.assert_close(crf.entropy(pot, **kw), want)


@BOTH
@pytest.mark.parametrize("k", [1, 5, 100])  # 100 > the 81 and 27 labellings there are
def test_kbest_is_the_top_k_of_enumeration(per_example, k):
    crf, pot, kw, parents = small_case(per_example)
    labels, scores = crf.kbest(pot, k, **kw)
    assert labels.shape == (2, k, 5) and scores.shape == (2, k)
    for b, (ys, s, nodes) in enumerate(enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"])):
        top = s.sort(descending=True)
        found = min(k, len(s))
        torch.testing.assert_close(scores[b, :found], top.values[:found])
        assert torch.equal(labels[b, :found][:, nodes], ys[top.indices[:found]])
        assert (labels[b, :, ~kw["mask"][b]] == -1).all()
        assert (scores[b, found:] == NEG).all() and (labels[b, found:] == -1).all()


@BOTH
def test_decode_is_the_best_labelling_and_its_score(per_example):
    crf, pot, kw, parents = small_case(per_example)
    labels, score = crf.decode(pot, **kw)
    enum = enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"])
    torch.testing.assert_close(score, torch.stack([s.max() for _, s, _ in enum]))
    torch.testing.assert_close(score, crf.score(pot, labels, **kw))
    assert (labels[~kw["mask"]] == -1).all()


@BOTH
def test_sample_frequencies_match_the_distribution(per_example):
    crf, pot, kw, parents = small_case(per_example, K=2)
    draws = crf.sample(pot, 20000, generator=torch.Generator().manual_seed(0), **kw)
    assert draws.shape == (20000, 2, 5) and (draws[:, ~kw["mask"]] == -1).all()
    for b, (_, s, nodes) in enumerate(enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"])):
        codes = (draws[:, b, nodes] * 2 ** torch.arange(len(nodes) - 1, -1, -1)).sum(1)
        freq = torch.bincount(codes, minlength=2 ** len(nodes)).to(F64) / 20000
        assert (freq - torch.softmax(s, 0)).abs().max() < 0.02  # enumeration order is code order


@BOTH
def test_nll_with_partial_labels(per_example):
    crf, pot, kw, parents = small_case(per_example)
    labels = torch.tensor([[2, -1, -1, 0, 1], [-1, 1, 0, 2, -1]])  # absent nodes' labels are ignored
    want = []
    for (ys, s, nodes), y in zip(enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"]), labels):
        agree = ((y[nodes] < 0) | (ys == y[nodes])).all(1)
        want.append(torch.logsumexp(s, 0) - torch.logsumexp(s[agree], 0))
    torch.testing.assert_close(crf.nll(pot, labels, reduction="none", **kw), torch.stack(want))
    torch.testing.assert_close(crf.nll(pot, labels, **kw), torch.stack(want).mean())
    full = labels.masked_fill(labels < 0, 1)  # fully labelled: the score shortcut
    ys, s, nodes = enumerate_labellings(pot, crf.pairwise.detach(), parents, kw["mask"])[1]
    at = (ys == full[1, nodes]).all(1)
    torch.testing.assert_close(crf.nll(pot, full, reduction="none", **kw)[1], torch.logsumexp(s, 0) - s[at][0])


@BOTH
@pytest.mark.parametrize("query", [sr.log_partition, sr.entropy], ids=["log_partition", "entropy"])
def test_gradcheck_log_partition_and_entropy(per_example, query):
    crf, pot, kw, _ = small_case(per_example, K=2)
    levels = crf.schedule(pot, **kw)
    pair = crf.pairwise.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, w: query(inside(w, levels), p), (pot.requires_grad_(), pair))


def test_marginals_are_differentiable_in_the_pairwise_parameter():
    crf, pot, kw, parents = small_case(True, K=2)
    weights = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    (crf.marginals(pot, **kw) * weights).sum().backward()  # potentials need no gradient
    pair = crf.pairwise.detach().clone().requires_grad_()
    _, marg, _ = brute(pot, pair, parents, kw["mask"])
    torch.testing.assert_close(crf.pairwise.grad, torch.autograd.grad((marg * weights).sum(), pair)[0])


def test_an_example_with_no_node_has_the_empty_labelling():
    crf, pot, kw, _ = small_case(True)
    kw["mask"] = torch.tensor([[0] * 5, [1] * 5]).bool()
    assert crf.log_partition(pot, **kw)[0] == 0 and crf.entropy(pot, **kw)[0] == 0
    labels, scores = crf.kbest(pot, 2, **kw)
    assert scores[0].tolist() == [0, NEG] and (labels[0] == -1).all()
    assert (crf.decode(pot, **kw)[0][0] == -1).all() and (crf.sample(pot, 3, **kw)[:, 0] == -1).all()
    kw["mask"][1] = False  # no node anywhere
    assert crf.log_partition(pot, **kw).tolist() == [0, 0] and (crf.decode(pot, **kw)[0] == -1).all()
