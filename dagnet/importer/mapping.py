"""torch.nn modules and torch functions -> dagnet ops: one table entry each.

A module entry reads the op's arguments off the module (PyTorch and dagnet
share argument names, so most are copied) and says how its state dict becomes
the dagnet module's (the same keys for every op here: dagnet builds the same
``nn`` classes). A function entry reads them off the call's arguments. An entry
returns None where this call has no dagnet form (a padding mode dagnet lacks):
the op is then imported as ``unsupported``.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn


def single(value):
    """A tuple of equal ints as one int (``(3, 3)`` -> 3), else a list."""
    if isinstance(value, (tuple, list)):
        value = [int(v) if isinstance(v, (int, bool)) else v for v in value]
        return value[0] if len(set(value)) == 1 else list(value)
    return value


def _conv(m):
    if isinstance(m.padding, str):
        padding = m.padding
    else:
        padding = single(m.padding)
    args = {"out_channels": m.out_channels, "kernel_size": single(m.kernel_size), "stride": single(m.stride),
            "padding": padding, "dilation": single(m.dilation), "groups": m.groups, "bias": m.bias is not None}
    if m.padding_mode != "zeros":
        args["padding_mode"] = m.padding_mode
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        args["output_padding"] = single(m.output_padding)
    return args


def _norm(m):
    if m.momentum is None:
        return None                 # a cumulative moving average: dagnet's norms take a momentum
    return {"eps": m.eps, "momentum": m.momentum, "affine": m.affine, "track_running_stats": m.track_running_stats}


def _layer_norm(m):
    if m.elementwise_affine and m.bias is None:
        return None
    return {"normalized_shape": single(list(m.normalized_shape)), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine}


def _pool(m):
    args = {"kernel_size": single(m.kernel_size), "stride": single(m.stride), "padding": single(m.padding),
            "ceil_mode": m.ceil_mode}
    if isinstance(m, nn.modules.pooling._MaxPoolNd):
        if m.return_indices:
            return None
        args["dilation"] = single(m.dilation)
    else:
        args["count_include_pad"] = m.count_include_pad
        if getattr(m, "divisor_override", None) is not None:
            return None
    return args


def _adaptive(m):
    size = m.output_size
    if isinstance(size, (tuple, list)) and any(s is None for s in size):
        return None
    if getattr(m, "return_indices", False):
        return None
    return {"output_size": single(size)}


def _mha(m):
    if not m.batch_first or m.bias_k is not None or m.add_zero_attn or not m._qkv_same_embed_dim:
        return None
    return {"num_heads": m.num_heads, "dropout": m.dropout, "bias": m.in_proj_bias is not None}


def _upsample(m):
    if m.recompute_scale_factor:
        return None
    args = {"mode": m.mode}
    if m.size is not None:
        args["size"] = single(m.size)
    if m.scale_factor is not None:
        args["scale_factor"] = single(tuple(float(s) for s in m.scale_factor)) if isinstance(
            m.scale_factor, (tuple, list)) else float(m.scale_factor)
    if m.mode in ("linear", "bilinear", "bicubic", "trilinear"):
        args["align_corners"] = bool(m.align_corners)
    return args


# nn class -> (dagnet op, args from the module); the dims of pooling and norms come from the class
MODULES: dict[type, tuple] = {
    nn.Conv1d: ("conv1d", _conv), nn.Conv2d: ("conv2d", _conv), nn.Conv3d: ("conv3d", _conv),
    nn.ConvTranspose1d: ("conv_transpose1d", _conv), nn.ConvTranspose2d: ("conv_transpose2d", _conv),
    nn.ConvTranspose3d: ("conv_transpose3d", _conv),
    nn.Linear: ("linear", lambda m: {"out_features": m.out_features, "bias": m.bias is not None}),
    nn.Embedding: ("embedding", lambda m: None if m.max_norm is not None or m.scale_grad_by_freq or m.sparse else
                   {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim,
                    "padding_idx": m.padding_idx}),
    nn.BatchNorm1d: ("batch_norm", _norm), nn.BatchNorm2d: ("batch_norm", _norm),
    nn.BatchNorm3d: ("batch_norm", _norm),
    nn.InstanceNorm1d: ("instance_norm", _norm), nn.InstanceNorm2d: ("instance_norm", _norm),
    nn.InstanceNorm3d: ("instance_norm", _norm),
    nn.LayerNorm: ("layer_norm", _layer_norm),
    nn.GroupNorm: ("group_norm", lambda m: {"num_groups": m.num_groups, "eps": m.eps, "affine": m.affine}),
    nn.LocalResponseNorm: ("local_response_norm", lambda m: {"size": m.size, "alpha": m.alpha, "beta": m.beta,
                                                             "k": float(m.k)}),
    nn.Dropout: ("dropout", lambda m: {"p": m.p}), nn.Dropout1d: ("dropout1d", lambda m: {"p": m.p}),
    nn.Dropout2d: ("dropout2d", lambda m: {"p": m.p}), nn.Dropout3d: ("dropout3d", lambda m: {"p": m.p}),
    nn.Identity: ("identity", lambda m: {}),
    nn.ReLU: ("relu", lambda m: {}), nn.ReLU6: ("relu6", lambda m: {}), nn.SiLU: ("silu", lambda m: {}),
    nn.GELU: ("gelu", lambda m: {"approximate": m.approximate}), nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}), nn.Hardswish: ("hardswish", lambda m: {}),
    nn.Hardsigmoid: ("hardsigmoid", lambda m: {}), nn.Mish: ("mish", lambda m: {}), nn.SELU: ("selu", lambda m: {}),
    nn.ELU: ("elu", lambda m: {"alpha": m.alpha}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": m.negative_slope}),
    nn.Softplus: ("softplus", lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)}),
    nn.PReLU: ("prelu", lambda m: {"num_parameters": m.num_parameters}),
    nn.Softmax: ("softmax", lambda m: None if m.dim is None else {"dim": m.dim}),
    nn.LogSoftmax: ("log_softmax", lambda m: None if m.dim is None else {"dim": m.dim}),
    nn.Flatten: ("flatten", lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    nn.MaxPool1d: ("max_pool1d", _pool), nn.MaxPool2d: ("max_pool2d", _pool), nn.MaxPool3d: ("max_pool3d", _pool),
    nn.AvgPool1d: ("avg_pool1d", _pool), nn.AvgPool2d: ("avg_pool2d", _pool), nn.AvgPool3d: ("avg_pool3d", _pool),
    nn.AdaptiveAvgPool1d: ("adaptive_avg_pool1d", _adaptive), nn.AdaptiveAvgPool2d: ("adaptive_avg_pool2d", _adaptive),
    nn.AdaptiveAvgPool3d: ("adaptive_avg_pool3d", _adaptive),
    nn.AdaptiveMaxPool1d: ("adaptive_max_pool1d", _adaptive), nn.AdaptiveMaxPool2d: ("adaptive_max_pool2d", _adaptive),
    nn.AdaptiveMaxPool3d: ("adaptive_max_pool3d", _adaptive),
    nn.MultiheadAttention: ("multihead_attention", _mha),
    nn.ChannelShuffle: ("channel_shuffle", lambda m: {"groups": m.groups}),
    nn.PixelShuffle: ("pixel_shuffle", lambda m: {"upscale_factor": m.upscale_factor}),
    nn.PixelUnshuffle: ("pixel_unshuffle", lambda m: {"downscale_factor": m.downscale_factor}),
    nn.Upsample: ("upsample", _upsample),
}


def torchvision_modules() -> dict[type, tuple]:
    """torchvision's own leaf modules dagnet has ops for, when torchvision is already imported."""
    import sys
    if "torchvision" not in sys.modules:
        return {}
    from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention
    from torchvision.ops import StochasticDepth
    return {StochasticDepth: ("stochastic_depth", lambda m: {"p": m.p, "mode": m.mode}),
            ShiftedWindowAttention: ("shifted_window_attention", lambda m: {
                "window_size": list(m.window_size), "shift_size": list(m.shift_size), "num_heads": m.num_heads,
                "qkv_bias": m.qkv.bias is not None, "proj_bias": m.proj.bias is not None,
                "attention_dropout": float(m.attention_dropout), "dropout": float(m.dropout)}),
            PatchMerging: ("patch_merging", lambda m: {"eps": m.norm.eps})}


