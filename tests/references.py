"""The libraries dagnet's specs stand for, as test references.

torchvision's wheel for torch 2.13 registers fake kernels for its compiled
`nms` and `qnms` ops on import, which fails against the CPU build of torch
("operator torchvision::nms does not exist"). Defining the two op schemas
first makes every classification model constructible; none of them calls the
compiled ops.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn


@functools.cache
def torchvision():
    """The torchvision package, or skip the test when it is not installed."""
    try:
        torch.ops.torchvision.nms
    except (AttributeError, RuntimeError):
        library = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive by the registry)
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        torchvision.library = library
    return pytest.importorskip("torchvision")


def copy_in_order(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s state into ``target`` entry by entry, in registration order.

    Two modules built from the same architecture register their parameters and
    buffers in the same order under different names; every pair must agree in
    shape, so a model that differs anywhere fails here rather than later.
    """
    ours, theirs = target.state_dict(), source.state_dict()
    assert len(ours) == len(theirs), f"{len(theirs)} tensors to copy into {len(ours)}"
    for (their_key, value), (our_key, slot) in zip(theirs.items(), ours.items()):
        assert value.shape == slot.shape, f"{their_key} {tuple(value.shape)} vs {our_key} {tuple(slot.shape)}"
    target.load_state_dict(dict(zip(ours, theirs.values())))


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every floating-point tensor of the state random values (running variances
    positive), so that equal outputs mean equal computations, not equal initialisations."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if not value.dtype.is_floating_point:
                continue
            noise = torch.rand if key.endswith("running_var") else torch.randn
            value.copy_(noise(value.shape, generator=generator) * (1.0 if key.endswith("running_var") else 0.05)
                        + (0.5 if key.endswith("running_var") else 0.0))
    return module


def spec_parameters(spec: str, params: dict | None = None) -> int:
    """`dagnet summary`'s parameter count of specs/<spec>.yaml with the given parameters."""
    import dagnet
    from dagnet.summary import summarize
    from tests.conftest import SPECS
    return sum(r.params for r in summarize(dagnet.load(SPECS / f"{spec}.yaml", params or {})))


def assert_same_outputs(reference: nn.Module, spec: str, params: dict | None = None, size: int = 64) -> nn.Module:
    """Compile specs/<spec>.yaml, copy ``reference``'s weights in (after randomising them) and check
    the two give exactly the same outputs on a batch of two ``size`` x ``size`` images, in eval mode.
    Returns the compiled model, for further checks."""
    import dagnet
    from tests.conftest import SPECS
    reference = randomise(reference).eval()
    model = dagnet.compile(dagnet.load(SPECS / f"{spec}.yaml", params or {})).eval()
    copy_in_order(reference, model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    return model


def marked_slow(names, slow) -> list:
    """pytest parameters over ``names``, those in ``slow`` marked slow (`make test-slow`)."""
    return [pytest.param(n, marks=[pytest.mark.slow] if n in slow else []) for n in sorted(names)]
