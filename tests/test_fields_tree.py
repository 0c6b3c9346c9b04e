"""TreeCRF against brute-force enumeration of every labelling."""
import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dagnet.fields.tree import TreeCRF, _TreeLogPartition, tile_schedule, tree_schedule

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
    torch.testing.assert_close(crf.log_partition(pot, parents, mask), logz)  # parent 2: roots
    torch.testing.assert_close(crf.marginals(pot, parents, mask), marg)
    grad, = torch.autograd.grad(crf.log_partition(pot, parents, mask).sum(), pot)
    torch.testing.assert_close(grad, marg)  # the outside pass on a forest
    states, _ = crf.decode(pot, parents, mask)
    assert states[1, 5] == -1 and states[2, 2] == -1
    for b, (ys, scores, nodes) in enumerate(enum):
        assert torch.equal(states[b, nodes], ys[scores.argmax()])


def test_gradcheck_outside_pass():
    crf, pot = make(seed=2)
    levels = tree_schedule(torch.tensor([PARENTS, [-1, 0, 1, 2, 3, 4]]))
    pair = crf.pairwise.detach().clone().requires_grad_()
    flat = pot.detach().reshape(12, 3).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, w: _TreeLogPartition.apply(p, w, levels, 2),
                                    (flat, pair))


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
    ys, scores, _ = enumerate_labellings(pot, crf.pairwise, crf.parents)[0]
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
