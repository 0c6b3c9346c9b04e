"""Emission: checked IR -> ``torch.fx.GraphModule`` whose code reads like hand-written PyTorch.

Every op node becomes one line of ``forward``: a call of the submodule that
owns its parameters (``self.c1(image)``, so ``state_dict`` keys follow node
paths: ``layer3.1.conv2.weight``) or a plain function call
(``torch.relu(c1)``). torch.fx frees each value after its last use in the
generated code (``c1 = None``), so a forward message lives exactly as long as
its consumers need it. Nodes are emitted in ``IR.order()``, the order that
``dagnet.schedule`` analyses (sizes, lifetimes, peak memory) for
``dagnet compile --schedule``; emit does not read the schedule.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import keyword
import math
import operator
import re

import networkx as nx
import torch
import torch.fx as fx
import torch.utils.checkpoint
from torch import nn

from dagnet import ops
from dagnet.errors import SpecError
from dagnet.ir import IR, Node
from dagnet.ops import build_call, functional
from dagnet.ops.registry import FunctionCall, ModuleCall


# A segment of a node path: a name the spec rule allows (dagnet.spec.names), or one that
# expansion makes: a repetition `3`, a residual merge `3_add`, a dense merge `3_in`.
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(_add|_in)?")


def var_name(path: str) -> str:
    """A Python identifier for a node path: ``layer3.1.conv2`` -> ``layer3_1_conv2``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", path)
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def _checked_path(path: str) -> str:
    """``path``, after making sure torch.fx can write it into code as it is.

    fx interpolates module paths into ``getattr(self, "...")`` unescaped, so a
    path is only emitted when every segment is an identifier or a number. The
    spec's naming rule already guarantees this for every IR that ``expand``
    built; this guards IRs built by hand.
    """
    if not all(_SEGMENT.fullmatch(part) for part in path.split(".")):
        raise ValueError(f"node path {path!r} is not a dotted identifier; names must follow "
                         "dagnet.spec.names (ASCII letters, digits and `_`)")
    return path


def class_name(model_name: str) -> str:
    """The generated class's name: ``resnet-50`` -> ``Resnet50``, ``3d-unet`` -> ``Model3dUnet``.

    Only ASCII letters and digits survive: the spec's name is free text.
    """
    words = re.split(r"[^A-Za-z0-9]+", model_name)
    name = "".join(w.capitalize() for w in words if w)
    taken = keyword.iskeyword(name) or name in _FILE_GLOBALS or hasattr(builtins, name) \
        or hasattr(functional, name)        # helpers a standalone file copies in
    return name if name[:1].isalpha() and not taken else "Model" + name


_FILE_GLOBALS = {"F", "List", "Optional", "Tuple", "Tensor", "math"}   # what a standalone file imports


def _function_kwargs(node: Node, call: FunctionCall) -> dict:
    """Drop arguments equal to the function's own default, so the code says only what matters.

    Where the function hides its signature (``F.max_pool2d`` takes ``*args,
    **kwargs``) the registry's default, which mirrors PyTorch's, decides; a
    builtin without any signature keeps every argument but a defaulted None.
    """
    opdef = ops.get(node.op)
    try:
        params = inspect.signature(call.fn).parameters
    except (TypeError, ValueError):
        # a builtin: keep every argument but a None the registry defaults to, which means
        # "PyTorch's default" and which TorchScript's schema may not take (avg_pool2d's stride)
        return {k: v for k, v in call.kwargs.items()
                if not (v is None and (arg := opdef.arg(k)) is not None and arg.default is None)}
    out = {}
    for key, value in call.kwargs.items():
        if key in params:
            default = params[key].default
            keep = default is inspect.Parameter.empty or default != value
        else:
            arg = opdef.arg(key)
            keep = arg is None or arg.required or arg.default != value
        if keep:
            out[key] = value
    return out


