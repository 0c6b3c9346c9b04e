"""ChainCRF against brute-force enumeration, pytorch-crf, and its own invariances."""
import itertools

import pytest
import torch
import torchcrf
from hypothesis import given, settings, strategies as st

from dagnet.fields import _logspace as ls, chain
from dagnet.fields.chain import ChainCRF, bio_constraints

F64 = torch.float64
METHODS = ["linear-exact", "linear-scaled", "parallel-exact", "parallel-scaled"]
NEG = float("-inf")


def enumerate_paths(emissions, start, end, trans, mask=None, allowed=None):
    """Every path of every sequence, by brute force: a list over the batch of
    (paths (P, L) over the selected positions, scores (P,), selected positions)."""
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    out = []
    for b in range(B):
        where = mask[b].nonzero().flatten()
        L = len(where)
        paths = torch.tensor(list(itertools.product(range(K), repeat=L)), dtype=torch.long)
        paths = paths.reshape(K**L, L)  # L = 0: one empty path
        em = emissions[b, where]  # (L, K)
        s = start if start.dim() == 1 else start[b]
        e = end if end.dim() == 1 else end[b]
        tr = trans if trans.dim() == 2 else trans[b]
        scores = torch.zeros(len(paths), dtype=emissions.dtype)
        if L:
            scores = (s[paths[:, 0]] + e[paths[:, -1]] + em.gather(1, paths.t()).sum(0)
                      + tr[paths[:, :-1], paths[:, 1:]].sum(1))
        if allowed is not None and L:
            ok = allowed[b, where].gather(1, paths.t()).all(0)
            scores = scores.masked_fill(~ok, NEG)
        out.append((paths, scores, where))
    return out


def brute_log_z(enumerated):
    return torch.stack([torch.logsumexp(s, 0) for _, s, _ in enumerated])


def brute_marginals(enumerated, T, K):
    mu = torch.zeros(len(enumerated), T, K, dtype=F64)
    for b, (paths, scores, where) in enumerate(enumerated):
        if len(where) == 0 or scores.max() == NEG:
            continue
        p = torch.softmax(scores, 0)
        for t, pos in enumerate(where):
            mu[b, pos] = torch.zeros(K, dtype=F64).index_add(0, paths[:, t], p)
    return mu


