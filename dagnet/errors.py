"""One exception family for everything wrong with a spec.

Every error raised before emission carries the source location of the construct
at fault, so the CLI can print ``file:line:col: error: message`` and a hint.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


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

    def __str__(self) -> str:
        text = f"{self.loc}: error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecErrors(SpecError):
    """Several independent errors found in one pass, reported together."""

    def __init__(self, errors: list[SpecError]):
        errors = sorted(errors, key=lambda e: (e.loc.file, e.loc.line, e.loc.col))
        super().__init__(errors[0].message, errors[0].loc, errors[0].hint)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class ErrorLog:
    """Collects errors so that one run reports all it can find, not only the first."""

    def __init__(self) -> None:
        self.errors: list[SpecError] = []

    def add(self, message: str, loc: Loc | None = None, hint: str | None = None) -> None:
        self.errors.append(SpecError(message, loc, hint))

    def extend(self, error: SpecError) -> None:
        self.errors.extend(error.errors if isinstance(error, SpecErrors) else [error])

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecErrors(self.errors)


def did_you_mean(name: str, candidates) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
