"""Block imports, resolved in one place for every front end.

A spec names other spec files (``import "lib.dag"`` in the DSL, ``imports:
[lib.yaml]`` in YAML), relative to its own folder, whose blocks become usable
in it. Each imported file is loaded by :func:`~dagnet.spec.frontends.load_spec`,
with the front end its suffix names, so a YAML spec imports a ``.dag`` library
and a ``.dag`` spec a YAML one, and an imported file's own imports come along.
Every problem is located at the import that causes it: a file that does not
exist, an import cycle (reported once, with the chain of files), two different
blocks of one name that two imports bring (one library reached along two import
paths is fine), and a block defined in a file that also imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.spec.frontends import load_spec
from dagnet.spec.model import BlockSpec, Spec


@dataclass(frozen=True)
class ImportStack:
    """The files being loaded, from the spec loaded first to the one importing now (resolved paths).

    ``reported`` is shared by every stack grown from the same first spec, so that
    a cycle met along several import paths is reported once.
    """

    files: tuple[str, ...]
    reported: set = field(default_factory=set, compare=False)

    @classmethod
    def start(cls, file: str) -> ImportStack:
        return cls((str(Path(file).resolve()),))

    def push(self, target: str) -> ImportStack:
        return ImportStack(self.files + (target,), self.reported)

    def cycle_to(self, target: str) -> str | None:
        """The chain ``a -> b -> a`` if importing ``target`` closes a cycle not yet reported, else None."""
        cycle = frozenset(self.files[self.files.index(target):])
        if cycle in self.reported:
            return None
        self.reported.add(cycle)
        return " -> ".join(self.files + (target,))


def import_blocks(file: str, imports: list[tuple[str, Loc]], stack: ImportStack | None,
                  errors: ErrorLog) -> dict[str, BlockSpec]:
    """The blocks of the files named by ``imports`` ((path as written, where), relative to ``file``).

    ``stack`` holds the files importing ``file`` (None when ``file`` is the spec loaded first).
    """
    if not imports:
        return {}
    stack = stack or ImportStack.start(file)
    base = Path(file).parent if file and not file.startswith("<") else Path.cwd()
    imported: dict[str, BlockSpec] = {}
    for path, loc in imports:
        library = _load_library(base, path, loc, stack, errors)
        for name, block in library.blocks.items() if library else ():
            first = imported.get(name)
            if first is not None and first.loc != block.loc:   # the same block along two paths is fine
                errors.add(f"block `{name}` is imported twice: defined at {first.loc.file}:{first.loc.line} "
                           f"and at {block.loc.file}:{block.loc.line}", loc, "rename one of them")
            imported[name] = block
    return imported


def _load_library(base: Path, path: str, loc: Loc, stack: ImportStack, errors: ErrorLog) -> Spec | None:
    """The spec file ``path`` names, loaded as an import target; None (and errors logged) if it fails."""
    target = (base / path).resolve()
    if str(target) in stack.files:
        chain = stack.cycle_to(str(target))
        if chain is not None:
            errors.add(f"import cycle: {chain}", loc, "remove one of the imports")
        return None
    if not target.is_file():
        errors.add(f"cannot import `{path}`: no such file ({target})", loc)
        return None
    try:
        return load_spec(_shown(target), library=True, _stack=stack.push(str(target)))
    except SpecError as exc:
        errors.extend(exc)
        return None


def _shown(target: Path) -> Path:
    """How an imported file is named in messages: relative to the working folder when inside it."""
    rel = os.path.relpath(target)
    return Path(rel) if not rel.startswith("..") else target


def merge_blocks(imported: dict[str, BlockSpec], own: dict[str, BlockSpec],
                 errors: ErrorLog) -> dict[str, BlockSpec]:
    """A file's blocks: the imported ones, then its own; a name in both is an error at the definition."""
    for name, block in own.items():
        if name in imported:
            errors.add(f"block `{name}` is defined here and imported", block.loc)
    return {**imported, **own}
