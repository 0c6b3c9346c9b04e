"""All ops, registered on import: one module per family."""

from dagnet.ops.registry import OPS, REQUIRED, Arg, FunctionCall, ModuleCall, OpDef, ShapeError, get, register
from dagnet.ops import activation, conv, dense, fields, merge, norm, recurrent, shape  # noqa: F401  (registration)

__all__ = ["OPS", "REQUIRED", "Arg", "FunctionCall", "ModuleCall", "OpDef", "ShapeError", "get", "register",
           "build_call", "count_params"]


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
    call = build_call(ir, node)
    if not isinstance(call, ModuleCall):
        return 0
    import torch
    try:
        with torch.device("meta"):                 # no memory, however large
            module = call.cls(**call.kwargs)
    except NotImplementedError:                    # a module that copies data in as it is built
        module = call.cls(**call.kwargs)
    return sum(p.numel() for p in module.parameters())
