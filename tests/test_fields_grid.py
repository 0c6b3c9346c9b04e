"""Tests for the grid CRF, against brute-force enumeration on tiny grids."""
import itertools

import pytest
import torch

from dagnet.fields.grid import GridCRF, mean_field, mean_field_elbo
from dagnet.fields.protocol import UnsupportedQuery


def enumerate_grid(crf: GridCRF, logits: torch.Tensor):
    """All labellings of a tiny grid: (states (S, H, W), log p (B, S), log Z (B,))."""
    _, labels, height, width = logits.shape
    states = torch.tensor(list(itertools.product(range(labels), repeat=height * width))).reshape(-1, height, width)
    scores = torch.stack([crf.score(logits, state.expand(logits.shape[0], -1, -1)) for state in states], 1)
    log_z = torch.logsumexp(scores, 1)
    return states, scores - log_z[:, None], log_z


def exact_marginals(states, log_p, labels: int) -> torch.Tensor:
    """(B, L, H, W) marginals from the enumerated distribution."""
    onehot = torch.nn.functional.one_hot(states, labels).to(log_p.dtype)      # (S, H, W, L)
    return torch.einsum("bs,shwl->blhw", log_p.exp(), onehot)


def random_crf(labels: int, pairwise: str, seed: int, **kwargs) -> GridCRF:
    crf = GridCRF(labels, pairwise=pairwise, **kwargs).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype))
    return crf


@pytest.mark.parametrize("shape", [(1, 5), (4, 1)])
@pytest.mark.parametrize("pairwise", ["potts", "full"])
def test_loopy_bp_is_exact_on_chains(shape, pairwise):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, *shape, generator=g, dtype=torch.float64)
    crf = random_crf(3, pairwise, seed=1, iterations=40)
    states, log_p, log_z = enumerate_grid(crf, logits)
    torch.testing.assert_close(crf.marginals(logits), exact_marginals(states, log_p, 3))
    torch.testing.assert_close(crf.log_partition(logits), log_z)
    best = states[log_p.argmax(1)]
    for method in ("max_product", "icm"):
        labels, score = crf.decode(logits, method=method)
        assert torch.equal(labels, best)
        torch.testing.assert_close(score, log_p.max(1).values + log_z)


def test_nll_of_partial_labels_is_exact_on_chains():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 1, 5, generator=g, dtype=torch.float64)
    crf = random_crf(3, "full", seed=3, iterations=40)
    states, log_p, _ = enumerate_grid(crf, logits)
    labels = torch.tensor([[[0, -1, 2, -1, -1]], [[-1, -1, -1, -1, -1]]])
    consistent = ((states == labels[:, None]) | (labels[:, None] < 0)).flatten(2).all(2)   # (B, S)
    expected = -torch.logsumexp(log_p.masked_fill(~consistent, -torch.inf), 1)
    torch.testing.assert_close(crf.nll(logits, labels, reduction="none"), expected)
    full = states[5].expand(2, -1, -1)
    torch.testing.assert_close(crf.nll(logits, full, reduction="none"), -log_p[:, 5])
    torch.testing.assert_close(crf.nll(logits, full), -log_p[:, 5].mean())


def test_nll_trains_the_pairwise_weight():
    logits = torch.zeros(1, 2, 3, 3)
    labels = torch.zeros(1, 3, 3, dtype=torch.long)
    crf = GridCRF(2, weight=0.0, iterations=10)
    crf.nll(logits, labels).backward()
    assert crf.weight.grad < 0            # agreeing neighbours: raise the Potts weight


def test_checkerboard_mean_field_never_increases_free_energy():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 3, 4, 5, generator=g, dtype=torch.float64)
    psi = 2 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    free_energy = [-mean_field_elbo(logits, psi, mean_field(logits, psi, sweeps)) for sweeps in range(12)]
    steps = torch.stack(free_energy[1:]) - torch.stack(free_energy[:-1])
    assert torch.all(steps <= 1e-12)
    crf = random_crf(3, "full", seed=5, inference="mean_field")
    _, _, log_z = enumerate_grid(crf, logits[:, :, :2, :3])
    assert torch.all(crf.log_partition(logits[:, :, :2, :3]) <= log_z + 1e-12)   # ELBO is a bound


