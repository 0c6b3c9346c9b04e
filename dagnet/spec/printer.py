"""Spec -> text: the canonical DSL form (what ``dagnet fmt`` prints), and what
it shares with the YAML printer (:mod:`dagnet.spec.yaml_printer`).

Both printers write exactly the Spec's data, so that reading the text back
gives the same IR (``dagnet convert`` relies on it). Comments and blank lines
are not Spec data; a :class:`Notes` scanned from the source carries them over:
each comment is attached to the construct written after it (or, for a comment
at the end of a line, to the construct on that line) by source line.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


from dagnet.errors import Loc, SpecError
from dagnet.spec.dsl import parse_value
from dagnet.spec.dsl_lexer import CONSTANTS, OPERATOR_KEYWORDS
from dagnet.spec.model import BlockSpec, NodeSpec, Ref, Spec

WIDTH = 88
INDENT = "    "
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- comments and blank lines ----------------------------------------------------
@dataclass
class Notes:
    """The comments and blank lines of a source text, by line number."""

    comments: list[tuple[int, str, bool]] = field(default_factory=list)   # (line, text, own line)
    blank: set[int] = field(default_factory=set)


def scan_notes(text: str, yaml_syntax: bool = False) -> Notes:
    """Find comments (``#`` outside strings) and blank lines in DSL or YAML text."""
    notes, scalar_indent = Notes(), None
    for number, line in enumerate(text.split("\n"), 1):
        body = line.rstrip()
        indent = len(body) - len(body.lstrip())
        if not body:
            notes.blank.add(number)
            continue
        if scalar_indent is not None and indent > scalar_indent:
            continue                                # inside a YAML `|` or `>` block scalar
        scalar_indent = None
        start = _comment_start(body, yaml_syntax)
        if start is not None:
            notes.comments.append((number, body[start:], not body[:start].strip()))
        code = body if start is None else body[:start].rstrip()
        if yaml_syntax and re.search(r"(^|:\s|-\s)[|>][-+0-9]*$", code):
            scalar_indent = indent
    return notes


def _comment_start(line: str, yaml_syntax: bool) -> int | None:
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'" and (not yaml_syntax or i == 0 or line[i - 1] in " \t[{,:-"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
        i += 1
    return None


class Attach:
    """Comments bound to the constructs they annotate; each handed out once."""

    def __init__(self, notes: Notes | None, anchors: list[int]):
        self.notes = notes or Notes()
        self.leading: dict[int, list[tuple[int, str]]] = {}
        self.trailing: dict[int, list[tuple[int, str]]] = {}
        self.rest: list[str] = []
        lines = sorted(set(a for a in anchors if a > 0))
        for line, text, own in self.notes.comments:
            if own:
                k = bisect.bisect_right(lines, line)
                if k < len(lines):
                    self.leading.setdefault(lines[k], []).append((line, text))
                else:
                    self.rest.append(text)
            else:
                k = bisect.bisect_right(lines, line) - 1
                target = lines[k] if k >= 0 else (lines[0] if lines else 0)
                self.trailing.setdefault(target, []).append((line, text))

    def blank_before(self, line: int) -> bool:
        first = min([line] + [n for n, _ in self.leading.get(line, [])])
        return line > 0 and (first - 1) in self.notes.blank

    def emit(self, out: list[str], line: int, indent: str, lines: list[str]) -> None:
        """Append ``lines`` (one construct) with the comments that belong to it."""
        out.extend(indent + text for _, text in self.leading.pop(line, []))
        start = len(out)
        out.extend(lines)
        for source_line, text in self.trailing.pop(line, []):
            if len(out) == start:           # nothing written: the line before carries it
                at = start - 1
            else:                           # on the construct's own first line, or ending it
                at = start if source_line == line else -1
            out[at] += "  " + text

    def leftover(self) -> list[str]:
        """Comments no construct took (after the last one, or at unprinted lines)."""
        return self.rest + [text for texts in self.trailing.values() for _, text in texts]


def node_line(node: NodeSpec) -> int:
    return min([node.loc.line] + [r.loc.line for r in node.inputs if r.loc.line])


def anchors(spec: Spec) -> list[int]:
    """Source lines of everything a printer writes, for attaching comments."""
    lines = [spec.loc.line] + [loc.line for loc in spec.param_locs.values()]
    for block in local_blocks(spec).values():
        lines += [block.loc.line] + [node_line(n) for n in block.nodes.values()]
        lines += [r.loc.line for r in block.outputs]
    lines += [i.loc.line for i in spec.inputs.values()] + [node_line(n) for n in spec.nodes.values()]
    lines += [r.loc.line for r in spec.outputs]
    lines += [loss["_loc"].line for loss in spec.losses if isinstance(loss.get("_loc"), Loc)]
    return lines


# -- shared helpers --------------------------------------------------------------
def local_blocks(spec: Spec) -> dict[str, BlockSpec]:
    """Blocks defined in the spec's own file (the others came from imports)."""
    return {n: b for n, b in spec.blocks.items() if b.loc.file == spec.file}


def spec_imports(spec: Spec) -> list[str]:
    """The spec's imports as written; for a Spec built in code, the files its blocks came from."""
    if spec.imports:
        return list(spec.imports)
    local = local_blocks(spec)
    files = dict.fromkeys(b.loc.file for n, b in spec.blocks.items() if n not in local)
    return [os.path.relpath(f, Path(spec.file).parent) for f in files]


def _is_library(spec: Spec) -> bool:
    return not (spec.inputs or spec.nodes or spec.outputs or spec.params or spec.losses or spec.train)


def fail(what: str, loc: Loc | None = None) -> SpecError:
    return SpecError(f"cannot print {what}", loc)


def wrap_chain(first: str, parts: list[str], continuation: str) -> list[str]:
    """``first -> part -> ...`` in lines of at most WIDTH, each break made before an arrow."""
    lines, current = [], first
    for part in parts:
        if len(current) + 4 + len(part) > WIDTH:
            lines.append(current)
            current = continuation + part
        else:
            current += " -> " + part
    return lines + [current]


# -- DSL -----------------------------------------------------------------------------
def name_ok(name) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and name not in OPERATOR_KEYWORDS


@lru_cache(maxsize=4096)
def _bare_ok(text: str) -> bool:
    """May a string value be written unquoted? Only if reading it back gives the same string."""
    if _NAME.fullmatch(text):
        return text not in OPERATOR_KEYWORDS and text not in CONSTANTS
    if not text.strip() or text != text.strip():
        return False
    try:
        return parse_value(text) == text
    except SpecError:
        return False


def value_text(value) -> str:
    """A raw Spec value as DSL text that reads back to the same value."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail(f"the number {value} in the DSL (write it as an expression)")
        return repr(value)
    if isinstance(value, str):
        return value if _bare_ok(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key_text(k)}: {value_text(v)}" for k, v in value.items()) + "}"
    raise fail(f"a value of type {type(value).__name__}")


def _key_text(key) -> str:
    if isinstance(key, str):
        return key if name_ok(key) and key not in CONSTANTS else json.dumps(key, ensure_ascii=False)
    if isinstance(key, (int, float)) and not isinstance(key, bool) and key >= 0:
        return value_text(key)
    if key is None or isinstance(key, bool):
        return value_text(key)
    raise fail(f"the mapping key {key!r}")


def _call_args(node: NodeSpec) -> str:
    if not all(isinstance(k, str) for k in node.args):
        raise fail(f"the arguments of `{node.name}`: argument names must be text", node.loc)
    args = [value_text(v) for v in node.posargs]
    args += [f"{_key_text(k)}={value_text(v)}" for k, v in node.args.items()]
    return f"({', '.join(args)})" if args else ""


def _count_text(value) -> str:
    if (type(value) is int and value >= 0) or (isinstance(value, str) and name_ok(value)
                                               and value not in CONSTANTS):
        return str(value)
    return f"({value_text(value)})"


def item_text(node: NodeSpec) -> str:
    """One item of a chain: the op or block call (or a group) and its modifiers."""
    if node.kind == "seq":
        if not node.items:
            raise fail(f"`{node.name}`: a `seq` without items", node.loc)
        text = "(" + " -> ".join(item_text(i) for i in node.items) + ")"
    else:
        if not name_ok(node.target):
            raise fail(f"the op or block name `{node.target}` in the DSL", node.loc)
        text = node.target + _call_args(node)
    if not (type(node.repeat) is int and node.repeat == 1):
        text += " * " + _count_text(node.repeat)
    if node.connect != "sequential":
        text += " " + node.connect
    if node.when is not None:
        text += " when " + value_text(node.when)
    if node.checkpoint:
        text += " checkpoint"
    return text


def _ref_text(ref: Ref) -> str:
    if not all(name_ok(part) or part.isdigit() for part in ref.name.split(".")):
        raise fail(f"the reference `{ref.name}` in the DSL", ref.loc)
    return ref.name


def node_lines(name: str, node: NodeSpec, indent: str = "") -> list[str]:
    """``name = source -> item -> item``, broken before ``->`` to fit the width."""
    if not name_ok(name):
        raise fail(f"the node name `{name}` in the DSL (names are letters, digits and `_`)", node.loc)
    plain = (type(node.repeat) is int and node.repeat == 1 and node.connect == "sequential"
             and node.when is None and not node.checkpoint)
    if (plain and node.kind == "op" and node.target == "add" and len(node.inputs) >= 2
            and not node.args and not node.posargs):
        return [f"{indent}{name} = " + " + ".join(_ref_text(r) for r in node.inputs)]
    refs = [_ref_text(r) for r in node.inputs]
    source = refs[0] if len(refs) == 1 else "[" + ", ".join(refs) + "]"
    parts = ([item_text(i) for i in node.items] if plain and node.kind == "seq" and len(node.items) > 1
             else [item_text(node)])
    return wrap_chain(f"{indent}{name} = {source} -> {parts[0]}", parts[1:], f"{indent}{INDENT}-> ")


def _doc_lines(keyword: str, doc: str, indent: str) -> list[str]:
    """``doc "..."``, split into adjacent strings at spaces to fit the width."""
    pieces, current = [], ""
    room = WIDTH - len(indent) - len(keyword) - 4
    for word in re.findall(r"[^ \n]* *\n?", doc):
        if current and (len(json.dumps(current + word, ensure_ascii=False)) > room or current.endswith("\n")):
            pieces.append(current)
            current = ""
        current += word
    pieces.append(current)
    pad = indent + " " * (len(keyword) + 1)
    quoted = [json.dumps(p, ensure_ascii=False) for p in pieces if p] or ['""']
    return [f"{indent}{keyword} {quoted[0]}"] + [pad + q for q in quoted[1:]]


def _mapping_lines(mapping: dict, indent: str) -> list[str]:
    """Entries of ``train { ... }``, one per line; nested mappings inline if they fit."""
    lines = []
    for key, value in mapping.items():
        head = f"{indent}{_key_text(key)}: "
        inline = value_text(value)
        if isinstance(value, dict) and value and len(head) + len(inline) > WIDTH:
            lines += [head + "{"] + _mapping_lines(value, indent + INDENT) + [indent + "}"]
        else:
            lines.append(head + inline)
    return lines


def _loss_lines(loss: dict) -> list[str]:
    body = {k: v for k, v in loss.items() if k != "_loc"}
    op = body.pop("op", None)
    if isinstance(op, str) and name_ok(op) and all(isinstance(k, str) for k in body):
        return [f"loss {op}(" + ", ".join(f"{_key_text(k)}={value_text(v)}" for k, v in body.items()) + ")"]
    return [f"loss {value_text({k: v for k, v in loss.items() if k != '_loc'})}"]


def _block_lines(block: BlockSpec, attach: Attach) -> list[str]:
    if not name_ok(block.name):
        raise fail(f"the block name `{block.name}` in the DSL", block.loc)
    params = [p if v is None else f"{p}={value_text(v)}" for p, v in block.params.items()]
    out: list[str] = []
    head = f"block {block.name}" + (f"({', '.join(params)})" if params else "") + " {"
    attach.emit(out, block.loc.line, "", [head])
    if block.doc:
        out += _doc_lines("doc", block.doc, INDENT)
    if block.inputs != ["x"]:
        out.append(f"{INDENT}input " + ", ".join(_ref_text(Ref(i, block.loc)) for i in block.inputs))
    for k, (name, node) in enumerate(block.nodes.items()):
        if k and attach.blank_before(node_line(node)):
            out.append("")
        attach.emit(out, node_line(node), INDENT, node_lines(name, node, INDENT))
    if block.outputs:
        line = block.outputs[0].loc.line
        attach.emit(out, line, INDENT, [f"{INDENT}output " + ", ".join(_ref_text(r) for r in block.outputs)])
    return out + ["}"]


def to_dsl(spec: Spec, notes: Notes | None = None, imports: list[str] | None = None) -> str:
    """The canonical DSL text of ``spec``; ``notes`` carries comments over from its source."""
    attach = Attach(notes, anchors(spec))
    sections: list[list[str]] = []
    head: list[str] = []
    keyword = "library" if _is_library(spec) else "model"
    name = spec.name if name_ok(spec.name) and spec.name not in CONSTANTS else json.dumps(spec.name)
    attach.emit(head, spec.loc.line, "", [f"{keyword} {name}"])
    if spec.doc:
        head += _doc_lines("doc", spec.doc, "")
    imports = spec_imports(spec) if imports is None else imports
    head += [f"import {json.dumps(p, ensure_ascii=False)}" for p in imports]
    sections.append(head)
    sections.append(_param_lines(spec, attach))
    for block in local_blocks(spec).values():
        sections.append(_block_lines(block, attach))
    inputs: list[str] = []
    for name, inp in spec.inputs.items():
        if not name_ok(name):
            raise fail(f"the input name `{name}` in the DSL", inp.loc)
        shape = ", ".join(value_text(d) for d in inp.shape)
        dtype = "" if inp.dtype == "float32" else ": " + (inp.dtype if name_ok(inp.dtype)
                                                            else json.dumps(inp.dtype))
        attach.emit(inputs, inp.loc.line, "", [f"input {name}[{shape}]{dtype}"])
    sections.append(inputs)
    nodes: list[str] = []
    for k, (name, node) in enumerate(spec.nodes.items()):
        if k and attach.blank_before(node_line(node)):
            nodes.append("")
        attach.emit(nodes, node_line(node), "", node_lines(name, node))
    sections.append(nodes)
    tail: list[str] = []
    if spec.outputs:
        refs = ", ".join(_ref_text(r) for r in spec.outputs)
        attach.emit(tail, spec.outputs[0].loc.line, "", [f"output {refs}"])
    for loss in spec.losses:
        line = loss["_loc"].line if isinstance(loss.get("_loc"), Loc) else 0
        attach.emit(tail, line, "", _loss_lines(loss))
    sections.append(tail)
    if spec.train:
        sections.append(["train {"] + _mapping_lines(spec.train, INDENT) + ["}"])
    sections.append(attach.leftover())
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _param_lines(spec: Spec, attach: Attach) -> list[str]:
    """``param a = 1, b = 2`` packed to the width; one per line where comments need it."""
    out: list[str] = []
    items = list(spec.params.items())
    noted = any(attach.leading.get(spec.param_locs.get(p, Loc()).line) or attach.trailing.get(
        spec.param_locs.get(p, Loc()).line) for p, _ in items[1:])
    current, first_line = "", 0
    for name, value in items:
        if not name_ok(name):
            raise fail(f"the parameter name `{name}` in the DSL", spec.param_locs.get(name))
        text = f"{name} = {value_text(value)}"
        line = spec.param_locs.get(name, Loc()).line
        if current and (noted or len(current) + 2 + len(text) > WIDTH):
            attach.emit(out, first_line, "", [current])
            current = ""
        if current:
            current += ", " + text
        else:
            current, first_line = "param " + text, line
    if current:
        attach.emit(out, first_line, "", [current])
    return out