def emit(ir: IR, outputs: list[str] | None = None, as_dict: bool | None = None,
         checkpoint: str | None = None) -> fx.GraphModule:
    """Build the module. ``outputs`` (names or node paths) overrides the spec's outputs.

    One output returns a tensor and several a dict, unless ``as_dict`` says
    otherwise. Parts marked ``checkpoint: true`` in the spec (or, with
    ``checkpoint="blocks"``, every top-level block, seq and repeat) become
    submodules run under ``torch.utils.checkpoint``: their messages are
    recomputed in the backward pass instead of being stored.
    """
    wanted = _outputs(ir, outputs)
    groups = checkpoint_groups(ir, checkpoint)
    graph = fx.Graph()
    values: dict[str, fx.Node] = {}
    modules: dict[str, nn.Module] = {}
    for name in ir.inputs:
        values[name] = graph.placeholder(var_name(name))
    for item in _contracted_order(ir, groups):
        if isinstance(item, Node):
            _emit_node(graph, ir, item, values, modules)
        else:
            _emit_checkpointed(graph, ir, *item, values, modules, set(wanted.values()))
    if as_dict is None:
        as_dict = len(wanted) > 1
    graph.output({k: values[v] for k, v in wanted.items()} if as_dict else values[next(iter(wanted.values()))])
    graph.lint()
    module = fx.GraphModule(_root(modules), graph, class_name=class_name(ir.name))
    module.dagnet_ir = ir           # for summaries, rendering and losses
    return module


def _root(modules: dict[str, nn.Module]) -> nn.Module:
    """A module root (not a dict, which fx sorts by depth) keeps state_dict in graph order."""
    root = nn.Module()
    for path, sub in modules.items():
        _install(root, path, sub)
    return root


def _emit_node(graph: fx.Graph, ir: IR, node: Node, values: dict, modules: dict, prefix: str = "") -> None:
    """Append one node's call to ``graph``; module targets are relative to ``prefix``."""
    ins = [values[i] for i in node.inputs]
    _checked_path(node.name)
    call = build_call(ir, node)
    if call is None:
        values[node.name] = ins[0]
    elif isinstance(call, ModuleCall):
        target = node.name[len(prefix):]
        modules[target] = call.cls(**call.kwargs)
        if call.method is None:
            values[node.name] = graph.create_node("call_module", target, tuple(ins), {},
                                                  name=var_name(node.name))
        else:                       # crf = self.crf.marginals(emissions), as two fx nodes
            field = graph.create_node("get_attr", target, name=var_name(node.name) + "_field")
            values[node.name] = graph.create_node("call_method", call.method, (field, *ins), {},
                                                  name=var_name(node.name))
    else:
        args = (ins,) if call.inputs_as_list else tuple(ins)
        values[node.name] = graph.create_node("call_function", call.fn, args,
                                              _function_kwargs(node, call), name=var_name(node.name))


def checkpoint_groups(ir: IR, mode: str | None = None) -> dict[str, str]:
    """Node name -> path of the checkpointed part it belongs to."""
    groups = {}
    for node in ir.order():
        if node.op == "input":
            continue
        if mode == "blocks" and "." in node.name:
            groups[node.name] = node.name.split(".")[0]
        elif node.checkpoint and node.name.startswith(node.checkpoint + "."):
            groups[node.name] = node.checkpoint
    return groups


def _contracted_order(ir: IR, groups: dict[str, str]):
    """Nodes and checkpointed parts (path, nodes) in a topological order of the contracted DAG."""
    order = [n for n in ir.order() if n.op != "input"]
    if not groups:
        return order
    key = {n.name: groups.get(n.name, n.name) for n in order}
    members: dict[str, list[Node]] = {}
    contracted = nx.DiGraph()
    for n in order:
        members.setdefault(key[n.name], []).append(n)
        contracted.add_node(key[n.name])
        contracted.add_edges_from((key[i], key[n.name]) for i in n.inputs if i in key and key[i] != key[n.name])
    try:
        first = {k: i for i, k in enumerate(members)}
        sequence = list(nx.lexicographical_topological_sort(contracted, key=first.get))
    except nx.NetworkXUnfeasible:
        path = next(k for k in members if k in groups.values())
        raise SpecError(f"checkpointed part `{path}` has a path leaving and re-entering it",
                        members[path][0].loc, "checkpoint a part with one entry and one exit") from None
    return [members[k][0] if k not in groups.values() else (k, members[k]) for k in sequence]


