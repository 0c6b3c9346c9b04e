"""All ops, registered on import: one module per family."""

from dagnet.ops.registry import OPS, REQUIRED, Arg, FunctionCall, ModuleCall, OpDef, ShapeError, get, register
from dagnet.ops import activation, conv, dense, fields, merge, norm, recurrent, shape  # noqa: F401  (registration)

__all__ = ["OPS", "REQUIRED", "Arg", "FunctionCall", "ModuleCall", "OpDef", "ShapeError", "get", "register"]
