"""The text DSL front end: ``.dag`` text -> :class:`Spec`, the same Spec as YAML gives.

The grammar is ``dagnet.lark`` (LALR(1)). A small post-lexer between lark's
lexer and parser does the two things a context-free grammar does badly:
it decides which newlines end a statement (none inside brackets, after ``->``
or before a line starting with ``->``), and it turns a NAME into a keyword only
where a keyword can stand, so that nodes may still be called ``input`` or
``dense``. Expressions are cut out of the source text and canonicalised by
Python's own parser, so ``width*2`` and ``width * 2`` are the same value and
the evaluator later sees exactly the language it evaluates.
"""

from __future__ import annotations

import ast
import gc
import os
import threading
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput

from dagnet.errors import ErrorLog, Loc, SpecError, did_you_mean
from dagnet.spec.model import BlockSpec, InputSpec, NodeSpec, Ref, Spec
from dagnet.spec.yaml_loader import NODE_KEYS, load_yaml_spec, read_source

GRAMMAR = Path(__file__).with_name("dagnet.lark")
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


class _PostLexer:
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
            if kind in ("LPAR", "LSQB", "LBRACE"):
                opened.append(tok)
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


# -- values ------------------------------------------------------------------
class _Piece:
    """A parsed value with its source span; ``literal`` False means an expression."""

    __slots__ = ("value", "start", "end", "literal")

    def __init__(self, value, start, end, literal=True):
        self.value, self.start, self.end, self.literal = value, start, end, literal


def _start(x) -> int:
    return x.start_pos if isinstance(x, Token) else x.start


def _end(x) -> int:
    return x.end_pos if isinstance(x, Token) else x.end


def number(text: str):
    text = text.replace("_", "")
    return float(text) if any(c in text for c in ".eE") else int(text)


def unquote(text: str) -> str:
    return text[1:-1] if "\\" not in text else ast.literal_eval(text)


def canonical(text: str):
    """An expression's value in the Spec: a literal, or its canonical source text.

    Raises SyntaxError for text Python cannot read (e.g. a keyword used as a name).
    """
    return _literal(ast.parse("(" + text + ")", mode="eval").body)