def chi_square_critical(dof: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square(dof), Wilson-Hilferty approximation."""
    a = 2.0 / (9 * dof)
    return dof * (1 - a + z * a ** 0.5) ** 3


def test_gibbs_histogram_matches_enumeration_on_3x3():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    crf = GridCRF(2, weight=0.8).double()
    states, log_p, _ = enumerate_grid(crf, logits)
    # independent chains (one per batch entry), one sample each after burn-in
    chains = 20000
    samples = crf.sample(logits.expand(chains, -1, -1, -1), n=1, burn_in=20,
                         generator=torch.Generator().manual_seed(0))[0]
    index = (samples.flatten(1) * (2 ** torch.arange(8, -1, -1))).sum(1)
    counts = torch.bincount(index, minlength=512).double()
    expected = log_p[0].exp() * chains
    state_index = (states.flatten(1) * (2 ** torch.arange(8, -1, -1))).sum(1)
    expected = torch.zeros(512, dtype=torch.float64).index_add_(0, state_index, expected)
    big = expected >= 5                           # pool the rare states into one bin
    observed = torch.cat([counts[big], counts[~big].sum(0, keepdim=True)])
    wanted = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
    statistic = ((observed - wanted) ** 2 / wanted).sum()
    assert statistic < chi_square_critical(len(wanted) - 1)


def test_grid_marginal_errors_against_enumeration_on_3x3():
    """The numbers quoted in docs/dense_crf.md (grid section)."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(8, 2, 3, 3, generator=g, dtype=torch.float64)
    crf = GridCRF(2, weight=1.0, iterations=50).double()
    states, log_p, log_z = enumerate_grid(crf, logits)
    exact = exact_marginals(states, log_p, 2)
    bp_error = (crf.marginals(logits) - exact).abs()
    bethe_error = (crf.log_partition(logits) - log_z).abs().max()
    crf.inference = "mean_field"
    mf_error = (crf.marginals(logits) - exact).abs()
    assert bp_error.max() < 0.06 and bp_error.mean() < 0.015 and bethe_error < 0.2
    assert mf_error.max() < 0.45 and mf_error.mean() < 0.12
    assert bp_error.mean() < mf_error.mean()


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="pairwise"):
        GridCRF(3, pairwise="dense")
    with pytest.raises(ValueError, match="inference"):
        GridCRF(3, inference="gibbs")
    with pytest.raises(ValueError, match="decode"):
        GridCRF(3).decode(torch.zeros(1, 3, 2, 2), method="viterbi")
    with pytest.raises(ValueError, match="mask"):
        GridCRF(3).marginals(torch.zeros(1, 3, 2, 2), torch.ones(1, 2, 3, dtype=torch.bool))


@pytest.mark.parametrize("pairwise", ["potts", "full"])
def test_bp_on_a_chain_is_exact_for_entropy_log_partition_and_marginals(pairwise):
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 3, 1, 6, generator=g, dtype=torch.float64)
    crf = random_crf(3, pairwise, seed=9, iterations=40)
    states, log_p, log_z = enumerate_grid(crf, logits)
    torch.testing.assert_close(crf.entropy(logits), -(log_p.exp() * log_p).sum(1))
    torch.testing.assert_close(crf.log_partition(logits), log_z)
    torch.testing.assert_close(crf.marginals(logits), exact_marginals(states, log_p, 3))


@pytest.mark.parametrize("inference", ["bp", "mean_field"])
def test_a_sub_rectangle_mask_is_the_cropped_grid(inference):
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 3, (2, 5, 6), generator=g)
    crf = random_crf(3, "full", seed=11, inference=inference, iterations=15)
    rows, cols = slice(1, 4), slice(1, 5)            # offset (1, 1): the same checkerboard colours
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[:, rows, cols] = True
    cropped, cropped_labels = logits[:, :, rows, cols], labels[:, rows, cols]
    marginals = crf.marginals(logits, mask)
    torch.testing.assert_close(marginals[:, :, rows, cols], crf.marginals(cropped))
    assert marginals.masked_fill(mask[:, None], 0).abs().max() == 0
    for query in ("log_partition", "entropy"):
        torch.testing.assert_close(getattr(crf, query)(logits, mask), getattr(crf, query)(cropped))
    torch.testing.assert_close(crf.nll(logits, labels, mask, reduction="none"),
                               crf.nll(cropped, cropped_labels, reduction="none"))
    decoded, score = crf.decode(logits, mask)
    decoded_crop, score_crop = crf.decode(cropped)
    assert torch.equal(decoded[:, rows, cols], decoded_crop) and torch.all(decoded[~mask] == -1)
    torch.testing.assert_close(score, score_crop)
    samples = crf.sample(logits, n=2, mask=mask, burn_in=3, generator=torch.Generator().manual_seed(0))
    assert torch.all(samples[:, ~mask] == -1) and torch.all(samples[:, mask] >= 0)


@pytest.mark.parametrize("inference", ["bp", "mean_field"])
def test_minus_inf_clamps_and_absent_pixels_give_nan_free_gradients(inference):
    g = torch.Generator().manual_seed(12)
    base = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    impossible = torch.rand(2, 3, 3, 4, generator=g) < 0.3
    impossible[:, 0] = False                          # every pixel keeps a possible label
    logits = base.masked_fill(impossible, float("-inf"))
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[1, 2, 1:] = False
    labels = torch.where(torch.rand(2, 3, 4, generator=g) < 0.5, 0, -1)
    crf = random_crf(3, "full", seed=13, inference=inference, iterations=10)
    marginals = crf.marginals(logits, mask)
    assert torch.all(marginals[impossible] == 0)
    losses = [crf.log_partition(logits, mask), crf.entropy(logits, mask), crf.nll(logits, labels, mask),
              crf.decode(logits, mask)[1], (marginals * torch.randn(marginals.shape, dtype=torch.float64)).sum()]
    for loss in losses:
        assert torch.isfinite(loss).all()
        grads = torch.autograd.grad(loss.sum(), [base, *crf.parameters()], retain_graph=True)
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert torch.all(grads[0][impossible] == 0) and torch.all(grads[0].movedim(1, -1)[~mask] == 0)


def test_sampling_is_reproducible_from_the_generator():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(14))
    crf = GridCRF(3)
    draw = lambda seed: crf.sample(logits, n=3, burn_in=5, generator=torch.Generator().manual_seed(seed))
    assert draw(0).shape == (3, 2, 4, 4)
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


def test_kbest_is_not_answered():
    crf = GridCRF(2)
    assert not crf.supports("kbest") and crf.supports("entropy") and "score" in crf.exact
    with pytest.raises(UnsupportedQuery, match="GridCRF does not answer `kbest`"):
        crf.kbest(torch.zeros(1, 2, 2, 2), 2)
