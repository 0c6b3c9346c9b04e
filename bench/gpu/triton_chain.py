"""A prototype: the chain CRF's forward scan as one Triton kernel, timed beside dagnet's
PyTorch scans by bench/gpu/chain.py to size the later step (a kernel inside
dagnet.fields.chain, chosen when Triton and CUDA are there). Not used by dagnet itself.

One program per sequence keeps its message alpha (K values) and the transitions
(K x K) in registers and walks its T steps, writing every alpha_t; log Z comes
from the last. The backward pass is the same kernel over the sequences reversed
within their lengths with the transitions transposed (beta messages), then the
node and edge marginals in PyTorch: d log Z / d emissions = node marginals.
Masks must be right-padded (lengths), as pytorch-crf's and torch-struct's are.
"""
from __future__ import annotations

import os

import torch

from dagnet.fields import _logspace as ls
from dagnet.fields.chain import path_score

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def available(device: torch.device) -> bool:
    """Triton is importable and can run here (a CUDA device, or its CPU interpreter)."""
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:
    @triton.jit
    def _forward_scan(emit_ptr, start_ptr, end_ptr, trans_ptr, len_ptr, alpha_ptr, logz_ptr,
                      T: tl.constexpr, K, BLOCK_K: tl.constexpr):
        b = tl.program_id(0)
        i = tl.arange(0, BLOCK_K)
        valid = i < K
        trans = tl.load(trans_ptr + i[:, None] * K + i[None, :], mask=valid[:, None] & valid[None, :],
                        other=float("-inf"))
        length = tl.load(len_ptr + b)
        row = b.to(tl.int64) * T * K
        alpha = (tl.load(start_ptr + i, mask=valid, other=float("-inf"))
                 + tl.load(emit_ptr + row + i, mask=valid, other=float("-inf")))
        tl.store(alpha_ptr + row + i, alpha, mask=valid)
        for t in range(1, T):                              # past its length a sequence's alpha stays
            inside = t < length
            s = alpha[:, None] + trans                     # s[i, j] = alpha[i] + trans[i, j]
            m = tl.max(s, axis=0)
            m = tl.where(m == float("-inf"), 0.0, m)
            total = tl.sum(tl.exp(s - m[None, :]), axis=0)
            e = tl.load(emit_ptr + row + t * K + i, mask=valid & inside, other=float("-inf"))
            alpha = tl.where(inside, m + tl.log(total) + e, alpha)
            tl.store(alpha_ptr + row + t * K + i, alpha, mask=valid & inside)
        final = alpha + tl.load(end_ptr + i, mask=valid, other=float("-inf"))
        top = tl.max(final, axis=0)
        tl.store(logz_ptr + b, top + tl.log(tl.sum(tl.exp(final - top), axis=0)))


def forward_scan(emit, start, end, trans, lengths):
    """alpha (B, T, K), alpha_t including emission t (positions past a sequence's end are left
    unwritten: zeros), and log Z (B,)."""
    B, T, K = emit.shape
    emit = emit.contiguous()
    alpha = torch.zeros_like(emit)
    logz = torch.empty(B, dtype=emit.dtype, device=emit.device)
    _forward_scan[(B,)](emit, start.contiguous(), end.contiguous(), trans.contiguous(),
                        lengths.to(torch.int32).contiguous(), alpha, logz, T, K,
                        BLOCK_K=max(16, triton.next_power_of_2(K)))
    return alpha, logz


class LogPartition(torch.autograd.Function):
    @staticmethod
    def forward(ctx, emit, start, end, trans, lengths):
        alpha, logz = forward_scan(emit, start, end, trans, lengths)
        ctx.save_for_backward(emit, start, end, trans, lengths, alpha, logz)
        return logz

    @staticmethod
    def backward(ctx, grad):
        emit, start, end, trans, lengths, alpha, logz = ctx.saved_tensors
        T = emit.shape[1]
        valid = ls.valid(lengths, T)
        # beta_t + emit_t, by the same scan over each sequence reversed within its length
        reverse = ls.reverse_within(emit, lengths)
        beta_plus = ls.reverse_within(forward_scan(reverse, end, start, trans.t(), lengths)[0], lengths)
        z = logz[:, None, None]
        mu = torch.exp(alpha + beta_plus - emit - z).masked_fill(~valid[..., None], 0.0)
        # edge marginals summed: xi[i, j] = sum_{b,t} exp(alpha_{t-1}[i] + trans[i, j] + beta_plus_t[j] - log Z)
        a, c = alpha[:, :-1], beta_plus[:, 1:]
        pair = valid[:, 1:, None]
        a = a.masked_fill(~pair, float("-inf"))
        a_max, c_max = a.amax(-1, keepdim=True).clamp_min(-1e30), c.amax(-1, keepdim=True).clamp_min(-1e30)
        weight = torch.exp(a - a_max + (a_max + c_max - z)) * grad[:, None, None]
        xi = torch.einsum("bti,btj->ij", weight, torch.exp(c - c_max).masked_fill(~pair, 0.0)) * trans.exp()
        g = grad[:, None, None]
        d_start = (mu[:, 0] * grad[:, None]).sum(0)
        d_end = (ls.last(mu, lengths) * grad[:, None]).sum(0)
        return mu * g, d_start, d_end, xi, None


def nll(emissions, tags, start, end, transitions, mask, reduction="sum"):
    """-log p(tags | x) summed over the batch; ``mask`` right-padded, every sequence non-empty."""
    lengths = mask.sum(1)
    logz = LogPartition.apply(emissions, start, end, transitions, lengths)
    loss = logz - path_score(emissions, tags, start, end, transitions, mask)
    return loss.sum() if reduction == "sum" else loss
