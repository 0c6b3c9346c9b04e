"""The function and method calls of a captured graph -> dagnet ops: one ``fn_<kind>`` each.

:class:`FunctionCalls` is the half of the capture builder that reads calls
(``torch.cat``, ``x.view``, ATen's ``aten.add.Tensor``): ``mapping`` names the
kind of a call, the method here turns its arguments (and the real values seen
when the graph ran) into ops. A method returns False where this call has no
dagnet form; the call then becomes an ``unsupported`` op.
"""

from __future__ import annotations

import torch
from torch import fx

from dagnet.importer import mapping


class FunctionCalls:
    """Mixed into the capture builder, which provides ``add``, ``ref``, ``simple``, ``constant``,
    ``values``, ``batch`` and ``refs``."""
    def fn_add(self, n, args, kwargs):
        if len(args) != 2 or kwargs.get("alpha", 1) != 1:
            return False
        like = next((r for r in (self.ref(v) if isinstance(v, fx.Node) else None for v in args)
                     if isinstance(r, str)), None)
        a, b = (self._scalar_or_ref(v, None, like, full=tuple(self.values[n].shape)) for v in args)
        if a is False or b is False:
            return False
        if isinstance(a, str) and isinstance(b, str):
            if self._shape_of(a) != self._shape_of(b):
                return False
            self.refs[n] = self.add(n, "add", {}, [a, b], _scope_of(n), "add")
        else:
            tensor, scalar = (a, b) if isinstance(a, str) else (b, a)
            self.refs[n] = self.add(n, "add_scalar", {"value": scalar}, [tensor], _scope_of(n), "add")

    def _shape_of(self, ref: str) -> tuple:
        op = next((o for o in reversed(self.ops) if o.name == ref.partition(".")[0]), None)
        if op is not None:
            return tuple(op.shape)
        return next((tuple(shape) for name, shape, _ in self.inputs if name == ref), ())

    def _broadcast_ok(self, n, args) -> bool:
        """A parameter with a leading 1 becomes batch-sized in dagnet: equal shapes after that."""
        shapes = [tuple(self.values[a].shape[1:]) for a in args]
        return shapes[0] == shapes[1] and all(self.values[a].shape[0] in (1, self.batch) for a in args)

    def fn_mul(self, n, args, kwargs):
        if len(args) != 2:
            return False
        rank = self.values[n].dim() - 1       # mul broadcasts: a per-channel scale is one example's value
        like = next((r for r in (self.ref(v) if isinstance(v, fx.Node) else None for v in args)
                     if isinstance(r, str)), None)
        a, b = (self._scalar_or_ref(v, rank, like) for v in args)
        if a is False or b is False:
            return False
        if isinstance(a, str) and isinstance(b, str):
            self.refs[n] = self.add(n, "mul", {}, [a, b], _scope_of(n), "mul")
        else:
            tensor, scalar = (a, b) if isinstance(a, str) else (b, a)
            self.refs[n] = self.add(n, "scale", {"factor": scalar}, [tensor], _scope_of(n), "scale")

    def fn_sub(self, n, args, kwargs):
        if len(args) != 2 or kwargs.get("alpha", 1) != 1:
            return False
        a, b = (self._scalar_or_ref(v) for v in args)
        if a is False or b is False or not isinstance(a, str):
            return False
        if isinstance(b, str):
            if self.values[args[0]].shape != self.values[args[1]].shape:
                return False
            negated = self.add(n, "scale", {"factor": -1.0}, [b], _scope_of(n), "neg")
            self.refs[n] = self.add(n, "add", {}, [a, negated], _scope_of(n), "sub")
        else:
            self.refs[n] = self.add(n, "add_scalar", {"value": -b}, [a], _scope_of(n), "sub")

    def fn_div(self, n, args, kwargs):
        if len(args) != 2 or kwargs.get("rounding_mode") is not None:
            return False
        a, b = (self._scalar_or_ref(v) for v in args)
        if not isinstance(a, str) or isinstance(b, str) or b is False or b == 0:
            return False
        self.refs[n] = self.add(n, "scale", {"factor": 1.0 / b}, [a], _scope_of(n), "div")

    def fn_cat(self, n, args, kwargs):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        refs = [self.ref(t) if isinstance(t, fx.Node) else None for t in tensors]
        like = next((r for r in refs if isinstance(r, str)), None)
        refs = [r if r is not None or not isinstance(t, fx.Node) else self.constant(t, None, like)
                for r, t in zip(refs, tensors)]
        rank = self.values[n].dim()
        if not all(isinstance(r, str) for r in refs) or dim % rank == 0:
            return False
        if len(refs) == 1:
            self.refs[n] = refs[0]
            return None
        if not all(self.values[t].shape[0] in (1, self.batch) for t in tensors):
            return False
        self.refs[n] = self.add(n, "concat", {"dim": dim}, refs, _scope_of(n), "cat")

    def fn_flatten(self, n, args, kwargs):
        start = _dim_at(args, kwargs, 1, "start_dim", 0)
        end = _dim_at(args, kwargs, 2, "end_dim", -1)
        if start == 0:
            return self.fn_reshape(n, args, kwargs)
        self.simple(n, "flatten", {"start_dim": start, "end_dim": end})

    def fn_reshape(self, n, args, kwargs):
        value = self.values[n]
        if self.values[args[0]].shape[0] != self.batch or value.dim() <= 1:
            return False
        if value.shape == self.values[args[0]].shape:
            self.refs[n] = self.ref(args[0])     # a reshape to the same shape changes nothing
            return None
        shape = list(value.shape[1:])
        if len(shape) > 1 and shape[0] == self.values[args[0]].shape[1]:
            shape[0] = -1           # the same at this size, and it follows a sequence's length when edited symbolic
        self.simple(n, "reshape", {"shape": shape})

    def fn_identity(self, n, args, kwargs):
        self.refs[n] = self.ref(args[0])

    def fn_to(self, n, args, kwargs):
        if self.values[n].dtype != self.values[args[0]].dtype:
            return False
        self.refs[n] = self.ref(args[0])

    def fn_expand(self, n, args, kwargs):
        """``token.expand(n, -1, -1)``: a learned parameter is batch-sized already."""
        source = args[0]
        if source.op != "get_attr" or tuple(self.values[n].shape[1:]) != tuple(self.values[source].shape[1:]):
            return False
        self.refs[n] = self.ref(source)

    def fn_dropout(self, n, args, kwargs):
        self.refs[n] = self.ref(args[0])        # captured in eval mode, where dropout is the identity

    def fn_transpose(self, n, args, kwargs):
        rank = self.values[n].dim()
        d0 = _dim_at(args, kwargs, 1, "dim0", kwargs.get("axis0"))
        d1 = _dim_at(args, kwargs, 2, "dim1", kwargs.get("axis1"))
        if d0 is None or d1 is None or d0 % rank == 0 or d1 % rank == 0:
            return False
        self.simple(n, "transpose", {"dim0": d0, "dim1": d1})

    def fn_permute(self, n, args, kwargs):
        dims = list(args[1:]) if len(args) > 2 or not isinstance(args[1] if len(args) > 1 else None, (list, tuple)) \
            else list(args[1])
        dims = dims or list(kwargs.get("dims", []))
        rank = self.values[n].dim()
        dims = [d % rank for d in dims]
        if not dims or dims[0] != 0:
            return False
        self.simple(n, "permute", {"dims": dims})

    def fn_softmax(self, n, args, kwargs):
        dim = _dim_at(args, kwargs, 1, "dim", None)
        if dim is None or dim % self.values[n].dim() == 0 or kwargs.get("dtype") is not None:
            return False
        self.simple(n, "softmax", {"dim": dim})

    def fn_log_softmax(self, n, args, kwargs):
        dim = _dim_at(args, kwargs, 1, "dim", None)
        if dim is None or dim % self.values[n].dim() == 0:
            return False
        self.simple(n, "log_softmax", {"dim": dim})

    def _reduce(self, n, args, kwargs, op):
        dim = _dim_at(args, kwargs, 1, "dim", None)
        keepdim = bool(_dim_at(args, kwargs, 2, "keepdim", False))
        rank = self.values[args[0]].dim()
        dims = [dim] if isinstance(dim, int) else list(dim or [])
        if not dims or any(d % rank == 0 for d in dims) or kwargs.get("dtype") is not None:
            return False
        self.simple(n, op, {"dim": dims[0] if len(dims) == 1 else dims, "keepdim": keepdim})

    def fn_mean(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, "mean")

    def fn_sum(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, "sum")

    def fn_amax(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, "amax")

    def fn_matmul(self, n, args, kwargs):
        refs = [self.ref(a) if isinstance(a, fx.Node) else None for a in args[:2]]
        if not all(isinstance(r, str) for r in refs) or any(self.values[a].shape[0] != self.batch for a in args[:2]):
            return False
        self.refs[n] = self.add(n, "matmul", {}, refs, _scope_of(n), "matmul")

    def fn_adaptive_avg_pool2d(self, n, args, kwargs):
        return self._adaptive(n, args, kwargs, "adaptive_avg_pool2d")

    def fn_adaptive_avg_pool1d(self, n, args, kwargs):
        return self._adaptive(n, args, kwargs, "adaptive_avg_pool1d")

    def fn_adaptive_max_pool2d(self, n, args, kwargs):
        if kwargs.get("return_indices") or (len(args) > 2 and args[2]):
            return False
        return self._adaptive(n, args, kwargs, "adaptive_max_pool2d")

    def _adaptive(self, n, args, kwargs, op):
        size = _dim_at(args, kwargs, 1, "output_size", None)
        if size is None or (isinstance(size, (list, tuple)) and None in size):
            return False
        self.simple(n, op, {"output_size": mapping.single(size)})

    def fn_max_pool2d(self, n, args, kwargs):
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        call = dict(zip(names, args[1:]), **kwargs)
        if call.pop("return_indices", False):
            return False
        call = {k: mapping.single(v) for k, v in call.items() if v is not None and not (k == "stride" and v == [])}
        self.simple(n, "max_pool2d", call)

    def fn_avg_pool2d(self, n, args, kwargs):
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        call = dict(zip(names, args[1:]), **kwargs)
        if call.pop("divisor_override", None) is not None:
            return False
        call = {k: mapping.single(v) for k, v in call.items() if v is not None and not (k == "stride" and v == [])}
        self.simple(n, "avg_pool2d", call)

    def fn_getitem_select(self, n, args, kwargs):
        dim, index = args[1], args[2]
        if dim % self.values[args[0]].dim() == 0:
            return False
        self.simple(n, "select", {"dim": dim, "index": index})

    def fn_getitem_slice(self, n, args, kwargs):
        source = self.values[args[0]]
        dim = args[1] if len(args) > 1 else 0
        start, end, step = (list(args[2:5]) + [None, None, 1][len(args[2:5]):])[:3]
        dim %= source.dim()
        if dim == 0 or step not in (None, 1):
            return False
        start, stop, _ = slice(start, end).indices(source.shape[dim])
        if (start, stop) == (0, source.shape[dim]):
            self.refs[n] = self.ref(args[0])
            return None
        self.simple(n, "narrow", {"dim": dim, "start": start, "length": stop - start})

    def fn_layer_norm(self, n, args, kwargs):
        """``F.layer_norm(x, shape, weight, bias, eps)`` over model tensors (torchvision's LayerNorm2d)."""
        call = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args), **kwargs)
        weight, bias = call.get("weight"), call.get("bias")
        if (weight is None) != (bias is None) or any(isinstance(t, fx.Node) and self.ref(t) is not None
                                                     for t in (weight, bias)):
            return False
        state = {}
        if weight is not None:
            state = {"weight": self.values[weight].detach().clone(), "bias": self.values[bias].detach().clone()}
        args_out = {"normalized_shape": mapping.single(list(call["normalized_shape"])),
                    "eps": float(call.get("eps", 1e-5)), "elementwise_affine": weight is not None}
        self.refs[n] = self.add(n, "layer_norm", args_out, [self.ref(call["input"])], _scope_of(n), "layer_norm",
                                state=state)

    def fn_einsum(self, n, args, kwargs):
        """``torch.einsum`` whose operands and result all lead with the batch letter, which dagnet adds."""
        equation = args[0] if isinstance(args[0], str) else None
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        refs = [self.ref(o) if isinstance(o, fx.Node) else None for o in operands]
        if equation is None or "->" not in equation or "." in equation or not all(isinstance(r, str) for r in refs):
            return False
        lhs, rhs = equation.replace(" ", "").split("->")
        terms = lhs.split(",") + [rhs]
        if len(terms) != len(refs) + 1 or not all(t and t[0] == terms[0][0] for t in terms):
            return False
        batch = terms[0][0]
        if any(batch in t[1:] for t in terms) or any(self.values[o].shape[0] != self.batch for o in operands):
            return False
        stripped = ",".join(t[1:] for t in terms[:-1]) + "->" + terms[-1][1:]
        self.refs[n] = self.add(n, "einsum", {"equation": stripped}, refs, _scope_of(n), "einsum")

    def fn_pow(self, n, args, kwargs):
        """``x ** 2``, ``x ** 3`` (GELU's tanh approximation written out) as products."""
        exponent = args[1] if len(args) > 1 else kwargs.get("exponent")
        source = self.ref(args[0]) if isinstance(args[0], fx.Node) else None
        if not isinstance(source, str) or exponent not in (2, 3, 2.0, 3.0):
            return False
        product = self.add(n, "mul", {}, [source, source], _scope_of(n), "square")
        if exponent in (3, 3.0):
            product = self.add(n, "mul", {}, [product, source], _scope_of(n), "cube")
        self.refs[n] = product

    def fn_chunk(self, n, args, kwargs):
        return self._pieces(n, args, kwargs, "chunk", "chunks")

    def fn_split(self, n, args, kwargs):
        return self._pieces(n, args, kwargs, "split", "split_size_or_sections")

    def _pieces(self, n, args, kwargs, op, count):
        """``chunk`` / ``split``: one node with outputs ``name.0``, ``name.1``, ... (a list of refs)."""
        value = self.values.get(n)
        size = _dim_at(args, kwargs, 1, count, None)
        dim = _dim_at(args, kwargs, 2, "dim", 0)
        source = self.ref(args[0]) if isinstance(args[0], fx.Node) else None
        if not isinstance(source, str) or not isinstance(value, (tuple, list)) or size is None or \
                dim % self.values[args[0]].dim() == 0:
            return False
        name = self.add(n, op, {count: mapping.single(size) if isinstance(size, (list, tuple)) else size, "dim": dim},
                        [source], _scope_of(n), op, shape=tuple(value[0].shape[1:]))
        self.refs[n] = [f"{name}.{k}" for k in range(len(value))]

    def fn_leaky_relu(self, n, args, kwargs):
        self.simple(n, "leaky_relu", {"negative_slope": float(_dim_at(args, kwargs, 1, "negative_slope", 0.01))})

    def fn_sdpa(self, n, args, kwargs):
        refs = [self.ref(a) for a in args[:3]]
        extra = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args[3:]), **kwargs)
        mask = extra.get("attn_mask")
        causal = bool(extra.get("is_causal", False))
        if isinstance(mask, fx.Node) and self.ref(mask) is None:
            value = self.values.get(mask)     # a mask computed without the inputs: what it says, as arguments
            if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.dim() >= 2:
                t, s = value.shape[-2:]
                if bool(value.all()):
                    mask = None
                elif t == s and bool((value == torch.ones(t, s, dtype=torch.bool).tril()).all()):
                    mask, causal = None, True
            elif isinstance(value, torch.Tensor) and not bool(value.any()):
                mask = None
        if not all(isinstance(r, str) for r in refs) or mask is not None or extra.get("enable_gqa"):
            return False
        call = {"is_causal": causal}
        if extra.get("scale") is not None:
            call["scale"] = float(extra["scale"])
        self.refs[n] = self.add(n, "scaled_dot_product_attention", call, refs, _scope_of(n), "attention")


def _scope_of(n: fx.Node) -> tuple[str, ...]:
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ()
    path = list(stack.values())[-1][0]
    return tuple(p for p in path.split(".") if p)


def _tensors(values):
    return [v for v in values if isinstance(v, fx.Node)]


def _aten() -> dict:
    from dagnet.importer.export_capture import _aten_tables
    return _aten_tables()


def _dim_at(args, kwargs, index, name, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _short(n: fx.Node) -> str:
    if n.op == "get_attr":
        return str(n.target).split(".")[-1]
    target = n.target
    return target if isinstance(target, str) else getattr(target, "__name__", "op")


def _source_name(n: fx.Node) -> str:
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    target = n.target
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__name__', str(target))}".lstrip(".")
