"""Tests for the permutohedral lattice and the dense CRF layer."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dagnet.data.synthetic import disc_scene
from dagnet.fields.dense_crf import DenseCRF
from dagnet.fields.protocol import UnsupportedQuery
from dagnet.fields.permutohedral import (_barycentric, _elevate, _enclosing_simplex,
                                         build_lattice, lattice_filter)

# --------------------------------------------------------------------------- fixtures


def synthetic_scene(batch: int, size: int, labels: int, seed: int):
    """Discs of flat colour with pixel noise, and a DeepLab-like unary for them.

    The unary is the one-hot truth pooled by 8, noised and upsampled
    bilinearly: blurry at boundaries, which is what a dense CRF is for.
    """
    g = torch.Generator().manual_seed(seed)
    images, truths = [], []
    for _ in range(batch):
        image, segment = disc_scene(size, g)
        images.append(image)
        truths.append(torch.randperm(labels, generator=g)[:5][segment])
    truth = torch.stack(truths)
    coarse = F.avg_pool2d(4.0 * F.one_hot(truth, labels).permute(0, 3, 1, 2).float(), 8)
    coarse = coarse + torch.randn(coarse.shape, generator=g)
    logits = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return logits, torch.stack(images), truth


def reference_lattice_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Unnormalised splat-blur-slice with a dict of keys, point by point (densecrf's loops)."""
    n, d = features.shape
    elevated = _elevate(features)
    rem0, rank = _enclosing_simplex(elevated)
    bary = _barycentric(elevated, rem0, d - rank)
    table, vertex = {}, torch.zeros(n, d + 1, dtype=torch.long)
    for i, k in itertools.product(range(n), range(d + 1)):
        key = tuple(int(rem0[c, i]) + k - (d + 1) * int(rank[c, i] + k > d) for c in range(d))
        vertex[i, k] = table.setdefault(key, len(table))
    lattice = torch.zeros(len(table), values.shape[1], dtype=values.dtype)
    for i, k in itertools.product(range(n), range(d + 1)):
        lattice[vertex[i, k]] += bary[k, i] * values[i]
    for j in range(d + 1):
        blurred = lattice.clone()
        for key, m in table.items():
            for sign in (1, -1):
                neighbour = [c - sign for c in key]
                if j < d:
                    neighbour[j] = key[j] + sign * d
                if tuple(neighbour) in table:
                    blurred[m] += 0.5 * lattice[table[tuple(neighbour)]]
        lattice = blurred
    return torch.stack([sum(bary[k, i] * lattice[vertex[i, k]] for k in range(d + 1)) for i in range(n)])


