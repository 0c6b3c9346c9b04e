"""DependencyCRF against brute-force enumeration of every tree, and torch-struct."""
import itertools

import pytest
import torch

from dagnet.fields.dependency import DependencyCRF, best_tree

F64 = torch.float64


def is_tree(heads):
    """heads in the diagonal convention (heads[m] == m: a root child): every word reaches the root."""
    for m in range(len(heads)):
        seen, v = set(), m
        while heads[v] != v:
            if v in seen:
                return False
            seen.add(v)
            v = heads[v]
    return True


def is_projective(heads):
    arcs = [(-1 if h == m else h, m) for m, h in enumerate(heads)]
    for h, m in arcs:
        lo, hi = min(h, m), max(h, m)
        for h2, m2 in arcs:
            if lo < h2 < hi and not lo <= m2 <= hi:  # an arc from inside leaves the span
                return False
            if lo < m2 < hi and not lo <= h2 <= hi:
                return False
    return True


def all_trees(N, projective, multiroot):
    out = []
    for heads in itertools.product(range(N), repeat=N):
        if not is_tree(heads):
            continue
        if not multiroot and sum(h == m for m, h in enumerate(heads)) != 1:
            continue
        if projective and not is_projective(heads):
            continue
        out.append(heads)
    return torch.tensor(out, dtype=torch.long).reshape(len(out), N)


def brute(x, projective, multiroot):
    trees = all_trees(x.shape[0], projective, multiroot)
    return trees, x[trees, torch.arange(x.shape[0])].sum(-1)


CASES = [(p, r) for p in (True, False) for r in (True, False)]


def make(B=2, N=4, R=0, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, N, N, R) if R else (B, N, N)
    return torch.randn(shape, generator=g, dtype=F64) * scale


@pytest.mark.parametrize("projective,multiroot", CASES)
def test_queries_match_brute_force(projective, multiroot):
    crf = DependencyCRF(projective=projective, multiroot=multiroot)
    x = make().requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    logz, marg, ent = crf.log_partition(x, mask), crf.marginals(x, mask), crf.entropy(x, mask)
    labels, best = crf.decode(x, mask)
    top, top_scores = crf.kbest(x, 3, mask)
    for b, n in enumerate([4, 3]):
        trees, scores = brute(x[b, :n, :n], projective, multiroot)
        torch.testing.assert_close(logz[b], torch.logsumexp(scores, 0))
        p = torch.softmax(scores, 0)
        torch.testing.assert_close(ent[b], -(p * p.log()).sum())
        (want,) = torch.autograd.grad(torch.logsumexp(scores, 0), x)
        torch.testing.assert_close(marg[b], want[b])
        order = scores.argsort(descending=True)
        torch.testing.assert_close(best[b], scores.max())
        assert torch.equal(labels[b, :n], trees[order[0]]) and (labels[b, n:] == -1).all()
        torch.testing.assert_close(top_scores[b], scores[order[:3]])
        for r in range(3):
            assert torch.equal(top[b, r, :n], trees[order[r]])
        # nll with a complete tree, and with partial heads
        y = trees[order[1]]
        full = torch.full((1, 4), -1)
        full[0, :n] = y
        one = mask[b:b + 1]
        torch.testing.assert_close(crf.nll(x[b:b + 1], full, one, reduction="none")[0],
                                   torch.logsumexp(scores, 0) - scores[order[1]])
        part = full.clone()
        part[0, 0] = -1
        agree = (trees[:, 1:] == y[1:]).all(1)
        torch.testing.assert_close(crf.nll(x[b:b + 1], part, one, reduction="none")[0],
                                   torch.logsumexp(scores, 0) - torch.logsumexp(scores[agree], 0))


@pytest.mark.parametrize("projective", [True, False])
def test_labelled_arcs_and_constraints(projective):
    crf = DependencyCRF(num_relations=2, projective=projective)
    x = make(B=1, N=3, R=2)
    trees, arc_scores = brute(torch.logsumexp(x[0], -1), projective, False)
    torch.testing.assert_close(crf.log_partition(x)[0], torch.logsumexp(arc_scores, 0))
    labels, best = crf.decode(x)
    _, max_scores = brute(x[0].amax(-1), projective, False)
    torch.testing.assert_close(best[0], max_scores.max())
    torch.testing.assert_close(crf.score(x, labels), best)
    allowed = torch.ones(1, 3, 3, 2, dtype=torch.bool)
    allowed[0, 0, 1] = False  # no arc 0 -> 1 with any relation
    ok = trees[:, 1] != 0
    torch.testing.assert_close(crf.log_partition(x, allowed=allowed)[0], torch.logsumexp(arc_scores[ok], 0))
    y = torch.stack([labels[..., 0], torch.full_like(labels[..., 1], -1)], -1)  # heads known, relations not
    heads_only = torch.logsumexp(arc_scores, 0) - torch.logsumexp(x[0], -1)[labels[0, :, 0], torch.arange(3)].sum()
    torch.testing.assert_close(crf.nll(x, y)[()], heads_only)
    assert crf.entropy(x)[0] > 0


