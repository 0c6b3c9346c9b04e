"""The exporters' attention, recognised as one ``F.scaled_dot_product_attention`` call.

``torch.onnx.export`` decomposes attention into plain ops: the dynamo exporter's
aten SDPA scope folds the batch into the heads (``Reshape [B*H, T, d]``,
``Transpose``, ``Reshape [B, H, d, T]`` for the transposed keys), scales both
``q`` and ``k`` by ``sqrt(scale)``, adds the mask, and zeroes NaN rows of the
softmax (``IsNaN`` + ``Where``); the TorchScript exporter writes
``MatMul -> (Div|Mul) -> (Add mask) -> Softmax -> MatMul``. Those reshapes mix
the batch with the heads, which dagnet's per-example ops cannot express, so the
whole pattern (from the scores' MatMul to the MatMul with ``v``) becomes one
:class:`Attention` module on ``[B, heads, T, d]`` tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """``F.scaled_dot_product_attention(q, k, v, attn_mask, scale)``; ``k`` arrives as the
    exporter had it (permuted by ``k_perm`` first, when given) and the mask is a
    buffer (a constant in the file) or the fourth argument."""

    def __init__(self, scale: float, k_perm: list[int] | None, mask: torch.Tensor | None):
        super().__init__()
        self.scale, self.k_perm = scale, k_perm
        self.register_buffer("mask", mask)

    def forward(self, q, k, v, *mask):
        if self.k_perm is not None:
            k = k.permute(*self.k_perm)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[0] if mask else self.mask, scale=self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, k_perm={self.k_perm}"


def _scalar(consts: dict, name: str) -> float | None:
    value = consts.get(name)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.reshape(()))
    return None


def match(node, producer: dict, consumers: dict, consts: dict, shapes: dict, graph_outputs: set, opset: int):
    """For ``node`` (the MatMul of the probabilities with ``v``): the :class:`Attention` module, its
    argument names and the nodes it absorbs; ``None`` when the nodes before it are not attention."""
    from onnx import helper

    def sole(name: str) -> bool:
        return name not in graph_outputs and len(consumers.get(name, ())) == 1

    def attr(n, key, default=None):
        return next((helper.get_attribute_value(a) for a in n.attribute if a.name == key), default)

    def scaled(name: str):
        """Through Mul/Div by scalar constants: the value scaled and the factor."""
        factor = 1.0
        while (p := producer.get(name)) is not None and p.op_type in ("Mul", "Div") and sole(name):
            runtime = [i for i in p.input if i not in consts]
            const = [i for i in p.input if i in consts]
            c = _scalar(consts, const[0]) if len(const) == 1 and len(runtime) == 1 else None
            if c is None or (p.op_type == "Div" and (p.input[1] != const[0] or c == 0)):
                break
            factor, name = (factor / c if p.op_type == "Div" else factor * c), runtime[0]
            absorbed.append(p)
        return name, factor

    absorbed = [node]
    probs, v = node.input
    if probs in consts or v in consts:
        return None
    p = producer.get(probs)
    if p is not None and p.op_type == "Where" and sole(probs):
        isnan = producer.get(p.input[0])
        zero = _scalar(consts, p.input[1])
        if isnan is None or isnan.op_type != "IsNaN" or isnan.input[0] != p.input[2] or zero != 0.0 \
                or sorted(id(c) for c in consumers.get(p.input[2], ())) != sorted((id(isnan), id(p))):
            return None
        absorbed += [p, isnan]
        softmax = producer.get(p.input[2])
    else:
        softmax = p if sole(probs) else None
    if softmax is None or softmax.op_type != "Softmax" or softmax.output[0] in graph_outputs:
        return None
    rank = len(shapes.get(softmax.input[0]) or ())
    axis = attr(softmax, "axis", -1 if opset >= 13 else 1)
    if rank != 4 or axis % rank != rank - 1:
        return None
    absorbed.append(softmax)
    scores, mask, scale = softmax.input[0], None, 1.0
    for _ in range(3):      # the mask's Add and a scale, in either order
        scores, factor = scaled(scores)
        scale *= factor
        a = producer.get(scores)
        if mask is not None or a is None or a.op_type != "Add" or not sole(scores):
            break
        kinds = [producer.get(i) is not None and producer[i].op_type in ("MatMul", "Mul", "Div") and i not in consts
                 for i in a.input]
        if kinds.count(True) == 0:
            return None
        at = kinds.index(True) if kinds.count(True) == 1 else 0
        scores, mask = a.input[at], a.input[1 - at]
        absorbed.append(a)
    mm = producer.get(scores)
    if mm is None or mm.op_type != "MatMul" or not sole(scores):
        return None
    absorbed.append(mm)
    q, fq = scaled(mm.input[0])
    kt, fk = scaled(mm.input[1])
    scale *= fq * fk
    k, k_perm = _keys(kt, producer, shapes, sole, attr, absorbed)
    if any(len(shapes.get(x) or ()) != 4 for x in (q, k, v)) or q in consts or k in consts:
        return None
    mask_tensor = consts.get(mask) if mask is not None else None
    if mask_tensor is not None and mask_tensor.is_floating_point() and not bool(mask_tensor.any()):
        mask = mask_tensor = None       # adding zeros (the dynamo exporter's mask for no mask)
    args = [q, k, v] + ([mask] if mask is not None and mask_tensor is None else [])
    if math.isnan(scale) or math.isinf(scale):
        return None
    return Attention(scale, k_perm, mask_tensor), args, absorbed


def _keys(kt: str, producer: dict, shapes: dict, sole, attr, absorbed: list):
    """The keys ``[B, H, T, d]`` behind the scores' transposed operand ``kt`` and the permutation that
    makes them so (``None``: as they are)."""
    t = producer.get(kt)
    if t is not None and t.op_type == "Transpose" and sole(kt):
        perm = list(attr(t, "perm", []))
        if len(perm) == 4:
            perm[-1], perm[-2] = perm[-2], perm[-1]
            absorbed.append(t)
            return t.input[0], (None if perm == [0, 1, 2, 3] else perm)
    # the dynamo exporter: Reshape [B*H, T, d] -> Transpose [0, 2, 1] -> Reshape [B, H, d, T]
    r2 = t
    r1 = producer.get(r2.input[0]) if r2 is not None and r2.op_type == "Reshape" and sole(kt) else None
    t = r1
    r1 = producer.get(t.input[0]) if t is not None and t.op_type == "Transpose" and sole(t.output[0]) \
        and list(attr(t, "perm", [])) == [0, 2, 1] else None
    if r1 is not None and r1.op_type == "Reshape" and sole(r1.output[0]):
        x, out, mid = shapes.get(r1.input[0]), shapes.get(kt), shapes.get(r1.output[0])
        if x and out and mid and len(x) == len(out) == 4 and len(mid) == 3 and _agree(
                out + mid, (*x[:2], x[3], x[2], None if None in x[:2] else x[0] * x[1], x[2], x[3])):
            absorbed += [r2, t, r1]
            return r1.input[0], None
    return kt, [0, 1, 3, 2]


def _agree(sizes: tuple, expected: tuple) -> bool:
    """Sizes equal where both are known (a dynamic dim, ``None``, agrees with any)."""
    return all(a is None or b is None or a == b for a, b in zip(sizes, expected))
