"""SemiMarkovCRF against brute-force enumeration of every segmentation."""
import pytest
import torch

from dagnet.fields.semi_markov import SemiMarkovCRF, segments

F64 = torch.float64
NEG = float("-inf")


def all_segmentations(T, L, K):
    """Every segmentation of T positions as a list of (start, length - 1, label)."""
    if T == 0:
        return [[]]
    out = []
    for l in range(min(L, T)):
        for rest in all_segmentations(T - l - 1, L, K):
            for k in range(K):
                out.append([(0, l, k)] + [(s + l + 1, ll, kk) for s, ll, kk in rest])
    return out


def seg_score(crf, seg, segs):
    s = crf.start[segs[0][2]] + crf.end[segs[-1][2]] if segs else seg.new_zeros(())
    for i, (t, l, k) in enumerate(segs):
        s = s + seg[t, l, k]
        if i:
            s = s + crf.transitions[segs[i - 1][2], k]
    return s


def to_tags(segs, T, K, frames=False):
    y = torch.full((T,), -1, dtype=torch.long)
    for t, l, k in segs:
        y[t] = k
        y[t + 1:t + l + 1] = k if frames else K + k
    return y


def enumerate_example(crf, pot, T, frames=False):
    seg = crf.segment_scores(pot.unsqueeze(0))[0]
    segs = all_segmentations(T, crf.max_len, crf.num_labels)
    scores = torch.stack([seg_score(crf, seg, s) for s in segs])
    tags = torch.stack([to_tags(s, T, crf.num_labels, frames) for s in segs]) if T else torch.zeros(1, 0, dtype=torch.long)
    return segs, scores, tags


def make(K=2, L=3, T=5, B=2, inputs="emissions", targets="segments", seed=0):
    g = torch.Generator().manual_seed(seed)
    crf = SemiMarkovCRF(K, L, inputs=inputs, targets=targets).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    shape = (B, T, K) if inputs == "emissions" else (B, T, L, K)
    return crf, torch.randn(shape, generator=g, dtype=F64)


@pytest.mark.parametrize("inputs", ["emissions", "segments"])
def test_log_partition_marginals_entropy_match_brute_force(inputs):
    crf, pot = make(inputs=inputs)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    pot.requires_grad_()
    logz = crf.log_partition(pot, mask)
    marg = crf.marginals(pot, mask)
    ent = crf.entropy(pot, mask)
    for b, T in enumerate([5, 3]):
        _, scores, _ = enumerate_example(crf, pot[b, :T], T)
        torch.testing.assert_close(logz[b], torch.logsumexp(scores, 0))
        p = torch.softmax(scores, 0)
        torch.testing.assert_close(ent[b], -(p * p.log()).sum())
        (want,) = torch.autograd.grad(torch.logsumexp(scores, 0), pot)
        torch.testing.assert_close(marg[b], want[b])
    if inputs == "emissions":  # per-position label marginals sum to one over labels
        torch.testing.assert_close(marg[0].sum(-1), torch.ones(5, dtype=F64))


@pytest.mark.parametrize("targets", ["segments", "frames"])
def test_decode_kbest_and_nll_match_brute_force(targets):
    crf, pot = make(targets=targets, T=4)
    frames = targets == "frames"
    labels, best = crf.decode(pot)
    top, top_scores = crf.kbest(pot, 5)
    for b in range(2):
        segs, scores, tags = enumerate_example(crf, pot[b], 4, frames)
        order = scores.argsort(descending=True)
        torch.testing.assert_close(best[b], scores.max())
        torch.testing.assert_close(top_scores[b], scores[order[:5]])
        assert torch.equal(labels[b], tags[order[0]])
        assert torch.equal(top[b, 0], tags[order[0]])
        # nll of each full labelling: log Z minus the summed score of the segmentations that agree
        logz = torch.logsumexp(scores, 0)
        for i in order[:4].tolist():
            agree = (tags == tags[i]).all(1)
            want = logz - torch.logsumexp(scores[agree], 0)
            torch.testing.assert_close(crf.nll(pot[b:b + 1], tags[i:i + 1], reduction="none")[0], want)


def test_partial_labels_sum_out_unknown_positions():
    crf, pot = make(T=4)
    segs, scores, tags = enumerate_example(crf, pot[0], 4)
    partial = torch.tensor([[0, -1, 2, -1]])  # starts a 0 at 0, continues a 0 at 2
    agree = ((tags == partial) | (partial < 0)).all(1)
    want = torch.logsumexp(scores, 0) - torch.logsumexp(scores[agree], 0)
    torch.testing.assert_close(crf.nll(pot[:1], partial, reduction="none")[0], want)
    nothing = torch.full((1, 4), -1)
    torch.testing.assert_close(crf.nll(pot[:1], nothing)[()], torch.zeros((), dtype=F64), atol=1e-9, rtol=0)


def test_transition_constraints_and_allowed_labels():
    crf, pot = make(T=4)
    crf.allowed_transitions = torch.tensor([[False, True], [True, False]])  # labels must alternate
    segs, scores, _ = enumerate_example(crf, pot[0], 4)
    ok = torch.tensor([all(a[2] != b[2] for a, b in zip(s, s[1:])) for s in segs])
    torch.testing.assert_close(crf.log_partition(pot[:1])[0], torch.logsumexp(scores[ok], 0))
    allowed = torch.ones(1, 4, 2, dtype=torch.bool)
    allowed[0, 1, 0] = False
    ok2 = ok & torch.tensor([all(not (k == 0 and t <= 1 <= t + l) for t, l, k in s) for s in segs])
    torch.testing.assert_close(crf.log_partition(pot[:1], allowed=allowed)[0], torch.logsumexp(scores[ok2], 0))
    top, top_scores = crf.kbest(pot[:1], 3, allowed=allowed)
    torch.testing.assert_close(top_scores[0], scores[ok2].sort(descending=True).values[:3])
    drawn = crf.sample(pot[:1], 50, allowed=allowed, generator=torch.Generator().manual_seed(0))
    assert not ((drawn[:, 0, 1] == 0) | (drawn[:, 0, 1] == 2)).any()  # label 0 never covers position 1
    labels, _ = crf.decode(pot[:1])
    segs_found = segments(labels, 2)[0]
    assert all(a[2] != b[2] for a, b in zip(segs_found, segs_found[1:]))


