"""Choosing a front end: a spec file's suffix names the one that reads it.

:func:`load_spec` is the one way a spec file (or spec text) becomes a Spec:
``dagnet.load``, the exporters and the block imports of both front ends call
it, so a YAML spec and a ``.dag`` spec can import each other's libraries.
The front ends are imported when first needed: checking a YAML spec does not
build the DSL's parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagnet.spec.model import Spec
from dagnet.spec.source import FORMATS, read_source

if TYPE_CHECKING:       # dagnet.spec.imports loads libraries with load_spec
    from dagnet.spec.imports import ImportStack


def spec_format(file) -> str:
    """``"dag"`` or ``"yaml"``: the front end a file's suffix names.

    Text given directly (``<spec>``) and a file with another suffix are read as YAML,
    as they always were.
    """
    return FORMATS.get(Path(str(file)).suffix, "yaml")


def load_spec(source, *, library: bool = False, _stack: ImportStack | None = None) -> Spec:
    """Read a spec (a path, or text) and parse it with the front end its suffix names.

    ``library`` allows a file of blocks only (an import target); ``_stack`` is
    the :class:`~dagnet.spec.imports.ImportStack` of the files importing this
    one (None for a spec loaded on its own).
    """
    text, file = read_source(source)
    return parse_spec(text, file, library=library, _stack=_stack)


def parse_spec(text: str, file: str, *, library: bool = False, _stack: ImportStack | None = None) -> Spec:
    """Parse spec ``text`` read from ``file`` with the front end the file's suffix names."""
    if spec_format(file) == "dag":
        from dagnet.spec.dsl import parse_dsl
        return parse_dsl(text, file, library=library, _stack=_stack)
    from dagnet.spec.yaml_loader import parse_yaml_spec
    return parse_yaml_spec(text, file, library=library, _stack=_stack)
