"""nn.Module -> :class:`Captured`: trace, run once on the example inputs, map each call.

``torch.fx`` symbolic tracing keeps every ``torch.nn`` module dagnet has an op
for as one call (its module path is the node's place in the block tree, its
attributes are the op's arguments, its state dict the node's), and records
the module stack of every function call. Running the traced graph once on the
example inputs gives every value's real shape, so a ``view(n, -1)`` whose
sizes are computed becomes a ``reshape`` to the shape it produced. A call with
no dagnet form becomes an ``unsupported`` op that keeps the source op's name
and place; it never aborts the capture.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from dagnet.importer import mapping
from dagnet.importer.calls import (
    FunctionCalls,
    _aten,
    _scope_of,
    _short,
    _source_name,
    _tensors,
)
from dagnet.importer.graph import Captured, ImportModelError, Op, legal, unique
from dagnet.importer.opaque import Unsupported


class _Tracer(fx.Tracer):
    """Keeps every module dagnet maps (and every Unsupported) as one call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Unsupported) or mapping.module_entry(m) is not None or super().is_leaf_module(m, qualname)


class _Recorder(fx.Interpreter):
    """Runs the traced graph, keeping each node's value; an Unsupported leaf yields zeros of its stated shape."""

    def __init__(self, gm, batch: int):
        super().__init__(gm)
        self.values, self.batch, self.ran_unsupported = {}, batch, False

    def run_node(self, n):
        value = super().run_node(n)
        self.values[n] = value
        return value

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if isinstance(module, Unsupported):
            self.ran_unsupported = True
            if not module.out_shapes:
                raise ImportModelError(f"{module.source_op} at {module.location or target}: its output shape is "
                                       "unknown, so nothing after it can be imported")
            outs = [torch.zeros((self.batch, *s)) for s in module.out_shapes]
            return outs[0] if len(outs) == 1 else tuple(outs)
        return super().call_module(target, args, kwargs)


def trace(model: nn.Module, n_inputs: int = 1) -> fx.GraphModule:
    """``model`` traced by torch.fx, leaving the modules dagnet maps as calls; a Hugging Face model is
    traced with transformers' own tracer (which knows its mask and shape code), its first ``n_inputs``
    forward arguments as the inputs."""
    try:
        if _is_transformers(model):
            raise ImportModelError("a Hugging Face model: captured with torch.export")
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except ImportModelError:
        raise
    except Exception as error:      # noqa: BLE001 - any trace failure is the model's, reported in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ImportModelError(f"cannot trace {type(model).__name__} with torch.fx: {first[:300]}") from None
    return fx.GraphModule(model, graph, type(model).__name__)


def _is_transformers(model) -> bool:
    import sys
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel
    return isinstance(model, PreTrainedModel)


def capture(model: nn.Module, example_inputs: tuple, name: str, input_names: list[str] | None = None,
            gm: fx.GraphModule | None = None) -> Captured:
    """The flat dagnet graph of ``model``, run on ``example_inputs`` (a batch of at least 2); its
    inputs are named ``input_names`` where given, else as ``forward`` names them."""
    if gm is None:
        try:
            gm = trace(model, len(example_inputs))
        except ImportModelError as fx_error:
            from dagnet.importer.export_capture import export_graph
            try:
                gm = export_graph(model, example_inputs)
            except ImportModelError as export_error:
                raise ImportModelError(f"{fx_error}; {export_error}") from None
    batch = int(example_inputs[0].shape[0])
    recorder = _Recorder(gm, batch)
    with torch.no_grad():
        recorder.run(*example_inputs)
    builder = _Builder(gm, recorder.values, batch, name, input_names or [])
    builder.source = model
    return builder.build()


