"""The YAML front end: spec text -> :class:`Spec`, keeping every source location.

The text is read by :mod:`dagnet.spec.yaml_parse` (safe PyYAML, with the
location of every key and value, duplicate keys refused, aliases and nesting
bounded); this module turns what it read into a Spec, reporting every problem
it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from dagnet import expr
from dagnet.errors import ErrorLog, Loc, SpecError, did_you_mean
from dagnet.spec.imports import ImportStack, import_blocks, merge_blocks
from dagnet.spec.model import CONNECT_MODES, SPEC_VERSION, BlockSpec, InputSpec, NodeSpec, Ref, Spec
from dagnet.spec.source import read_source
from dagnet.spec.yaml_parse import MAX_VALUES, LocList, LocMap, parse_yaml

TOP_KEYS = ("dagnet", "name", "doc", "params", "imports", "blocks", "inputs", "nodes",
            "outputs", "loss", "losses", "train")
NODE_KEYS = ("op", "block", "seq", "in", "repeat", "connect", "when", "checkpoint", "doc")
BLOCK_KEYS = ("params", "inputs", "nodes", "outputs", "doc")
INPUT_KEYS = ("shape", "dtype", "doc")


def parse_call(text: str, loc: Loc) -> tuple[str, list, dict]:
    """Parse the call form ``conv2d(64, 3, stride=2)`` (or a bare ``relu``).

    Argument values stay as source text (expressions are evaluated later, in
    their scope); literals become Python values.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        hint = "write an op as `name` or `name(arg, key=value, ...)`"
        if text.count("(") != text.count(")"):
            hint = ("inside `{...}` or `[...]` YAML splits at commas: write this node in block "
                    "style (one key per line) or quote the text")
        raise SpecError(f"cannot parse `{text}`: {exc.msg}", loc, hint) from None
    except (RecursionError, MemoryError):       # how Python's parser says "too deeply nested"
        tree = None
    if tree is None or expr.depth(tree) > expr.MAX_DEPTH:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise SpecError(f"`{shown}` is nested more than {expr.MAX_DEPTH} levels deep", loc,
                        "compute a long value in steps: give it a name under `params`")
    if isinstance(tree, ast.Name):
        return tree.id, [], {}
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise SpecError(f"`{text}` is not an op call", loc,
                        "write an op as `name` or `name(arg, key=value, ...)`")
    posargs = [_literal(a) for a in tree.args]
    kwargs = {}
    for kw in tree.keywords:
        if kw.arg is None:
            raise SpecError(f"`**` is not allowed in `{text}`", loc)
        kwargs[kw.arg] = _literal(kw.value)
    return tree.func.id, posargs, kwargs


