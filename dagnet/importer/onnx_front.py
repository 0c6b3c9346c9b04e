"""An ONNX file becomes an ``nn.Module`` whose submodule paths are the exporter's scopes.

``torch.onnx.export`` records where each node came from: the dynamo exporter
as node metadata (``pkg.torch.onnx.name_scopes``, ``namespace``), the
TorchScript exporter in node names (``/layer1/layer1.0/conv1/Conv``). Those
scopes become nested containers, so ResNet-50's first conv comes back at
``layer1.0.conv1``; a file without them comes back flat, in graph order.

Ops with weights become standard ``torch.nn`` leaves holding the
initializers (Conv -> ``nn.Conv2d``, MatMul+Add / Gemm -> ``nn.Linear``, ...);
the rest become small :class:`~dagnet.importer._onnx_ops.OnnxOp` modules of
plain torch calls. Constant subgraphs (shape arithmetic on known shapes,
transposed weights) fold at load time, so the module ``torch.fx`` traces. An
op with no mapping is an :class:`~dagnet.importer.opaque.Unsupported` leaf.
Nothing in the file executes: the model is protobuf data, read with ``onnx``.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

from dagnet.importer import _onnx_leaves as leaves
from dagnet.importer import _onnx_symbolic as symbolic
from dagnet.importer._onnx_attention import match as attention_match
from dagnet.importer._onnx_ops import FOLDABLE, FUNCTIONS, OnnxOp, resize_mode
from dagnet.importer.opaque import Unsupported

RUNTIME = leaves.RUNTIME


_INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 9, 12, 13}  # TensorProto's (u)int8..64 and bool


class OnnxImportError(ValueError):
    """A file that is not a readable ONNX model; the message is one line naming the file."""


@dataclass
class OnnxImport:
    """An imported ONNX model: the module, its inputs' shapes (batch dim included,
    symbolic dims ``None``, keyed by the forward's argument names), its output
    names, and the ops it could not map."""

    module: nn.Module
    inputs: dict[str, tuple]
    outputs: list[str]
    unsupported: list[Unsupported] = field(default_factory=list)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)  # each input's element type


@dataclass
class _Unit:
    """One module call: a node, or a few fused ones (MatMul+Add, Sigmoid*x)."""

    module: nn.Module
    args: list[str]
    outputs: list[str]
    scope: tuple[str, ...] | None
    leaf: str | None
    label: str
    location: str = ""


def identifier(name: str) -> str:
    """A legal Python identifier for an ONNX value name (``input.1`` -> ``input_1``)."""
    ident = re.sub(r"\W", "_", name) or "input"
    if ident[0].isdigit():
        ident = "_" + ident
    return ident + "_" if keyword.iskeyword(ident) else ident


def load_onnx(path: str | Path, *, name: str | None = None) -> OnnxImport:
    """Read ``path`` and return its model as an ``nn.Module`` (eval mode) with its inputs and outputs."""
    import onnx

    model = _read(Path(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a custom domain or malformed value_info: shapes stay unknown
        inferred = model
    graph = model.graph
    shapes: dict[str, tuple | None] = {}
    integer: dict[str, bool] = {}  # whether a value holds integers (ONNX Div truncates those)
    for vi in (*graph.input, *graph.output, *inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        shapes[vi.name] = _shape(vi) or shapes.get(vi.name)
        if vi.type.tensor_type.elem_type:
            integer[vi.name] = vi.type.tensor_type.elem_type in _INTEGER_TYPES
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    consts = {t.name: _tensor(t) for t in graph.initializer}
    graph_inputs = [vi for vi in graph.input if vi.name not in consts]
    classes: dict[tuple[str, ...], str] = {}
    units = _units(graph, consts, shapes, integer, opset, classes)
    paths = _assign_paths(units)

    root, fx_graph, env, used = nn.Module(), fx.Graph(), {}, set()
    for vi in graph_inputs:
        env[vi.name] = fx_graph.placeholder(_unique(identifier(vi.name), used))
    placed: dict[int, str] = {}
    for unit, unit_path in zip(units, paths):
        target = placed.get(id(unit.module)) or _place(root, unit_path, unit.module)
        placed[id(unit.module)] = target
        for arg in unit.args:
            if arg not in env:
                raise OnnxImportError(f"{path}: node '{unit.location}' reads '{arg}', which no graph input, "
                                      "initializer or earlier node produces (expected a topologically sorted graph)")
        call = fx_graph.call_module(target, tuple(env[a] for a in unit.args))
        if len(unit.outputs) == 1:
            env[unit.outputs[0]] = call
        else:
            for i, out in enumerate(unit.outputs):
                if out:
                    env[out] = fx_graph.call_function(_getitem, (call, i))
    results = []
    for k, vi in enumerate(graph.output):
        if vi.name not in env and vi.name in consts:
            root.register_buffer(f"constant_{k}", consts[vi.name])
            env[vi.name] = fx_graph.get_attr(f"constant_{k}")
        if vi.name not in env:
            raise OnnxImportError(f"{path}: graph output '{vi.name}' is not a tensor the model computes at run time "
                                  "(expected a node's output or a constant)")
        results.append(env[vi.name])
    fx_graph.output(results[0] if len(results) == 1 else tuple(results))
    module = fx.GraphModule(root, fx_graph, class_name=identifier(name or Path(path).stem)).eval()
    _name_containers(module, classes)
    placeholders = list(zip(fx_graph.find_nodes(op="placeholder"), graph_inputs))
    inputs = {n.target: shapes.get(vi.name) for n, vi in placeholders}
    dtypes = {n.target: _dtype(vi) for n, vi in placeholders}
    unsupported = [m for m in module.modules() if isinstance(m, Unsupported)]
    return OnnxImport(module, inputs, [vi.name for vi in graph.output], unsupported, dtypes)


def _getitem(values, index):
    return values[index]


def _read(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise OnnxImportError(f"{path}: no such file") from None
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(err).__name__}: {reason})") from None
    if model.ir_version <= 0 or not model.graph.output:
        raise OnnxImportError(f"{path}: not an ONNX model (expected a ModelProto with a graph and outputs)")
    return model


def _shape(vi) -> tuple | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)


def _dtype(vi) -> torch.dtype:
    from dagnet.importer._onnx_ops import torch_dtype

    elem = vi.type.tensor_type.elem_type
    return torch_dtype(elem) if elem else torch.float32


def _tensor(proto) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(numpy_helper.to_array(proto).copy())


def _attrs(node) -> dict:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if hasattr(value, "raw_data") else value
    return out


def _constant(node, attrs: dict) -> torch.Tensor:
    (key, value), = attrs.items()
    if key == "value":
        return torch.from_numpy(value.copy())
    dtype = {"value_float": torch.float32, "value_floats": torch.float32,
             "value_int": torch.int64, "value_ints": torch.int64}.get(key)
    if dtype is None:
        raise NotImplementedError(key)
    return torch.tensor(value, dtype=dtype)


def _units(graph, consts: dict, shapes: dict, integer: dict, opset: int, classes: dict) -> list[_Unit]:
    """Fold constant nodes into ``consts`` and turn every other node into a module call; ``classes``
    gets the source class of each scope the file names one for (the dynamo exporter's metadata)."""
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {vi.name for vi in graph.output}
    producer = {out: node for node in graph.node for out in node.output if out}
    absorbed: set[int] = set()
    syms: dict[str, symbolic.Sym] = {}  # shape vectors with sizes known only at run time
    units = []
    for index, node in enumerate(graph.node):
        if id(node) in absorbed:
            continue
        attrs = _attrs(node)
        default_domain = node.domain in ("", "ai.onnx")
        ins = [consts[n] if n in consts else syms[n] if n in syms else None if n == "" else RUNTIME
               for n in node.input]
        has_sym = any(isinstance(v, symbolic.Sym) for v in ins)
        if default_domain and not has_sym and _fold(node, attrs, ins, consts, shapes):
            continue
        if default_domain and _fold_symbolic(node, attrs, ins, syms, shapes):
            continue
        location = node.name or f"node {index} ({node.op_type})"

        def sole_consumer(out: str, op_type: str):
            users = consumers.get(out, [])
            if out in graph_outputs or len(users) != 1 or users[0].op_type != op_type:
                return None
            return users[0]

        attention = attention_match(node, producer, consumers, consts, shapes, graph_outputs, opset) \
            if default_domain and node.op_type == "MatMul" and RUNTIME in ins else None
        fused = _fuse(node, ins, consts, sole_consumer) if default_domain and attention is None else None
        if attention is not None:
            # the nodes before it in the pattern are units already: they go, the one call replaces them
            module, args, nodes = attention
            gone = {out for n in nodes for out in n.output}
            units[:] = [u for u in units if not set(u.outputs) <= gone]
            outputs, label = list(node.output), "attention"
            if module.k_perm is not None:     # the keys as [B, H, T, d]: a permute of their own
                keys = f"{args[1]}::keys"
                permute = OnnxOp("Transpose", {"perm": module.k_perm, "_op": "Transpose"}, ["arg"], {})
                scope = _scope(node, consts, classes)[0]
                units.append(_Unit(permute, [args[1]], [keys], scope, "keys", "transpose", location))
                module.k_perm, args = None, [args[0], keys, *args[2:]]
        elif fused is not None:
            module, args, outputs, label, absorbed_node = fused
            absorbed.add(id(absorbed_node))
        else:
            outputs = _live_outputs(node, lambda o: o in graph_outputs or bool(consumers.get(o)))
            module, args, label = _module(node, attrs, ins, shapes, integer, opset, location, default_domain,
                                          len(outputs))
        scope, leaf = _scope(node, consts, classes)
        units.append(_Unit(module, args, outputs, scope, leaf, label, location))
    return units


def _fold(node, attrs, ins, consts, shapes) -> bool:
    """Compute a node whose inputs are all known now; ``False`` when it must run later."""
    op = node.op_type
    try:
        if op == "Constant":
            values = [_constant(node, attrs)]
        elif op in ("Shape", "Size") and shapes.get(node.input[0]) and None not in shapes[node.input[0]]:
            values = [FUNCTIONS[op]([torch.empty(shapes[node.input[0]], device="meta")], attrs).to("cpu")
                      if op == "Size" else
                      torch.tensor(shapes[node.input[0]][attrs.get("start", 0) : attrs.get("end")], dtype=torch.int64)]
        elif op in FOLDABLE and node.input and RUNTIME not in ins:
            result = FUNCTIONS[op](ins, attrs)
            values = list(result) if isinstance(result, (tuple, list)) else [result]
        else:
            return False
    except Exception:  # an op form the torch twin cannot compute now: it runs later instead
        return False
    for name, value in zip(node.output, values):
        consts[name] = value
    return True


def _fold_symbolic(node, attrs, ins, syms, shapes) -> bool:
    """Shape arithmetic whose result depends on run-time sizes: kept as a Sym, not an op."""
    if node.op_type == "Shape" and ins[0] is RUNTIME and shapes.get(node.input[0]) is not None:
        syms[node.output[0]] = symbolic.shape_of(node.input[0], shapes[node.input[0]], attrs)
        return True
    result = symbolic.fold(node.op_type, ins, attrs) if len(node.output) == 1 else None
    if result is not None:
        syms[node.output[0]] = result
    return result is not None


def _fuse(node, ins, consts, sole_consumer):
    """MatMul + bias Add -> ``nn.Linear``; ``x * Sigmoid(x)`` -> ``nn.SiLU``."""
    if node.op_type == "MatMul" and ins[0] is RUNTIME and isinstance(ins[1], torch.Tensor) and ins[1].dim() == 2:
        add = sole_consumer(node.output[0], "Add")
        if add is not None:
            other = [n for n in add.input if n != node.output[0]]
            bias = consts.get(other[0]) if len(other) == 1 else None
            if bias is not None and bias.numel() == ins[1].shape[1] and bias.dim() <= 1:
                return leaves.linear(ins[1].t(), bias), [node.input[0]], list(add.output), "linear", add
        return leaves.linear(ins[1].t(), None), [node.input[0]], list(node.output), "linear", node
    if node.op_type == "Sigmoid":
        mul = sole_consumer(node.output[0], "Mul")
        if mul is not None and sorted(mul.input) == sorted([node.input[0], node.output[0]]):
            return nn.SiLU(), [node.input[0]], list(mul.output), "silu", mul
    return None


def _live_outputs(node, used) -> list[str]:
    """The outputs a module call must produce: optional extras nobody reads
    (Dropout's mask, BatchNormalization's running stats) are dropped."""
    outputs = list(node.output)
    while len(outputs) > 1 and not (outputs[-1] and used(outputs[-1])):
        outputs.pop()
    return outputs


def _module(node, attrs, ins, shapes, integer, opset, location, default_domain, n_outputs: int):
    """The module for one node: a ``torch.nn`` leaf, a generic op, or ``Unsupported``."""
    op = node.op_type
    label = op.lower()
    runtime_args = [n for n, v in zip(node.input, ins) if v is RUNTIME]
    builder = leaves.BUILDERS.get(op) if default_domain else None
    if builder is not None and len(runtime_args) == 1 and (ins[0] is RUNTIME or op == "Gather"):
        try:
            if op in ("Softmax", "LogSoftmax"):
                module = builder(attrs, ins, shapes.get(node.input[0]), opset)
            else:
                module = builder(attrs, ins, shapes.get(node.input[0]))
        except Exception:  # an attribute form the nn twin does not take: fall back below
            module = None
        if module is not None and n_outputs == 1:
            return module, runtime_args, label
    if op in ("Resize", "Upsample") and resize_mode({**attrs, "_op": op}, len(shapes.get(node.input[0]) or ())) is None:
        default_domain = False  # a sampling rule F.interpolate does not have: Unsupported below
    if n_outputs > 1 and op != "Split":
        default_domain = False  # a second output read (MaxPool's indices...): the torch twins return one
    if default_domain and op in FUNCTIONS:
        slots, constants, witnesses = [], {}, []
        for i, value in enumerate(ins):
            if isinstance(value, symbolic.Sym):
                slots.append(("symbolic", symbolic.witnesses(value.values, witnesses), value.scalar))
            elif i > 0 and isinstance(value, torch.Tensor) and value.numel() <= 1024 and (
                    not value.is_floating_point() or op in ("Resize", "Upsample")):  # sizes, axes, scales
                slots.append(("literal", value.tolist()))
            elif isinstance(value, torch.Tensor):
                constants[f"constant_{i}"] = value
                slots.append(("buffer", f"constant_{i}"))
            else:
                slots.append("arg" if value is RUNTIME else None)
        ranks = [len(shapes[n]) if shapes.get(n) is not None else None for n in node.input]
        attrs = {**attrs, "_ranks": ranks, "_outputs": len(node.output), "_opset": opset, "_op": op}
        if node.input and node.input[0] in integer:
            attrs["_integer"] = integer[node.input[0]]
        return OnnxOp(op, attrs, slots, constants), runtime_args + witnesses, label
    source = f"{node.domain}::{op}" if node.domain not in ("", "ai.onnx") else f"onnx::{op}"
    out_shapes = [shapes.get(o) for o in node.output if o]
    known = all(s is not None and len(s) > 0 for s in out_shapes)
    return Unsupported(source, location, [s[1:] for s in out_shapes] if known else None), runtime_args, label


def _scope_of_weight(node, consts, scope):
    """A fused Conv+BN node carries the BN's scope; its weight's name says ``layer1.0.conv1``."""
    for name in node.input[1:]:
        if name in consts and name.endswith(".weight"):
            candidate = tuple(name[: -len(".weight")].split("."))
            if all(candidate) and candidate[:-1] == scope[: len(candidate) - 1]:
                return candidate
    return None


def _scope(node, consts, classes: dict | None = None) -> tuple[tuple[str, ...] | None, str | None]:
    """The module path a node was exported from, and its op's own name there; the class of each
    scope on the way, where the file records it, goes into ``classes`` (path -> class name)."""
    meta = {p.key: p.value for p in node.metadata_props}
    parts: list[str] | None = None
    hierarchy: list[str] = []
    if "pkg.torch.onnx.name_scopes" in meta:
        try:
            parts = [str(p) for p in ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])][1:]
            hierarchy = [str(c) for c in ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))][1:]
        except (ValueError, SyntaxError):
            parts = None if not hierarchy else parts
            hierarchy = []
    if parts is None and meta.get("namespace", "").startswith(":"):
        parts = [segment.split(": ")[0] for segment in meta["namespace"].split("/")[1:]]
    if parts is None and node.name.startswith("/"):
        parts = node.name.split("/")[1:]
    if not parts:
        return None, node.name or None
    scope: tuple[str, ...] = ()
    for k, part in enumerate(parts[:-1]):
        # A part repeats some tail of the path so far ("layer1.0.bn1" after
        # layer1/0, "downsample.0" after .../downsample) or is a new child.
        names = tuple(part.split("."))
        tail = next((k for k in range(len(scope)) if names[: len(scope) - k] == scope[k:]
                     and len(names) > len(scope) - k), len(scope))
        scope = scope + names[len(scope) - tail :]
        if classes is not None and k < len(hierarchy) and len(hierarchy) == len(parts):
            classes.setdefault(tuple(_name(c) for c in scope), hierarchy[k].rsplit(".", 1)[-1])
    from_weight = _scope_of_weight(node, consts, scope)
    return (from_weight, None) if from_weight else (scope, parts[-1])


