"""Spec -> text: the canonical DSL form (what ``dagnet fmt`` prints) and YAML.

Both printers write exactly the Spec's data, so that reading the text back
gives the same IR (``dagnet convert`` relies on it). Comments and blank lines
are not Spec data; a :class:`Notes` scanned from the source carries them over:
each comment is attached to the construct written after it (or, for a comment
at the end of a line, to the construct on that line) by source line.
"""

from __future__ import annotations

import ast
import bisect
import json
import keyword
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from dagnet.errors import Loc, SpecError
from dagnet.spec.dsl import parse_value
from dagnet.spec.dsl_lexer import CONSTANTS, OPERATOR_KEYWORDS
from dagnet.spec.model import BlockSpec, NodeSpec, Ref, Spec
from dagnet.spec.yaml_loader import NODE_KEYS, _literal as call_literal, _split_chain

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


class _Attach:
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
            # a comment on the construct's own first line stays there; a later one ends it
            at = start if source_line == line and len(out) > start else -1 if len(out) > start else start - 1
            out[at] += "  " + text


def _node_line(node: NodeSpec) -> int:
    return min([node.loc.line] + [r.loc.line for r in node.inputs if r.loc.line])


def _anchors(spec: Spec) -> list[int]:
    """Source lines of everything a printer writes, for attaching comments."""
    lines = [spec.loc.line] + [loc.line for loc in spec.param_locs.values()]
    for block in _local_blocks(spec).values():
        lines += [block.loc.line] + [_node_line(n) for n in block.nodes.values()]
        lines += [r.loc.line for r in block.outputs]
    lines += [i.loc.line for i in spec.inputs.values()] + [_node_line(n) for n in spec.nodes.values()]
    lines += [r.loc.line for r in spec.outputs]
    lines += [loss["_loc"].line for loss in spec.losses if isinstance(loss.get("_loc"), Loc)]
    return lines


# -- shared helpers --------------------------------------------------------------
def _local_blocks(spec: Spec) -> dict[str, BlockSpec]:
    """Blocks defined in the spec's own file (the others came from imports)."""
    return {n: b for n, b in spec.blocks.items() if b.loc.file == spec.file}


def spec_imports(spec: Spec) -> list[str]:
    """The spec's imports as written; for a Spec built in code, the files its blocks came from."""
    if spec.imports:
        return list(spec.imports)
    local = _local_blocks(spec)
    files = dict.fromkeys(b.loc.file for n, b in spec.blocks.items() if n not in local)
    return [os.path.relpath(f, Path(spec.file).parent) for f in files]


def _is_library(spec: Spec) -> bool:
    return not (spec.inputs or spec.nodes or spec.outputs or spec.params or spec.losses or spec.train)


def _fail(what: str, loc: Loc | None = None) -> SpecError:
    return SpecError(f"cannot print {what}", loc)


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
            raise _fail(f"the number {value} in the DSL (write it as an expression)")
        return repr(value)
    if isinstance(value, str):
        return value if _bare_ok(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key_text(k)}: {value_text(v)}" for k, v in value.items()) + "}"
    raise _fail(f"a value of type {type(value).__name__}")


def _key_text(key) -> str:
    if isinstance(key, str):
        return key if name_ok(key) and key not in CONSTANTS else json.dumps(key, ensure_ascii=False)
    if isinstance(key, (int, float)) and not isinstance(key, bool) and key >= 0:
        return value_text(key)
    if key is None or isinstance(key, bool):
        return value_text(key)
    raise _fail(f"the mapping key {key!r}")


def _call_args(node: NodeSpec) -> str:
    if not all(isinstance(k, str) for k in node.args):
        raise _fail(f"the arguments of `{node.name}`: argument names must be text", node.loc)
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
            raise _fail(f"`{node.name}`: a `seq` without items", node.loc)
        text = "(" + " -> ".join(item_text(i) for i in node.items) + ")"
    else:
        if not name_ok(node.target):
            raise _fail(f"the op or block name `{node.target}` in the DSL", node.loc)
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
    if not all(name_ok(part) for part in ref.name.split(".")):
        raise _fail(f"the reference `{ref.name}` in the DSL", ref.loc)
    return ref.name


