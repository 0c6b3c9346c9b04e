"""Spec -> YAML that the YAML front end reads back to the same IR.

A node is one flow mapping when it fits two lines and needs no quotes, else one
key per line with ``seq`` chains broken before ``->``; calls keep the call form
(``conv2d(64, 3)``); comments are carried over as :mod:`dagnet.spec.printer`
attaches them for the DSL.
"""

from __future__ import annotations

import ast
import keyword
import math
import textwrap

import yaml

from dagnet.errors import Loc
from dagnet.expr import MAX_LENGTH
from dagnet.spec.model import BlockSpec, NodeSpec, Ref, Spec
from dagnet.spec.printer import (WIDTH, Attach, Notes, anchors, fail, local_blocks, node_line,
                                 spec_imports, wrap_chain)
from dagnet.spec.yaml_loader import NODE_KEYS, _literal as call_literal, _split_chain


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
        try:           # (text too long to be an expression is quoted without parsing it)
            bare = len(value) <= MAX_LENGTH and call_literal(ast.parse(value, mode="eval").body) == value
        except (SyntaxError, ValueError, RecursionError, MemoryError):
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
                raise fail(f"the arguments of `{node.name}` in YAML", node.loc)
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
    if not items or any(q in item for item in items for q in "'\"\n"):
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
    return wrap_chain(f"{indent}seq: {parts[0]}", parts[1:], f"{indent}     -> ")


def _yaml_block_lines(block: BlockSpec, attach: Attach) -> list[str]:
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
        if k and attach.blank_before(node_line(node)):
            out.append("")
        attach.emit(out, node_line(node), "      ", _yaml_node_lines(name, node, "      "))
    line = block.outputs[0].loc.line if block.outputs else 0
    attach.emit(out, line, "    ", _kv("outputs", [r.name for r in block.outputs], "    "))
    return out


def to_yaml(spec: Spec, notes: Notes | None = None, imports: list[str] | None = None) -> str:
    """YAML text that the YAML front end reads back to the same IR as ``spec``."""
    attach = Attach(notes, anchors(spec))
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
    if local_blocks(spec):
        blocks = ["blocks:"]
        for k, block in enumerate(local_blocks(spec).values()):
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
            if k and attach.blank_before(node_line(node)):
                nodes.append("")
            attach.emit(nodes, node_line(node), "  ", _yaml_node_lines(name, node, "  "))
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
    sections.append(attach.leftover())
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
