"""Deferred imports, so that reading, checking and drawing a spec never loads torch.

``nn = lazy("torch.nn")`` is a stand-in whose attribute lookups import the
module on first use. The op registry reaches PyTorch only through such
stand-ins, and only inside build rules, which run when a model is built: so
``dagnet check``, ``summary`` and ``render`` start in a fraction of a second,
where importing torch alone takes about 1.5 s.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """A module imported on first attribute access (``sys.modules`` caches it after that)."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