@pytest.mark.parametrize("projective", [True, False])
def test_samples_follow_the_distribution(projective):
    crf = DependencyCRF(projective=projective)
    x = make(B=1, N=3)
    trees, scores = brute(x[0], projective, False)
    draws = crf.sample(x, 3000, generator=torch.Generator().manual_seed(0))[:, 0]
    freq = torch.stack([(draws == t).all(1).double().mean() for t in trees])
    torch.testing.assert_close(freq, torch.softmax(scores, 0), atol=0.03, rtol=0)


@pytest.mark.parametrize("projective,multiroot", CASES)
def test_gradcheck(projective, multiroot):
    crf = DependencyCRF(projective=projective, multiroot=multiroot)
    x = make(B=1, N=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: crf.log_partition(a), (x,))


@pytest.mark.parametrize("multiroot,scale,root", [(True, 3.0, -10.0), (False, 10.0, 0.0)])
def test_matrix_tree_float32_inputs_keep_float64_marginals(multiroot, scale, root):
    """Root arcs far below the word arcs (multi-root: every column sum of the Laplacian is a
    tiny root weight) or peaked scores make the Laplacian nearly singular: a float32
    determinant loses digits of the marginals there (0.009 and 1e-5 here, measured with
    LAPACK's sgesv), so the float32 input's gradient must match the float64 one to float32's
    own precision."""
    from dagnet.fields.spanning_trees import matrix_tree_fast, matrix_tree_log_partition
    x = make(B=4, N=40, scale=scale)
    x.diagonal(0, 1, 2).add_(root)
    x = x.float().double()                  # the same numbers in both precisions
    lengths = torch.full((4,), 40)
    a, b = x.float().requires_grad_(), x.clone().requires_grad_()
    logz = matrix_tree_fast(a, lengths, multiroot)
    ref = matrix_tree_log_partition(b, lengths, multiroot)
    logz.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(logz.double(), ref.detach(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=1e-6)


def test_float32_long_sentences_and_mst():
    x = make(B=2, N=100, scale=10.0).float()
    for projective in (True, False):
        crf = DependencyCRF(projective=projective)
        logz = crf.log_partition(x)
        labels, best = crf.decode(x)
        assert torch.isfinite(logz).all() and bool((best <= logz + 1e-2).all())
        marg = crf.marginals(x)
        torch.testing.assert_close(marg.sum(1), torch.ones(2, 100), atol=1e-3, rtol=0)
    # the MST of a 30-word sentence is a tree with one root child
    heads, score = best_tree(x[0, :30, :30].double().numpy(), multiroot=False)
    assert is_tree(heads.tolist()) and sum(int(h == m) for m, h in enumerate(heads)) == 1


def _torch_struct():
    ts = pytest.importorskip("torch_struct")
    from torch_struct.semirings import semirings
    semirings.Semiring.convert = classmethod(lambda cls, p: p.unsqueeze(0).clone())  # torch >= 2 compat
    return ts


@pytest.mark.parametrize("multiroot", [True, False])
def test_agrees_with_torch_struct(multiroot):
    ts = _torch_struct()
    x = make(B=3, N=6)
    for projective, cls in ((True, ts.DependencyCRF), (False, ts.NonProjectiveDependencyCRF)):
        ours = DependencyCRF(projective=projective, multiroot=multiroot)
        theirs = cls(x.clone(), multiroot=multiroot)
        torch.testing.assert_close(ours.log_partition(x), theirs.partition, rtol=1e-5, atol=1e-4)  # torch-struct: float32 inside
        torch.testing.assert_close(ours.marginals(x), theirs.marginals, rtol=1e-4, atol=1e-4)
        if projective:
            labels, _ = ours.decode(x)
            assert torch.equal(ours.marginals(x).new_zeros(x.shape).scatter_(1, labels[:, None], 1.0),
                               theirs.argmax.double())


def test_biaffine_parser_spec_compiles_and_trains():
    from pathlib import Path

    import dagnet
    from dagnet.train.from_spec import build_model

    ir = dagnet.load(Path(__file__).parents[1] / "specs" / "biaffine_parser.yaml", {"vocab": 50, "hidden": 16, "arc": 16,
                                                                                       "relations": 3})
    model, objective, _ = build_model(ir)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 50, (4, 7), generator=g)
    mask = torch.arange(7) < torch.tensor([7, 5, 6, 3])[:, None]
    heads = torch.arange(7).sub(1).clamp_min(0).expand(4, 7).clone()  # a chain: word 0 under the root
    heads = heads.masked_fill(~mask, -1)
    relations = torch.randint(0, 3, (4, 7), generator=g).masked_fill(~mask, -1)
    batch = {"tokens": tokens, "mask": mask, "arcs": torch.stack([heads, relations], -1)}   # labelled
    optim = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(8):
        loss, _ = objective(model(tokens=tokens, mask=mask), batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    field = model.parser
    scores = model(tokens=tokens, mask=mask)["scores"]
    predicted, _ = field.decode(scores, mask)
    assert predicted.shape == (4, 7, 2) and bool(((predicted[..., 0] >= 0) == mask).all())


@pytest.mark.parametrize("by_lapack", [True, False], ids=["lapack", "torch-lu"])
@pytest.mark.parametrize("multiroot", [True, False])
def test_matrix_tree_backward_written_out_matches_autograd(multiroot, by_lapack, monkeypatch):
    """The hand-written gradient of the matrix-tree log Z (one LU, one solve) against autograd
    through slogdet, with ragged lengths, banned arcs and float32 inputs; by LAPACK matrix by
    matrix (CPU) and by torch's batched LU (other devices, here forced on CPU)."""
    from dagnet.fields import spanning_trees
    from dagnet.fields.spanning_trees import matrix_tree_fast, matrix_tree_log_partition
    monkeypatch.setattr(spanning_trees, "_by_lapack", lambda lap: by_lapack)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, 7, generator=g, dtype=torch.float64) * 3
    x[1, 2, 4] = float("-inf")
    x[2, :, 3] = float("-inf")              # word 3 has no head at all: no tree
    lengths = torch.tensor([7, 5, 6, 0])
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = matrix_tree_fast(a, lengths, multiroot)
    ref = matrix_tree_log_partition(b, lengths, multiroot)
    torch.testing.assert_close(ours, ref)
    assert ours[2] == float("-inf") and ours[3] == 0
    with torch.no_grad():                   # factors only, no inverse
        torch.testing.assert_close(matrix_tree_fast(x, lengths, multiroot), ref.detach())
    weights = torch.tensor([1.0, -0.5, 3.0, 2.0], dtype=torch.float64)   # the no-tree example: no gradient
    (ours * weights).sum().backward()
    (ref * weights).masked_fill(~torch.isfinite(ref), 0).sum().backward()
    torch.testing.assert_close(a.grad, b.grad.nan_to_num(0.0))
    f32 = x.float().requires_grad_()        # float32 in, float32 gradients out, float64 inside
    c = x.clone().requires_grad_()
    matrix_tree_fast(f32, lengths, multiroot)[:2].sum().backward()
    matrix_tree_log_partition(c, lengths, multiroot)[:2].sum().backward()
    assert f32.grad.dtype == torch.float32
    torch.testing.assert_close(f32.grad[:2].double(), c.grad[:2], atol=1e-5, rtol=1e-4)
    assert not f32.grad[2:].any()


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("multiroot", [True, False])
def test_eisner_backward_written_out_matches_autograd(multiroot, labelled):
    """The hand-written outside pass of the projective log Z against autograd through the semiring
    dp, with ragged lengths (one empty), banned arcs, a sentence with no tree, labelled arcs and
    float32 inputs."""
    from dagnet.fields import semiring as sr
    from dagnet.fields.dependency import _Eisner, eisner
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 8, 8, *((3,) if labelled else ()), generator=g, dtype=torch.float64) * 3
    x[1, 2, 4] = float("-inf")
    x[2, :, 3] = float("-inf")              # word 3 has no head at all: no tree
    x[4, 0] = float("-inf")                 # word 0 heads nothing
    lengths = torch.tensor([8, 5, 6, 0, 7])
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = _Eisner.apply(a, lengths, multiroot, labelled)
    ref = eisner(lengths, multiroot, labelled)(sr.LOG, b)[0]
    torch.testing.assert_close(ours, ref)
    assert ours[2] == float("-inf") and ours[3] == 0
    weights = torch.tensor([1.0, -0.5, 0.7, 2.0, 1.5], dtype=torch.float64)   # the no-tree example: no gradient
    (ours * weights).sum().backward()
    (ref * weights).masked_fill(~torch.isfinite(ref), 0).sum().backward()
    torch.testing.assert_close(a.grad, b.grad.nan_to_num(0.0))
    assert not a.grad[2:4].any()
    f32 = x.float().requires_grad_()        # float32 gradients, those of float64 to rounding
    c = x.clone().requires_grad_()
    _Eisner.apply(f32, lengths, multiroot, labelled).sum().backward()
    _Eisner.apply(c, lengths, multiroot, labelled).sum().backward()
    assert f32.grad.dtype == torch.float32
    torch.testing.assert_close(f32.grad.double(), c.grad, atol=1e-5, rtol=1e-4)