def node_lines(name: str, node: NodeSpec, indent: str = "") -> list[str]:
    """``name = source -> item -> item``, broken before ``->`` to fit the width."""
    if not name_ok(name):
        raise _fail(f"the node name `{name}` in the DSL (names are letters, digits and `_`)", node.loc)
    plain = (type(node.repeat) is int and node.repeat == 1 and node.connect == "sequential"
             and node.when is None and not node.checkpoint)
    if (plain and node.kind == "op" and node.target == "add" and len(node.inputs) >= 2
            and not node.args and not node.posargs):
        return [f"{indent}{name} = " + " + ".join(_ref_text(r) for r in node.inputs)]
    refs = [_ref_text(r) for r in node.inputs]
    source = refs[0] if len(refs) == 1 else "[" + ", ".join(refs) + "]"
    parts = ([item_text(i) for i in node.items] if plain and node.kind == "seq" and len(node.items) > 1
             else [item_text(node)])
    return _wrap_chain(f"{indent}{name} = {source} -> {parts[0]}", parts[1:], f"{indent}{INDENT}-> ")


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


def _block_lines(block: BlockSpec, attach: _Attach) -> list[str]:
    if not name_ok(block.name):
        raise _fail(f"the block name `{block.name}` in the DSL", block.loc)
    params = [p if v is None else f"{p}={value_text(v)}" for p, v in block.params.items()]
    out: list[str] = []
    head = f"block {block.name}" + (f"({', '.join(params)})" if params else "") + " {"
    attach.emit(out, block.loc.line, "", [head])
    if block.doc:
        out += _doc_lines("doc", block.doc, INDENT)
    if block.inputs != ["x"]:
        out.append(f"{INDENT}input " + ", ".join(_ref_text(Ref(i, block.loc)) for i in block.inputs))
    for k, (name, node) in enumerate(block.nodes.items()):
        if k and attach.blank_before(_node_line(node)):
            out.append("")
        attach.emit(out, _node_line(node), INDENT, node_lines(name, node, INDENT))
    if block.outputs:
        line = block.outputs[0].loc.line
        attach.emit(out, line, INDENT, [f"{INDENT}output " + ", ".join(_ref_text(r) for r in block.outputs)])
    return out + ["}"]


def to_dsl(spec: Spec, notes: Notes | None = None, imports: list[str] | None = None) -> str:
    """The canonical DSL text of ``spec``; ``notes`` carries comments over from its source."""
    attach = _Attach(notes, _anchors(spec))
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
    for block in _local_blocks(spec).values():
        sections.append(_block_lines(block, attach))
    inputs: list[str] = []
    for name, inp in spec.inputs.items():
        if not name_ok(name):
            raise _fail(f"the input name `{name}` in the DSL", inp.loc)
        shape = ", ".join(value_text(d) for d in inp.shape)
        dtype = "" if inp.dtype == "float32" else ": " + (inp.dtype if name_ok(inp.dtype)
                                                            else json.dumps(inp.dtype))
        attach.emit(inputs, inp.loc.line, "", [f"input {name}[{shape}]{dtype}"])
    sections.append(inputs)
    nodes: list[str] = []
    for k, (name, node) in enumerate(spec.nodes.items()):
        if k and attach.blank_before(_node_line(node)):
            nodes.append("")
        attach.emit(nodes, _node_line(node), "", node_lines(name, node))
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
    sections.append(attach.rest + [t for ts in attach.trailing.values() for _, t in ts])
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _param_lines(spec: Spec, attach: _Attach) -> list[str]:
    """``param a = 1, b = 2`` packed to the width; one per line where comments need it."""
    out: list[str] = []
    items = list(spec.params.items())
    noted = any(attach.leading.get(spec.param_locs.get(p, Loc()).line) or attach.trailing.get(
        spec.param_locs.get(p, Loc()).line) for p, _ in items[1:])
    current, first_line = "", 0
    for name, value in items:
        if not name_ok(name):
            raise _fail(f"the parameter name `{name}` in the DSL", spec.param_locs.get(name))
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


# -- YAML ----------------------------------------------------------------------------
def _dump(value, flow: bool | None = None, width: int = WIDTH) -> str:
    text = yaml.safe_dump(value, default_flow_style=flow, sort_keys=False, allow_unicode=True, width=width)
    if any(c in text for c in "\x85\u2028\u2029"):      # YAML reads these as line breaks: escape
        text = yaml.safe_dump(value, default_flow_style=flow, sort_keys=False, width=width)
    return text[:-5] if text.endswith("\n...\n") else text.rstrip("\n")


def _kv(key, value, indent: str) -> list[str]:
    """``key: value`` in block context, PyYAML choosing quotes and flow style for leaves."""
    flow = False if not isinstance(value, (dict, list, tuple)) else None
    return [indent + line for line in _dump({key: value}, flow=flow).split("\n")]


