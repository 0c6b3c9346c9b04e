"""The DSL's post-lexer, between lark's lexer and its LALR parser.

It does the two things a context-free grammar does badly: it decides which
newlines end a statement (none inside brackets, after ``->`` or before a line
starting with ``->``), and it turns a NAME into a keyword only where a keyword
can stand, so that nodes may still be called ``input`` or ``dense``. What it
saw last (open brackets, recent tokens, a joined line) is kept per thread for
the syntax-error messages of :mod:`dagnet.spec.dsl_errors`.
"""

from __future__ import annotations

import threading

from lark import Token

STATEMENT_KEYWORDS = ("model", "library", "doc", "import", "param", "input", "output", "block",
                      "loss", "train")
MODIFIER_KEYWORDS = ("repeat", "residual", "dense", "sequential", "when", "checkpoint")
OPERATOR_KEYWORDS = ("if", "else", "and", "or", "not")
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
# A newline right after one of these continues the statement on the next line.
_CONTINUES = {None, "_NL", "ARROW", "COMMA", "EQUAL", "LPAR", "LSQB", "LBRACE", "COLON", "DOT",
              "PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "POW", "COMP", "AND", "OR",
              "NOT", "IF", "ELSE", "WHEN", "REPEAT"}
# A modifier keyword can only follow the end of an item: `relu dense`, `f(x) * 2 residual`.
_ENDS_ITEM = {"NAME", "RPAR", "RSQB", "NUMBER", "STRING", "RESIDUAL", "DENSE", "SEQUENTIAL",
              "CHECKPOINT"}
_NOT_KEYWORD_BEFORE = {"EQUAL", "COLON", "PLUS", "DOT", "ARROW", "COMMA", "LPAR"}
_CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
# Brackets may nest this deep: values are built and printed recursively, and
# Python's own parser (which reads expressions) stops at 200 parentheses.
MAX_NESTING = 100


def _is_output_index(tok: Token, before: Token) -> bool:
    """``s.0`` lexes as NAME ``s`` and NUMBER ``.0``: a reference to output 0, to read as ``s`` ``.`` ``0``."""
    return tok.value[:1] == "." and tok.value[1:].isdigit() and tok.start_pos == before.end_pos


class NestedTooDeep(Exception):
    """Brackets nested past :data:`MAX_NESTING`; ``token`` is the first one too deep."""

    def __init__(self, token: Token):
        super().__init__(token)
        self.token = token


class PostLexer:
    """Newlines that end statements, and keywords where keywords can stand."""

    always_accept = ("SEMI",)

    def __init__(self):
        self.local = threading.local()      # what the last parse saw, for error messages

    def process(self, stream):
        opened: list[Token] = []            # open brackets, innermost last
        bodies: list[bool] = []             # for each: is it a block body (not a mapping)?
        recent: list[Token] = []
        self.local.opened, self.local.recent, self.local.joined = opened, recent, None
        statements = getattr(self.local, "statements", True)
        prev, pending = (None if statements else "EQUAL"), None
        stream = iter(stream)
        tok = next(stream, None)
        while tok is not None:
            nxt = next(stream, None)
            kind = "_NL" if tok.type == "SEMI" else tok.type
            if kind == "_NL":
                inside = opened and opened[-1].type != "LBRACE"
                if not inside and prev not in _CONTINUES:
                    pending = pending or Token("_NL", "\n", tok.start_pos, tok.line, tok.column)
                elif not inside and recent:
                    self.local.joined = recent[-1]      # this line continues the statement
                tok = nxt
                continue
            if pending is not None:
                in_mapping = bool(opened) and not bodies[-1]    # there a newline separates entries
                joins = kind in ("ARROW", "RBRACE") or (kind == prev == "STRING" and not in_mapping)
                if not joins:
                    yield pending
                    prev = "_NL"
                pending = None
            if kind == "NAME":
                kind = self.keyword(tok.value, prev, nxt.type if nxt is not None else None)
                tok.type = kind
            elif kind == "NUMBER" and prev == "NAME" and _is_output_index(tok, recent[-1]):
                dot = Token("DOT", ".", tok.start_pos, tok.line, tok.column, tok.line, tok.column + 1,
                            tok.start_pos + 1)
                recent.append(dot)
                yield dot
                tok = Token("NUMBER", tok.value[1:], tok.start_pos + 1, tok.line, tok.column + 1,
                            tok.end_line, tok.end_column, tok.end_pos)
            if kind in ("LPAR", "LSQB", "LBRACE"):
                opened.append(tok)
                if len(opened) > MAX_NESTING:
                    raise NestedTooDeep(tok)
                bodies.append(kind == "LBRACE" and prev in ("NAME", "RPAR"))   # `block b(...) {`
            elif kind in _CLOSERS and opened:
                opened.pop()
                bodies.pop()
            recent.append(tok)
            del recent[:-4]
            yield tok
            prev, tok = kind, nxt

    @staticmethod
    def keyword(word: str, prev: str | None, nxt: str | None) -> str:
        if word in OPERATOR_KEYWORDS:
            return word.upper()
        if word in STATEMENT_KEYWORDS and prev in (None, "_NL", "LBRACE") and nxt not in _NOT_KEYWORD_BEFORE:
            return word.upper()
        if word in MODIFIER_KEYWORDS and prev in _ENDS_ITEM:
            return word.upper()
        return "NAME"
