"""The explicit message-passing backward engine equals autograd (float64, 1e-6)."""

import pytest
import torch

import dagnet
from tests.conftest import SPECS


@pytest.mark.parametrize("name, overrides, shape", [
    ("resnet18", {"classes": 5}, (3, 32, 32)),        # fan-out and residual adds
    ("densenet121", {"classes": 5}, (3, 32, 32)),     # dense concatenations
    ("unet", {"width": 4}, (3, 24, 24)),              # two-input blocks, crops, transposed convs
    ("mlp", {}, (64,)),
])
def test_gradients_equal_autograd(name, overrides, shape):
    torch.manual_seed(0)
    reference = dagnet.compile(SPECS / f"{name}.yaml", overrides=overrides).double().train()
    engine = dagnet.compile(SPECS / f"{name}.yaml", overrides=overrides, backward="messages").double().train()
    engine.load_state_dict(reference.state_dict())
    key = "x" if name == "mlp" else "image"
    x = torch.randn(2, *shape, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    weights = torch.randn_like(reference(**{key: x}))
    (reference(**{key: x}) * weights).sum().backward()
    (engine(**{key: x2}) * weights).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, atol=1e-6, rtol=0)
    for (n, p), q in zip(reference.named_parameters(), engine.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=0, msg=n)


def test_engine_keeps_state_dict_and_outputs():
    model = dagnet.compile(SPECS / "lenet.yaml", backward="messages")
    plain = dagnet.compile(SPECS / "lenet.yaml")
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(image=x), plain(image=x))


def test_gradcheck_through_the_engine():
    model = dagnet.compile("dagnet: 1\ninputs:\n  x: {shape: [3]}\nnodes:\n"
                           "  h: {in: x, seq: linear(4) -> tanh}\n  s: {op: add, in: [h, h]}\n"
                           "  y: {op: linear, in: s, out_features: 2}\noutputs: [y]\n",
                           backward="messages").double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(x=t), (x,))


def test_checkpointed_parts_get_their_parameter_gradients():
    """A checkpointed block is one call of the engine's graph; its parameters are still trained."""
    ir = dagnet.load(SPECS / "resnet18.yaml", {"classes": 5})
    torch.manual_seed(0)
    reference = dagnet.compile(ir, checkpoint="blocks").double()
    engine = dagnet.compile(ir, checkpoint="blocks", backward="messages").double()
    engine.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    reference(image=x).sum().backward()
    engine(image=x).sum().backward()
    for (n, p), q in zip(reference.named_parameters(), engine.parameters()):
        assert q.grad is not None, n
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=0, msg=n)
