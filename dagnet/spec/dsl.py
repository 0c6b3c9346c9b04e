"""The text DSL front end: ``.dag`` text -> :class:`Spec`, the same Spec as YAML gives.

The grammar is ``dagnet.lark`` (LALR(1)). Its three helpers live beside this
module: the post-lexer (:mod:`dagnet.spec.dsl_lexer`), the parse actions that
build nodes and blocks at every reduction (:mod:`dagnet.spec.dsl_builder`),
and the syntax-error messages (:mod:`dagnet.spec.dsl_errors`). This module
builds the parser, assembles a file's statements into a Spec and resolves its
imports.
"""

from __future__ import annotations

import gc
import threading
from functools import lru_cache
from pathlib import Path

from lark import Lark
from lark.exceptions import UnexpectedInput

from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.spec.dsl_builder import Builder, Source, record_once
from dagnet.spec.dsl_errors import excerpt, syntax_error
from dagnet.spec.dsl_lexer import MAX_NESTING, NestedTooDeep, PostLexer
from dagnet.spec.imports import ImportStack, import_blocks, merge_blocks
from dagnet.spec.model import Spec
from dagnet.spec.source import read_source

GRAMMAR = Path(__file__).with_name("dagnet.lark")
_POSTLEXER = PostLexer()
_BUILDER = Builder()
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built once, with the builder run at each reduction (no parse tree)."""
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                postlex=_POSTLEXER, transformer=_BUILDER, start=["start", "value_only"],
                maybe_placeholders=False, cache=True)


def _assemble(b: Source, stmts, spec: Spec, library: bool) -> list:
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
                if record_once(b, seen_params, name.value, name, "parameter"):
                    spec.params[name.value], spec.param_locs[name.value] = raw, b.loc(name)
        elif kind == "block":
            if record_once(b, seen_blocks, tok.value, tok, "block"):
                spec.blocks[tok.value] = value
        elif kind == "input":
            if record_once(b, seen_inputs, tok.value, tok, "input"):
                spec.inputs[tok.value] = value
        elif kind == "node":
            if record_once(b, seen_nodes, tok.value, tok, "node"):
                spec.nodes[tok.value] = value
        elif kind == "outputs":
            spec.outputs += value
            has_outputs = True
        elif kind == "loss":
            loss, locs = value
            spec.losses.append(loss)
            spec.loss_locs.append(locs)
        elif kind == "train":
            settings, locs = value
            spec.train.update(settings)
            spec.train_locs.update(locs)
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


def _resolve_kinds(nodes, blocks) -> None:
    """A call names a block if one of that name is defined or imported, else an op."""
    for node in nodes:
        if node.kind == "call":
            node.kind = "block" if node.target in blocks else "op"
        elif node.kind == "seq":
            _resolve_kinds(node.items, blocks)


def load_dsl_spec(source, *, library: bool = False, imports: bool = True,
                  _stack: ImportStack | None = None) -> Spec:
    """Load a ``.dag`` spec from a path or text.

    ``library`` allows a file of blocks only (an import target); ``imports=False``
    skips loading imported files (enough for formatting, which never needs them).
    """
    text, file = read_source(source)
    return parse_dsl(text, file, library=library, imports=imports, _stack=_stack)


def parse_dsl(text: str, file: str = "<spec>", *, library: bool = False, imports: bool = True,
              _stack: ImportStack | None = None) -> Spec:
    """Parse DSL ``text``; ``file`` names it in messages and anchors relative imports.

    ``_stack`` holds the files importing this one (see :mod:`dagnet.spec.imports`).
    """
    errors = ErrorLog()
    builder = Source(file, text, errors)
    stmts = parse_text(builder)
    spec = Spec(name=Path(file).stem if not file.startswith("<") else "model", file=file,
                loc=Loc(file, 1, 1))
    import_stmts = _assemble(builder, stmts, spec, library)
    spec.imports = [path for path, _ in import_stmts]
    if imports:
        spec.blocks = merge_blocks(import_blocks(file, import_stmts, _stack, errors), spec.blocks, errors)
    _resolve_kinds(spec.nodes.values(), spec.blocks)
    for block in spec.blocks.values():
        if block.loc.file == file:
            _resolve_kinds(block.nodes.values(), spec.blocks)
    errors.raise_if_any()
    return spec


def parse_value(text: str):
    """One DSL value (``width * 2``, ``[1, 2]``, ``"a b"``) as the Spec would store it."""
    errors = ErrorLog()
    value = parse_text(Source("<value>", text, errors), start="value_only")
    errors.raise_if_any()
    return value


# -- parsing -----------------------------------------------------------------
def parse_text(src: Source, start: str = "start"):
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
            raise syntax_error(exc, src.text, src.file, _POSTLEXER.local) from None
        except NestedTooDeep as exc:
            loc = src.loc(exc.token)
            raise SpecError(f"brackets nested more than {MAX_NESTING} deep" + excerpt(src.text, loc), loc,
                            "a spec needs a few levels; look for brackets that are never closed") from None
        finally:
            _BUILDER.src = None
            if collect:
                gc.enable()
