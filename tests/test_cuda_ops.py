"""Every registry op on CUDA against the CPU: forward and backward in float32, and the
forward under bf16 autocast (marked `cuda`; they skip without a GPU).

The device under test is ``DAGNET_CUDA_TEST_DEVICE`` (default ``cuda``): set it to
``cpu`` to run these tests' own logic without a GPU (CPU against CPU, CPU autocast).
TF32 is switched off for the float32 comparisons, so they are held to float32
rounding; the bf16 ones to bf16's. Ops are compared in eval mode (dropout and
friends are then deterministic) and run once more in training mode on the device.
"""
import copy
import os

import pytest
import torch

import dagnet
from test_ops import CASES, SIZES, _spec, _tensors

pytestmark = pytest.mark.cuda
DEVICE = torch.device(os.environ.get("DAGNET_CUDA_TEST_DEVICE", "cuda"))
# ops whose every floating input is consumed by a kernel that autocast leaves in float32
# still run under autocast: the comparison then is simply tight. No op is excused.
BF16_TOLERANCE, FP32_TOLERANCE = 3e-2, 1e-4


def needs_device():
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.fixture
def exact_float32():
    """No TF32 on the device for the duration of a test (matmuls and cuDNN convolutions)."""
    if DEVICE.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert not out.isnan().any() or ref.isnan().any(), "NaN on the device only"
    if ref.numel() == 0 or ref.norm() == 0:
        return float(out.norm())
    return float((out - ref).norm() / ref.norm())


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def forward_backward(model, inputs: dict, weight: torch.Tensor | None, autocast: bool = False):
    """The output, and the gradients of sum(output * weight) by each floating input and parameter."""
    inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
        out = _first(model(**inputs))
    if not out.requires_grad or autocast:       # integer outputs, constants (sinusoidal_positions)
        return out, {}
    model.zero_grad(set_to_none=True)
    (out * weight.to(out.device)).sum().backward()
    grads = {f"input {k}": v.grad for k, v in inputs.items() if v.grad is not None}
    grads.update({f"param {k}": p.grad for k, p in model.named_parameters() if p.grad is not None})
    return out, grads


@pytest.mark.parametrize("name, in_shapes, args",
                         [(n, s, a) for n, cases in sorted(CASES.items()) for s, a in cases],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_op_on_the_device_equals_the_cpu(name, in_shapes, args, exact_float32):
    needs_device()
    torch.manual_seed(0)
    cpu = dagnet.compile(dagnet.load(_spec(name, in_shapes, args))).eval()
    device = copy.deepcopy(cpu).to(DEVICE)
    inputs = _tensors(name, in_shapes, SIZES[1])
    out = _first(cpu(**inputs))
    weight = torch.randn(out.shape) if out.is_floating_point() else None
    ref, ref_grads = forward_backward(cpu, inputs, weight)
    moved = {k: v.to(DEVICE) for k, v in inputs.items()}
    got, grads = forward_backward(device, moved, weight)
    assert got.device.type == DEVICE.type and got.dtype == ref.dtype and got.shape == ref.shape
    if ref.is_floating_point():
        assert rel_err(got, ref) < FP32_TOLERANCE, name
    else:
        assert torch.equal(got.cpu(), ref)
    assert set(grads) == set(ref_grads)
    for key, g in grads.items():
        assert g.device.type == DEVICE.type
        assert rel_err(g, ref_grads[key]) < FP32_TOLERANCE, (name, key)

    training = copy.deepcopy(device).train()     # training mode (dropout, batch statistics) on a copy,
    out, grads = forward_backward(training, moved, weight)      # whose running statistics it moves
    assert out.shape == ref.shape
    assert all(bool(torch.isfinite(g).all()) for g in grads.values())

    try:
        low, _ = forward_backward(device, moved, None, autocast=True)
    except RuntimeError as error:
        if DEVICE.type == "cpu":                 # the CPU's autocast lacks some kernels (oneDNN's bf16 LSTM)
            pytest.skip(f"CPU autocast: {str(error).splitlines()[0]}")
        raise
    assert low.shape == ref.shape
    if ref.is_floating_point():
        assert bool(torch.isfinite(low.float()).all()), f"{name}: not finite under bf16 autocast"
        assert rel_err(low.float(), ref) < BF16_TOLERANCE, f"{name} under bf16 autocast"
