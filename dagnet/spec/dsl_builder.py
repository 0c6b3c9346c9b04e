"""The DSL's parse actions: lark reductions -> values, NodeSpecs and BlockSpecs.

The :class:`Builder` runs inside the LALR parser at every reduction, so no
parse tree is ever built. Values keep their source span (:class:`_Piece`):
expressions are cut out of the source text and canonicalised by Python's own
parser, so ``width*2`` and ``width * 2`` are the same value and the evaluator
later sees exactly the language it evaluates. :class:`Source` is the text
being parsed, with the file name and error log its messages go to.
"""

from __future__ import annotations

import ast
import math

from lark import Token, Transformer, v_args

from dagnet import expr
from dagnet.errors import ErrorLog, Loc
from dagnet.spec.dsl_errors import excerpt
from dagnet.spec.dsl_lexer import CONSTANTS
from dagnet.spec.model import BlockSpec, InputSpec, NodeSpec, Ref
from dagnet.spec.yaml_loader import NODE_KEYS


# -- values ------------------------------------------------------------------
class _Piece:
    """A parsed value with its source span; ``literal`` False means an expression."""

    __slots__ = ("value", "start", "end", "literal", "key_locs")

    def __init__(self, value, start, end, literal=True):
        self.value, self.start, self.end, self.literal = value, start, end, literal
        self.key_locs: dict[str, Loc] | None = None     # a mapping's keys, by dotted path (`schedule.name`)


def _start(x) -> int:
    return x.start_pos if isinstance(x, Token) else x.start


def _end(x) -> int:
    return x.end_pos if isinstance(x, Token) else x.end


MAX_NUMBER_CHARS = 100     # Python refuses to read an int of over 4,300 digits: stop well before


def number(text: str):
    text = text.replace("_", "")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _number(src, tok: Token):
    """A NUMBER token's value; one too long to read, or that overflows to infinity, is an error there."""
    if len(tok.value) > MAX_NUMBER_CHARS:
        src.error(f"a number of {len(tok.value):,} characters; numbers have at most {MAX_NUMBER_CHARS}", tok,
                  "sizes, counts and rates in a spec need only a few digits")
        return 0
    value = number(tok.value)
    if not math.isfinite(value):
        src.error(f"`{tok.value}` is too large for a number: it overflows to infinity", tok,
                  "write a finite number")
        return 0
    return value


def unquote(text: str) -> str:
    return text[1:-1] if "\\" not in text else ast.literal_eval(text)


def canonical(text: str):
    """An expression's value in the Spec: a literal, or its canonical source text.

    Raises SyntaxError for text Python cannot read (e.g. a keyword used as a name),
    and :class:`~dagnet.expr.ExprError` for one too long or too deeply nested to
    evaluate (checked before Python's recursive parser and unparser see it).
    """
    if len(text) > expr.MAX_LENGTH:
        raise expr.ExprError(f"an expression of {len(text):,} characters; the limit is {expr.MAX_LENGTH:,}")
    try:
        tree = ast.parse("(" + text + ")", mode="eval").body
    except (RecursionError, MemoryError):       # how Python's parser says "too deeply nested"
        tree = None
    if tree is None or expr.depth(tree) > expr.MAX_DEPTH:
        raise expr.ExprError(f"expression nested more than {expr.MAX_DEPTH} levels deep")
    return _literal(tree)


