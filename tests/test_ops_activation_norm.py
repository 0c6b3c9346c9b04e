"""The activations and the normalisation and regularisation ops of issue "The op library of
2026" against the PyTorch modules they stand for: forward output, input gradient and parameter
count in float64; stochastic depth against torchvision's formula; a located error per family."""

import pytest
import torch
import yaml
from torch import nn

import dagnet
from dagnet import ops
from dagnet.cli import main
from dagnet.emit import standalone_source
from dagnet.errors import SpecError


def _spec(op: str, in_shape: list, /, **args) -> str:
    """A one-node spec whose node `n` is line 5."""
    node = "".join(f", {k}: {yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                   for k, v in args.items())
    return (f"dagnet: 1\ninputs:\n  x: {{shape: {in_shape}}}\nnodes:\n"
            f"  n: {{op: {op}, in: x{node}}}\noutputs: [n]\n")


# (op, per-example input shape, args, the PyTorch module it stands for)
CASES = [
    ("relu6", [3, 7], {}, lambda: nn.ReLU6()),
    ("silu", [3, 7], {}, lambda: nn.SiLU()),
    ("hardswish", [3, 7], {}, lambda: nn.Hardswish()),
    ("hardsigmoid", [3, 7], {}, lambda: nn.Hardsigmoid()),
    ("elu", [3, 7], {"alpha": 0.5}, lambda: nn.ELU(alpha=0.5)),
    ("selu", [3, 7], {}, lambda: nn.SELU()),
    ("mish", [3, 7], {}, lambda: nn.Mish()),
    ("softplus", [3, 7], {"beta": 2.0, "threshold": 3.0}, lambda: nn.Softplus(beta=2.0, threshold=3.0)),
    ("gelu", [3, 7], {"approximate": "tanh"}, lambda: nn.GELU(approximate="tanh")),
    ("prelu", [3, 7], {}, lambda: nn.PReLU()),
    ("prelu", [3, 4, 5], {"num_parameters": 3, "init": 0.1}, lambda: nn.PReLU(3, init=0.1)),
    ("instance_norm", [3, 9], {}, lambda: nn.InstanceNorm1d(3)),
    ("instance_norm", [3, 4, 5], {"affine": True, "eps": 1e-3}, lambda: nn.InstanceNorm2d(3, 1e-3, affine=True)),
    ("instance_norm", [2, 3, 4, 5], {"track_running_stats": True, "momentum": 0.3},
     lambda: nn.InstanceNorm3d(2, momentum=0.3, track_running_stats=True)),
    ("local_response_norm", [6, 4, 5], {"size": 3}, lambda: nn.LocalResponseNorm(3)),
    ("local_response_norm", [5, 7], {"size": 2, "alpha": 0.1, "beta": 0.5, "k": 2.0},
     lambda: nn.LocalResponseNorm(2, alpha=0.1, beta=0.5, k=2.0)),
    ("batch_norm", [2, 3, 4, 5], {}, lambda: nn.BatchNorm3d(2)),
    ("dropout1d", [3, 7], {"p": 0.3}, lambda: nn.Dropout1d(0.3)),
    ("dropout3d", [4, 2, 3, 3], {}, lambda: nn.Dropout3d()),
]


def _forward_and_grad(fn, x, seed=0):
    """``fn(x)`` and the gradient of x for a fixed upstream gradient, the random draws seeded."""
    x = x.clone().requires_grad_()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out = fn(x)
    (grad,) = torch.autograd.grad(out, x, torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return out.detach(), grad


@pytest.mark.parametrize("op, shape, args, reference", CASES, ids=[f"{c[0]}-{len(c[1])}d" for c in CASES])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_op_matches_the_pytorch_module(op, shape, args, reference, training):
    ir = dagnet.load(_spec(op, shape, **args))
    model = dagnet.compile(ir).double().train(training)
    ref = reference().double().train(training)
    with torch.no_grad():      # learned parameters, and running statistics, away from their initial values
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    ref.load_state_dict({k.removeprefix("n."): v for k, v in model.state_dict().items()})
    x = 3 * torch.randn(4, *shape, dtype=torch.float64)      # past every kink: relu6's 6, softplus' threshold
    out, grad = _forward_and_grad(lambda t: model(x=t), x)
    ref_out, ref_grad = _forward_and_grad(ref, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    buffers = dict(model.named_buffers())
    for name, buffer in ref.named_buffers():           # running statistics follow the same updates
        torch.testing.assert_close(buffers[f"n.{name}"], buffer)
    count = sum(p.numel() for p in ref.parameters())
    assert ops.count_params(ir, ir.node("n")) == sum(p.numel() for p in model.parameters()) == count


# -- stochastic depth ----------------------------------------------------------------------------

def torchvision_stochastic_depth(input, p, mode, training=True):
    """torchvision.ops.stochastic_depth, written out (torchvision is not a dependency)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    if mode == "row":
        size = [input.shape[0]] + [1] * (input.ndim - 1)
    else:
        size = [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


def _stochastic_depth(p, mode, shape=(3, 4)):
    return dagnet.compile(_spec("stochastic_depth", list(shape), p=p, mode=mode)).double()


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_stochastic_depth_draws_what_torchvision_draws(p, mode):
    model = _stochastic_depth(p, mode)
    x = torch.randn(64, 3, 4, dtype=torch.float64)
    for seed in range(5):
        out, grad = _forward_and_grad(lambda t: model(x=t), x, seed)
        ref_out, ref_grad = _forward_and_grad(lambda t: torchvision_stochastic_depth(t, p, mode), x, seed)
        assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_is_the_identity_in_eval(mode):
    model = _stochastic_depth(0.9, mode).eval()
    x = torch.randn(64, 3, 4, dtype=torch.float64)
    assert torch.equal(model(x=x), x)


def test_stochastic_depth_drops_rows_with_probability_p_and_keeps_the_mean():
    p, rows = 0.3, 20000
    model = _stochastic_depth(p, "row", shape=(5,))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = model(x=torch.ones(rows, 5, dtype=torch.float64))
    dropped = (out == 0).all(dim=1)
    assert (dropped | (out == 1 / (1 - p)).all(dim=1)).all()       # each row whole: dropped or scaled
    sigma = (p * (1 - p) / rows) ** 0.5
    assert abs(dropped.double().mean().item() - p) < 4 * sigma
    assert abs(out.mean().item() - 1) < 4 * sigma / (1 - p)


def test_stochastic_depth_in_batch_mode_drops_the_whole_batch():
    p, draws = 0.3, 4000
    model = _stochastic_depth(p, "batch")
    x = torch.ones(8, 3, 4, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        outs = torch.stack([model(x=x) for _ in range(draws)])
    dropped = (outs == 0).flatten(1).all(dim=1)
    assert (dropped | (outs == 1 / (1 - p)).flatten(1).all(dim=1)).all()
    assert abs(dropped.double().mean().item() - p) < 4 * (p * (1 - p) / draws) ** 0.5


def test_a_standalone_file_copies_stochastic_depth_in():
    model = _stochastic_depth(0.5, "row")
    source = standalone_source(model)
    assert "class StochasticDepth(nn.Module):" in source
    namespace = {}
    exec(compile(source, "model.py", "exec"), namespace)
    standalone = namespace[type(model).__name__]().double()
    x = torch.randn(32, 3, 4, dtype=torch.float64)
    assert torch.equal(_forward_and_grad(standalone, x, 3)[0], _forward_and_grad(lambda t: model(x=t), x, 3)[0])


# -- located errors and the listing --------------------------------------------------------------

@pytest.mark.parametrize("op, shape, args, message", [
    ("instance_norm", [], {}, "n: `instance_norm` expects [C, L], [C, H, W] or [C, D, H, W], found []"),
    ("instance_norm", [3, 1, 1], {}, "n: `instance_norm`: a [3, 1, 1] input has one position per channel"),
    ("local_response_norm", [5], {"size": 2}, "n: `local_response_norm` expects [C, ...] with at least one dim"),
    ("dropout1d", [3, 8, 8], {}, "n: `dropout1d` expects a [C, L] input (per example), found [3, 8, 8]"),
    ("dropout3d", [3, 8, 8], {}, "n: `dropout3d` expects a [C, D, H, W] input (per example), found [3, 8, 8]"),
    ("prelu", [3, 8], {"num_parameters": 4}, "n: `prelu`: num_parameters 4 is neither 1 nor the input's 3 channels"),
    ("prelu", [], {"num_parameters": 4}, "n: `prelu`: num_parameters 4 needs a channel dim"),
])
def test_a_wrong_shape_is_an_error_at_the_node(op, shape, args, message):
    with pytest.raises(SpecError) as info:
        dagnet.load(_spec(op, shape, **args))
    assert info.value.message.startswith(message)
    assert info.value.loc.line == 5 and info.value.hint


NEW = ["relu6", "silu", "hardswish", "hardsigmoid", "elu", "selu", "prelu", "mish", "softplus",
       "instance_norm", "local_response_norm", "stochastic_depth", "dropout1d", "dropout3d"]


def test_dagnet_ops_lists_the_new_ops(capsys):
    assert main(["ops"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:1].strip()}
    assert set(NEW) <= listed
