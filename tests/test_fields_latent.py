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
    assert torch.equal(crf.decode(em, MASK), want.argmax(-1))
    torch.testing.assert_close(crf.marginals(em, MASK).sum(-1), torch.ones(4, dtype=F64))
    torch.testing.assert_close(crf.log_prob(em, MASK)[3], torch.log_softmax(crf.bias, 0))


def test_hidden_crf_samples_labels_from_the_posterior():
    crf = randomise(HiddenCRF(3, 2).double(), seed=7)
    em = torch.randn(1, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    labels, paths = crf.sample(em, n=20000, generator=torch.Generator().manual_seed(0))
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
    by_marginal = crf.decode(em, MASK)
    assert torch.equal(by_marginal[MASK], want_marg.argmax(-1)[MASK])
    assert (by_marginal[~MASK] == -1).all()
    by_viterbi = crf.decode(em, MASK, method="viterbi")
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
    assert torch.equal(ld.decode(em, mask, "viterbi"), plain.decode(em, mask)[0])
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
