"""The torch.export path of capture: for models torch.fx cannot trace symbolically (Hugging Face
transformers, code that branches on shapes).

``torch.export`` (non-strict) records ATen ops, each with the module stack it
ran under. The ops of one call of a module dagnet maps (``nn.Linear``,
``nn.LayerNorm``, ...) are put back together as one ``call_module`` node, so
the capture stage reads the module's arguments and state exactly as on the fx
path; the remaining ATen ops map through the same function table.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from dagnet.importer import mapping
from dagnet.importer.graph import ImportModelError
from dagnet.importer.opaque import Unsupported


def export_graph(model: nn.Module, example_inputs: tuple) -> fx.GraphModule:
    try:
        program = torch.export.export(model, tuple(example_inputs), strict=False)
        gm = program.module()
    except Exception as error:      # noqa: BLE001 - any export failure is the model's, in one line
        text = str(error).strip().splitlines()
        raise ImportModelError(f"cannot capture {type(model).__name__} with torch.export: "
                               f"{(text[0] if text else type(error).__name__)[:300]}") from None
    _regroup_module_calls(gm, model)
    return gm


def _leaf_path(n: fx.Node, model: nn.Module):
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return None, None
    key, (path, _) = list(stack.items())[-1]
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        return None, None
    if isinstance(module, Unsupported) or mapping.module_entry(module) is not None:
        return key, path
    return None, None


def _regroup_module_calls(gm: fx.GraphModule, model: nn.Module) -> None:
    """Replace each run of ATen nodes that is one call of a mapped module by ``call_module``."""
    graph = gm.graph
    groups: list[tuple[str, str, list[fx.Node]]] = []
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        key, path = _leaf_path(n, model)
        if key is None:
            continue
        if groups and groups[-1][0] == key and groups[-1][2][-1].next is n:
            groups[-1][2].append(n)
        else:
            groups.append((key, path, [n]))
    for _, path, members in groups:
        inside = set(members)
        module = model.get_submodule(path)
        own = {id(t) for t in list(module.parameters()) + list(module.buffers())}
        inputs = []
        for m in members:
            for a in m.all_input_nodes:
                if a in inside or a in inputs:
                    continue
                if a.op == "get_attr" and id(_attr(gm, a.target)) in own:
                    continue
                inputs.append(a)
        outputs = [m for m in members if any(u not in inside for u in m.users)]
        if len(outputs) != 1:
            continue            # left as ATen ops: mapped one by one, or unsupported
        if not _try_add_submodule(gm, path, module):
            continue
        with graph.inserting_before(members[0]):
            call = graph.call_module(path, tuple(inputs))
        call.meta = dict(outputs[0].meta)
        outputs[0].replace_all_uses_with(call)
        for m in reversed(members):
            if not m.users:
                graph.erase_node(m)
    graph.eliminate_dead_code()
    gm.recompile()


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def _try_add_submodule(gm: fx.GraphModule, path: str, module: nn.Module) -> bool:
    try:
        existing = gm.get_submodule(path)
        if existing is module:
            return True
    except AttributeError:
        pass
    try:
        return gm.add_submodule(path, module) is not False
    except (AttributeError, RuntimeError):
        return False


ATEN = {}


def _aten_tables():
    """ATen overloads -> the kinds of :mod:`dagnet.importer.mapping` (filled on first use)."""
    if ATEN:
        return ATEN
    aten = torch.ops.aten
    pairs = {
        "add": ["add.Tensor", "add_.Tensor"], "mul": ["mul.Tensor", "mul_.Tensor"], "sub": ["sub.Tensor"],
        "div": ["div.Tensor"], "reshape": ["view.default", "reshape.default", "_unsafe_view.default",
                                           "unsqueeze.default", "squeeze.dim", "squeeze.dims", "squeeze.default"],
        "transpose": ["transpose.int"], "permute": ["permute.default"], "matmul": ["matmul.default", "bmm.default"],
        "softmax": ["softmax.int", "_softmax.default"], "cat": ["cat.default"], "expand": ["expand.default"],
        "dropout": ["dropout.default", "native_dropout.default"], "identity": ["contiguous.default",
                                                                               "clone.default", "alias.default"],
        "flatten": ["flatten.using_ints"], "mean": ["mean.dim"], "sum": ["sum.dim_IntList"],
        "sdpa": ["scaled_dot_product_attention.default"], "getitem_select": ["select.int"],
        "getitem_slice": ["slice.Tensor"], "chunk": ["chunk.default"], "pow": ["pow.Tensor_Scalar"], "split": ["split.Tensor", "split_with_sizes.default"], "adaptive_avg_pool2d": ["adaptive_avg_pool2d.default"],
    }
    for kind, names in pairs.items():
        for name in names:
            packet, _, overload = name.partition(".")
            op = getattr(getattr(aten, packet, None), overload, None)
            if op is not None:
                ATEN[op] = kind
    for name, act in (("relu", "relu"), ("relu_", "relu"), ("gelu", "gelu"), ("silu", "silu"),
                      ("sigmoid", "sigmoid"), ("tanh", "tanh"), ("hardswish", "hardswish"),
                      ("hardsigmoid", "hardsigmoid"), ("hardtanh", None)):
        op = getattr(getattr(aten, name, None), "default", None)
        if op is not None and act:
            ATEN[op] = ("act", act)
    return ATEN
