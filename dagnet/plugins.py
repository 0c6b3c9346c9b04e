"""Custom ops from outside dagnet, loaded only when the user asks.

A spec can never import code: an op a spec names must already be in the
registry. Code that adds ops comes in only through this explicit door: the
``--plugin MODULE`` flag (or ``load_plugins(["module"])``), or, with
``--entry-point-plugins``, every installed package's ``dagnet.ops`` entry
point. A plugin module registers its ops with :func:`dagnet.ops.register`.
"""

from __future__ import annotations

import importlib
from importlib import metadata

ENTRY_POINT_GROUP = "dagnet.ops"


def load_plugins(modules=(), entry_points: bool = False) -> list[str]:
    """Import the given plugin modules (and, if asked, the entry points); return what was loaded."""
    loaded = []
    for name in modules:
        importlib.import_module(name)
        loaded.append(name)
    if entry_points:
        for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            point.load()
            loaded.append(f"{point.name} ({point.value})")
    return loaded