def _stateless(unit: _Unit) -> bool:
    return not list(unit.module.parameters()) and not list(unit.module.buffers())


def _stateless_twins(units: list[_Unit]) -> bool:
    first = units[0].module
    return all(
        type(u.module) is type(first) and not list(u.module.parameters()) and not list(u.module.buffers())
        and repr(u.module) == repr(first) for u in units
    )


def _name(text: str) -> str:
    name = re.sub(r"\W", "_", text).strip("_") or "node"
    return name + "_" if hasattr(fx.GraphModule, name) else name


def _unique(name: str, used: set) -> str:
    candidate, k = name, 1
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


def _assign_paths(units: list[_Unit]) -> list[tuple[str, ...]]:
    """Each unit's submodule path: its scope when it is the scope's one call
    (or a repeat of one stateless module), else a child of the scope named
    after the op; units with no scope go flat at top level."""
    scopes = {u.scope[:k] for u in units if u.scope for k in range(1, len(u.scope) + 1)}
    scopes = {tuple(_name(c) for c in s) for s in scopes}
    parents = {s[:-1] for s in scopes}
    used: dict[tuple, set] = defaultdict(set)
    for s in scopes:
        used[s[:-1]].add(s[-1])
    by_scope: dict[tuple, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        by_scope[tuple(_name(c) for c in u.scope) if u.scope else ()].append(i)
    paths: list[tuple[str, ...]] = [()] * len(units)
    for scope, members in by_scope.items():
        group = [units[i] for i in members]
        if scope and scope not in parents and (len(group) == 1 or _stateless_twins(group)):
            for i in members:
                paths[i] = scope
            continue
        by_leaf: dict[str, list[int]] = defaultdict(list)
        for i in members:
            u = units[i]
            leaf = _name(u.leaf) if u.leaf else _name(u.label)
            if scope and _stateless(u):
                # the exporters number ops over the whole graph (add_3, Add_1): equal blocks get equal names
                leaf = re.sub(r"_\d+$", "", leaf) or leaf
            by_leaf[leaf].append(i)
        for leaf, indices in by_leaf.items():
            group = [units[i] for i in indices]
            if not scope:  # no source hierarchy: flat, one module per node
                for i in indices:
                    paths[i] = (_unique(leaf, used[scope]),)
                continue
            same_name = len({u.leaf or u.label for u in group}) == 1      # one source module called again
            if len(group) == 1 or (same_name and _stateless_twins(group)):
                shared = _unique(leaf, used[scope])
                for i in indices:
                    paths[i] = scope + (shared,)
                continue
            if all(_stateless(u) for u in group):     # distinct ops (their constants may differ): one name each
                for i in indices:
                    paths[i] = scope + (_unique(leaf, used[scope]),)
                continue
            container = _unique(leaf, used[scope])
            for i in indices:
                paths[i] = scope + (container, _unique(_name(units[i].label), used[scope + (container,)]))
    return paths


_CONTAINERS: dict[str, type] = {}


def _name_containers(module: nn.Module, classes: dict) -> None:
    """Give each empty module standing for a source scope a class named as the source's (``BasicBlock``),
    so the folded spec names its block as an nn.Module import would (fx rebuilds them as plain modules)."""
    for path, m in module.named_modules():
        cls = classes.get(tuple(path.split("."))) if path else None
        if type(m) is nn.Module and cls and cls.isidentifier():
            if cls not in _CONTAINERS:
                _CONTAINERS[cls] = type(cls, (nn.Module,), {"__module__": __name__})
            m.__class__ = _CONTAINERS[cls]


def _place(root: nn.Module, path: tuple[str, ...], module: nn.Module) -> str:
    parent = root
    for part in path[:-1]:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(path[-1], module)
    return ".".join(path)
