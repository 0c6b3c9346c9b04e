"""One exception family for everything wrong with a spec.

Every error raised before emission carries the source location of the construct
at fault, so the CLI can print ``file:line:col: error: message`` and a hint.

A mistake inside a block body is met once per use of the block; the
:class:`ErrorLog` keeps one error per mistake (same message, same place) and
lists the uses it affects, so a typo in a block used 17 times is one error.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

MAX_USES_SHOWN = 6


@dataclass(frozen=True)
class Loc:
    """A position in a spec file; line and column are 1-based."""

    file: str = "<spec>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(Exception):
    """A problem with a spec, located at ``loc``; ``hint`` says how to fix it."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc or Loc()
        self.hint = hint

    @property
    def identity(self) -> tuple:
        """Two errors with the same identity are the same mistake, met twice."""
        return (self.message, self.loc, self.hint)

    def __str__(self) -> str:
        text = f"{self.loc}: error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecErrors(SpecError):
    """Several independent errors found in one pass, reported together, once each, in file order."""

    def __init__(self, errors: list[SpecError]):
        unique: dict[tuple, SpecError] = {}
        for error in errors:
            unique.setdefault(error.identity, error)                # the first of each, in order
        errors = sorted(unique.values(), key=lambda e: (e.loc.file, e.loc.line, e.loc.col))
        super().__init__(errors[0].message, errors[0].loc, errors[0].hint)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class ErrorLog:
    """Collects errors so that one run reports all it can find, not only the first.

    While a block use is being expanded (:meth:`in_use`), each error logged
    remembers the use; an error met again in another use is not logged twice,
    and :meth:`raise_if_any` names the uses it was met in.
    """

    def __init__(self) -> None:
        self.errors: list[SpecError] = []
        self.logged = 0                 # errors met, repeats included: grows with every `add`
        self._seen: dict[tuple, SpecError] = {}
        self._uses_of_error: dict[tuple, list[tuple[str, str]]] = {}
        self._uses_of_block: dict[str, dict[str, None]] = {}       # block -> its uses, in order
        self._use_stack: list[tuple[str, str]] = []         # (block, path of the use)

    def add(self, message: str, loc: Loc | None = None, hint: str | None = None) -> None:
        self.record(SpecError(message, loc, hint))

    def extend(self, error: SpecError) -> None:
        for e in error.errors if isinstance(error, SpecErrors) else [error]:
            self.record(e)

    def record(self, error: SpecError) -> None:
        """Log ``error`` unless the same mistake is already logged; note the block use it came from."""
        self.logged += 1
        key = error.identity
        if key not in self._seen:
            self._seen[key] = error
            self.errors.append(error)
        if self._use_stack:
            block, path = self._use_stack[-1]
            self._uses_of_error.setdefault(key, [])
            if (block, path) not in self._uses_of_error[key]:
                self._uses_of_error[key].append((block, path))

    @contextmanager
    def in_use(self, block: str | None, path: str | None):
        """Errors logged inside belong to the use ``path`` of ``block`` (to no use if None)."""
        if block is None:
            yield
            return
        self._uses_of_block.setdefault(block, {})[path] = None
        self._use_stack.append((block, path))
        try:
            yield
        finally:
            self._use_stack.pop()

    def reported(self) -> list[SpecError]:
        """The errors as reported: one per mistake, naming the block uses when a block has several."""
        return [self._with_uses(e) for e in self.errors]

    def _with_uses(self, error: SpecError) -> SpecError:
        uses = self._uses_of_error.get(error.identity)
        if not uses:
            return error
        block = uses[0][0]
        total = len(self._uses_of_block.get(block, ()))
        if total < 2:
            return error            # the location alone says which use
        paths = [p for b, p in uses if b == block]
        return SpecError(f"{error.message} ({uses_text(block, paths, total)})", error.loc, error.hint)

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecErrors(self.reported())


def uses_text(block: str, paths: list[str], total: int) -> str:
    """``in all 3 uses of block `b`: `x`, `y`, `z``` or ``in 1 of 3 uses of block `b`: `y```."""
    shown = ", ".join(f"`{p}`" for p in paths[:MAX_USES_SHOWN])
    if len(paths) > MAX_USES_SHOWN:
        shown += f" and {len(paths) - MAX_USES_SHOWN} more"
    count = f"all {total}" if len(paths) == total else f"{len(paths)} of {total}"
    return f"in {count} uses of block `{block}`: {shown}"


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def max_typo_distance(name: str) -> int:
    """How many edits still look like a typo: none but case in one or two letters (`x` is no
    misspelt `y`), 1 up to 4 letters, 2 up to 10, else 3."""
    return 0 if len(name) <= 2 else 1 if len(name) <= 4 else 2 if len(name) <= 10 else 3


def closest(name, candidates) -> str | None:
    """The candidate a typo of ``name`` most likely meant, or None when none is a few edits away.

    Case is ignored (``Conv2d`` finds ``conv2d``); of equally close candidates the
    first given wins. The distance is bounded because a similarity ratio alone
    offers names that merely share letters: ``lstm_cell`` is no misspelt ``lstm``.
    """
    name = str(name)
    best, best_distance = None, max_typo_distance(name) + 1
    for candidate in dict.fromkeys(str(c) for c in candidates):
        if candidate == name:
            continue
        distance = edit_distance(name.lower(), candidate.lower())
        if distance < best_distance:
            best, best_distance = candidate, distance
    return best


def did_you_mean(name: str, candidates) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    close = closest(name, candidates)
    return f"did you mean `{close}`?" if close else None
