"""Every structured node's queries on CUDA against the CPU, in float64 (marked `cuda`;
they skip without a GPU; ``DAGNET_CUDA_TEST_DEVICE=cpu`` runs them CPU against CPU).

The same field (the node of tests/test_fields_ops.py's one-node specs) answers every
query it declares on both devices, with ragged masks and partly unlabelled targets:
values, labels and the gradients of the nll by the potentials and the field's own
parameters agree to float64 rounding; samples are checked for shape, range and the
absent positions, and for the exact chain and tree, their frequencies against the
marginals.
"""
import copy

import pytest
import torch

import dagnet
from test_cuda_ops import DEVICE, needs_device
from test_fields_ops import CASES

pytestmark = pytest.mark.cuda
B = 3


def _ragged(T: int, g) -> torch.Tensor:
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    lengths[0] = T
    return torch.arange(T) < lengths[:, None]


def problem(name: str, g: torch.Generator) -> dict:
    """potentials, mask, labels (-1 for some), extra keyword arguments, and the label range."""
    K = {"chain_crf": 4, "tree_crf": 3, "grid_crf": 3, "dense_crf": 3, "hidden_crf": 3, "latent_dynamic_crf": 3}[name]
    shape = {"chain_crf": (7, 4), "tree_crf": (5, 3), "grid_crf": (3, 5, 6), "dense_crf": (3, 9, 7),
             "hidden_crf": (7, 4), "latent_dynamic_crf": (7, 6)}[name]
    x = 2 * torch.randn(B, *shape, generator=g, dtype=torch.float64)
    kwargs, mask = {}, None
    if name in ("chain_crf", "hidden_crf", "latent_dynamic_crf"):
        mask = _ragged(shape[0], g)
    elif name == "grid_crf":
        mask = torch.rand(B, *shape[1:], generator=g) > 0.15
        mask[0] = True
    elif name == "dense_crf":
        kwargs["image"] = 255 * torch.rand(B, 3, *shape[1:], generator=g, dtype=torch.float64)
    label_shape = {"hidden_crf": (B,), "grid_crf": (B, *shape[1:]), "dense_crf": (B, *shape[1:])}.get(name, (B, shape[0]))
    labels = torch.randint(0, K, label_shape, generator=g)
    if name != "hidden_crf":
        labels = labels.masked_fill(torch.rand(label_shape, generator=g) < 0.2, -1)
    return {"x": x, "mask": mask, "labels": labels, "kwargs": kwargs, "K": K}


def field_pair(name: str):
    text, _, _ = CASES[name]
    torch.manual_seed(0)
    field = dagnet.compile(f"dagnet: 1\n{text}outputs: [crf]\n").get_submodule("crf").double()
    with torch.no_grad():                         # parameters off their (often symmetric) initial values
        for p in field.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype))
    return field, copy.deepcopy(field).to(DEVICE)


def to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to(v, device) for k, v in value.items()}
    return value


def close(got, ref, what):
    if isinstance(ref, (tuple, list)):
        for a, b in zip(got, ref):
            close(a, b, what)
        return
    assert got.device.type == DEVICE.type, what
    if ref.is_floating_point():
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-7, atol=1e-9, msg=lambda m: f"{what}: {m}")
    else:
        assert torch.equal(got.cpu(), ref), what


def ask(field, query: str, p: dict):
    """One query, as the protocol names its arguments."""
    x, mask, labels, kw = p["x"], p["mask"], p["labels"], p["kwargs"]
    if query in ("log_partition", "marginals", "entropy", "decode"):
        return getattr(field, query)(x, mask, **kw)
    if query == "kbest":
        return field.kbest(x, 3, mask, **kw)
    if query == "score":
        return field.score(x, labels.clamp(min=0), mask, **kw)
    raise AssertionError(query)


@pytest.mark.parametrize("name", sorted(CASES))
def test_field_queries_on_the_device_equal_the_cpu(name):
    needs_device()
    cpu, dev = field_pair(name)
    p = problem(name, torch.Generator().manual_seed(1))
    q = to(p, DEVICE)
    answered = cpu.exact | cpu.approximate
    for query in sorted(answered - {"sample", "nll"}):
        with torch.no_grad():
            close(ask(dev, query, q), ask(cpu, query, p), f"{name}.{query}")

    if "nll" in answered:                          # the loss and its gradients
        grads = []
        for field, data in ((cpu, p), (dev, q)):
            x = data["x"].clone().requires_grad_()
            field.zero_grad(set_to_none=True)
            loss = field.nll(x, data["labels"], data["mask"], reduction="sum", **data["kwargs"])
            loss.backward()
            grads.append([loss, x.grad] + [t.grad for t in field.parameters() if t.grad is not None])
        assert len(grads[0]) == len(grads[1])
        close(grads[1], grads[0], f"{name}.nll and its gradients")


@pytest.mark.parametrize("name", sorted(CASES))
def test_field_samples_on_the_device(name):
    needs_device()
    cpu, dev = field_pair(name)
    if not cpu.supports("sample"):
        pytest.skip(f"{name} does not sample")
    p = to(problem(name, torch.Generator().manual_seed(2)), DEVICE)
    n = 4000 if name in ("chain_crf", "tree_crf") else 20
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    samples = dev.sample(p["x"], n, p["mask"], generator=generator, **p["kwargs"])
    assert samples.device.type == DEVICE.type and samples.shape == (n, *p["labels"].shape)
    mask = p["mask"]                               # the hidden CRF's mask is over frames, its label one per sequence
    present = mask if mask is not None and mask.shape == p["labels"].shape else torch.ones_like(p["labels"], dtype=torch.bool)
    assert bool((samples[:, present] >= 0).all() and (samples[:, present] < p["K"]).all())
    assert bool((samples[:, ~present] == -1).all())
    if name in ("chain_crf", "tree_crf"):
        with torch.no_grad():
            marginals = cpu.marginals(p["x"].cpu(), None if p["mask"] is None else p["mask"].cpu())
        counts = torch.nn.functional.one_hot(samples.clamp(min=0).cpu(), p["K"]).double().mean(0)
        counts = counts * present.cpu()[..., None]
        assert float((counts - marginals).abs().max()) < 0.05


@pytest.mark.parametrize("name", sorted(CASES))
def test_structured_spec_on_the_device_equals_the_cpu(name):
    """The compiled one-node spec (the emitted module around the field) on both devices."""
    needs_device()
    text, shapes, _ = CASES[name]
    torch.manual_seed(0)
    model = dagnet.compile(f"dagnet: 1\n{text}outputs: [crf]\n").double()
    g = torch.Generator().manual_seed(3)
    inputs = {k: torch.rand(2, *s, generator=g, dtype=torch.float64) * (255 if k == "image" else 1)
              for k, s in shapes.items()}
    with torch.no_grad():
        close(copy.deepcopy(model).to(DEVICE)(**to(inputs, DEVICE)), model(**inputs), name)
