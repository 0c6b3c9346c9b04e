"""``unsupported``: the place of a source op dagnet cannot express, kept in an imported spec.

``dagnet import`` writes one per op of the source model it has no mapping for,
naming the source op and where it sat, with the shape it produced, so the
imported spec still checks, summarises and renders; compiling it works, and
running it raises an error that names the op. Replace each one by hand (or by
a plugin op) to get a model that runs.
"""

from __future__ import annotations

from dagnet.ops.registry import SIZE, Arg, FunctionCall, OpDef, no_params, register


def unsupported_op(*inputs, source_op: str = "", location: str = "", shape=()):
    """The emitted call of an ``unsupported`` node: it cannot run."""
    where = f" at {location}" if location else ""
    raise NotImplementedError(f"`unsupported` node: the source op {source_op}{where} has no dagnet equivalent; "
                              "replace the node before running the model")


register(OpDef(
    "unsupported", "opaque", "An op of an imported model that dagnet cannot express (`dagnet import` writes it): "
    "`source_op` names it as the source did, `location` says where it was, `shape` is its per-example output "
    "shape. It checks and renders; running it is an error.",
    (Arg("source_op", "str", doc="the source's name for the op"),
     Arg("location", "str", "", doc="where it sat in the source model"),
     Arg("shape", "ints", [], range=SIZE, doc="its per-example output shape")),
    lambda ins, a: tuple(a["shape"]),
    lambda ins, a: FunctionCall(unsupported_op, dict(a)),
    arity=(0, None), params=no_params, saves="nothing", inferred=(), look="layer",
    title=lambda a: f"unsupported: {a.get('source_op', '?')}"))