def _literal(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("true", "false", "True", "False"):
        return node.id.lower() == "true"
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.unparse(node)


class _Builder:
    """Turns parsed YAML into a Spec, reporting every problem it finds."""

    def __init__(self, file: str, errors: ErrorLog, import_stack: ImportStack | None):
        self.file = file
        self.errors = errors
        self.import_stack = import_stack

    # -- helpers -----------------------------------------------------------
    def expect_map(self, value, what: str, loc: Loc) -> LocMap | None:
        if isinstance(value, LocMap):
            return value
        if value is not None:
            self.errors.add(f"{what} must be a mapping, found {type(value).__name__}", loc)
        return None

    def check_keys(self, mapping: LocMap, allowed, what: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.errors.add(f"unknown key `{key}` in {what}", mapping.key_loc(key),
                                did_you_mean(key, allowed) or f"allowed keys: {', '.join(allowed)}")

    def names(self, value, loc: Loc, what: str) -> list[Ref]:
        """``x`` or ``[x, y]`` -> Refs."""
        if isinstance(value, str):
            return [Ref(value.strip(), loc)]
        if isinstance(value, LocList) and all(isinstance(v, str) for v in value):
            return [Ref(v.strip(), value.item_loc(i)) for i, v in enumerate(value)]
        self.errors.add(f"{what} must be a node name or a list of names", loc)
        return []

    # -- sections ----------------------------------------------------------
    def spec(self, data) -> Spec:
        top = self.expect_map(data, "a spec", Loc(self.file, 1, 1))
        if top is None:
            raise SpecError("a spec must be a YAML mapping with `dagnet: 1`", Loc(self.file, 1, 1))
        self.check_keys(top, TOP_KEYS, "the spec")
        version = top.get("dagnet")
        if version != SPEC_VERSION:
            self.errors.add(f"unsupported or missing format version `dagnet: {version}`",
                            top.value_loc("dagnet") if "dagnet" in top else top.loc,
                            f"start the spec with `dagnet: {SPEC_VERSION}`")
        spec = Spec(name=str(top.get("name", Path(self.file).stem)), file=self.file, loc=top.loc,
                    doc=str(top.get("doc", "")))
        params = self.expect_map(top.get("params"), "`params`", top.value_loc("params"))
        if params is not None:
            spec.params = dict(params)
            spec.param_locs = {k: params.key_loc(k) for k in params}
        self.imports_and_blocks(top, spec)
        inputs = self.expect_map(top.get("inputs"), "`inputs`", top.value_loc("inputs"))
        if not inputs:
            self.errors.add("the spec declares no inputs", top.loc,
                            "add e.g. `inputs: {image: {shape: [3, H, W]}}`")
        for name, body in (inputs or {}).items():
            spec.inputs[name] = self.input(name, body, inputs.key_loc(name))
        spec.nodes = self.nodes(top, "the spec")
        spec.outputs = self.outputs(top)
        spec.losses, spec.loss_locs = self.losses(top)
        train = self.expect_map(top.get("train"), "`train`", top.value_loc("train"))
        spec.train = _plain(train) if train else {}
        spec.train_locs = _key_locs(train) if train else {}
        return spec

    def import_list(self, top: LocMap):
        value = top.get("imports")
        if value is None:
            return []
        if not isinstance(value, LocList) or not all(isinstance(v, str) for v in value):
            self.errors.add("`imports` must be a list of spec file paths", top.value_loc("imports"))
            return []
        return [(v, value.item_loc(i)) for i, v in enumerate(value)]

    def imports_and_blocks(self, top: LocMap, spec: Spec) -> None:
        """The blocks of the imported files (see :mod:`dagnet.spec.imports`), then the spec's own."""
        imports = self.import_list(top)
        spec.imports = [path for path, _ in imports]
        imported = import_blocks(self.file, imports, self.import_stack, self.errors)
        blocks = self.expect_map(top.get("blocks"), "`blocks`", top.value_loc("blocks"))
        own = {name: self.block(name, body, blocks.key_loc(name)) for name, body in (blocks or {}).items()}
        spec.blocks = merge_blocks(imported, own, self.errors)

    def block(self, name: str, body, loc: Loc) -> BlockSpec:
        body = self.expect_map(body, f"block `{name}`", loc) or LocMap(loc)
        self.check_keys(body, BLOCK_KEYS, f"block `{name}`")
        params = self.expect_map(body.get("params"), "`params`", body.value_loc("params")) or LocMap(loc)
        inputs = [r.name for r in self.names(body.get("inputs", "x"), body.value_loc("inputs"), "`inputs`")]
        if "outputs" not in body:
            self.errors.add(f"block `{name}` declares no outputs", loc, "add `outputs: [name]`")
        return BlockSpec(name=name, loc=loc, params=dict(params),
                         param_locs={k: params.key_loc(k) for k in params}, inputs=inputs,
                         nodes=self.nodes(body, f"block `{name}`"), outputs=self.outputs(body),
                         doc=str(body.get("doc", "")))

    def input(self, name: str, body, loc: Loc) -> InputSpec:
        body = self.expect_map(body, f"input `{name}`", loc) or LocMap(loc)
        self.check_keys(body, INPUT_KEYS, f"input `{name}`")
        shape = body.get("shape")
        if not isinstance(shape, LocList):
            self.errors.add(f"input `{name}` needs `shape: [...]` (one example, no batch dim)",
                            body.value_loc("shape") if "shape" in body else loc)
            shape = []
        return InputSpec(name=name, shape=list(shape), loc=loc, dtype=str(body.get("dtype", "float32")))

    def nodes(self, parent: LocMap, what: str) -> dict[str, NodeSpec]:
        nodes = self.expect_map(parent.get("nodes"), "`nodes`", parent.value_loc("nodes"))
        if not nodes:
            self.errors.add(f"{what} has no nodes", parent.loc)
            return {}
        return {str(name): self.node(str(name), body, nodes.key_loc(name)) for name, body in nodes.items()}

    def node(self, name: str, body, loc: Loc) -> NodeSpec:
        if isinstance(body, str):       # `a1: relu(c1)` is not a node; keep YAML explicit
            self.errors.add(f"node `{name}` must be a mapping such as `{{op: relu, in: x}}`", loc)
            return NodeSpec(name, loc, "op", "identity")
        body = self.expect_map(body, f"node `{name}`", loc) or LocMap(loc)
        kinds = [k for k in ("op", "block", "seq") if k in body]
        if len(kinds) != 1:
            self.errors.add(f"node `{name}` needs exactly one of `op`, `block` or `seq`"
                            + (f" (found {', '.join(kinds)})" if kinds else ""), loc)
            kinds = kinds or ["op"]
        kind = kinds[0]
        node = NodeSpec(name=name, loc=loc, kind=kind)
        if "in" in body:
            node.inputs = self.names(body["in"], body.value_loc("in"), f"`in` of `{name}`")
        node.repeat = body.get("repeat", 1)
        node.when = body.get("when")
        node.checkpoint = bool(body.get("checkpoint", False))
        node.connect = str(body.get("connect", "sequential"))
        if node.connect not in CONNECT_MODES:
            self.errors.add(f"unknown connect mode `{node.connect}`", body.value_loc("connect"),
                            did_you_mean(node.connect, CONNECT_MODES) or f"use one of {', '.join(CONNECT_MODES)}")
        if kind == "seq":
            items = body.get("seq")
            if isinstance(items, str):      # `conv2d(64, 3) -> batch_norm -> relu`
                items = _split_chain(items, body.value_loc("seq"))
            if not isinstance(items, LocList) or not items:
                self.errors.add(f"`seq` of `{name}` must be a non-empty list", body.value_loc("seq"))
                items = LocList(loc)
            node.items = [self.seq_item(name, i, v, items.item_loc(i)) for i, v in enumerate(items)]
        else:
            target = body.get(kind)
            if isinstance(target, str) and "(" in target:
                target, node.posargs, kwargs = self.call(target, body.value_loc(kind))
                node.args.update(kwargs)
                node.arg_locs.update({k: body.value_loc(kind) for k in kwargs})
            node.target = str(target)
        for key, value in body.items():
            if key not in NODE_KEYS:
                node.args[str(key)] = _plain(value)
                node.arg_locs[str(key)] = body.key_loc(key)
        return node

    def call(self, text: str, loc: Loc):
        try:
            return parse_call(text, loc)
        except SpecError as exc:
            self.errors.extend(exc)
            return "identity", [], {}

    def seq_item(self, parent: str, index: int, value, loc: Loc) -> NodeSpec:
        name = str(index)
        if isinstance(value, str):
            target, posargs, kwargs = self.call(value, loc)
            return NodeSpec(name=name, loc=loc, kind="op", target=target, args=kwargs, posargs=posargs,
                      arg_locs={k: loc for k in kwargs})
        item = self.node(name, value, loc)
        if item.inputs:
            self.errors.add(f"items of `seq` in `{parent}` take no `in`: each feeds the next",
                            loc, "move `in` to the seq node itself")
        return item

    def outputs(self, parent: LocMap) -> list[Ref]:
        if "outputs" not in parent:
            self.errors.add("no `outputs` declared", parent.loc, "add `outputs: [name]`")
            return []
        return self.names(parent["outputs"], parent.value_loc("outputs"), "`outputs`")

    def losses(self, top: LocMap) -> tuple[list[dict], list[dict[str, Loc]]]:
        """The losses, each with its `_loc`, and where each key of each was written."""
        if "loss" in top and "losses" in top:
            self.errors.add("give either `loss` or `losses`, not both", top.key_loc("losses"))
        value = top.get("losses", top.get("loss"))
        if value is None:
            return [], []
        items = [value] if isinstance(value, LocMap) else value
        if not isinstance(items, list) or not all(isinstance(v, LocMap) for v in items):
            self.errors.add("`losses` must be a mapping or a list of mappings", top.value_loc("losses"))
            return [], []
        return [dict(_plain(v), _loc=v.loc) for v in items], [{k: v.key_loc(k) for k in v} for v in items]


def _key_locs(mapping: LocMap, prefix: str = "") -> dict[str, Loc]:
    """Where each key of a mapping and of the mappings in it was written, by dotted path.

    Called after ``_plain`` has bounded the mapping's size."""
    locs = {}
    for key in mapping:
        path = f"{prefix}{key}"
        locs[path] = mapping.key_loc(key)
        if isinstance(mapping[key], LocMap):
            locs.update(_key_locs(mapping[key], path + "."))
    return locs


def _split_chain(text: str, loc: Loc) -> LocList:
    """Split ``a(1, 2) -> b -> c`` at top-level arrows (not inside parentheses)."""
    items, depth, start = LocList(loc), 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        if depth == 0 and text.startswith("->", i):
            items.append(text[start:i].strip())
            start = i + 2
    items.append(text[start:].strip())
    items.locs = [loc] * len(items)
    return items


def _plain(value, budget: list | None = None, where: Loc | None = None):
    """LocMap/LocList -> plain dict/list (for values whose locations are not needed).

    The ``budget`` of values bounds the copy (aliases are already bounded by the
    loader; this bounds long lists written out); an error points at the whole
    value, ``where`` it starts.
    """
    budget = budget if budget is not None else [MAX_VALUES]
    where = where or getattr(value, "loc", None) or Loc()
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(f"a value holds more than {MAX_VALUES:,} items", where,
                        "spec values are names, numbers and short lists; put data in a data file")
    if isinstance(value, dict):
        return {k: _plain(v, budget, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, budget, where) for v in value]
    return value


def load_yaml_spec(source, *, _stack: ImportStack | None = None, library: bool = False) -> Spec:
    """Load a YAML spec from a path or text. ``library`` specs may hold only blocks."""
    text, file = read_source(source)
    return parse_yaml_spec(text, file, library=library, _stack=_stack)


def parse_yaml_spec(text: str, file: str = "<spec>", *, library: bool = False,
                    _stack: ImportStack | None = None) -> Spec:
    """Parse YAML ``text``; ``file`` names it in messages and anchors relative imports.

    ``_stack`` holds the files importing this one (see :mod:`dagnet.spec.imports`).
    """
    errors = ErrorLog()
    data = parse_yaml(text, file, errors)
    builder = _Builder(file, errors, _stack)
    if library and isinstance(data, LocMap) and "nodes" not in data:
        spec = Spec(name=str(data.get("name", Path(file).stem)), file=file)
        builder.check_keys(data, ("dagnet", "name", "doc", "imports", "blocks"), "a block library")
        builder.imports_and_blocks(data, spec)
    else:
        spec = builder.spec(data)
    errors.raise_if_any()
    return spec