class _Builder(FunctionCalls):
    def __init__(self, gm: fx.GraphModule, values: dict, batch: int, name: str, input_names: list[str]):
        self.gm, self.values, self.batch, self.name, self.input_names = gm, values, batch, name, input_names
        self.ops: list[Op] = []
        self.refs: dict[fx.Node, object] = {}       # fx node -> op name, list of names (tuples) or None
        self.names: set[str] = set()
        self.locals: dict[tuple, set[str]] = {}
        self.inputs: list[tuple[str, tuple, str]] = []

    # -- the graph ------------------------------------------------------------------
    def build(self) -> Captured:
        outputs = []
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.placeholder(n)
            elif n.op == "output":
                outputs = self.output_refs(n.args[0])
            elif n.op == "get_attr":
                self.refs[n] = ("attr", n)
            elif n.op == "call_module":
                self.call_module(n)
            else:
                self.call_function(n)
        if not outputs:
            raise ImportModelError(f"{self.name}: the model returns no tensor")
        classes = {}
        for n in self.gm.graph.nodes:
            for path, kind in (n.meta.get("nn_module_stack") or {}).values():
                cls = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].strip("'>")
                classes.setdefault(tuple(p for p in path.split(".") if p), cls)
        # the source's own modules first: tracing rebuilds a container that is never called (an ONNX
        # file's BasicBlock, which holds only leaves) as a plain Module
        for root in (getattr(self, "source", None), self.gm):
            for name, module in root.named_modules() if isinstance(root, torch.nn.Module) else ():
                if name and type(module) is not torch.nn.Module:
                    classes.setdefault(tuple(name.split(".")), type(module).__name__)
        for name, module in self.gm.named_modules():
            if name:
                classes.setdefault(tuple(name.split(".")), type(module).__name__)
        return Captured(self.name, self.inputs, self.ops, outputs, classes)

    def output_refs(self, value) -> list[str]:
        if isinstance(value, fx.Node):
            ref = self.ref(value)
            return [r for r in ref if r] if isinstance(ref, list) else ([ref] if ref else [])
        if isinstance(value, (tuple, list)):
            return [r for v in value for r in self.output_refs(v)]
        if isinstance(value, dict):
            return [r for v in value.values() for r in self.output_refs(v)]
        return []

    def placeholder(self, n):
        value = self.values.get(n)
        if not isinstance(value, torch.Tensor):
            self.refs[n] = None
            return
        given = self.input_names[len(self.inputs)] if len(self.inputs) < len(self.input_names) else n.name
        name = unique(legal(given), self.names)
        self.inputs.append((name, tuple(value.shape[1:]), str(value.dtype).removeprefix("torch.")))
        self.refs[n] = name

    def ref(self, n):
        """The dagnet value of fx node ``n``: an op name, a list of them, or None (not a tensor, or a
        constant: a model tensor, or one computed from them alone, whose value is kept)."""
        ref = self.refs.get(n)
        if isinstance(ref, tuple) and ref and ref[0] == "attr":
            ref = self.refs[n] = None
        return ref

    def add(self, n, op, args, inputs, scope, local, state=None, shape=None, source_op=None) -> str:
        """Append one op; returns its name."""
        taken = self.locals.setdefault(scope, set())
        local = unique(legal(local), taken)
        name = unique(legal("_".join([*scope, local])), self.names)
        where = ".".join(scope + (local,)) if n.op != "call_module" else str(n.target)
        if op == "unsupported":
            value = self.values.get(n)
            if shape is None:
                shape = tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else ()
            args = {"source_op": source_op or str(n.target), "location": where, "shape": list(shape)}
        elif shape is None:
            value = self.values.get(n)
            if isinstance(value, (tuple, list)):
                value = value[0]
            shape = tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else ()
        self.ops.append(Op(name, op, args, list(inputs), scope, local, where, tuple(shape), state or {}, source_op))
        return name

    def unsupported_tuple(self, n) -> None:
        """A call giving several tensors that has no dagnet form: one opaque node per piece."""
        value = self.values.get(n)
        inputs = [r for r in (self.ref(a) for a in _tensors(n.all_input_nodes)) if isinstance(r, str)]
        refs = []
        for k, piece in enumerate(value):
            refs.append(self.add(n, "unsupported", None, inputs, _scope_of(n), f"{_short(n)}_{k}",
                                 shape=tuple(piece.shape[1:]), source_op=_source_name(n)))
        self.refs[n] = refs

    def unsupported(self, n, source_op: str) -> None:
        inputs = [r for r in (self.ref(a) for a in _tensors(n.all_input_nodes)) if isinstance(r, str)]
        scope = _scope_of(n)
        if n.op == "call_module":
            scope = tuple(n.target.split("."))[:-1]
        value = self.values.get(n)
        if isinstance(value, torch.Tensor) or n.op == "call_module":
            self.refs[n] = self.add(n, "unsupported", None, inputs, scope,
                                    n.target.split(".")[-1] if n.op == "call_module" else _short(n), source_op=source_op)
        else:
            self.refs[n] = None

    # -- module calls -----------------------------------------------------------------
    def call_module(self, n):
        module = self.gm.get_submodule(n.target)
        path = tuple(n.target.split("."))
        if not isinstance(self.values.get(n), (torch.Tensor, tuple, list)):
            self.refs[n] = None         # torch.export's guard check, and other calls that give no tensor
            return
        if isinstance(module, Unsupported):
            inputs = [r for r in (self.ref(a) for a in _tensors(n.all_input_nodes)) if isinstance(r, str)]
            shapes = [tuple(s) for s in module.out_shapes or [()]]
            refs = []
            for k, shape in enumerate(shapes):       # one opaque node per output
                refs.append(self.add(n, "unsupported", None, inputs, path[:-1],
                                     path[-1] if len(shapes) == 1 else f"{path[-1]}_{k}", shape=shape,
                                     source_op=module.source_op))
                self.ops[-1].args["location"] = module.location or n.target
            self.refs[n] = refs[0] if len(refs) == 1 else refs
            return
        entry = mapping.module_entry(module)
        args = entry[1](module) if entry else None
        tensor_args = [self.ref(a) for a in n.args if isinstance(a, fx.Node)]
        if tensor_args and all(r is None for r in tensor_args):
            self.refs[n] = None         # computed without the inputs: a constant, kept as its value
            return
        if args is None or not all(isinstance(r, str) for r in tensor_args) or not self.plain_call(n, module):
            return self.unsupported(n, type(module).__module__ + "." + type(module).__qualname__)
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if len(entry) > 2:
            state = entry[2](state)      # the source keeps its weights in another layout than dagnet's module
        name = self.add(n, entry[0], args, tensor_args, path[:-1], path[-1], state=state)
        self.refs[n] = [name, None] if isinstance(module, nn.MultiheadAttention) else name

    def plain_call(self, n, module) -> bool:
        """Whether the call uses only what the dagnet op computes (no masks, no extra outputs)."""
        if isinstance(module, nn.MultiheadAttention):
            extra = {k: v for k, v in n.kwargs.items() if k not in ("need_weights", "average_attn_weights")}
            return len(n.args) == 3 and all(v is None or v is False for v in extra.values())
        return len(n.args) == 1 and not n.kwargs

    # -- function and method calls -------------------------------------------------------
    def call_function(self, n):
        value = self.values.get(n)
        target = n.target
        if n.op == "call_function" and target is operator.getitem:
            return self.getitem(n)
        inputs = _tensors(n.all_input_nodes)
        pieces = n.target in ("chunk", "split", torch.chunk, torch.split) or _aten().get(n.target) in ("chunk", "split")
        if pieces and isinstance(value, (tuple, list)) and inputs and self.ref(inputs[0]) is not None:
            kind = "chunk" if n.target in ("chunk", torch.chunk) or _aten().get(n.target) == "chunk" else "split"
            if getattr(self, f"fn_{kind}")(n, n.args, n.kwargs) is False:
                self.refs[n] = None
                self.unsupported_tuple(n)
            return
        if not isinstance(value, torch.Tensor) or not inputs or all(self.ref(a) is None for a in inputs):
            # size arithmetic, asserts, shape reads: their values are folded into the shapes
            self.refs[n] = None
            return
        if value.dim() == 0 or value.shape[0] != self.batch:
            return self.unsupported(n, _source_name(n))
        if n.op == "call_method":
            kind = mapping.METHOD_NAMES.get(target) or mapping.METHOD_ACTIVATIONS.get(target)
            if target in mapping.METHOD_ACTIVATIONS:
                return self.simple(n, mapping.METHOD_ACTIVATIONS[target], {})
        elif target in _aten():
            kind = _aten()[target]
            if isinstance(kind, tuple):
                args = {"approximate": n.kwargs.get("approximate", "none")} if kind[1] == "gelu" else {}
                return self.simple(n, kind[1], args)
        else:
            if target in mapping.ACTIVATIONS:
                args = {"approximate": n.kwargs.get("approximate", "none")} if target is torch.nn.functional.gelu else {}
                return self.simple(n, mapping.ACTIVATIONS[target], args)
            kind = mapping.FUNCTION_NAMES.get(target)
        handler = getattr(self, f"fn_{kind}", None) if kind else None
        if handler is None or handler(n, n.args, n.kwargs) is False:
            self.unsupported(n, _source_name(n))

    def simple(self, n, op, args, inputs=None) -> None:
        first = inputs if inputs is not None else [self.ref(n.args[0])]
        self.refs[n] = self.add(n, op, args, first, _scope_of(n), op)

    def getitem(self, n):
        source, index = n.args
        ref = self.ref(source) if isinstance(source, fx.Node) else None
        if isinstance(ref, list):
            self.refs[n] = ref[index] if isinstance(index, int) and index < len(ref) else None
            if self.refs[n] is None and isinstance(self.values.get(n), torch.Tensor):
                self.unsupported(n, "getitem")
            return
        if not isinstance(ref, str) or not isinstance(self.values.get(n), torch.Tensor):
            self.refs[n] = None
            return
        index = index if isinstance(index, tuple) else (index,)
        if not index or index[0] != slice(None) or any(i is Ellipsis or i is None for i in index):
            return self.unsupported(n, "getitem")
        current, dim, shape = ref, 1, list(self.values[source].shape)
        for i in index[1:]:
            if isinstance(i, int):
                current = self.add(n, "select", {"dim": dim, "index": i}, [current], _scope_of(n), "select",
                                   shape=tuple(shape[1:dim] + shape[dim + 1:]))
                shape.pop(dim)
            elif isinstance(i, slice) and i.step in (None, 1):
                start, stop, _ = i.indices(shape[dim])
                if (start, stop) != (0, shape[dim]):
                    shape[dim] = max(stop - start, 0)
                    current = self.add(n, "narrow", {"dim": dim, "start": start, "length": shape[dim]}, [current],
                                       _scope_of(n), "narrow", shape=tuple(shape[1:]))
                dim += 1
            else:
                return self.unsupported(n, "getitem")
        self.refs[n] = current

    def constant(self, n, rank: int | None = None, like: str | None = None, full: tuple | None = None) -> str | None:
        """A tensor computed without the inputs (a position table, a token-type row, a layer scale) as a
        learned ``parameter``: the same for every example, so it holds the value of one. With ``rank``
        (the per-example rank of what it broadcasts against) a tensor of at most that rank is one
        example's value, padded with leading 1s."""
        value = self.values.get(n)
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point or not self.inputs:
            return None
        if rank is not None and 1 <= value.dim() <= rank:
            value = value.reshape((1,) * (rank - value.dim() + 1) + tuple(value.shape))
        if full is not None and tuple(value.shape[1:]) != tuple(full[1:]):
            try:            # dagnet's add takes one shape: a broadcast bias is stored at the sum's shape
                value = value.expand((value.shape[0] if value.dim() == len(full) else 1, *full[1:])).clone()
            except RuntimeError:
                return None
        if value.dim() < 2:
            return None
        if value.shape[0] == self.batch and self.batch > 1 and bool((value == value[:1]).all()):
            value = value[:1]
        if value.shape[0] != 1:
            return None
        # the batch it repeats over comes from ``like`` (what it meets), so a block holding it needs no other input
        name = self.add(n, "parameter", {"shape": list(value.shape[1:])}, [like or self.inputs[0][0]], _scope_of(n),
                        _short(n), state={"weight": value[0].detach().clone()}, shape=tuple(value.shape[1:]))
        self.refs[n] = name
        return name

    def _scalar_or_ref(self, value, rank: int | None = None, like: str | None = None, full: tuple | None = None):
        if isinstance(value, fx.Node):
            ref = self.ref(value)
            if isinstance(ref, str):
                return ref
            inner = self.values.get(value)
            if isinstance(inner, torch.Tensor) and inner.dim() == 0 and inner.dtype.is_floating_point:
                return float(inner)         # an ONNX file's scalar constant (Mul by 2.0)
            if isinstance(inner, torch.Tensor) and inner.dim() > 0:
                return self.constant(value, rank, like, full) or False
            return float(inner) if isinstance(inner, (int, float)) else False
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else False
