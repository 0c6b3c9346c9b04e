"""bench/gpu/triton_chain.py's one-kernel chain scan (a prototype the GPU benchmark times)
gives dagnet's chain CRF nll and every gradient (to float32 rounding), on ragged batches and label counts that
are not powers of two (marked `cuda`; skips without a GPU or Triton; with
``DAGNET_CUDA_TEST_DEVICE=cpu TRITON_INTERPRET=1`` it runs in Triton's interpreter)."""
import pytest
import torch

from bench.gpu import triton_chain
from dagnet.fields.chain import ChainCRF
from test_cuda_ops import DEVICE, needs_device

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("B, T, K", [(3, 9, 5), (4, 33, 20), (2, 70, 3)])
def test_the_triton_scan_gives_dagnets_nll_and_gradients(B, T, K):
    needs_device()
    if not triton_chain.available(DEVICE):
        pytest.skip("Triton is not installed, or cannot run on this device")
    g = torch.Generator().manual_seed(T)
    crf = ChainCRF(K)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    crf = crf.to(DEVICE)
    emissions = (3 * torch.randn(B, T, K, generator=g)).to(DEVICE).requires_grad_()
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T) < lengths[:, None]).to(DEVICE)
    tags = torch.randint(K, (B, T), generator=g).to(DEVICE)
    results = []
    for nll in (lambda: crf.nll(emissions, tags, mask, reduction="sum"),
                lambda: triton_chain.nll(emissions, tags, crf.start, crf.end, crf.transitions, mask)):
        emissions.grad = None
        crf.zero_grad()
        loss = nll()
        loss.backward()
        results.append([loss.detach(), emissions.grad] + [p.grad for p in (crf.start, crf.end, crf.transitions)])
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-4)
    # gradients to float32 log-space rounding: marginals are exp(alpha + beta - log Z), differences
    # of numbers that grow with T (dagnet sums in rescaled float64)
    for ours, kernel in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(kernel, ours, rtol=1e-3, atol=1e-4)
