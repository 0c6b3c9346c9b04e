"""HiddenCRF and LatentDynamicCRF against brute-force enumeration of hidden paths."""
import pytest
import torch

from dagnet.fields.chain import ChainCRF
from dagnet.fields.latent import HiddenCRF, LatentDynamicCRF
from test_fields_chain import enumerate_paths  # the chain enumerator, shared

F64 = torch.float64
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)


def randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def hcrf_brute(crf, emissions, mask):
    """log p(y | x) (B, Y): for each label, every hidden path by enumeration."""
    per_label = []
    for y in range(crf.num_labels):
        enum = enumerate_paths(emissions + crf.hidden[y], crf.start[y], crf.end[y],
                               crf.transitions[y], mask)
        per_label.append(torch.stack([torch.logsumexp(s, 0) for _, s, _ in enum]) + crf.bias[y])
    return torch.log_softmax(torch.stack(per_label, 1), -1)


@pytest.mark.parametrize("H", [2, 3])
def test_hidden_crf_matches_enumeration(H):
    crf = randomise(HiddenCRF(3, H).double(), seed=H)
    em = torch.randn(4, 4, H, dtype=F64, generator=torch.Generator().manual_seed(0))
    want = hcrf_brute(crf, em, MASK)
    torch.testing.assert_close(crf.log_prob(em, MASK), want)
    labels = torch.tensor([0, 2, 1, 1])
    loss = crf.nll(em, labels, MASK, reduction="none")
    torch.testing.assert_close(loss, -want.gather(1, labels[:, None]).squeeze(1))
    grads = torch.autograd.grad(loss.sum(), list(crf.parameters()))
    brute = -hcrf_brute(crf, em, MASK).gather(1, labels[:, None]).sum()
    for g, w in zip(grads, torch.autograd.grad(brute, list(crf.parameters()))):
        torch.testing.assert_close(g, w)
    labels_map, score = crf.decode(em, MASK)
    assert torch.equal(labels_map, want.argmax(-1))
    torch.testing.assert_close(score - crf.log_partition(em, MASK), want.max(-1).values)
    torch.testing.assert_close(crf.marginals(em, MASK).sum(-1), torch.ones(4, dtype=F64))
    torch.testing.assert_close(crf.log_prob(em, MASK)[3], torch.log_softmax(crf.bias, 0))