def random_potentials(B, T, K, seed=0, scale=1.0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: (torch.randn(*shape, generator=g) * scale).to(dtype)  # noqa: E731
    return draw(B, T, K), draw(K), draw(K), draw(K, K)


# Right padding, a gap, left padding, length 1, length 0.
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0],
                     [0, 0, 1, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("method", METHODS + ["auto"])
def test_log_z_marginals_and_gradients_match_enumeration(method):
    em, s, e, tr = random_potentials(6, 5, 3)
    params = [x.requires_grad_() for x in (em, s, e, tr)]
    enum = enumerate_paths(em, s, e, tr, MASK)
    want = brute_log_z(enum)
    got = chain.log_partition(*params, mask=MASK, method=method)
    torch.testing.assert_close(got, want)
    assert got[-1] == 0  # the empty sequence has one empty path
    grads = torch.autograd.grad(got.sum(), params)
    want_grads = torch.autograd.grad(want.sum(), params)
    for g, w in zip(grads, want_grads):  # d log Z = expected counts, by the beta messages
        torch.testing.assert_close(g, w)
    mu = chain.marginals(*params, mask=MASK, method=method)
    torch.testing.assert_close(mu, brute_marginals(enum, 5, 3))
    torch.testing.assert_close(mu, grads[0])


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_gradcheck_custom_backward(scaled, batched):
    em, s, e, tr = random_potentials(3, 4, 3, seed=1)
    if batched:
        s, e, tr = s.expand(3, -1) + 0.1, e.expand(3, -1) * 2, tr.expand(3, -1, -1) * 0.5
    lengths = torch.tensor([4, 2, 0])
    inputs = [x.detach().clone().requires_grad_() for x in (em, s, e, tr)]
    shift = ls.sequence_max(em) if scaled else None
    for scan in ("linear", "parallel"):
        fn = lambda *p: chain._LogPartition.apply(*p, lengths, scan, shift)  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("method", ["linear", "parallel"])
def test_viterbi_and_kbest_match_enumeration(method):
    em, s, e, tr = random_potentials(6, 5, 3, seed=2)
    enum = enumerate_paths(em, s, e, tr, MASK)
    tags, score = chain.viterbi(em, s, e, tr, MASK, method=method)
    top, top_scores = chain.kbest(em, s, e, tr, 4, MASK)
    for b, (paths, scores, where) in enumerate(enum):
        order = scores.argsort(descending=True)
        assert torch.equal(tags[b, where], paths[order[0]])
        assert (tags[b][~MASK[b]] == -1).all()
        torch.testing.assert_close(score[b], scores[order[0]])
        n = min(4, len(paths))
        torch.testing.assert_close(top_scores[b, :n], scores[order[:n]])
        for r in range(n):
            assert torch.equal(top[b, r, where], paths[order[r]])
    assert (top_scores[-1, 1:] == NEG).all() and (top[-1] == -1).all()  # one empty path
    em.requires_grad_()  # the MAP score is differentiable: d score / d emit = the path
    grad, = torch.autograd.grad(chain.viterbi(em, s, e, tr, MASK, method=method)[1].sum(), em)
    on_path = torch.nn.functional.one_hot(tags.clamp_min(0), 3) * MASK[..., None]
    assert torch.equal(grad, on_path.to(F64))


def test_kbest_pads_when_fewer_paths_exist():
    em, s, e, tr = random_potentials(1, 2, 2, seed=3)
    tags, scores = chain.kbest(em, s, e, tr, 6)
    assert torch.isfinite(scores[0, :4]).all() and (scores[0, 4:] == NEG).all()
    assert (tags[0, 4:] == -1).all() and len({tuple(t) for t in tags[0, :4].tolist()}) == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_pytorch_crf(dtype):
    em, s, e, tr = random_potentials(4, 7, 5, seed=4, scale=2.0, dtype=dtype)
    tags = torch.randint(5, (4, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.arange(7) < torch.tensor([7, 3, 1, 5])[:, None]
    ours, theirs = ChainCRF(5).to(dtype), torchcrf.CRF(5, batch_first=True).to(dtype)
    with torch.no_grad():
        for mine, other, value in ((ours.start, theirs.start_transitions, s),
                                   (ours.end, theirs.end_transitions, e),
                                   (ours.transitions, theirs.transitions, tr)):
            mine.copy_(value)
            other.copy_(value)
    for reduction in ("sum", "mean", "none"):
        torch.testing.assert_close(ours.nll(em, tags, mask, reduction),
                                   -theirs(em, tags, mask, reduction))
    decoded, _ = ours.decode(em, mask)
    assert [row[m].tolist() for row, m in zip(decoded, mask)] == theirs.decode(em, mask)


def test_batch_order_padding_and_layout_do_not_change_results():
    em, s, e, tr = random_potentials(3, 4, 3, seed=5)
    alone = [chain.log_partition(em[b:b + 1], s, e, tr) for b in range(3)]
    padded = torch.cat([em, torch.randn(3, 2, 3, dtype=F64) * 1e3], 1)  # junk in padding
    mask = torch.arange(6) < 4
    batch = chain.log_partition(padded, s, e, tr, mask.expand(3, -1))
    torch.testing.assert_close(batch, torch.cat(alone))
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(chain.log_partition(em[perm], s, e, tr), batch[perm])
    # Left padding and gaps select the same positions: same chain.
    left = torch.cat([torch.full((3, 2, 3), float("nan"), dtype=F64), em], 1)
    gaps = torch.stack([em[:, 0], em[:, 1], em[:, 1], em[:, 2], em[:, 1], em[:, 3]], 1)
    gap_mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool).expand(3, -1)
    for x, m in ((left, mask.flip(0).expand(3, -1)), (gaps, gap_mask)):
        torch.testing.assert_close(chain.log_partition(x, s, e, tr, m), batch)
        torch.testing.assert_close(chain.marginals(x, s, e, tr, m)[m].view(3, 4, 3),
                                   chain.marginals(em, s, e, tr))
        assert torch.equal(chain.viterbi(x, s, e, tr, m)[0][m].view(3, 4),
                           chain.viterbi(em, s, e, tr)[0])


def test_methods_agree_on_a_long_chain():
    em, s, e, tr = random_potentials(2, 300, 3, seed=6, scale=2.0)
    mask = torch.arange(300) < torch.tensor([300, 211])[:, None]
    z = [chain.log_partition(em, s, e, tr, mask, method=m) for m in METHODS]
    mu = [chain.marginals(em, s, e, tr, mask, method=m) for m in METHODS]
    for other_z, other_mu in zip(z[1:], mu[1:]):
        torch.testing.assert_close(other_z, z[0])
        torch.testing.assert_close(other_mu, mu[0])
    paths = [chain.viterbi(em, s, e, tr, mask, method=m)[0] for m in ("linear", "parallel")]
    assert torch.equal(*paths)


def test_extreme_scores_are_exact_and_never_nan():
    em, s, e, tr = random_potentials(6, 5, 3, seed=7)
    em = em.sign() * 1e4  # +-1e4 emissions
    tr = tr.clone()
    tr[0, 1], tr[2, 2], tr[1, 0] = NEG, 1e4, -1e4
    em[0, 2, 1] = NEG
    params = [x.requires_grad_() for x in (em, s, e, tr)]
    enum = enumerate_paths(em, s, e, tr, MASK)
    for method in ("auto",) + tuple(METHODS[::2]):  # untame input: exact paths only
        z = chain.log_partition(*params, mask=MASK, method=method)
        torch.testing.assert_close(z, brute_log_z(enum))
        grads = torch.autograd.grad(z.sum(), params)
        assert all(torch.isfinite(g).all() for g in grads)
        assert grads[3][0, 1] == 0  # a forbidden transition gets no gradient
        mu = chain.marginals(*params, mask=MASK, method=method)
        torch.testing.assert_close(mu, brute_marginals(enum, 5, 3))
        assert torch.isfinite(torch.autograd.grad(mu[:, :, 0].sum(), params[0])[0]).all()


def test_float32_extremes_and_impossible_labels_do_not_nan():
    crf = ChainCRF(3, constraints=torch.tensor([[1, 0, 1], [1, 1, 1], [1, 1, 1]]).bool())
    em = (torch.randn(2, 6, 3) * 1e4).requires_grad_()
    tags = torch.tensor([[0, 1, 2, 0, 0, 1], [2, 2, 2, -1, -1, 2]])  # 0 -> 1 is forbidden
    loss = crf.nll(em, tags, reduction="none")
    assert loss[0] == float("inf") and torch.isfinite(loss[1])
    loss[1].backward()
    assert torch.isfinite(em.grad).all() and torch.isfinite(crf.transitions.grad).all()
    assert crf.transitions.grad[0, 1] == 0


def test_partial_labels_sum_out_unlabelled_positions():
    em, s, e, tr = random_potentials(6, 5, 3, seed=8)
    tags = torch.randint(3, (6, 5), generator=torch.Generator().manual_seed(1))
    tags[:, 1] = -1
    tags[2, 3] = -1
    enum = enumerate_paths(em, s, e, tr, MASK)
    want = []
    for (paths, scores, where), y in zip(enum, tags):
        consistent = ((y[where] < 0) | (paths == y[where])).all(1)
        want.append(torch.logsumexp(scores, 0) - torch.logsumexp(scores[consistent], 0))
    got = chain.nll(em, tags, s, e, tr, MASK, reduction="none")
    torch.testing.assert_close(got, torch.stack(want))
    full = tags.clamp_min(0)  # fully labelled: the one-path shortcut equals the primitive
    via_primitive = (chain.log_partition(em, s, e, tr, MASK) - chain.log_partition(
        em, s, e, tr, MASK, chain.label_mask(full, 3)))
    torch.testing.assert_close(chain.nll(em, full, s, e, tr, MASK, "none"), via_primitive)


def test_bio_constraints_shape_decoding_and_marginals():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed = bio_constraints(names)
    assert not allowed.start[2] and allowed.start[1]
    assert allowed.transitions[1, 2] and allowed.transitions[2, 2]
    assert not allowed.transitions[0, 2] and not allowed.transitions[3, 2]
    crf = ChainCRF(5, constraints=allowed)
    em = torch.randn(4, 9, 5) * 3
    em[:, :, 2] += 5  # the data wants I-PER everywhere
    tags, _ = crf.decode(em)
    assert tags[:, 0].ne(2).all()
    pairs = torch.stack([tags[:, :-1], tags[:, 1:]], -1).reshape(-1, 2)
    assert allowed.transitions[pairs[:, 0], pairs[:, 1]].all()
    assert (crf.marginals(em)[:, 0, 2] == 0).all()
    with pytest.raises(ValueError, match="not BIO"):
        bio_constraints(["O", "X-PER"])


def test_sampling_matches_the_distribution():
    em, s, e, tr = random_potentials(2, 3, 2, seed=9)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    draws = chain.sample(em, s, e, tr, n=20000, mask=mask,
                         generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 2, 3) and (draws[:, 1, 1] == -1).all()
    for b, (paths, scores, where) in enumerate(enumerate_paths(em, s, e, tr, mask)):
        digits = 2 ** torch.arange(len(where) - 1, -1, -1)  # K = 2: a path's index in binary
        codes = (draws[:, b, where] * digits).sum(1)
        freq = torch.bincount(codes, minlength=len(paths)).to(F64) / len(codes)
        torch.testing.assert_close(freq, torch.softmax(scores, 0), atol=0.015, rtol=0)


def test_empty_inputs():
    crf = ChainCRF(3).double()
    em = torch.randn(2, 0, 3, dtype=F64)
    assert torch.equal(crf.log_partition(em), torch.zeros(2, dtype=F64))
    assert crf.marginals(em).shape == (2, 0, 3) and crf.decode(em)[0].shape == (2, 0)
    assert crf.nll(em, torch.zeros(2, 0, dtype=torch.long)) == 0
    assert crf.sample(em, n=2).shape == (2, 2, 0)


def test_dispatch_picks_the_fast_path_only_when_it_is_exact():
    em, s, e, tr = random_potentials(2, 300, 4, seed=10, scale=3.0)
    scan, shift = chain._resolve("auto", em, s, e, tr)
    assert scan == "parallel" and torch.equal(shift, ls.sequence_max(em))
    assert chain._resolve("auto", em[:, :50], s, e, tr)[0] == "linear"
    assert chain._resolve("auto", em.repeat(32, 1, 1), s, e, tr)[0] == "linear"
    masked = em.clone()
    masked[0, 3, 1] = NEG  # masked tags keep the fast path
    assert chain._resolve("auto", masked, s, e, tr)[1] is not None
    constrained = tr.clone()
    constrained[0, 1] = NEG
    for args in ((em * 1e4, s, e, tr), (em, s, e, constrained), (em, s, e, tr * 50)):
        assert chain._resolve("auto", *args)[1] is None


def test_errors_name_the_fix():
    em, s, e, tr = random_potentials(1, 2, 2)
    with pytest.raises(ValueError, match="unknown method"):
        chain.log_partition(em, s, e, tr, method="fast")
    with pytest.raises(ValueError, match="unknown reduction"):
        chain.nll(em, torch.zeros(1, 2, dtype=torch.long), s, e, tr, reduction="avg")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31 - 1),
       st.sampled_from(METHODS))