def _emit_checkpointed(graph, ir, path, nodes, values, modules, graph_outputs) -> None:
    """Emit ``nodes`` as a submodule at ``path``, called through ``torch.utils.checkpoint``."""
    inside = {n.name for n in nodes}
    inputs = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in inside))
    exits = [n.name for n in nodes
             if n.name in graph_outputs or any(s not in inside for s in ir.graph.successors(n.name))]
    sub, sub_values, sub_modules = fx.Graph(), {}, {}
    for name in inputs:
        sub_values[name] = sub.placeholder(var_name(name))
    for node in nodes:
        _emit_node(sub, ir, node, sub_values, sub_modules, prefix=path + ".")
    sub.output(sub_values[exits[0]] if len(exits) == 1 else tuple(sub_values[e] for e in exits))
    modules[path] = fx.GraphModule(_root(sub_modules), sub, class_name="Checkpointed")
    part = graph.create_node("get_attr", path, name=var_name(path) + "_part")
    call = graph.create_node("call_function", checkpointed, (part, *[values[i] for i in inputs]),
                             name=var_name(path))
    if len(exits) == 1:
        values[exits[0]] = call
    else:
        for k, name in enumerate(exits):
            values[name] = graph.call_function(operator.getitem, (call, k))


def checkpointed(part: nn.Module, *inputs):
    """``part(*inputs)`` under ``torch.utils.checkpoint`` (non-reentrant).

    The backward pass runs ``part`` a second time to recompute its messages;
    batch norm would then fold the same batch into its running statistics
    twice. The recomputation runs with those statistics saved and put back,
    so a checkpointed model's buffers end each step exactly as a plain one's.
    """
    return torch.utils.checkpoint.checkpoint(
        part, *inputs, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _statistics_kept(part)))


@contextlib.contextmanager
def _statistics_kept(module: nn.Module):
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _outputs(ir: IR, outputs) -> dict[str, str]:
    if outputs is None:
        return dict(ir.outputs)
    wanted = {}
    for name in outputs:
        path = ir.outputs.get(name, name)
        if path not in ir.graph:
            raise KeyError(f"no node or output named `{name}`")
        wanted[name] = path
    return wanted


# -- standalone source ---------------------------------------------------------

def standalone_source(module: fx.GraphModule, header: str = "") -> str:
    """A Python file defining the model with ``import torch`` as its only dependency.

    dagnet's own helpers are copied in; a plugin op's function or module class
    is imported from the plugin's module (which the file then needs too).
    """
    from dagnet.fields.portable import source_files, twin_class
    from dagnet.fields.protocol import Field
    ir: IR = module.dagnet_ir
    if any(n.op == "get_attr" and n.name.endswith("_part") for n in module.graph.nodes):
        raise ValueError("a standalone file cannot hold checkpointed parts; emit without checkpointing")
    twins = source_files(module)    # structured nodes run as their portable twins, copied in
    code = module.graph.python_code(root_module="self")
    helpers, aliases, imports = [], [], set()
    for name, obj in sorted(code.globals.items()):
        origin = getattr(obj, "__module__", "") or ""
        if origin == "dagnet.ops.functional":
            helpers.append(inspect.getsource(obj))
            if name != obj.__name__:
                aliases.append(f"{name} = {obj.__name__}")
        elif callable(obj) and _from_plugin(origin):
            imports.add(f"from {origin} import {obj.__qualname__}"
                        + (f" as {name}" if name != obj.__qualname__ else ""))
    installs, classes = [], set()
    for node in ir.order():
        if node.op != "input" and isinstance(call := build_call(ir, node), ModuleCall):
            cls = twin_class(call.cls) if issubclass(call.cls, Field) else call.cls
            installs.append(f"        _install(self, {node.name!r}, {_module_source(call, cls)})")
            if call.cls.__module__ == "dagnet.ops.functional":  # with its bases from there
                classes.update(c for c in call.cls.__mro__ if c.__module__ == call.cls.__module__)
            elif _from_plugin(call.cls.__module__):
                imports.add(f"from {call.cls.__module__} import {call.cls.__qualname__}")
    helpers += [inspect.getsource(c) for c in sorted(classes, key=lambda c: (len(c.__mro__), c.__name__))]
    plugins = sorted({line.split()[1] for line in imports})
    needs = "Imports only torch."
    if plugins:
        needs = f"Imports torch and the plugin module{'s' if len(plugins) > 1 else ''} {', '.join(plugins)}."
    # split at "\n" only: str.splitlines() also splits at U+2028 and friends, which may sit
    # inside a string literal of the code and must stay there
    forward = "\n".join("    " + line if line.strip() else "" for line in code.src.strip("\n").split("\n"))
    twin_imports, twin_code = _twin_sources(twins)
    parts = [
        _docstring(f"{header or ir.name + ': generated by dagnet.'} {needs}"),
        "from typing import List, Optional\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
        + "".join(f"\n{line}" for line in twin_imports + sorted(imports)),
        *twin_code,
        *helpers, *aliases, *_constants(code.src),
        _INSTALL,
        f"class {type(module).__name__}(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        + ("\n".join(installs) or "        pass") + "\n\n" + forward + "\n",
    ]
    source = "\n\n\n".join(p.strip("\n") for p in parts if p) + "\n"
    try:
        ast.parse(source)
    except SyntaxError as exc:          # a bug in dagnet, never the user's input: say so, write nothing
        raise RuntimeError(f"dagnet generated invalid Python (line {exc.lineno}: {exc.msg}); "
                           "please report this with the spec") from None
    return source


