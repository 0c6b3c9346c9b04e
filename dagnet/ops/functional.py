"""Pure-torch helpers that emitted code calls.

Everything here imports only torch, so `dagnet compile -o model.py` can copy
these definitions verbatim into a standalone file. Arguments are annotated
with ``typing`` types so that TorchScript can compile them.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def crop(x: torch.Tensor, like: torch.Tensor, offset: Optional[int] = None) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to those of ``like`` (centred unless ``offset``)."""
    nd = like.dim() - 2
    for axis in range(2, 2 + nd):
        size, target = x.shape[axis], like.shape[axis]
        start = (size - target) // 2 if offset is None else offset
        x = x.narrow(axis, start, target)
    return x


def interpolate_like(x: torch.Tensor, like: torch.Tensor, mode: str = "nearest",
                     align_corners: Optional[bool] = None) -> torch.Tensor:
    """Resize ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[2:], mode=mode, align_corners=align_corners)


def reshape(x: torch.Tensor, shape: List[int]) -> torch.Tensor:
    """Reshape every example to ``shape`` (the batch dimension is kept)."""
    return x.reshape([x.shape[0]] + shape)


def add(xs: List[torch.Tensor]) -> torch.Tensor:
    """Sum of three or more tensors (a merge of several residual branches), in order.

    One list, not ``*args``: TorchScript compiles no variadic function."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


class Recurrent:
    """What ``LSTM`` and ``GRU`` share: batch-first, zero initial state, the output
    sequence only. Eager and TorchScript run torch's fused kernel; under ``torch.export``
    (.pt2, ONNX), which would unroll that kernel for the example's length, the time loop
    is one traced ``scan`` over the same weights, so the sequence length stays dynamic.
    (Dropout between layers acts in training only, hence not in an export.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._update_flat_weights()  # as nn.LSTM's forward: parameters swapped in (functional_call)
        if not torch.jit.is_scripting():
            if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
                return self.scanned(x)
            if x.device.type == "cpu" and self.cpu_autocast():
                # oneDNN has no bf16/fp16 recurrent kernel: the recurrence runs in float32
                # and the layers around it keep autocast's precision
                with torch.autocast("cpu", enabled=False):
                    return self.fused(x.float())
        return self.fused(x)

    @staticmethod
    def cpu_autocast() -> bool:
        try:
            return torch.is_autocast_enabled("cpu")
        except TypeError:               # torch < 2.4 takes no device type
            return torch.is_autocast_cpu_enabled()

    def scanned(self, x: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.scan import scan
        dirs = 2 if self.bidirectional else 1
        names = self._flat_weights_names  # the parameters, as export swaps them in (by name)
        per = len(names) // (self.num_layers * dirs)  # w_ih, w_hh[, b_ih, b_hh]
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                first = (layer * dirs + d) * per
                w = [getattr(self, name) for name in names[first:first + per]]
                gates_x = x @ w[0].t() + (w[2] if self.bias else 0.0)  # (B, T, G * H)
                gates_x = (gates_x.flip(1) if d else gates_x).transpose(0, 1)
                b_hh = w[3] if self.bias else None
                init = self.zero_state(x)
                cell, w_hh = self.cell, w[1]  # a function, not the module, in the traced body
                _, ys = scan(lambda state, g: cell(state, g, w_hh, b_hh), init, gates_x)
                ys = ys.transpose(0, 1)
                outs.append(ys.flip(1) if d else ys)
            x = torch.cat(outs, -1) if dirs == 2 else outs[0]
        return x


class LSTM(Recurrent, nn.LSTM):
    """A batch-first ``nn.LSTM`` that returns only the output sequence."""

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        dirs = 2 if self.bidirectional else 1
        h = x.new_zeros(self.num_layers * dirs, x.shape[0], self.hidden_size)
        return torch._VF.lstm(x, (h, h), self._flat_weights, self.bias, self.num_layers,
                              float(self.dropout), self.training, self.bidirectional, True)[0]

    def zero_state(self, x: torch.Tensor):
        h = x.new_zeros(x.shape[0], self.hidden_size)
        return h, h.clone()

    @staticmethod
    def cell(state, gates_x, w_hh, b_hh):
        h, c = state
        gates = gates_x + h @ w_hh.t() + (0.0 if b_hh is None else b_hh)
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()


class GRU(Recurrent, nn.GRU):
    """A batch-first ``nn.GRU`` that returns only the output sequence."""

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        dirs = 2 if self.bidirectional else 1
        h = x.new_zeros(self.num_layers * dirs, x.shape[0], self.hidden_size)
        return torch._VF.gru(x, h, self._flat_weights, self.bias, self.num_layers,
                             float(self.dropout), self.training, self.bidirectional, True)[0]

    def zero_state(self, x: torch.Tensor):
        return (x.new_zeros(x.shape[0], self.hidden_size),)

    @staticmethod
    def cell(state, gates_x, w_hh, b_hh):
        (h,) = state
        hidden = h @ w_hh.t() + (0.0 if b_hh is None else b_hh)
        xr, xz, xn = gates_x.chunk(3, -1)
        hr, hz, hn = hidden.chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        return (h,), h.clone()


class StochasticDepth(nn.Module):
    """``torchvision.ops.StochasticDepth``: in training, zero the whole input of each example
    (``row``) or of the batch (``batch``) with probability ``p`` and scale what is kept by
    1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        size = [x.shape[0] if self.mode == "row" else 1] + [1] * (x.dim() - 1)
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class MultiheadAttention(nn.MultiheadAttention):
    """A batch-first ``nn.MultiheadAttention`` that returns only the attention output and
    takes an ``attn_mask`` per example, [B, T, S], for every head."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attn_mask is not None:
            attn_mask = attn_mask.repeat_interleave(self.num_heads, dim=0)
        if torch.jit.is_scripting():  # TorchScript has no super(): torch's function, without the fast path
            return self.scripted(query, key, value, key_padding_mask, attn_mask)
        else:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=False,
                                   attn_mask=attn_mask)[0]

    def scripted(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 key_padding_mask: Optional[torch.Tensor], attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return F.multi_head_attention_forward(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), self.embed_dim, self.num_heads,
            self.in_proj_weight, self.in_proj_bias, self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
            self.out_proj.weight, self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=False, attn_mask=attn_mask, use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight,
            v_proj_weight=self.v_proj_weight)[0].transpose(0, 1)


class ScaledDotProductAttention(nn.Module):
    """``F.scaled_dot_product_attention`` whose dropout acts in training mode only, as
    ``nn.Dropout``'s does; a mask of lower rank than the query broadcasts over the heads."""

    def __init__(self, dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None):
        super().__init__()
        self.dropout_p = dropout_p
        self.is_causal = is_causal
        self.scale = scale

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attn_mask is not None:
            while attn_mask.dim() < query.dim():
                attn_mask = attn_mask.unsqueeze(1)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                              dropout_p=self.dropout_p if self.training else 0.0,
                                              is_causal=self.is_causal, scale=self.scale)


def matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` of each example's tensors: the batch stays first and the per-example
    dims broadcast among themselves (a per-example vector is a vector, not a matrix)."""
    x_vector, y_vector = x.dim() == 2, y.dim() == 2
    if x_vector:
        x = x.unsqueeze(1)
    if y_vector:
        y = y.unsqueeze(2)
    while x.dim() < y.dim():
        x = x.unsqueeze(1)
    while y.dim() < x.dim():
        y = y.unsqueeze(1)
    out = torch.matmul(x, y)
    if y_vector:
        out = out.squeeze(-1)
    if x_vector:
        out = out.squeeze(-1 if y_vector else -2)
    return out


def einsum(operands: List[torch.Tensor], equation: str) -> torch.Tensor:
    """``torch.einsum`` with the equation after the operands, as emitted code passes it."""
    return torch.einsum(equation, operands)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [B, T, ...] over the positions where ``mask`` [B, T] is true; zeros
    where no position is."""
    weights = mask.to(x.dtype).reshape([mask.shape[0], mask.shape[1]] + [1] * (x.dim() - 2))
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def positions(x: torch.Tensor) -> torch.Tensor:
    """The positions 0 .. T-1 of a sequence [B, T, ...], as int64 [B, T]."""
    return torch.arange(x.shape[1], device=x.device).expand(x.shape[0], x.shape[1])


def sinusoidal_positions(x: torch.Tensor, d_model: int) -> torch.Tensor:
    """The fixed encoding of "Attention is all you need" for the T positions of ``x``
    [B, T, ...]: [B, T, d_model], sin(t / 10000^(2i/d_model)) at 2i and cos at 2i + 1."""
    dtype = x.dtype if x.is_floating_point() else torch.float32
    position = torch.arange(x.shape[1], device=x.device, dtype=dtype)
    feature = torch.arange(d_model, device=x.device)
    frequency = torch.pow(10000.0, -(feature - feature % 2).to(dtype) / d_model)
    angle = position[:, None] * frequency[None, :]
    encoding = torch.where(feature % 2 == 0, torch.sin(angle), torch.cos(angle))
    return encoding.expand(x.shape[0], x.shape[1], d_model)


class LearnedTensor(nn.Module):
    """A learned tensor of ``shape``, the same for every example of the batch of its input.

    ``std`` is the standard deviation of the random inits: ``normal``, ``trunc_normal``
    (cut at two deviations) and ``uniform`` (on [-sqrt(3) std, sqrt(3) std]); ``constant``
    sets every entry to ``value``.
    """

    def __init__(self, shape: List[int], init: str = "zeros", std: float = 0.02, value: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))
        self.init = init
        self.std = std
        self.value = value
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "zeros":
            nn.init.zeros_(self.weight)
        elif self.init == "constant":
            nn.init.constant_(self.weight, self.value)
        elif self.init == "normal":
            nn.init.normal_(self.weight, std=self.std)
        elif self.init == "trunc_normal":
            nn.init.trunc_normal_(self.weight, std=self.std, a=-2 * self.std, b=2 * self.std)
        else:
            bound = 3 ** 0.5 * self.std
            nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.expand([x.shape[0]] + list(self.weight.shape))


class LayerScale(nn.Module):
    """Multiply by a learned per-channel scale along ``dim`` (which counts the batch),
    initialised to ``init_values``, as in CaiT and ConvNeXt."""

    def __init__(self, channels: int, init_values: float = 1e-5, dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init_values)))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * self.gamma.view(shape)


class ShiftedWindowAttention(nn.Module):
    """torchvision's ``ShiftedWindowAttention`` (Swin v1) over channels-last [B, H, W, C]:
    multi-head self-attention inside windows of ``window_size``, with a learned relative
    position bias, after a cyclic shift by ``shift_size`` (the shifted windows masked where
    they wrap). The input is padded on the right and bottom to whole windows and cropped
    back; a window as large as the padded input is not shifted. Its state is torchvision's,
    registered in the same order: ``qkv``, ``proj``, ``relative_position_bias_table`` and the
    buffer ``relative_position_index``."""

    def __init__(self, dim: int, window_size: List[int], shift_size: List[int], num_heads: int,
                 qkv_bias: bool = True, proj_bias: bool = True, attention_dropout: float = 0.0,
                 dropout: float = 0.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.dropout = dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # the relative offset of every pair of positions in a window, as an index into the table
        coords = torch.stack(torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]),
                                            indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        relative[:, :, 0] += window_size[0] - 1
        relative[:, :, 1] += window_size[1] - 1
        relative[:, :, 0] *= 2 * window_size[1] - 1
        self.register_buffer("relative_position_index", relative.sum(-1).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_size, num_heads = self.window_size, self.num_heads
        N = window_size[0] * window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index]
        bias = bias.view(N, N, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        B, H, W, C = x.shape
        # pad to whole windows
        pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
        pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, pad_H, pad_W, _ = x.shape
        shift_size = [0 if window_size[0] >= pad_H else self.shift_size[0],
                      0 if window_size[1] >= pad_W else self.shift_size[1]]
        if sum(shift_size) > 0:
            x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
        # partition into windows: [B * windows, N, C]
        num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
        x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, N, C)
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias)
        qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * (C // num_heads) ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
        attn = attn + bias
        if sum(shift_size) > 0:
            # positions from different regions of the shifted input do not attend to each other
            mask = x.new_zeros((pad_H, pad_W))
            h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
            w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
            count = 0
            for h in h_slices:
                for w in w_slices:
                    mask[h[0]:h[1], w[0]:w[1]] = count
                    count += 1
            mask = mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
            mask = mask.permute(0, 2, 1, 3).reshape(num_windows, N)
            mask = mask.unsqueeze(1) - mask.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))
            attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, N, N)
            attn = attn + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, num_heads, N, N)
        attn = F.softmax(attn, dim=-1)
        attn = F.dropout(attn, p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), N, C)
        x = F.linear(x, self.proj.weight, self.proj.bias)
        x = F.dropout(x, p=self.dropout, training=self.training)
        # reverse the windows, the shift and the padding
        x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
        if sum(shift_size) > 0:
            x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
        return x[:, :H, :W, :].contiguous()

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}, num_heads={self.num_heads}"


class PatchMerging(nn.Module):
    """torchvision's Swin ``PatchMerging`` over channels-last [B, H, W, C]: each 2x2
    neighbourhood concatenated into 4C channels (an odd H or W padded with zeros), layer
    normalised, projected to 2C by a linear map without bias; ``reduction`` is registered
    before ``norm``, as in torchvision."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-3], x.shape[-2]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                       x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))
