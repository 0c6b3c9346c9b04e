"""Syntax errors of the DSL in words: what was found, what fits there, and a fix.

LALR's own lookahead sets are too generous, so the expected tokens come from
lark's interactive parser; the post-lexer's record of the last parse (open
brackets, the last few tokens, a line that continued the previous one) turns
the common mistakes into hints.
"""

from __future__ import annotations

from functools import lru_cache

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput

from dagnet.errors import Loc, SpecError, did_you_mean
from dagnet.spec.dsl_lexer import MODIFIER_KEYWORDS, STATEMENT_KEYWORDS


EXCERPT_CHARS = 100     # of a long line, only this much around the column is shown


@lru_cache(maxsize=4)
def _lines(text: str) -> list[str]:
    """The lines of a text, split once however many errors it has (a list not to be changed)."""
    return text.split("\n")


def excerpt(text: str, loc: Loc, width: int = 1) -> str:
    """The source line of ``loc`` with a caret under the column, for error messages.

    A long line is cut to :data:`EXCERPT_CHARS` around the column, and control
    characters show as U+FFFD: a spec's bytes never reach the terminal raw.
    """
    lines = _lines(text)
    if not 1 <= loc.line <= len(lines):
        return ""
    line = lines[loc.line - 1].rstrip("\r")
    col = max(loc.col - 1, 0)
    start = max(0, min(col - EXCERPT_CHARS // 2, len(line) - EXCERPT_CHARS))
    shown = line[start:start + EXCERPT_CHARS]
    before, after = ("..." if start else ""), ("..." if start + EXCERPT_CHARS < len(line) else "")
    shown = "".join(c if c.isprintable() or c in "\t " else "\ufffd" for c in shown)
    pad = " " * len(before) + "".join(c if c == "\t" else " " for c in shown[: col - start])
    return f"\n    {before}{shown}{after}\n    {pad}{'^' * max(width, 1)}"


_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "the end of the line",
    "$END": "the end of the file", "COMP": "a comparison", "ARROW": "`->`", "EQUAL": "`=`",
    "COMMA": "`,`", "COLON": "`:`", "DOT": "`.`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`",
    "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`",
    "SLASH": "`/`", "DSLASH": "`//`", "PERCENT": "`%`", "POW": "`**`",
}
_VALUE_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "LBRACE", "MINUS", "PLUS", "NOT"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "POW", "COMP", "AND", "OR", "IF"}
_MODIFIERS = {"STAR", "REPEAT", "RESIDUAL", "DENSE", "SEQUENTIAL", "WHEN", "CHECKPOINT"}
_ORDER = ["EQUAL", "ARROW", "COMMA", "RPAR", "RSQB", "RBRACE", "COLON", "LSQB", "LPAR", "LBRACE",
          "NAME", "STRING", "NUMBER", "DOT", "PLUS", "_NL", "$END"]


def _word(kind: str) -> str:
    return _WORDS.get(kind) or f"`{kind.lower()}`"


def describe(tok: Token) -> str:
    """How a token reads in a message: name `x`, `(`, the end of the line, ..."""
    if tok.type in ("NAME", "NUMBER"):
        return f"{tok.type.lower()} `{tok.value}`"
    if tok.type == "STRING":
        return f"string {tok.value}"
    if tok.type in ("_NL", "$END"):
        return _WORDS[tok.type][4:]         # "end of the line" reads better after "unexpected"
    return f"`{tok.value}`"


def expected_words(expected) -> str:
    """Expected terminals in words, with values, operators and modifiers summarised."""
    rest, words, tail = set(expected), [], []
    if "_NL" in rest:
        rest.discard("$END")
    if {"NAME", "NUMBER", "STRING"} <= rest:
        words.append("a value")
        rest -= _VALUE_START
    if len(rest & _MODIFIERS) >= 3:
        tail.append("a modifier (`* N`, `residual`, `dense`, `when`, `checkpoint`)")
        rest -= _MODIFIERS
    if len(rest & _OPERATORS) >= 3:
        tail.append("an operator")
        rest -= _OPERATORS
    words += [_word(k) for k in sorted(rest, key=lambda k: (_ORDER.index(k) if k in _ORDER else 50, k))]
    words += tail
    if len(words) > 1:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return words[0] if words else "something else"