def transformers_modules() -> dict[type, tuple]:
    """Hugging Face's own leaf modules, when transformers is already imported. GPT-2's ``Conv1D`` is
    ``nn.Linear`` with its weight stored transposed ([in, out]): the third entry converts the state."""
    import sys
    if "transformers" not in sys.modules:
        return {}
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return {}
    return {Conv1D: ("linear", lambda m: {"out_features": m.nf, "bias": m.bias is not None},
                     lambda state: {**state, "weight": state["weight"].t().contiguous()})}


def module_entry(module: nn.Module):
    """(dagnet op, args from the module[, state conversion]) for a module dagnet maps, else None."""
    entry = MODULES.get(type(module))
    if entry is None:
        entry = torchvision_modules().get(type(module))
    if entry is None:
        entry = transformers_modules().get(type(module))
    return entry


# -- functions and methods: name -> (dagnet op, args from (call args, kwargs)) ---------------
def _dim_arg(args, kwargs, index, name="dim", default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


ACTIVATIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu", F.gelu: "gelu",
               torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
               F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.mish: "mish", F.selu: "selu"}
METHOD_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
# in-place forms trace as the method with a trailing underscore
METHOD_ACTIVATIONS.update({k + "_": v for k, v in list(METHOD_ACTIVATIONS.items())})
FUNCTION_NAMES = {operator.add: "add", torch.add: "add", operator.iadd: "add", operator.mul: "mul", torch.mul: "mul",
                  operator.imul: "mul", operator.sub: "sub", torch.sub: "sub", operator.truediv: "div",
                  torch.div: "div", torch.cat: "cat", torch.concat: "cat", torch.flatten: "flatten",
                  torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "matmul",
                  torch.transpose: "transpose", torch.permute: "permute", torch.reshape: "reshape",
                  torch.softmax: "softmax", F.softmax: "softmax", F.log_softmax: "log_softmax",
                  torch.mean: "mean", torch.sum: "sum", torch.chunk: "chunk", torch.split: "split",
                  F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.adaptive_avg_pool1d: "adaptive_avg_pool1d",
                  F.adaptive_max_pool2d: "adaptive_max_pool2d", F.max_pool2d: "max_pool2d",
                  F.avg_pool2d: "avg_pool2d", F.dropout: "dropout", F.layer_norm: "layer_norm",
                  F.scaled_dot_product_attention: "sdpa", F.interpolate: "interpolate",
                  torch.squeeze: "reshape", torch.unsqueeze: "reshape", F.pad: "pad",
                  F.leaky_relu: "leaky_relu", torch.amax: "amax", F.normalize: "normalize",
                  F.linear: "flinear", F.embedding: "fembedding", torch.einsum: "einsum",
                  torch.swapaxes: "transpose", torch.swapdims: "transpose", torch.pow: "pow",
                  operator.pow: "pow"}
METHOD_NAMES = {"add": "add", "add_": "add", "mul": "mul", "mul_": "mul", "sub": "sub", "div": "div",
                "flatten": "flatten", "view": "reshape", "reshape": "reshape", "transpose": "transpose",
                "permute": "permute", "softmax": "softmax", "mean": "mean", "sum": "sum", "chunk": "chunk",
                "split": "split", "matmul": "matmul", "contiguous": "identity", "squeeze": "reshape",
                "unsqueeze": "reshape", "expand": "expand", "clone": "identity", "type_as": "identity",
                "float": "identity", "to": "to", "amax": "amax", "masked_fill": "masked_fill",
                "repeat": "repeat", "swapaxes": "transpose", "swapdims": "transpose", "pow": "pow"}
