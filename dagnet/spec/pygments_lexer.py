"""A Pygments lexer for the dagnet DSL, so that docs show ``.dag`` specs highlighted.

    from dagnet.spec.pygments_lexer import DagnetLexer
    pygments.highlight(text, DagnetLexer(), HtmlFormatter())

Registered for Sphinx/MkDocs through the ``pygments.lexers`` entry point
``dagnet = dagnet.spec.pygments_lexer:DagnetLexer`` (code blocks tagged ``dagnet``).
Highlighting is lexical: a keyword-looking word is coloured as a keyword even
where the parser would read it as a name (a node called ``dense``).
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String, Text,
                            Whitespace)

STATEMENTS = ("model", "library", "doc", "import", "param", "input", "output", "block", "loss", "train")
MODIFIERS = ("repeat", "residual", "dense", "sequential", "when", "checkpoint")


class DagnetLexer(RegexLexer):
    name = "dagnet"
    aliases = ["dagnet", "dag"]
    filenames = ["*.dag"]
    mimetypes = ["text/x-dagnet"]

    tokens = {
        "root": [
            (r"\n", Whitespace),
            (r"[ \t\f]*#.*$", Comment.Single),
            (r"^(\s*)(block)(\s+)([A-Za-z_]\w*)",
             bygroups(Whitespace, Keyword.Declaration, Whitespace, Name.Class)),
            (r"^(\s*)(model|library)(\s+)([A-Za-z_]\w*)",
             bygroups(Whitespace, Keyword.Declaration, Whitespace, Name.Namespace)),
            (r"^(\s*)(" + "|".join(STATEMENTS) + r")\b(?!\s*=[^=])", bygroups(Whitespace, Keyword.Declaration)),
            (r"^(\s*)([A-Za-z_]\w*)(\s*)(=)(?!=)", bygroups(Whitespace, Name.Variable, Whitespace, Operator)),
            (r"[ \t\f]+", Whitespace),
            (r"->", Operator),
            (words(MODIFIERS, suffix=r"\b"), Keyword),
            (words(("if", "else", "and", "or", "not"), suffix=r"\b"), Operator.Word),
            (words(("true", "false", "null"), suffix=r"\b"), Keyword.Constant),
            (r'"(?:[^"\\\n]|\\.)*"', String.Double),
            (r"'(?:[^'\\\n]|\\.)*'", String.Single),
            (r"(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)[eE][+-]?\d+", Number.Float),
            (r"\d(?:_?\d)*\.(?:\d(?:_?\d)*)?|\.\d(?:_?\d)*", Number.Float),
            (r"\d(?:_?\d)*", Number.Integer),
            (r"([A-Za-z_]\w*)(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (r"([A-Za-z_]\w*)(\s*)(:)", bygroups(Name.Attribute, Whitespace, Punctuation)),
            (r"([A-Za-z_]\w*)(?=\s*\()", Name.Function),
            (r"[A-Za-z_]\w*", Name),
            (r"\*\*|//|==|!=|<=|>=|[-+*/%<>=]", Operator),
            (r"[()\[\]{},.:;\\]", Punctuation),
            (r".", Text),
        ],
    }
