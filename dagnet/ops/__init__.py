"""All ops, registered on import: one module per family."""

from dagnet.ops.registry import OPS, REQUIRED, Arg, FunctionCall, ModuleCall, OpDef, ShapeError, get, register
from dagnet.ops import (activation, attention, conv, dense, fields, learned, merge, norm,  # noqa: F401  (registration)
                        opaque, recurrent, shape, tensor, window)

__all__ = ["OPS", "REQUIRED", "Arg", "FunctionCall", "ModuleCall", "OpDef", "ShapeError", "get", "register",
           "build_call", "count_params", "module_params"]


def build_call(ir, node):
    """The op's ModuleCall / FunctionCall for this node (None for identity)."""
    in_shapes = [ir.node(i).shape for i in node.inputs]
    return get(node.op).build(in_shapes, node.args)


def count_params(ir, node) -> int:
    """Parameters of a node: by the op's own rule, else counted on its module built on the meta device."""
    opdef = get(node.op)
    if node.op == "input" or opdef is None:
        return 0
    if opdef.params is not None:
        return int(opdef.params([ir.node(i).shape for i in node.inputs], node.args))
    return module_params(build_call(ir, node))


def module_params(call) -> int:
    """Parameters of the module a ModuleCall builds (0 for a function call), built on the
    meta device (no memory, however large) unless it copies data in as it is built."""
    if not isinstance(call, ModuleCall):
        return 0
    import torch
    try:
        with torch.device("meta"):
            module = call.cls(**call.kwargs)
    except NotImplementedError:
        module = call.cls(**call.kwargs)
    return sum(p.numel() for p in module.parameters())