def explicit_mean_field(crf: DenseCRF, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The textbook loop: explicit Gaussian kernels, pixel by pixel, float64."""
    batch, labels, height, width = logits.shape
    sxy, bxy, brgb = crf.log_bandwidths.double().exp().tolist()
    weights, mu = crf.kernel_weights.double(), crf.compatibility.double()
    pixels = [(y, x) for y in range(height) for x in range(width)]
    out = []
    for b in range(batch):
        def kernel(i, j, sxy_, srgb_):
            (yi, xi), (yj, xj) = pixels[i], pixels[j]
            dist = ((xi - xj) ** 2 + (yi - yj) ** 2) / sxy_ ** 2
            if srgb_ is not None:
                dist += ((image[b, :, yi, xi] - image[b, :, yj, xj]) ** 2).sum().item() / srgb_ ** 2
            return math.exp(-dist / 2)
        kernels = []
        for sxy_, srgb_ in [(sxy, None), (bxy, brgb)]:
            k = torch.tensor([[kernel(i, j, sxy_, srgb_) for j in range(len(pixels))] for i in range(len(pixels))],
                             dtype=torch.float64)
            norm = k.sum(1).rsqrt()
            kernels.append(norm[:, None] * k * norm[None, :])
        unary = logits[b].double().reshape(labels, -1).t()
        q = unary.softmax(1)
        for _ in range(crf.iterations):
            scores = unary.clone()
            for i in range(len(pixels)):
                message = sum(weights[m] * (kernels[m][i] @ q) for m in range(2))
                scores[i] -= mu @ message
            q = scores.softmax(1)
        out.append(scores.log_softmax(1).t().reshape(labels, height, width))
    return torch.stack(out)


def explicit_kernel(crf: DenseCRF, image: torch.Tensor) -> torch.Tensor:
    """K = sum_m w_m Kn_m (B, P, P), float64, pixel pair by pixel pair."""
    batch, _, height, width = image.shape
    sxy, bxy, brgb = crf.log_bandwidths.double().exp().tolist()
    pixels = [(y, x) for y in range(height) for x in range(width)]
    total = torch.zeros(batch, len(pixels), len(pixels), dtype=torch.float64)
    for b, (weight, (sxy_, srgb_)) in itertools.product(range(batch), zip(crf.kernel_weights.double().tolist(),
                                                                             [(sxy, None), (bxy, brgb)])):
        k = torch.zeros(len(pixels), len(pixels), dtype=torch.float64)
        for (i, (yi, xi)), (j, (yj, xj)) in itertools.product(enumerate(pixels), repeat=2):
            dist = ((xi - xj) ** 2 + (yi - yj) ** 2) / sxy_ ** 2
            if srgb_ is not None:
                dist += ((image[b, :, yi, xi] - image[b, :, yj, xj]) ** 2).sum().item() / srgb_ ** 2
            k[i, j] = math.exp(-dist / 2)
        norm = k.sum(1).rsqrt()
        total[b] += weight * norm[:, None] * k * norm[None, :]
    return total


def explicit_scores(crf: DenseCRF, logits: torch.Tensor, image: torch.Tensor, states: torch.Tensor):
    """score(x) (B, S) of labellings states (S, P): unary - 1/2 sum_{i != j} mu(x_i, x_j) K_ij."""
    kernel = explicit_kernel(crf, image)
    kernel = kernel - torch.diag_embed(kernel.diagonal(dim1=1, dim2=2))       # i != j
    unary = logits.double().flatten(2)                                         # (B, L, P)
    mu = crf.compatibility.double()
    pixels = torch.arange(states.shape[1])
    unaries = unary[:, states, pixels].sum(-1)                                 # (B, S)
    pairs = mu[states[:, :, None], states[:, None, :]]                         # (S, P, P)
    return unaries - 0.5 * torch.einsum("spq,bpq->bs", pairs, kernel)


# --------------------------------------------------------------------------- the lattice


@settings(max_examples=12, deadline=None)
@given(d=st.integers(1, 5), n=st.integers(1, 40), spread=st.floats(0.1, 8.0), seed=st.integers(0, 2**16))
def test_lattice_equals_pointwise_reference(d, n, spread, seed):
    """The vectorised build (codes, sort, binary search) against densecrf's per-point loops."""
    g = torch.Generator().manual_seed(seed)
    features = torch.rand(n, d, generator=g, dtype=torch.float64) * spread
    values = torch.randn(n, 2, generator=g, dtype=torch.float64)
    lattice = build_lattice(features)
    unnormalised = lattice.apply(values / lattice.norm[:, None]) / lattice.norm[:, None]
    torch.testing.assert_close(unnormalised, reference_lattice_filter(features, values))


def test_barycentric_weights_reconstruct_the_point():
    features = torch.rand(500, 5, dtype=torch.float64) * 10
    elevated = _elevate(features)
    rem0, rank = _enclosing_simplex(elevated)
    bary = _barycentric(elevated, rem0, 5 - rank)
    k = torch.arange(6)[:, None, None]
    vertices = rem0[None] + k - 6 * (rank[None] + k > 5).double()       # (vertex, coord, point)
    assert torch.all(bary >= -1e-12)
    torch.testing.assert_close(bary.sum(0), torch.ones(500, dtype=torch.float64))
    torch.testing.assert_close((bary[:, None] * vertices).sum(0), elevated)


def test_groups_keep_images_apart():
    features = torch.rand(2, 40, 5, dtype=torch.float64)
    values = torch.randn(2, 40, 3, dtype=torch.float64)
    joint = build_lattice(features.reshape(80, 5), torch.arange(2).repeat_interleave(40)).apply(values.reshape(80, 3))
    alone = torch.cat([build_lattice(features[b]).apply(values[b]) for b in range(2)])
    torch.testing.assert_close(joint, alone)


def test_transposed_filter_is_the_adjoint_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(30, 5, generator=g, dtype=torch.float64) * 2
    lattice = build_lattice(features)
    v, w = torch.randn(2, 30, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close((w * lattice.apply(v)).sum(), (v * lattice.apply(w, transpose=True)).sum())
    assert torch.autograd.gradcheck(lambda x, mix: lattice_filter(x, lattice, mix),
                                     (v.requires_grad_(), torch.randn(2, 2, dtype=torch.float64, requires_grad=True)))


def test_feature_gradient_matches_exact_gaussian_on_dense_points():
    """For learnable bandwidths: the lattice's gradient is the Gaussian's, approximately."""
    g = torch.Generator().manual_seed(1)
    features = (torch.rand(400, 2, generator=g, dtype=torch.float64) * 3).requires_grad_()
    values, weights = torch.rand(2, 400, 3, generator=g, dtype=torch.float64)
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    norm = kernel.sum(1, keepdim=True).rsqrt()
    exact, = torch.autograd.grad((weights * (norm * (kernel @ (norm * values)))).sum(), features)
    lattice = build_lattice(features.detach())
    approx, = torch.autograd.grad((weights * lattice_filter(values, lattice, features=features)).sum(), features)
    assert F.cosine_similarity(approx.flatten(), exact.flatten(), dim=0) > 0.9


# --------------------------------------------------------------------------- the layer


def test_exact_method_equals_explicit_mean_field_loop():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    image = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) * 255
    crf = DenseCRF(3, iterations=3, spatial_sxy=1.5, bilateral_sxy=3, bilateral_srgb=40, method="exact")
    torch.nn.init.normal_(crf.compatibility, generator=g)
    torch.testing.assert_close(crf(logits, image), explicit_mean_field(crf, logits, image))


@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_gradcheck_every_learnable_parameter(method):
    """Logits, compatibility, kernel weights, and (exact path) the bandwidths."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    image = torch.rand(2, 3, 3, 4, generator=g, dtype=torch.float64) * 255
    crf = DenseCRF(3, iterations=2, spatial_sxy=1.5, bilateral_sxy=3, bilateral_srgb=40,
                   method=method, learn_bandwidths=method == "exact").double()
    names = [name for name, _ in crf.named_parameters()]
    assert names == ["compatibility", "kernel_weights"] + (["log_bandwidths"] if method == "exact" else [])

    def run(logits, *params):
        return torch.func.functional_call(crf, dict(zip(names, params)), (logits, image))
    inputs = (logits.requires_grad_(), *[p.detach().clone().requires_grad_() for p in crf.parameters()])
    assert torch.autograd.gradcheck(run, inputs)


def test_lattice_agrees_with_exact_at_48x48():
    logits, image, truth = synthetic_scene(batch=4, size=48, labels=21, seed=0)
    lattice, exact = DenseCRF(21)(logits, image), DenseCRF(21, method="exact")(logits, image)
    assert (lattice.argmax(1) == exact.argmax(1)).float().mean() >= 0.998
    assert (lattice.exp() - exact.exp()).abs().mean() < 1e-3
    # and the CRF does its job: it repairs the blurry unary at boundaries
    accuracy = lambda scores: (scores.argmax(1) == truth).float().mean()
    assert accuracy(lattice) > accuracy(logits) + 0.03


def test_batch_equals_one_image_at_a_time():
    logits, image, _ = synthetic_scene(batch=3, size=20, labels=5, seed=4)
    crf = DenseCRF(5)
    together = crf(logits, image)
    alone = torch.cat([crf(logits[b:b + 1], image[b:b + 1]) for b in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    crf.cpu_chunk_pixels = 2 * 20 * 20                      # groups of two images, then one
    torch.testing.assert_close(crf(logits, image), together, atol=1e-5, rtol=1e-5)


def test_spatial_lattice_is_rebuilt_for_a_new_shape():
    """Same pixel count, transposed shape: the cached spatial lattice must not be reused."""
    crf = DenseCRF(5)
    logits, image, _ = synthetic_scene(batch=1, size=16, labels=5, seed=8)
    wide_logits, wide_image = logits[:, :, :8, :], image[:, :, :8, :]           # 8 x 16
    tall_logits, tall_image = logits[:, :, :, :8], image[:, :, :, :8]           # 16 x 8
    crf(wide_logits, wide_image)
    torch.testing.assert_close(crf(tall_logits, tall_image), DenseCRF(5)(tall_logits, tall_image))


def test_outputs_are_log_marginals_in_the_input_dtype():
    logits, image, _ = synthetic_scene(batch=1, size=16, labels=5, seed=5)
    out = DenseCRF(5)(logits.double(), image)
    assert out.dtype == torch.float64 and out.shape == logits.shape
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 16, 16, dtype=torch.float64))
    torch.testing.assert_close(DenseCRF(5, iterations=0)(logits, image), logits.log_softmax(1))


def test_training_moves_every_parameter():
    logits, image, truth = synthetic_scene(batch=2, size=24, labels=6, seed=6)
    crf = DenseCRF(6, learn_bandwidths=True)
    loss = F.nll_loss(crf(logits, image), truth)
    loss.backward()
    for name, param in crf.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="method"):
        DenseCRF(3, method="fast")
    with pytest.raises(ValueError, match="compatibility"):
        DenseCRF(3, compatibility=torch.eye(2))
    with pytest.raises(ValueError, match="image"):
        DenseCRF(3)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    logits, image, _ = synthetic_scene(batch=2, size=32, labels=5, seed=7)
    crf = DenseCRF(5)
    on_cpu = crf(logits, image)
    on_gpu = crf.cuda()(logits.cuda().requires_grad_(), image.cuda())
    on_gpu.sum().backward()
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- the Field queries


def tiny_problem(seed: int, labels: int = 2, size=(2, 2)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, labels, *size, generator=g, dtype=torch.float64)
    image = torch.rand(2, 3, *size, generator=g, dtype=torch.float64) * 255
    crf = DenseCRF(labels, iterations=10, spatial_sxy=1.5, bilateral_sxy=3, bilateral_srgb=60,
                   method="exact").double()
    with torch.no_grad():
        crf.compatibility.copy_(torch.randn(labels, labels, generator=g, dtype=torch.float64))
        crf.kernel_weights.mul_(0.3)
    return crf, logits, image


def test_elbo_and_entropy_against_enumeration_on_2x2():
    crf, logits, image = tiny_problem(9)
    states = torch.tensor(list(itertools.product(range(2), repeat=4)))         # (16, P)
    scores = explicit_scores(crf, logits, image, states)
    log_z = torch.logsumexp(scores, 1)
    # E_Q[score] + H(Q) for the layer's Q, by enumeration
    q = crf.marginals(logits, image=image).flatten(2)                          # (B, L, P)
    log_q_states = q.log()[:, states, torch.arange(4)].sum(-1)                 # (B, S)
    elbo = (log_q_states.exp() * (scores - log_q_states)).sum(1)
    torch.testing.assert_close(crf.log_partition(logits, image=image), elbo)
    torch.testing.assert_close(crf.entropy(logits, image=image), -(q * q.log()).sum((1, 2)))
    assert torch.all(crf.log_partition(logits, image=image) <= log_z)


def test_decode_returns_labels_and_their_score():
    crf, logits, image = tiny_problem(10, labels=3, size=(2, 3))
    labels, score = crf.decode(logits, image=image)
    assert torch.equal(labels, crf(logits, image).argmax(1))
    torch.testing.assert_close(score, explicit_scores(crf, logits, image, labels.flatten(1)).diagonal())
    torch.testing.assert_close(crf.score(logits, labels, image=image), score)


def test_nll_sample_and_unsupported_queries():
    crf, logits, image = tiny_problem(11, labels=3, size=(3, 3))
    labels = torch.randint(-1, 3, (2, 3, 3), generator=torch.Generator().manual_seed(0))
    log_q = crf(logits, image)
    expected = -(log_q.gather(1, labels.clamp(min=0)[:, None])[:, 0] * (labels >= 0)).sum((1, 2))
    torch.testing.assert_close(crf.nll(logits, labels, image=image, reduction="none"), expected)
    torch.testing.assert_close(crf.nll(logits, labels, image=image), expected.mean())
    draw = lambda seed: crf.sample(logits, n=4, image=image, generator=torch.Generator().manual_seed(seed))
    assert draw(0).shape == (4, 2, 3, 3) and torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    with pytest.raises(UnsupportedQuery, match="kbest"):
        crf.kbest(logits, 2)
    with pytest.raises(UnsupportedQuery, match="-log Q"):
        crf.clamped_log_partition(logits, labels)
    with pytest.raises(ValueError, match="need the image"):
        crf.marginals(logits)
    with pytest.raises(ValueError, match="absent pixels"):
        crf.marginals(logits, torch.zeros(2, 3, 3, dtype=torch.bool), image=image)
    assert crf.structure == "grid" and "score" in crf.exact and crf.supports("entropy")


@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_minus_inf_logits_give_finite_queries_and_gradients(method):
    crf, logits, image = tiny_problem(12, labels=3, size=(3, 4))
    crf.method = method
    base = logits.clone().requires_grad_()
    impossible = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    impossible[:, 0] = False
    clamped = base.masked_fill(impossible, float("-inf"))
    for value in (crf.log_partition(clamped, image=image), crf.entropy(clamped, image=image)):
        (grad,) = torch.autograd.grad(value.sum(), base, retain_graph=True)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all() and torch.all(grad[impossible] == 0)