def _docstring(text: str) -> str:
    """``text`` as a module docstring; anything that could end the string early is escaped."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return f'"""{text}"""'
    return repr(text)


def _constants(src: str) -> list[str]:
    """Definitions of the non-finite floats torch.fx writes as bare ``inf`` and ``nan``."""
    used = {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)}
    return [f'{name} = float("{name}")' for name in ("inf", "nan") if name in used]


def _from_plugin(module_name: str) -> bool:
    """Code from outside torch, the standard library and dagnet: a plugin's."""
    top = module_name.split(".")[0]
    return bool(top) and top not in ("torch", "dagnet", "builtins", "operator", "math", "typing")


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` at a dotted path, creating parent containers as needed."""
    *parents, leaf = path.split(".")
    for name in parents:
        if not hasattr(root, name):
            root.add_module(name, nn.Module())
        root = getattr(root, name)
    root.add_module(leaf, module)


_INSTALL = inspect.getsource(_install)


def _twin_sources(paths) -> tuple[list[str], list[str]]:
    """Portable twin files (dagnet.fields.portable) as the standalone file holds them: the
    imports they add to the file's header (only the standard library's and torch's: the
    twin files' rule) and each file's code without its docstring and imports."""
    header = {"from typing import List, Optional", "import torch", "import torch.nn as nn",
              "import torch.nn.functional as F"}
    imports, code = {}, []
    for path in paths:
        text = path.read_text()
        drop = set()
        for i, stmt in enumerate(ast.parse(text).body):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                line = ast.unparse(stmt)
                if line not in header and not line.startswith("from __future__"):
                    imports[line] = None
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) or (i == 0 and isinstance(stmt, ast.Expr)):
                drop.update(range(stmt.lineno, stmt.end_lineno + 1))
        lines = [line for n, line in enumerate(text.split("\n"), 1) if n not in drop]
        code.append(f"# dagnet/fields/portable/{path.name}: portable twins of structured nodes\n" + "\n".join(lines).strip("\n"))
    return list(imports), code



def _module_source(call: ModuleCall, cls: type | None = None) -> str:
    """``Class(args)`` for a module call; ``cls`` (a twin) stands in for the call's class."""
    cls = cls or call.cls
    prefix = "nn." if cls.__module__.startswith("torch.nn") else ""
    params = inspect.signature(cls.__init__).parameters
    positional, keywords = [], []
    for key, value in call.kwargs.items():
        p = params.get(key)
        if p is not None and p.default is inspect.Parameter.empty:
            positional.append(_literal(value))
        elif p is None or p.default != value:
            keywords.append(f"{key}={_literal(value)}")
    return f"{prefix}{cls.__name__}({', '.join(positional + keywords)})"


def _literal(value) -> str:
    """Python source for an argument value: ``repr``, except for floats ``repr`` cannot round-trip."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, (list, tuple)):
        items = ", ".join(_literal(v) for v in value) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        return f"[{items}]" if isinstance(value, list) else f"({items})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"cannot write a {type(value).__name__} into generated code: {value!r}")
