"""Attention over batch-first sequences [T, E] (per example).

Masks follow PyTorch, whose two functions disagree: in `multihead_attention`
a true entry of `key_padding_mask` or `attn_mask` is a position *not* attended
to; in `scaled_dot_product_attention` a true entry of `attn_mask` is one that
*is*. A float mask is added to the attention scores in both.
"""

from __future__ import annotations

from dagnet._lazy import lazy
from dagnet.dims import fmt_shape, product, same
from dagnet.ops._util import expect_known, expect_rank
from dagnet.ops.registry import (POSITIVE, PROBABILITY, SIZE, Arg, ModuleCall, OpDef, ShapeError, no_params,
                                 register)

functional = lazy("dagnet.ops.functional")


def _expect_shape(op, what, found, want, hint):
    """Raise unless ``found`` is provably the shape ``want``."""
    if len(found) != len(want) or not all(same(a, b) for a, b in zip(found, want)):
        raise ShapeError(f"`{op}`: {what} must have shape {fmt_shape(want)}, found {fmt_shape(found)}", hint)


def _mha_dims(ins):
    """(T, S, embed_dim, kdim, vdim) of the query, key and value [T, E], [S, kdim], [S, vdim]."""
    for shape, name in zip(ins[:3], ("query", "key", "value")):
        expect_rank(shape, 2, "multihead_attention", f"[T, E] {name}")
    (T, E), (S, kdim), (S_value, vdim) = ins[:3]
    if not same(S, S_value):
        raise ShapeError(f"`multihead_attention`: key and value differ in length: {fmt_shape(ins[1])} vs "
                         f"{fmt_shape(ins[2])}", "the value at each position goes with the key there")
    return (T, S, expect_known(E, "embedding size (last dim of the query)", "multihead_attention"),
            expect_known(kdim, "key size", "multihead_attention"),
            expect_known(vdim, "value size", "multihead_attention"))


def _mha_shape(ins, a):
    T, S, E, _, _ = _mha_dims(ins)
    if E % a["num_heads"]:
        divisors = ", ".join(str(h) for h in range(1, min(E, 16) + 1) if E % h == 0) + (", ..." if E > 16 else "")
        raise ShapeError(f"`multihead_attention`: num_heads {a['num_heads']} does not divide embed_dim {E}",
                         f"each head takes embed_dim / num_heads of the features: use a divisor of {E} "
                         f"({divisors}) or project the query to a multiple of {a['num_heads']}")
    if len(ins) > 3:
        _expect_shape("multihead_attention", "key_padding_mask (input 4)", ins[3], (S,),
                      "one entry per key position: true where the key is padding")
    if len(ins) > 4:
        _expect_shape("multihead_attention", "attn_mask (input 5)", ins[4], (T, S),
                      "one row per query position, one column per key: true where attending is not allowed")
    return (T, E)


def _mha_build(ins, a):
    _, _, E, kdim, vdim = _mha_dims(ins)
    return ModuleCall(functional.MultiheadAttention, {
        "embed_dim": E, "num_heads": a["num_heads"], "dropout": a["dropout"], "bias": a["bias"],
        "kdim": kdim if kdim != E else None, "vdim": vdim if vdim != E else None, "batch_first": True})


def _mha_params(ins, a):
    """The input projections (E x (E + kdim + vdim)), the output projection (E x E), their biases."""
    _, _, E, kdim, vdim = _mha_dims(ins)
    return E * (E + kdim + vdim) + E * E + (4 * E if a["bias"] else 0)


def _mha_macs(ins, out, a):
    """The query and output projections, the key and value projections, scores and their sum."""
    T, S, E, kdim, vdim = _mha_dims(ins)
    return 2 * T * E * E + S * E * (kdim + vdim) + 2 * T * S * E


register(OpDef(
    "multihead_attention", "attention",
    "Multi-head attention (`nn.MultiheadAttention`, batch-first): inputs query [T, E], key [S, kdim], "
    "value [S, vdim], then optionally key_padding_mask [S] and attn_mask [T, S] (true: not attended); "
    "value: the attention output [T, E]; `embed_dim`, `kdim`, `vdim` are inferred.",
    (Arg("num_heads", "int", range=SIZE), Arg("dropout", "float", 0.0, range=PROBABILITY),
     Arg("bias", "bool", True)),
    _mha_shape, _mha_build, arity=(3, 5), macs=_mha_macs, params=_mha_params,
    saves="inputs", title=lambda a: f"multi-head attention, {a.get('num_heads', '?')} heads",
    inferred=("embed_dim", "kdim", "vdim")))


def _sdpa_shape(ins, a):
    query, key, value = ins[:3]
    if len(query) not in (2, 3):
        raise ShapeError(f"`scaled_dot_product_attention` expects a [T, E] or [heads, T, E] query (per "
                         f"example), found {fmt_shape(query)}", "the batch dimension is implicit")
    for shape, name in ((key, "key (input 2)"), (value, "value (input 3)")):
        if len(shape) != len(query):
            raise ShapeError(f"`scaled_dot_product_attention`: the {name} {fmt_shape(shape)} and the query "
                             f"{fmt_shape(query)} differ in rank", "give all three [T, E] or all [heads, T, E]")
    heads, (T, E), S = query[:-2], query[-2:], key[-2]
    _expect_shape("scaled_dot_product_attention", "the key (input 2)", key, (*heads, S, E),
                  "keys have the query's heads and feature size; their length S may differ")
    _expect_shape("scaled_dot_product_attention", "the value (input 3)", value, (*heads, S, value[-1]),
                  "one value per key, with the query's heads; its feature size may differ")
    if len(ins) == 4:
        if a["is_causal"]:
            raise ShapeError("`scaled_dot_product_attention`: an attn_mask and is_causal together",
                             "drop the mask input, or put the causal mask into it and set is_causal false")
        mask, want = ins[3], (*heads, T, S)
        if not 2 <= len(mask) <= len(want) or not all(
                same(m, w) or (isinstance(m, int) and m == 1) for m, w in zip(mask[::-1], want[::-1])):
            raise ShapeError(f"`scaled_dot_product_attention`: attn_mask {fmt_shape(mask)} does not broadcast "
                             f"to the scores {fmt_shape(want)}", "give it one row per query and one column per key")
    return (*heads, T, value[-1])


def _sdpa_macs(ins, out, a):
    """The scores and their weighted sum, per head."""
    *heads, T, E = ins[0]
    S, E_value = ins[2][-2:]
    return product(heads) * T * S * (E + E_value)


register(OpDef(
    "scaled_dot_product_attention", "attention",
    "softmax(q k^T * scale + mask) v (`F.scaled_dot_product_attention`) over q [T, E] or [heads, T, E], "
    "k, v and an optional attn_mask [T, S] (true: attended); dropout acts in training only.",
    (Arg("dropout_p", "float", 0.0, range=PROBABILITY), Arg("is_causal", "bool", False),
     Arg("scale", "float_or_none", None, range=POSITIVE)),
    _sdpa_shape, lambda ins, a: ModuleCall(functional.ScaledDotProductAttention, dict(a)),
    arity=(3, 4), macs=_sdpa_macs, params=no_params,
    saves="inputs", title="scaled dot-product attention", inferred=()))