def test_hidden_crf_samples_labels_from_the_posterior():
    crf = randomise(HiddenCRF(3, 2).double(), seed=7)
    em = torch.randn(1, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    labels, paths = crf.sample_parts(em, n=20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, crf.sample(em, n=20000, generator=torch.Generator().manual_seed(0)))
    assert paths.shape == (20000, 1, 3) and paths.min() >= 0 and paths.max() < 2
    freq = torch.bincount(labels[:, 0], minlength=3).to(F64) / 20000
    torch.testing.assert_close(freq, crf.marginals(em)[0].detach(), atol=0.015, rtol=0)


def ldcrf_brute(crf, emissions, labels, mask):
    """-log p(labels | x) and label marginals by enumerating hidden paths."""
    c, h = crf.chain, crf.hidden_per_label
    enum = enumerate_paths(emissions, c.start, c.end, c.transitions, mask)
    nll, marg = [], torch.zeros(emissions.shape[:2] + (crf.num_labels,), dtype=F64)
    for b, (paths, scores, where) in enumerate(enum):
        y = labels[b, where]
        ok = ((y < 0) | (paths // h == y)).all(1)
        nll.append(torch.logsumexp(scores, 0) - torch.logsumexp(scores[ok], 0))
        p = torch.softmax(scores, 0)
        for t, pos in enumerate(where):
            marg[b, pos] = torch.zeros(crf.num_labels, dtype=F64).index_add(0, paths[:, t] // h, p)
    return torch.stack(nll), marg, enum


@pytest.mark.parametrize("h", [2, 3])
def test_latent_dynamic_crf_matches_enumeration(h):
    crf = randomise(LatentDynamicCRF(2, h).double(), seed=h)
    em = torch.randn(4, 4, 2 * h, dtype=F64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([[0, 1, 1, 0], [1, -1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    want_nll, want_marg, enum = ldcrf_brute(crf, em, labels, MASK)
    torch.testing.assert_close(crf.nll(em, labels, MASK, reduction="none"), want_nll)
    torch.testing.assert_close(crf.marginals(em, MASK), want_marg)
    by_marginal, score = crf.decode(em, MASK)
    torch.testing.assert_close(score - crf.log_partition(em, MASK), -crf.nll(em, by_marginal, MASK, "none"))
    assert torch.equal(by_marginal[MASK], want_marg.argmax(-1)[MASK])
    assert (by_marginal[~MASK] == -1).all()
    by_viterbi = crf.decode(em, MASK, method="viterbi")[0]
    for b, (paths, scores, where) in enumerate(enum):
        assert torch.equal(by_viterbi[b, where], paths[scores.argmax()] // h)
    with pytest.raises(ValueError, match="unknown decode method"):
        crf.decode(em, method="beam")


def test_latent_dynamic_crf_with_one_hidden_state_is_a_chain_crf():
    ld = randomise(LatentDynamicCRF(4, 1).double(), seed=3)
    plain = ChainCRF(4).double()
    plain.load_state_dict({"start": ld.chain.start, "end": ld.chain.end,
                           "transitions": ld.chain.transitions})
    em = torch.randn(3, 6, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    mask = torch.arange(6) < torch.tensor([6, 4, 1])[:, None]
    labels = torch.randint(4, (3, 6), generator=torch.Generator().manual_seed(5))
    labels[1, 2] = -1
    torch.testing.assert_close(ld.nll(em, labels, mask), plain.nll(em, labels, mask))
    torch.testing.assert_close(ld.marginals(em, mask), plain.marginals(em, mask))
    assert torch.equal(ld.decode(em, mask, "viterbi")[0], plain.decode(em, mask)[0])
    for ours, chain_crf in zip(ld.kbest(em, 4, mask), plain.kbest(em, 4, mask)):
        torch.testing.assert_close(ours, chain_crf)
    torch.testing.assert_close(ld.entropy(em, mask), plain.entropy(em, mask))
    g = torch.Generator().manual_seed(6)
    assert torch.equal(ld.sample(em, 3, mask, g), plain.sample(em, 3, mask, g.manual_seed(6)))


def test_latent_models_never_nan_on_extreme_scores():
    ld = LatentDynamicCRF(2, 2)
    em = (torch.randn(2, 5, 4) * 1e4).requires_grad_()
    labels = torch.tensor([[0, 1, 1, 0, -1], [1, 1, 1, 1, 1]])
    ld.nll(em, labels).backward()
    assert torch.isfinite(em.grad).all()
    hc = HiddenCRF(2, 3)
    em = (torch.randn(2, 5, 3) * 1e4).requires_grad_()
    hc.nll(em, torch.tensor([0, 1])).backward()
    assert torch.isfinite(em.grad).all() and torch.isfinite(hc.transitions.grad).all()


def _entropy(log_p):
    return -(log_p.exp() * log_p.masked_fill(log_p == -float("inf"), 0)).sum(-1)


def test_hidden_crf_entropy_and_kbest_match_enumeration():
    crf = randomise(HiddenCRF(3, 2).double(), seed=11)
    em = torch.randn(4, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    want = hcrf_brute(crf, em, MASK)
    torch.testing.assert_close(crf.entropy(em, MASK), _entropy(want))
    labels, scores = crf.kbest(em, 5, MASK)                 # more than the 3 labels
    top = want.sort(-1, descending=True)
    assert torch.equal(labels[:, :3], top.indices) and (labels[:, 3:] == -1).all()
    torch.testing.assert_close(scores[:, :3] - crf.log_partition(em, MASK)[:, None], top.values)
    assert (scores[:, 3:] == -float("inf")).all()
    torch.testing.assert_close(crf.score(em, labels[:, 0], MASK), scores[:, 0])
    torch.autograd.gradcheck(lambda e: crf.entropy(e, MASK), em.clone().requires_grad_())


def label_distribution(crf, emissions, mask):
    """Per example: {label sequence over the selected positions: log p} by enumeration."""
    h = crf.hidden_per_label
    out = []
    for paths, scores, _ in enumerate_paths(emissions, crf.chain.start, crf.chain.end,
                                            crf.chain.transitions, mask):
        logz, by_labels = torch.logsumexp(scores, 0), {}
        for path, s in zip(paths // h, scores):
            by_labels.setdefault(tuple(path.tolist()), []).append(s)
        out.append({y: torch.logsumexp(torch.stack(s), 0) - logz for y, s in by_labels.items()})
    return out


def test_latent_dynamic_crf_kbest_scores_and_entropy_bound_by_enumeration():
    crf = randomise(LatentDynamicCRF(2, 2).double(), seed=5)
    em = torch.randn(4, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(8))
    logz = crf.log_partition(em, MASK)
    labels, scores = crf.kbest(em, 3, MASK)
    for b, dist in enumerate(label_distribution(crf, em, MASK)):
        where = MASK[b].nonzero().flatten()
        found = [tuple(y[where].tolist()) for y, s in zip(labels[b], scores[b]) if s > -float("inf")]
        assert len(set(found)) == len(found) == min(3, len(dist))        # distinct labellings
        for y, s in zip(found, scores[b]):                               # each with its exact score
            torch.testing.assert_close(s - logz[b], dist[y])
        best = max(dist.values())
        torch.testing.assert_close(scores[b, 0] - logz[b], best)         # the best is found here
        label_entropy = -sum(p.exp() * p for p in dist.values())
        hidden = enumerate_paths(em[b:b + 1], crf.chain.start, crf.chain.end, crf.chain.transitions,
                                 MASK[b:b + 1])[0][1]
        torch.testing.assert_close(crf.entropy(em, MASK)[b], _entropy(torch.log_softmax(hidden, 0)))
        assert crf.entropy(em, MASK)[b] >= label_entropy - 1e-12        # an upper bound on H(y)


def test_latent_dynamic_crf_samples_label_sequences_from_the_posterior():
    crf = randomise(LatentDynamicCRF(2, 2).double(), seed=9)
    em = torch.randn(1, 3, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    draws = crf.sample(em, 20000, generator=torch.Generator().manual_seed(0))[:, 0]
    dist = label_distribution(crf, em, None)[0]
    for y, log_p in dist.items():
        freq = (draws == torch.tensor(y)).all(-1).double().mean()
        assert abs(freq - log_p.exp()) < 0.015, (y, freq, log_p.exp())
