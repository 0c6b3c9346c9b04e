"""DependencyCRF (projective and not) and CKYCRF against supar's structures, the parser
library's own: log Z, marginals (its gradients) and the best structure's score, on a ragged
batch. supar lays a sentence out with its root at position 0, arcs as [dependent, head] and
spans over fenceposts; bench.bench_structures converts our scores to its layouts."""
import warnings

import pytest
import torch

from bench.bench_structures import supar_arcs, supar_spans
from dagnet.fields.cky import CKYCRF
from dagnet.fields.dependency import DependencyCRF

sp = pytest.importorskip("supar.structs")
warnings.filterwarnings("ignore", message=".*non-tuple sequence.*")  # supar 1.1.4 on torch 2

LENGTHS = torch.tensor([7, 5, 1])


def ragged(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2


def padded_mask(N):
    return torch.arange(N)[None] < LENGTHS[:, None]


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("projective", [True, False])
def test_dependency_agrees_with_supar(projective, multiroot):
    x = ragged((3, 7, 7), seed=1)
    mask = padded_mask(7)
    ours = DependencyCRF(projective=projective, multiroot=multiroot)
    cls = sp.DependencyCRF if projective else sp.MatrixTree
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    logz = ours.log_partition(a, mask)
    theirs = cls(supar_arcs(b), LENGTHS, multiroot=multiroot)
    torch.testing.assert_close(logz, theirs.log_partition.to(logz.dtype), rtol=1e-5, atol=1e-5)
    logz.sum().backward()
    theirs.log_partition.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)   # the arc marginals
    _, best = ours.decode(x, mask)
    torch.testing.assert_close(best, cls(supar_arcs(x), LENGTHS, multiroot=multiroot).max.to(best.dtype),
                               rtol=1e-5, atol=1e-5)


def test_cky_agrees_with_supar():
    """supar's CKY scores unlabelled spans: it gets each span's labels reduced (logsumexp for
    log Z and marginals, max for the best tree)."""
    x = ragged((3, 7, 7, 3), seed=2)
    mask = padded_mask(7)
    crf = CKYCRF(3)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    logz = crf.log_partition(a, mask)
    theirs = sp.ConstituencyCRF(supar_spans(b.logsumexp(-1)), LENGTHS)
    torch.testing.assert_close(logz, theirs.log_partition.to(logz.dtype), rtol=1e-5, atol=1e-5)
    logz.sum().backward()
    theirs.log_partition.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)   # the labelled span marginals
    _, best = crf.decode(x, mask)
    torch.testing.assert_close(best, sp.ConstituencyCRF(supar_spans(x.amax(-1)), LENGTHS).max.to(best.dtype),
                               rtol=1e-5, atol=1e-5)