def _literal(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    return ast.unparse(node)


def _unquoted(src, tok: Token) -> str:
    """A string token's value; a bad escape (``"\\x0"``) is reported at the token."""
    try:
        return unquote(tok.value)
    except (SyntaxError, ValueError):        # what Python's string reader raises
        src.error("cannot read this string: it holds an escape Python does not know, or a NUL",
                  tok, "escapes are Python's: \\n \\t \\\\ \\\" \\xHH \\uHHHH \\N{NAME}")
        return tok.value[1:-1]


class Source:
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
        except expr.ExprError as exc:
            self.error(str(exc), self.loc_at(piece.start),
                       "compute a long value in steps, one `param` each")
            return text
        except SyntaxError:
            self.error(f"cannot read the expression `{' '.join(text.split())}`", self.loc_at(piece.start),
                       "expressions use numbers, parameters, arithmetic, comparisons, "
                       "`a if c else b` and min, max, abs, ...; Python keywords are not names")
            return text


@v_args(inline=True)
class Builder(Transformer):
    """Reductions -> Spec pieces, one method per grammar rule, run inside the LALR parser.

    One instance is built into the parser; ``src`` is the text being parsed.
    """

    src: Source

    # -- expressions -------------------------------------------------------
    def number(self, tok):
        return _Piece(_number(self.src, tok), tok.start_pos, tok.end_pos)

    def name(self, tok):
        value = CONSTANTS[tok.value] if tok.value in CONSTANTS else tok.value
        return _Piece(value, tok.start_pos, tok.end_pos)

    def string(self, *toks):
        return _Piece("".join(_unquoted(self.src, t) for t in toks), toks[0].start_pos, toks[-1].end_pos)

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
        piece = _Piece(out, None, None)
        piece.key_locs = {}
        for key, key_tok, value, inner_locs in entries:
            if key in out:
                self.src.error(f"duplicate key `{key}`", key_tok, "give each key once")
            out[key] = value
            piece.key_locs[str(key)] = key_tok if isinstance(key_tok, Loc) else self.src.loc(key_tok)
            piece.key_locs.update({f"{key}.{k}": loc for k, loc in inner_locs.items()})
        return piece

    def entry(self, key, value):
        inner_locs = (value.key_locs if isinstance(value, _Piece) else None) or {}
        if isinstance(key, Token):
            key_value = _number(self.src, key) if key.type == "NUMBER" else CONSTANTS.get(key.value, key.value)
            return key_value, key, self.src.plain(value), inner_locs
        return key.value, self.src.loc_at(key.start), self.src.plain(value), inner_locs

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
            return _number(self.src, x) if x.type == "NUMBER" else CONSTANTS.get(x.value, x.value)
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
        out, locs = {"op": op.value}, {"op": self.src.loc(op)}
        for _, key, loc, value in kwargs:
            if key in out:
                self.src.error(f"duplicate key `{key}`", loc, "give each key once")
            out[key], locs[key] = value, loc
        out["_loc"] = self.src.loc(kw)
        return ("loss", kw, (out, locs))

    def loss_mapping(self, kw, mapping):
        return ("loss", kw, (dict(mapping.value, _loc=self.src.loc(kw)), mapping.key_locs))

    def train(self, kw, mapping):
        return ("train", kw, (mapping.value, mapping.key_locs))

    def bparam(self, name, value=None):
        return (name, None if value is None else self.src.plain(value))

    def block_inputs(self, kw, *names):
        return ("inputs", kw, [n.value for n in names])

    def block(self, kw, name, *rest):
        params = [r for r in rest if len(r) == 2]
        body = [r for r in rest if len(r) == 3]
        return ("block", name, assemble_block(self.src, name, params, body))

    def start(self, *stmts):
        return list(stmts)


_NODE_KEY_HINTS = {
    "repeat": "repeat an item with `* N` after the call: `conv2d(64, 3) * 4`",
    "when": "switch an item off with `when <condition>` after the call",
    "connect": "write `residual` or `dense` after `* N`",
    "checkpoint": "write `checkpoint` after the call",
    "in": "inputs come before the arrow: `name = input -> op(...)`",
}


def record_once(builder, seen: dict, key: str, tok, what: str) -> bool:
    """Record ``key``; report it (with the first place) when it was seen before."""
    if key in seen:
        builder.error(f"{what} `{key}` is defined twice (first at line {seen[key].line})", tok,
                      "give each name once")
        return False
    seen[key] = builder.loc(tok)
    return True


def assemble_block(b: Source, name: Token, params, body) -> BlockSpec:
    block = BlockSpec(name=name.value, loc=b.loc(name), params={}, param_locs={}, inputs=["x"],
                      nodes={}, outputs=[])
    seen: dict = {}
    for tok, value in params:
        if record_once(b, seen, tok.value, tok, "parameter"):
            block.params[tok.value], block.param_locs[tok.value] = value, b.loc(tok)
    has_outputs, seen = False, {}
    for kind, tok, value in body:
        if kind == "node" and record_once(b, seen, tok.value, tok, "node"):
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
