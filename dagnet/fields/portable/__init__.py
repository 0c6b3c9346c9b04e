"""Portable twins of the fields: the same inference in plain, branch-free torch.

A twin is an ``nn.Module`` with the field's parameter and buffer names (state
dicts load 1:1) whose methods have no data-dependent Python branch and no
data-dependent shape, so ``torch.export``, the ONNX exporter and TorchScript
capture them. Each twin lives in a file that imports only torch, so that a
standalone ``.py`` model can paste it in verbatim.
"""
from __future__ import annotations

import copy
import importlib
import inspect

from torch import nn

from dagnet.fields.protocol import Field

# a field's class name -> (file in this package, its twin's class name)
TWINS = {
    "TreeCRF": ("tree", "TreeCRF"),
    "GridCRF": ("grid", "GridCRF"),
    "DenseCRF": ("dense", "DenseCRF"),
}


def _twin_class(field: nn.Module) -> type:
    name = type(field).__name__
    if name not in TWINS:
        raise ValueError(f"{name} has no portable twin; fields with one: {', '.join(TWINS)}")
    file, cls = TWINS[name]
    return getattr(importlib.import_module(f"{__name__}.{file}"), cls)


def twin(field: nn.Module) -> nn.Module:
    """The portable twin of ``field``, sharing its parameters' values."""
    return _twin_class(field).from_field(field)


def portable(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every field submodule replaced by its twin."""
    model = copy.deepcopy(model)
    for name, sub in list(model.named_modules()):
        if isinstance(sub, Field) and name:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, twin(sub))
    return model


def source_files(model: nn.Module) -> list[str]:
    """The source of the twin files that ``model``'s fields need, each once, in TWINS order."""
    files = {TWINS[type(m).__name__][0] for m in model.modules() if isinstance(m, Field)}
    return [inspect.getsource(importlib.import_module(f"{__name__}.{file}"))
            for file, _ in TWINS.values() if file in files]