def _literal(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    return ast.unparse(node)


class _Source:
    """The text being parsed: turns tokens and spans into locations, values and errors."""

    def __init__(self, file: str, text: str, errors: ErrorLog):
        self.file, self.text, self.errors = file, text, errors

    def loc(self, tok) -> Loc:
        return Loc(self.file, tok.line, tok.column)

    def loc_at(self, pos: int) -> Loc:
        line = self.text.count("\n", 0, pos) + 1
        return Loc(self.file, line, pos - self.text.rfind("\n", 0, pos))

    def error(self, message: str, where, hint: str | None = None) -> None:
        loc = self.loc(where) if isinstance(where, Token) else where
        self.errors.add(message + excerpt(self.text, loc), loc, hint)

    def plain(self, piece):
        """A value as the Spec stores it."""
        if piece.literal:
            return piece.value
        text = self.text[piece.start:piece.end]
        try:
            return canonical(text)
        except SyntaxError:
            self.error(f"cannot read the expression `{' '.join(text.split())}`", self.loc_at(piece.start),
                       "expressions use numbers, parameters, arithmetic, comparisons, "
                       "`a if c else b` and min, max, abs, ...; Python keywords are not names")
            return text


@v_args(inline=True)
class _Builder(Transformer):
    """Reductions -> Spec pieces, one method per grammar rule, run inside the LALR parser.

    One instance is built into the parser; ``src`` is the text being parsed.
    """

    src: _Source

    # -- expressions -------------------------------------------------------
    def number(self, tok):
        return _Piece(number(tok.value), tok.start_pos, tok.end_pos)

    def name(self, tok):
        value = CONSTANTS[tok.value] if tok.value in CONSTANTS else tok.value
        return _Piece(value, tok.start_pos, tok.end_pos)

    def string(self, *toks):
        return _Piece("".join(unquote(t.value) for t in toks), toks[0].start_pos, toks[-1].end_pos)

    def unary(self, sign, operand):
        if operand.literal and type(operand.value) in (int, float):
            value = -operand.value if sign.type == "MINUS" else operand.value
            return _Piece(value, sign.start_pos, operand.end)
        return _Piece(None, sign.start_pos, operand.end, literal=False)

    def expr(self, *children):
        return _Piece(None, _start(children[0]), _end(children[-1]), literal=False)

    def list(self, *items):
        return _Piece([self.src.plain(i) for i in items], None, None)

    def mapping(self, *entries):
        out: dict = {}
        for key, key_tok, value in entries:
            if key in out:
                self.src.error(f"duplicate key `{key}`", key_tok, "give each key once")
            out[key] = value
        return _Piece(out, None, None)

    def entry(self, key, value):
        if isinstance(key, Token):
            key_value = number(key.value) if key.type == "NUMBER" else CONSTANTS.get(key.value, key.value)
            return key_value, key, self.src.plain(value)
        return key.value, self.src.loc_at(key.start), self.src.plain(value)

    def value_only(self, value):
        return self.src.plain(value)

    # -- items and nodes ---------------------------------------------------
    def kwarg(self, key, value):
        if isinstance(key, Token):
            return ("kwarg", key.value, self.src.loc(key), self.src.plain(value))
        return ("kwarg", key.value, self.src.loc_at(key.start), self.src.plain(value))

    def arg(self, x):
        return x if isinstance(x, tuple) else ("pos", self.src.plain(x))

    def bare(self, tok):
        return NodeSpec(name="", loc=self.src.loc(tok), kind="call", target=tok.value)

    def call(self, tok, *args):
        node = self.bare(tok)
        for arg in args:
            if arg[0] == "pos":
                if node.args:
                    self.src.error("a positional argument follows a keyword argument", node.loc,
                                   "put positional arguments first: `conv2d(64, 3, stride=2)`")
                node.posargs.append(arg[1])
                continue
            _, key, loc, value = arg
            if key in NODE_KEYS:
                self.src.error(f"`{key}` is not an argument of `{tok.value}`", loc, _NODE_KEY_HINTS.get(key))
            elif key in node.args:
                self.src.error(f"argument `{key}` given twice", loc)
            node.args[key], node.arg_locs[key] = value, loc
        return node

    def group(self, lpar, items):
        return NodeSpec(name="", loc=self.src.loc(lpar), kind="seq", items=items)

    def count(self, x):
        if isinstance(x, Token):
            return number(x.value) if x.type == "NUMBER" else CONSTANTS.get(x.value, x.value)
        return self.src.plain(x)

    def repeat(self, *children):
        return ("repeat", children[-1])

    def connect(self, tok):
        return ("connect", tok.value)

    def when(self, _kw, value):
        return ("when", self.src.plain(value))

    def item(self, node, *modifiers):
        for mod in modifiers:
            if isinstance(mod, Token):
                node.checkpoint = True
            else:
                setattr(node, mod[0], mod[1])
        return node

    def chain(self, *items):
        for i, item in enumerate(items):
            item.name = str(i)
        return list(items)

    def ref(self, *names):
        return Ref(".".join(n.value for n in names), self.src.loc(names[0]))

    def source(self, ref):
        return [ref]

    def source_list(self, *refs):
        return list(refs)

    def node(self, name, inputs, items):
        if len(items) == 1:             # `a = x -> conv2d(...)` is the op node itself
            node = items[0]
        else:
            node = NodeSpec(name="", loc=self.src.loc(name), kind="seq", items=items)
        node.name, node.inputs = name.value, inputs
        return ("node", name, node)

    def sum_node(self, name, *refs):
        node = NodeSpec(name=name.value, loc=self.src.loc(name), kind="op", target="add", inputs=list(refs))
        return ("node", name, node)

    # -- statements --------------------------------------------------------
    def model(self, _kw, name):
        return ("model", _kw, name.value)

    def doc(self, kw, text):
        return ("doc", kw, text.value)

    def imports(self, kw, *paths):
        return ("import", kw, [(p.value, self.src.loc_at(p.start)) for p in paths])

    def param(self, name, value):
        return (name, self.src.plain(value))

    def params(self, kw, *params):
        return ("params", kw, list(params))

    def dtype(self, x):
        return x.value

    def input(self, kw, name, *rest):
        dtype = rest[-1] if rest and isinstance(rest[-1], str) else "float32"
        shape = [self.src.plain(v) for v in rest if isinstance(v, _Piece)]
        return ("input", name, InputSpec(name.value, shape, self.src.loc(name), dtype))

    def outputs(self, kw, *refs):
        return ("outputs", kw, list(refs))

    def loss(self, kw, op, *kwargs):
        out = {"op": op.value}
        for _, key, loc, value in kwargs:
            if key in out:
                self.src.error(f"duplicate key `{key}`", loc, "give each key once")
            out[key] = value
        out["_loc"] = self.src.loc(kw)
        return ("loss", kw, out)

    def loss_mapping(self, kw, mapping):
        return ("loss", kw, dict(mapping.value, _loc=self.src.loc(kw)))

    def train(self, kw, mapping):
        return ("train", kw, mapping.value)

    def bparam(self, name, value=None):
        return (name, None if value is None else self.src.plain(value))

    def block_inputs(self, kw, *names):
        return ("inputs", kw, [n.value for n in names])

    def block(self, kw, name, *rest):
        params = [r for r in rest if len(r) == 2]
        body = [r for r in rest if len(r) == 3]
        return ("block", name, _assemble_block(self.src, name, params, body))

    def start(self, *stmts):
        return list(stmts)


_POSTLEXER = _PostLexer()
_BUILDER = _Builder()
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built once, with the builder run at each reduction (no parse tree)."""
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                postlex=_POSTLEXER, transformer=_BUILDER, start=["start", "value_only"],
                maybe_placeholders=False, cache=True)


_NODE_KEY_HINTS = {
    "repeat": "repeat an item with `* N` after the call: `conv2d(64, 3) * 4`",
    "when": "switch an item off with `when <condition>` after the call",
    "connect": "write `residual` or `dense` after `* N`",
    "checkpoint": "write `checkpoint` after the call",
    "in": "inputs come before the arrow: `name = input -> op(...)`",
}


def _once(builder, seen: dict, key: str, tok, what: str) -> bool:
    """Record ``key``; report it (with the first place) when it was seen before."""
    if key in seen:
        builder.error(f"{what} `{key}` is defined twice (first at line {seen[key].line})", tok,
                      "give each name once")
        return False
    seen[key] = builder.loc(tok)
    return True


def _assemble_block(b: _Source, name: Token, params, body) -> BlockSpec:
    block = BlockSpec(name=name.value, loc=b.loc(name), params={}, param_locs={}, inputs=["x"],
                      nodes={}, outputs=[])
    seen: dict = {}
    for tok, value in params:
        if _once(b, seen, tok.value, tok, "parameter"):
            block.params[tok.value], block.param_locs[tok.value] = value, b.loc(tok)
    has_outputs, seen = False, {}
    for kind, tok, value in body:
        if kind == "node" and _once(b, seen, tok.value, tok, "node"):
            block.nodes[tok.value] = value
        elif kind == "doc":
            block.doc = value
        elif kind == "inputs":
            block.inputs = value
        elif kind == "outputs":
            block.outputs += value
            has_outputs = True
    if not block.nodes:
        b.error(f"block `{block.name}` has no nodes", name, "add `out = x -> relu` and `output out`")
    if not has_outputs:
        b.error(f"block `{block.name}` declares no outputs", name, "add `output <node>` to its body")
    return block


def _assemble(b: _Source, stmts, spec: Spec, library: bool) -> list:
    """Statements -> spec fields; returns the import statements to resolve."""
    seen_nodes, seen_inputs, seen_blocks, seen_params = {}, {}, {}, {}
    imports, has_outputs, top_level, keyword = [], False, [], None
    for kind, tok, value in stmts:
        if kind == "model":
            spec.name, spec.loc, keyword = value, b.loc(tok), tok
        elif kind == "doc":
            spec.doc = value
        elif kind == "import":
            imports += value
        elif kind == "params":
            for name, raw in value:
                if _once(b, seen_params, name.value, name, "parameter"):
                    spec.params[name.value], spec.param_locs[name.value] = raw, b.loc(name)
        elif kind == "block":
            if _once(b, seen_blocks, tok.value, tok, "block"):
                spec.blocks[tok.value] = value
        elif kind == "input":
            if _once(b, seen_inputs, tok.value, tok, "input"):
                spec.inputs[tok.value] = value
        elif kind == "node":
            if _once(b, seen_nodes, tok.value, tok, "node"):
                spec.nodes[tok.value] = value
        elif kind == "outputs":
            spec.outputs += value
            has_outputs = True
        elif kind == "loss":
            spec.losses.append(value)
        elif kind == "train":
            spec.train.update(value)
        if kind in ("params", "input", "outputs", "loss", "train", "node"):
            top_level.append((kind, tok))
    start = Loc(b.file, 1, 1)
    if keyword is not None and keyword.value == "library" and not (library or spec.nodes):
        b.error(f"`{spec.name}` is a block library: it has no inputs or nodes to run", keyword,
                f"import it from a model: `import \"{Path(b.file).name}\"`")
        return imports
    if library and not spec.nodes:
        for kind, tok in top_level:
            b.error(f"a block library holds only blocks; found `{kind}`", tok,
                    "move it into a model file that imports this one")
        return imports
    if not spec.inputs:
        b.errors.add("the spec declares no inputs", start, "add e.g. `input image[3, H, W]`")
    if not spec.nodes:
        b.errors.add("the spec has no nodes", start, "add e.g. `y = x -> relu`")
    if not has_outputs:
        b.errors.add("no `output` declared", start, "add `output <node>`")
    return imports


def _import_blocks(b: _Source, spec: Spec, imports, stack: tuple[str, ...]) -> None:
    base = Path(b.file).parent if b.file and not b.file.startswith("<") else Path.cwd()
    imported: dict = {}
    for path, loc in imports:
        spec.imports.append(path)
        target = (base / path).resolve()
        if str(target) in stack:
            chain = " -> ".join(list(stack) + [str(target)])
            b.error(f"import cycle: {chain}", loc, "remove one of the imports")
            continue
        if not target.is_file():
            b.error(f"cannot import `{path}`: no such file ({target})", loc)
            continue
        rel = os.path.relpath(target)
        shown = Path(rel) if not rel.startswith("..") else target
        try:
            if target.suffix == ".dag":
                other = load_dsl_spec(shown, library=True, _stack=stack + (str(target),))
            else:
                other = load_yaml_spec(shown, library=True, _stack=stack + (str(target),))
        except SpecError as exc:
            b.errors.extend(exc)
            continue
        for name, block in other.blocks.items():
            if name in imported:
                b.error(f"block `{name}` is imported twice", loc)
            imported[name] = block
    for name, block in spec.blocks.items():
        if name in imported:
            b.errors.add(f"block `{name}` is defined here and imported", block.loc)
    spec.blocks = {**imported, **spec.blocks}


def _resolve_kinds(nodes, blocks) -> None:
    """A call names a block if one of that name is defined or imported, else an op."""
    for node in nodes:
        if node.kind == "call":
            node.kind = "block" if node.target in blocks else "op"
        elif node.kind == "seq":
            _resolve_kinds(node.items, blocks)


def load_dsl_spec(source, *, library: bool = False, imports: bool = True,
                  _stack: tuple[str, ...] = ()) -> Spec:
    """Load a ``.dag`` spec from a path or text.

    ``library`` allows a file of blocks only (an import target); ``imports=False``
    skips loading imported files (enough for formatting, which never needs them).
    """
    text, file = read_source(source)
    return parse_dsl(text, file, library=library, imports=imports, _stack=_stack)


def parse_dsl(text: str, file: str = "<spec>", *, library: bool = False, imports: bool = True,
              _stack: tuple[str, ...] = ()) -> Spec:
    """Parse DSL ``text``; ``file`` names it in messages and anchors relative imports."""
    errors = ErrorLog()
    builder = _Source(file, text, errors)
    stmts = parse_text(builder)
    spec = Spec(name=Path(file).stem if not file.startswith("<") else "model", file=file,
                loc=Loc(file, 1, 1))
    import_stmts = _assemble(builder, stmts, spec, library)
    if imports:
        _import_blocks(builder, spec, import_stmts, _stack or (str(Path(file).resolve()),))
    else:
        spec.imports = [p for p, _ in import_stmts]
    _resolve_kinds(spec.nodes.values(), spec.blocks)
    for block in spec.blocks.values():
        if block.loc.file == file:
            _resolve_kinds(block.nodes.values(), spec.blocks)
    errors.raise_if_any()
    return spec


def parse_value(text: str):
    """One DSL value (``width * 2``, ``[1, 2]``, ``"a b"``) as the Spec would store it."""
    errors = ErrorLog()
    value = parse_text(_Source("<value>", text, errors), start="value_only")
    errors.raise_if_any()
    return value


# -- syntax errors -----------------------------------------------------------
def parse_text(src: _Source, start: str = "start"):
    """Parse and build (statements, or a value); syntax errors say what was expected."""
    lark = parser()
    with _LOCK:                 # one builder and post-lexer serve every parse
        collect = gc.isenabled()
        gc.disable()            # the parse allocates many small objects and frees none
        try:
            _BUILDER.src = src
            _POSTLEXER.local.statements = start == "start"     # a lone value: no statement keywords
            return lark.parse(src.text, start=start)
        except UnexpectedInput as exc:
            raise syntax_error(exc, src.text, src.file) from None
        finally:
            _BUILDER.src = None
            if collect:
                gc.enable()


def excerpt(text: str, loc: Loc, width: int = 1) -> str:
    """The source line of ``loc`` with a caret under the column, for error messages."""
    lines = text.split("\n")
    if not 1 <= loc.line <= len(lines):
        return ""
    line = lines[loc.line - 1].rstrip("\r")
    pad = "".join(c if c == "\t" else " " for c in line[: max(loc.col - 1, 0)])
    return f"\n    {line}\n    {pad}{'^' * max(width, 1)}"


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


def syntax_error(exc: UnexpectedInput, text: str, file: str) -> SpecError:
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
    recent = list(getattr(_POSTLEXER.local, "recent", []))
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
    hint = _hint(tok, prev, recent, expected, text)
    width = len(tok.value) if tok.type not in ("_NL", "$END") else 1
    return SpecError(message + excerpt(text, loc, width), loc, hint)


def _hint(tok, prev, recent, expected, text) -> str | None:
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
    opened = getattr(_POSTLEXER.local, "opened", [])
    if opened and (kind == "$END" or (prev is not None and tok.line > prev.line)):
        left = opened[-1]
        return f"the `{left.value}` at line {left.line}, column {left.column} is not closed"
    joined = getattr(_POSTLEXER.local, "joined", None)
    if joined is not None and kind != "$END" and 0 < tok.line - joined.line <= 1:
        return (f"line {joined.line} ends with `{joined.value}`, so line {tok.line} continues it: "
                "finish the statement on its own line")
    return None
