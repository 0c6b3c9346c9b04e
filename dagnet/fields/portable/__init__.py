"""Portable twins of the structured nodes: what every deployment format runs.

A field of :mod:`dagnet.fields` picks its fastest eager kernel by looking at the data
(is the mask a prefix, are the potentials tame, is T long). Deployment needs one code
path without such decisions: each *twin* here is an ``nn.Module`` with exactly the
field's parameter and buffer names (state dicts load 1:1), the methods a compiled
model calls (``marginals``, ``log_prob``) and the queries ``log_partition``, ``decode``
and ``nll``, written in torch alone with no Python decision on tensor values or
sizes: plain loops in eager and TorchScript, traced loops under ``torch.export``.
A twin that covers only some settings of its field says why it refuses the others in
a classmethod ``refusal(field)`` (the non-projective DependencyCRF).

Each twin file imports only torch (and typing) and prefixes its private names with
its own name, so that a standalone model file (``dagnet compile -o model.py``) holds
the source of the files it needs, one after another. :func:`portable` swaps every
field of a model for its twin; ``dagnet.export`` and ``dagnet.emit`` use it for
.pt, .pt2, .onnx and .py.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path

from torch import nn

# the real field's class name -> (file in this package, twin class name)
TWINS = {
    "ChainCRF": ("chain", "ChainCRF"),
    "HiddenCRF": ("chain", "HiddenCRF"),
    "LatentDynamicCRF": ("chain", "LatentDynamicCRF"),
    "TreeCRF": ("tree", "TreeCRF"),
    "GridCRF": ("grid", "GridCRF"),
    "DenseCRF": ("dense", "DenseCRF"),
    "SemiMarkovCRF": ("semi_markov", "SemiMarkovCRF"),
    "CKYCRF": ("cky", "CKYCRF"),
    "DependencyCRF": ("dependency", "DependencyCRF"),
}


def _entry(field: nn.Module | type) -> tuple[str, str]:
    from dagnet.export import ExportError
    name = field.__name__ if isinstance(field, type) else type(field).__name__
    entry = TWINS.get(name)
    if entry is None:
        raise ExportError(f"the structured node {name} has no portable twin yet, so it cannot be deployed "
                          f"(.py, .pt, .pt2, .onnx); fields that can: {', '.join(TWINS)}")
    refusal = getattr(_twin_class(entry), "refusal", None)  # a twin may cover only some settings
    reason = refusal(field) if refusal is not None and not isinstance(field, type) else ""
    if reason:
        raise ExportError(f"the structured node {name} cannot be deployed (.py, .pt, .pt2, .onnx): {reason}")
    return entry


def _twin_class(entry: tuple[str, str]) -> type:
    module, name = entry
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def twin_class(field: nn.Module | type) -> type:
    """The twin class of a field (or field class); an ExportError if it has none."""
    return _twin_class(_entry(field))


def twin(field: nn.Module) -> nn.Module:
    """The portable twin of ``field``, holding a copy of its parameters and buffers."""
    return twin_class(field).from_field(field)


def fields(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, field) for every structured node in ``model``, outermost first; a field held
    at two paths is listed at both."""
    from dagnet.fields.protocol import Field
    found = []
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, Field) and not any(path.startswith(p + ".") for p, _ in found):
            found.append((path, module))
    return found


def portable(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (a compiled module, or one wrapping it, such as
    ``dagnet.deploy.standardized``) with every field replaced by its twin."""
    found = fields(model)
    if not found:
        return model
    for _, field in found:
        _entry(field)  # refuse before copying anything
    copied = copy.deepcopy(model)
    twins = {}  # one twin per field, wherever it is held
    for path, field in fields(copied):
        parent, _, name = path.rpartition(".")
        setattr(copied.get_submodule(parent), name, twins.setdefault(id(field), twin(field)))
    return copied


def source_files(model: nn.Module) -> list[Path]:
    """The twin files a model's fields need, in the order of ``TWINS``."""
    needed = {_entry(field)[0] for _, field in fields(model)}
    files = dict.fromkeys(module for module, _ in TWINS.values() if module in needed)
    return [Path(__file__).with_name(f"{module}.py") for module in files]