def test_property_log_z_and_marginals(B, T, K, seed, method):
    em, s, e, tr = random_potentials(B, T, K, seed=seed, scale=3.0)
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.7
    enum = enumerate_paths(em, s, e, tr, mask)
    torch.testing.assert_close(chain.log_partition(em, s, e, tr, mask, method=method),
                               brute_log_z(enum))
    mu = chain.marginals(em, s, e, tr, mask, method=method)
    torch.testing.assert_close(mu.sum(-1), mask.to(F64))


def test_entropy_matches_enumeration_and_gradcheck():
    em, s, e, tr = random_potentials(6, 5, 3, seed=12)
    tr = tr.masked_fill(torch.eye(3, dtype=torch.bool), NEG)      # impossible transitions
    got = chain.entropy(em, s, e, tr, MASK)
    for b, (paths, scores, where) in enumerate(enumerate_paths(em, s, e, tr, MASK)):
        log_p = torch.log_softmax(scores, 0)
        want = -(log_p.exp() * log_p.masked_fill(log_p == NEG, 0)).sum()
        torch.testing.assert_close(got[b], want)
    assert got[-1] == 0                                             # the one empty path
    torch.autograd.gradcheck(lambda x, t: chain.entropy(x, s, e, t, MASK),
                             (em.clone().requires_grad_(), tr.clone().requires_grad_()))


@pytest.mark.parametrize("batched", [False, True])
def test_the_fast_kernels_agree_with_the_one_semiring_dp(batched):
    """log Z's custom backward and Viterbi's backtrack are specialisations of the
    chain's semiring DP (kept because the benchmark says so); they must agree with it."""
    from dagnet.fields import semiring
    from dagnet.fields._logspace import pack
    em, s, e, tr = random_potentials(6, 5, 3, seed=13)
    if batched:                                  # per-sequence potentials, as the hidden CRF's
        s, e, tr = s + em[:, 0], e - em[:, 1], tr + em[:, :3].transpose(1, 2)
    packed = pack(em, MASK)
    dp = chain.semiring_dp(s, e, tr, packed.lengths)
    torch.testing.assert_close(semiring.log_partition(dp, packed.emissions),
                               chain.log_partition(em, s, e, tr, MASK))
    torch.testing.assert_close(semiring.marginals(dp, packed.emissions)[0],   # unpacked: full row
                               chain.marginals(em, s, e, tr, MASK)[0])
    best, _ = semiring.best(dp, packed.emissions)
    torch.testing.assert_close(best, chain.viterbi(em, s, e, tr, MASK)[1])
