"""Shape-only ops: flatten, reshape, permute, identity, and chunk and split (several outputs)."""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import fmt_shape, known, product
from dagnet.ops._util import batch_dim
from dagnet.ops.registry import DIM, SIZE, Arg, FunctionCall, OpDef, Range, ShapeError, no_params, register

torch = lazy("torch")
functional = lazy("dagnet.ops.functional")


def _flatten_shape(ins, a):
    x = ins[0]
    start, end = batch_dim(a["start_dim"], len(x), "flatten"), batch_dim(a["end_dim"], len(x), "flatten")
    if end < start:
        raise ShapeError(f"`flatten`: end_dim {a['end_dim']} comes before start_dim {a['start_dim']}")
    return (*x[:start], product(x[start:end + 1]), *x[end + 1:])


register(OpDef("flatten", "shape", "Flatten dims `start_dim..end_dim` (dims count the batch).",
               (Arg("start_dim", "int", 1, range=DIM), Arg("end_dim", "int", -1, range=DIM)), _flatten_shape,
               lambda ins, a: FunctionCall(torch.flatten, dict(a)), params=no_params,
               saves="nothing", view=True, title="flatten", inferred=()))


RESHAPE_DIM = Range(1, also=(-1,), meaning="each entry is a size from 1 up, or -1 for the one dim to infer")
PERMUTE_DIM = Range(0, meaning="dims count the batch, which stays first: a permutation of 0 .. rank")


def _reshape_shape(ins, a):
    x, target = ins[0], list(a["shape"])
    if target.count(-1) > 1:
        raise ShapeError("`reshape`: at most one -1 in `shape`")
    total = product(x)
    rest = product([d for d in target if d != -1])
    if -1 in target:
        if known(total) and known(rest) and int(total) % int(rest):
            raise ShapeError(f"`reshape`: cannot reshape {fmt_shape(x)} into {target}")
        target[target.index(-1)] = total // rest if known(total) else total / rest
    elif known(total) and int(total) != int(rest):
        raise ShapeError(f"`reshape`: {fmt_shape(x)} has {total} elements, {target} has {rest}",
                         "use -1 for the dimension to infer")
    return tuple(target)


register(OpDef("reshape", "shape", "Reshape each example to `shape` (-1 infers one dim).",
               (Arg("shape", "shape", range=RESHAPE_DIM),), _reshape_shape,
               lambda ins, a: FunctionCall(functional.reshape, {"shape": list(a["shape"])}), params=no_params,
               saves="nothing", view=True, title="reshape", inferred=()))


def _permute_shape(ins, a):
    x, dims = ins[0], list(a["dims"])
    if sorted(dims) != list(range(len(x) + 1)) or dims[0] != 0:
        raise ShapeError(f"`permute`: dims {dims} must be a permutation of 0..{len(x)} keeping 0 "
                         "(the batch) first")
    return tuple(x[d - 1] for d in dims[1:])


register(OpDef("permute", "shape", "Permute dims (`torch.permute`; dims count the batch, which stays 0).",
               (Arg("dims", "shape", range=PERMUTE_DIM),), _permute_shape,
               lambda ins, a: FunctionCall(torch.permute, {"dims": tuple(a["dims"])}), params=no_params,
               saves="nothing", view=True, title="permute", inferred=()))

register(OpDef("identity", "shape", "Pass the input through unchanged.", (),
               lambda ins, a: ins[0], lambda ins, a: None, params=no_params,
               saves="nothing", view=True, title="identity", inferred=()))


# -- several outputs: each output `node.k` is a node of its own, a narrow view of the input --------

def _pieces(name: str, sizes, a) -> tuple[int, list[int]]:
    """The per-example dim ``a["dim"]`` cuts and the sizes of its pieces, as ``torch.chunk``/``split`` cut it."""
    d = batch_dim(a["dim"], len(sizes), name)
    if not known(sizes[d]):
        raise ShapeError(f"`{name}` needs a known size along dim {a['dim']}, found `{sizes[d]}`",
                         "how many outputs it has must not depend on symbolic input sizes")
    n = int(sizes[d])
    if name == "chunk":
        step = -(-n // a["chunks"])
        pieces = [min(step, n - start) for start in range(0, n, step)] if n else [0]
    elif isinstance(a["split_size_or_sections"], list):
        pieces = list(a["split_size_or_sections"])
        if sum(pieces) != n:
            raise ShapeError(f"`split`: sections {pieces} add up to {sum(pieces)}, dim {a['dim']} has size {n}",
                             "the sections must add up to the size of the dim")
    else:
        step = a["split_size_or_sections"]
        pieces = [min(step, n - start) for start in range(0, n, step)] if n else [0]
    return d, pieces


def _piece(name: str, ins, a) -> tuple[int, int, int]:
    """(per-example dim, start, length) of output ``a["output"]``."""
    d, pieces = _pieces(name, ins[0], a)
    k = a.get("output", 0)
    if not 0 <= k < len(pieces):
        raise ShapeError(f"`{name}` gives {len(pieces)} outputs here ({', '.join(map(str, range(len(pieces))))}), "
                         f"not output {k}", "name one of its outputs: `node.0`, `node.1`, ...")
    return d, sum(pieces[:k]), pieces[k]


def _multi_output(name: str, first: Arg, doc: str) -> None:
    def shape(ins, a):
        d, _, length = _piece(name, ins, a)
        return tuple(length if i == d else s for i, s in enumerate(ins[0]))

    def build(ins, a):
        d, start, length = _piece(name, ins, a)
        return FunctionCall(torch.narrow, {"dim": d + 1, "start": start, "length": length})

    register(OpDef(name, "shape", doc, (first, Arg("dim", "int", range=DIM)), shape, build,
                   params=no_params, saves="nothing", view=True, title=name, inferred=(), multi_output=True))


_multi_output("chunk", Arg("chunks", "int", range=SIZE),
              "Cut `dim` into `chunks` pieces (the last may be smaller; `torch.chunk`); outputs `node.0`, `node.1`, ...")
_multi_output("split", Arg("split_size_or_sections", "ints", range=SIZE),
              "Cut `dim` into pieces of one size or of the listed sizes (`torch.split`); outputs `node.0`, `node.1`, ...")