def _call_value(value):
    """``value`` as Python source inside a YAML call form, or None if it cannot be one."""
    if value is None or isinstance(value, bool):
        return {None: "None", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            bare = call_literal(ast.parse(value, mode="eval").body) == value
        except (SyntaxError, ValueError):
            bare = False
        return value if bare and value == value.strip() else repr(value)
    if isinstance(value, (list, tuple)):
        items = [_call_value(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"
    return None


def _call_text(target: str, posargs, kwargs: dict) -> str | None:
    args = [_call_value(v) for v in posargs]
    keys_ok = all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in kwargs)
    if not (target.isidentifier() and not keyword.iskeyword(target)):
        return None
    args += [f"{k}={_call_value(v)}" if _call_value(v) is not None else None for k, v in kwargs.items()]
    if None in args or not keys_ok:
        return None
    return f"{target}({', '.join(args)})" if args else target


def _yaml_refs(refs: list[Ref]):
    return refs[0].name if len(refs) == 1 else [r.name for r in refs]


def yaml_node(node: NodeSpec, with_inputs: bool = True) -> dict:
    """A node as the YAML front end reads it."""
    out: dict = {}
    kwargs = dict(node.args)
    if node.kind == "seq":
        if with_inputs and node.inputs:
            out["in"] = _yaml_refs(node.inputs)
        out["seq"] = _yaml_items(node.items)
    else:
        in_call = {k: v for k, v in kwargs.items() if k in NODE_KEYS or not isinstance(k, str)}
        target = node.target
        if node.posargs or in_call:
            target = _call_text(node.target, node.posargs, in_call)
            if target is None:
                raise _fail(f"the arguments of `{node.name}` in YAML", node.loc)
        out["block" if node.kind == "block" else "op"] = target
        kwargs = {k: v for k, v in kwargs.items() if k not in in_call}
        if with_inputs and node.inputs:
            out["in"] = _yaml_refs(node.inputs)
    if not (type(node.repeat) is int and node.repeat == 1):
        out["repeat"] = node.repeat
    if node.connect != "sequential":
        out["connect"] = node.connect
    if node.when is not None:
        out["when"] = node.when
    if node.checkpoint:
        out["checkpoint"] = True
    return {**out, **kwargs}


def _simple(node: NodeSpec) -> bool:
    return (node.kind == "op" and type(node.repeat) is int and node.repeat == 1 and node.when is None
            and node.connect == "sequential" and not node.checkpoint)


def _yaml_items(items: list[NodeSpec]):
    """``a(1) -> b`` when every item is a plain op call, else a list of calls and mappings."""
    texts = [_call_text(i.target, i.posargs, i.args) if _simple(i) else None for i in items]
    if None not in texts:
        chain = " -> ".join(texts)
        if [t.strip() for t in _split_chain(chain, Loc())] == texts:
            return chain
    return [t if t is not None and "->" not in t else yaml_node(i, False) for t, i in zip(texts, items)]


def _yaml_node_lines(name: str, node: NodeSpec, indent: str) -> list[str]:
    data = yaml_node(node)
    flow = _flow_lines(f"{indent}{_dump(name)}: ", data)
    if flow is not None:
        return flow
    lines = [indent + _dump(name) + ":"]
    for key, value in data.items():
        chain = key == "seq" and isinstance(value, str) and _dump(value, width=10**6) == value
        lines += _chain_lines(value, indent + "  ") if chain else _kv(key, value, indent + "  ")
    return lines


def _flow_lines(head: str, data: dict, max_lines: int = 2) -> list[str] | None:
    """``head{k: v, ...}`` in at most ``max_lines`` lines of WIDTH, broken after commas
    and aligned under the first key; None if it does not fit or PyYAML would quote
    a value (as it must a call with a comma in it, ``conv2d(64, 3)``)."""
    items = [_dump({k: v}, flow=True, width=10**6)[1:-1] for k, v in data.items()]
    if any(q in item for item in items for q in "'\"\n"):
        return None
    lines, current, pad = [], head + "{", " " * (len(head) + 1)
    for i, item in enumerate(items):
        text = item + ("}" if i == len(items) - 1 else ",")
        if current.endswith(",") and len(current) + 1 + len(text) > WIDTH:
            lines.append(current)
            current = pad + text
        else:
            current += ("" if current.endswith("{") else " ") + text
    lines.append(current)
    fits = all(len(line) <= WIDTH for line in lines)
    return lines if fits and len(lines) <= max_lines else None


def _yaml_doc_lines(doc: str) -> list[str]:
    """``doc: text`` on one line, or a folded paragraph (``>``) when it is longer;
    anything else (several paragraphs, odd spacing) as PyYAML quotes it."""
    text = doc[:-1] if doc.endswith("\n") else doc
    lines = _kv("doc", doc, "")
    if len(lines) > 1 and text and "\n" not in text and text == " ".join(text.split()):
        wrapped = textwrap.wrap(text, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
        folded = ["doc: >" + ("" if doc.endswith("\n") else "-")] + ["  " + w for w in wrapped]
        if yaml.safe_load("\n".join(folded) + "\n") == {"doc": doc}:
            return folded
    return lines


def _chain_lines(chain: str, indent: str) -> list[str]:
    """``seq: a -> b`` broken before ``->`` (a plain YAML scalar folds line breaks to spaces)."""
    parts = chain.split(" -> ")
    return _wrap_chain(f"{indent}seq: {parts[0]}", parts[1:], f"{indent}     -> ")


def _wrap_chain(first: str, parts: list[str], continuation: str) -> list[str]:
    """``first -> part -> ...`` in lines of at most WIDTH, each break made before an arrow."""
    lines, current = [], first
    for part in parts:
        if len(current) + 4 + len(part) > WIDTH:
            lines.append(current)
            current = continuation + part
        else:
            current += " -> " + part
    return lines + [current]


def _yaml_block_lines(block: BlockSpec, attach: _Attach) -> list[str]:
    out: list[str] = []
    attach.emit(out, block.loc.line, "  ", [f"  {_dump(block.name)}:"])
    if block.doc:
        out += _kv("doc", block.doc, "    ")
    if block.params:
        out += _kv("params", dict(block.params), "    ")
    if block.inputs != ["x"]:
        out += _kv("inputs", list(block.inputs), "    ")
    out.append("    nodes:")
    for k, (name, node) in enumerate(block.nodes.items()):
        if k and attach.blank_before(_node_line(node)):
            out.append("")
        attach.emit(out, _node_line(node), "      ", _yaml_node_lines(name, node, "      "))
    line = block.outputs[0].loc.line if block.outputs else 0
    attach.emit(out, line, "    ", _kv("outputs", [r.name for r in block.outputs], "    "))
    return out


def to_yaml(spec: Spec, notes: Notes | None = None, imports: list[str] | None = None) -> str:
    """YAML text that the YAML front end reads back to the same IR as ``spec``."""
    attach = _Attach(notes, _anchors(spec))
    head: list[str] = []
    attach.emit(head, spec.loc.line, "", ["dagnet: 1"])
    head += _kv("name", spec.name, "")
    if spec.doc:
        head += _yaml_doc_lines(spec.doc)
    imports = spec_imports(spec) if imports is None else imports
    if imports:
        head += _kv("imports", imports, "")
    if spec.params:
        lines = [l for name in spec.params for l in _kv(name, spec.params[name], "  ")]
        if any(attach.leading.get(spec.param_locs.get(p, Loc()).line) or
               attach.trailing.get(spec.param_locs.get(p, Loc()).line) for p in spec.params):
            head.append("params:")
            for name, value in spec.params.items():
                attach.emit(head, spec.param_locs.get(name, Loc()).line, "  ", _kv(name, value, "  "))
        elif lines:
            head += _kv("params", dict(spec.params), "")
    sections = [head]
    if _local_blocks(spec):
        blocks = ["blocks:"]
        for k, block in enumerate(_local_blocks(spec).values()):
            blocks += ([""] if k else []) + _yaml_block_lines(block, attach)
        sections.append(blocks)
    if spec.inputs:
        inputs = ["inputs:"]
        for name, inp in spec.inputs.items():
            body = {"shape": list(inp.shape)} | ({} if inp.dtype == "float32" else {"dtype": inp.dtype})
            line = f"  {_dump(name)}: {_dump(body, flow=True, width=10**6)}"
            attach.emit(inputs, inp.loc.line, "  ", [line])
        sections.append(inputs)
    if spec.nodes:
        nodes = ["nodes:"]
        for k, (name, node) in enumerate(spec.nodes.items()):
            if k and attach.blank_before(_node_line(node)):
                nodes.append("")
            attach.emit(nodes, _node_line(node), "  ", _yaml_node_lines(name, node, "  "))
        sections.append(nodes)
    tail: list[str] = []
    if spec.outputs:
        attach.emit(tail, spec.outputs[0].loc.line, "", _kv("outputs", [r.name for r in spec.outputs], ""))
    if spec.losses:
        losses = [{k: v for k, v in loss.items() if k != "_loc"} for loss in spec.losses]
        single = _flow_lines("loss: ", losses[0], max_lines=1) if len(losses) == 1 else None
        tail += single or _kv("losses", losses, "")
    if spec.train:
        tail += _kv("train", spec.train, "")
    sections.append(tail)
    sections.append(attach.rest + [t for ts in attach.trailing.values() for _, t in ts])
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