def syntax_error(exc: UnexpectedInput, text: str, file: str, seen) -> SpecError:
    """The SpecError for a failed parse; ``seen`` is the post-lexer's record of it."""
    if isinstance(exc, UnexpectedCharacters):
        loc = Loc(file, exc.line, exc.column)
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if char in "\"'":
            return SpecError("unterminated string" + excerpt(text, loc), loc,
                             "close it on the same line; to continue a long string, write "
                             "two strings side by side")
        return SpecError(f"unexpected character `{char}`" + excerpt(text, loc), loc,
                         {"<": "chains run left to right: `name = input -> op(...)`",
                          "!": "write `not x` for negation and `!=` for inequality",
                          "&": "write `and`", "|": "write `or`"}.get(char))
    tok = exc.token
    recent = list(getattr(seen, "recent", []))
    if recent and recent[-1] is tok:
        recent.pop()
    prev = recent[-1] if recent else None
    if tok.type == "$END" and prev is not None:
        loc = Loc(file, prev.end_line, prev.end_column)
    else:
        loc = Loc(file, tok.line, tok.column)
    try:        # the tokens that truly fit here (LALR's own lookahead sets are too generous)
        expected = set(exc.interactive_parser.accepts())
    except Exception:                   # noqa: BLE001 - fall back to lark's list
        expected = set(getattr(exc, "expected", ()) or ())
    message = f"unexpected {describe(tok)}; expected {expected_words(expected)}"
    hint = _hint(tok, prev, recent, expected, text, seen)
    width = len(tok.value) if tok.type not in ("_NL", "$END") else 1
    return SpecError(message + excerpt(text, loc, width), loc, hint)


def _hint(tok, prev, recent, expected, text, seen) -> str | None:
    """A fix for the common mistakes; None when the expected tokens say enough."""
    kind = tok.type
    at_start = prev is not None and prev.type == "NAME" and expected <= {"EQUAL", "DOT", "PLUS", "ARROW"}
    if at_start and "ARROW" not in expected and kind != "EQUAL":
        if kind == "COLON":
            yaml = text.lstrip().startswith("dagnet:")
            return ("this looks like YAML: name the file `.yaml`" if yaml else
                    f"a node is written `{prev.value} = <input> -> <op>(...)`")
        if kind == "ARROW":
            return f"a chain needs a name: `name = {prev.value} -> ...`"
        return (did_you_mean(prev.value, STATEMENT_KEYWORDS)
                or "a statement is `name = input -> op(...)` or starts with "
                   "model, param, input, block, output, import, loss or train")
    if kind == "LPAR" and "ARROW" in expected and len(recent) >= 3 and recent[-2].type == "EQUAL":
        return f"a node names its input first: `{recent[-3].value} = <input> -> {prev.value}(...)`"
    if kind == "COMP" and tok.value == "<" and text.startswith("-", tok.end_pos):
        return "chains run left to right: `name = input -> op(...)`"
    if kind == "EQUAL" and "COMP" in expected:
        return "compare with `==`"
    if kind in ("LPAR", "COLON") and expected == {"LSQB"}:
        return "write the shape in brackets: `input image[3, H, W]`"
    if kind == "NAME" and expected & _MODIFIERS:
        close = did_you_mean(tok.value, MODIFIER_KEYWORDS)
        if close:
            return close
    opened = getattr(seen, "opened", [])
    if opened and (kind == "$END" or (prev is not None and tok.line > prev.line)):
        left = opened[-1]
        return f"the `{left.value}` at line {left.line}, column {left.column} is not closed"
    joined = getattr(seen, "joined", None)
    if joined is not None and kind != "$END" and 0 < tok.line - joined.line <= 1:
        return (f"line {joined.line} ends with `{joined.value}`, so line {tok.line} continues it: "
                "finish the statement on its own line")
    return None