def test_samples_follow_the_distribution():
    crf, pot = make(T=3, B=1, K=2, L=2)
    segs, scores, tags = enumerate_example(crf, pot[0], 3)
    draws = crf.sample(pot, 4000, generator=torch.Generator().manual_seed(1))[:, 0]
    freq = torch.stack([(draws == t).all(1).double().mean() for t in tags])
    torch.testing.assert_close(freq, torch.softmax(scores, 0), atol=0.03, rtol=0)


def test_gradcheck_and_long_float32_input():
    crf, pot = make(T=4, B=1)
    pot.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: crf.log_partition(x), (pot,))
    assert torch.autograd.gradcheck(lambda x: crf.entropy(x), (pot,))
    long = SemiMarkovCRF(3, 8)
    x = torch.randn(2, 1000, 3) * 20
    logz = long.log_partition(x)
    assert torch.isfinite(logz).all()
    labels, best = long.decode(x)
    assert (labels >= 0).all() and bool((best <= logz + 1e-2).all())
    torch.testing.assert_close(long.score(x, labels), best, rtol=1e-4, atol=1e-2)


def test_gesture_spec_compiles_and_trains():
    from pathlib import Path

    import dagnet
    from dagnet.train.from_spec import build_model

    ir = dagnet.load(Path(__file__).parents[1] / "specs" / "semimarkov_gestures.yaml", {"hidden": 8, "max_len": 4})
    model, objective, _ = build_model(ir)
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 10, 8, generator=g)
    mask = torch.arange(10) < torch.tensor([10, 8, 6])[:, None]
    labels = (torch.arange(10) // 3 % 4).expand(3, 10).masked_fill(~mask, -1)  # segments of 3 frames
    batch = {"frames": frames, "mask": mask, "labels": labels}
    optim = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(8):
        loss, _ = objective(model(frames=frames, mask=mask), batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    predicted, _ = model.segmenter.decode(model(frames=frames, mask=mask)["emissions"], mask)
    assert bool(((predicted >= 0) == mask).all()) and int(predicted.max()) < 4


def test_hand_written_backward_matches_autograd_through_the_semiring_dp():
    from dagnet.fields import semiring as sr
    crf, pot = make(K=3, L=3, T=7, B=3, seed=2)
    crf.allowed_transitions = torch.tensor([[True, False, True], [True, True, False], [False, True, True]])
    mask = torch.arange(7) < torch.tensor([7, 4, 0])[:, None]
    a, b = pot.clone().requires_grad_(), pot.clone().requires_grad_()
    fast = crf.log_partition(a, mask)
    slow = sr.log_partition(crf._composed(b, mask), b)
    torch.testing.assert_close(fast, slow)
    for u, v in zip(torch.autograd.grad(fast.sum(), [a, *crf.parameters()]),
                    torch.autograd.grad(slow.sum(), [b, *crf.parameters()])):
        torch.testing.assert_close(u, v)
    assert torch.autograd.gradcheck(lambda t, s, e: _with(crf, t, s, e, pot, mask),
                                    tuple(p.detach().clone().requires_grad_() for p in
                                          (crf.transitions, crf.start, crf.end)))


def _with(crf, transitions, start, end, pot, mask):
    """log Z as a function of the CRF's own scores (for gradcheck)."""
    saved = crf.transitions, crf.start, crf.end
    try:
        del crf.transitions, crf.start, crf.end
        crf.transitions, crf.start, crf.end = transitions, start, end
        return crf.log_partition(pot, mask)
    finally:
        del crf.transitions, crf.start, crf.end
        crf.transitions, crf.start, crf.end = saved


def test_agrees_with_torch_struct():
    ts = pytest.importorskip("torch_struct")
    from torch_struct.semirings import semirings
    semirings.Semiring.convert = classmethod(lambda cls, p: p.unsqueeze(0).clone())  # torch >= 2 compat
    crf, seg = make(K=3, L=3, T=6, B=2, inputs="segments", seed=4)
    with torch.no_grad():
        crf.length.zero_()
        crf.end.zero_()
        crf.start.copy_(crf.transitions[0])  # torch-struct's first segment follows a free label: pin it to 0
    # torch-struct's edges [b, n, length, label, previous label], lengths from 1 (0 unused)
    past = (torch.arange(6)[:, None] + torch.arange(1, 4)) > 6
    edge = seg.masked_fill(past[None, :, :, None], -1e5)[..., None] + crf.transitions.t().detach()
    edge = torch.cat([torch.full_like(edge[:, :, :1], -1e5), edge], 2)
    edge[:, 0, :, :, 1:] = -1e5
    theirs = ts.SemiMarkovCRF(edge)
    torch.testing.assert_close(crf.log_partition(seg), theirs.partition)
    torch.testing.assert_close(crf.decode(seg)[1], (theirs.argmax * edge).flatten(1).sum(1))
