"""One Caffe layer -> one module, weights from the caffemodel when there is one.

:func:`build` returns ``(module, flatten)``: ``flatten`` is the ``nn.Flatten``
an InnerProduct needs first when its input has more dims than it reads (Caffe
flattens implicitly), else ``None``.
"""

from __future__ import annotations

import torch
from torch import nn

from dagnet.importer import _caffe_ops as ops
from dagnet.importer.opaque import Unsupported


def ints(message, name: str, net) -> list[int]:
    try:
        return [int(v) for v in message.all(name)]
    except (TypeError, ValueError):
        net.fail(message.line_of(name), f"expected integers for '{name}', found {message.all(name)}")


def number(message, name: str, default, net, kind=float):
    value = message.get(name)
    if value is None:
        return default
    if kind is bool:
        if value in ("true", "false", "True", "False", "1", "0"):
            return value in ("true", "True", "1")
        net.fail(message.line_of(name), f"expected true or false for '{name}', found {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        net.fail(message.line_of(name), f"expected a {kind.__name__} for '{name}', found {value!r}")


def _pair(param, name: str, default: int, net, h: str | None = None, w: str | None = None) -> tuple[int, int]:
    """A 2-D size given as ``name`` (one value for both, or one per dim) or ``name_h``/``name_w``."""
    if param.has(h or f"{name}_h") or param.has(w or f"{name}_w"):
        return (int(param.get(h or f"{name}_h", default)), int(param.get(w or f"{name}_w", default)))
    values = ints(param, name, net)
    if not values:
        return (default, default)
    return (values[0], values[-1])


def _copy(target: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(value.reshape(target.shape))


def _channels(in_shape, axis: int = 1) -> int | None:
    return in_shape[axis] if in_shape is not None and len(in_shape) > axis and in_shape[axis] is not None else None


def build(net, layer, kind: str, name: str, in_shape, scale):
    location = f"{net.path}:{layer.line}"
    where = f"layer '{name}' ({kind})"

    def need(value, what: str):
        if value is None:
            net.fail(layer.line, f"{where} needs {what}")
        return value

    if kind in ("Convolution", "Deconvolution"):
        p = layer.msg("convolution_param")
        out = need(number(p, "num_output", None, net, int), "convolution_param.num_output")
        kernel = _pair(p, "kernel_size", 0, net, "kernel_h", "kernel_w")
        if 0 in kernel:
            net.fail(p.line, f"{where} needs convolution_param.kernel_size")
        stride, pad = _pair(p, "stride", 1, net), _pair(p, "pad", 0, net)
        dilation = _pair(p, "dilation", 1, net, "dilation", "dilation")
        group = number(p, "group", 1, net, int)
        bias = number(p, "bias_term", True, net, bool)
        stored = net.weights.get(name)
        if kind == "Convolution":
            cin = stored[0].shape[1] * group if stored else need(_channels(in_shape), "its input's channels (an Input shape or a caffemodel)")
            module = nn.Conv2d(cin, out, kernel, stride, pad, dilation, group, bias=bias)
        else:
            cin = stored[0].shape[0] if stored else need(_channels(in_shape), "its input's channels (an Input shape or a caffemodel)")
            module = nn.ConvTranspose2d(cin, out, kernel, stride, pad, 0, group, bias, dilation)
        blobs = net.blobs_of(layer, name, [tuple(module.weight.shape), (out,) if bias else None])
        if blobs:
            _copy(module.weight, blobs[0])
            if bias:
                _copy(module.bias, blobs[1])
        return module, None

    if kind == "InnerProduct":
        p = layer.msg("inner_product_param")
        out = need(number(p, "num_output", None, net, int), "inner_product_param.num_output")
        axis = number(p, "axis", 1, net, int)
        bias, transpose = number(p, "bias_term", True, net, bool), number(p, "transpose", False, net, bool)
        stored = net.weights.get(name)
        flatten = None
        if in_shape is None or len(in_shape) > axis + 1:  # nn.Flatten leaves an already flat input alone
            flatten = nn.Flatten(axis)
            known = in_shape is not None and None not in in_shape[axis:]
            features = int(torch.tensor(in_shape[axis:]).prod()) if known else None
        else:
            features = _channels(in_shape, axis) if in_shape is not None else None
        if stored:
            features = stored[0].size // out
        module = nn.Linear(need(features, "its input's size (an Input shape or a caffemodel)"), out, bias=bias)
        shape = (features, out) if transpose else (out, features)
        blobs = net.blobs_of(layer, name, [shape, (out,) if bias else None])
        if blobs:
            _copy(module.weight, blobs[0].t() if transpose else blobs[0])
            if bias:
                _copy(module.bias, blobs[1])
        return module, flatten

    if kind == "Pooling":
        p = layer.msg("pooling_param")
        method = str(p.get("pool", "MAX"))
        ceil = str(p.get("round_mode", "CEIL")) in ("CEIL", "0")
        if number(p, "global_pooling", False, net, bool):
            return (nn.AdaptiveMaxPool2d(1) if method in ("MAX", "0") else nn.AdaptiveAvgPool2d(1)), None
        kernel = _pair(p, "kernel_size", 0, net, "kernel_h", "kernel_w")
        if 0 in kernel:
            net.fail(p.line, f"{where} needs pooling_param.kernel_size")
        stride, pad = _pair(p, "stride", 1, net), _pair(p, "pad", 0, net)
        if any(2 * q > k for q, k in zip(pad, kernel)):
            return Unsupported(f"caffe:{kind}", location), None  # torch pools pad at most half the kernel
        if method in ("MAX", "0"):
            return nn.MaxPool2d(kernel, stride, pad, ceil_mode=ceil), None
        if method in ("AVE", "1"):
            # Caffe divides by the window clipped to the padded input: count_include_pad's rule
            return nn.AvgPool2d(kernel, stride, pad, ceil_mode=ceil, count_include_pad=True), None
        return Unsupported(f"caffe:{kind}", location), None  # STOCHASTIC

    if kind == "BatchNorm":
        p = layer.msg("batch_norm_param")
        eps = number(p, "eps", 1e-5, net)
        stored = net.weights.get(name)
        channels = stored[0].size if stored else need(_channels(in_shape), "its input's channels")
        rank = len(in_shape) if in_shape is not None else 4
        table = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}
        module = table.get(rank, nn.BatchNorm2d)(channels, eps=eps, affine=scale is not None)
        blobs = net.blobs_of(layer, name, [(channels,), (channels,), None])
        if blobs:
            factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
            factor = 0.0 if factor == 0 else 1.0 / factor  # Caffe keeps running sums scaled by this
            _copy(module.running_mean, blobs[0] * factor)
            _copy(module.running_var, blobs[1] * factor)
        if scale is not None:
            bias = number(scale.msg("scale_param"), "bias_term", False, net, bool)
            scale_name = str(scale.get("name"))
            blobs = net.blobs_of(scale, scale_name, [(channels,), (channels,) if bias else None])
            if blobs:
                _copy(module.weight, blobs[0])
                if bias:
                    _copy(module.bias, blobs[1])
            if not bias:
                with torch.no_grad():
                    module.bias.zero_()
        return module, None

    if kind == "Scale":
        p = layer.msg("scale_param")
        if len(layer.all("bottom")) != 1:
            return Unsupported(f"caffe:{kind}", location), None  # the scale as a second input
        axis, num_axes = number(p, "axis", 1, net, int), number(p, "num_axes", 1, net, int)
        bias = number(p, "bias_term", False, net, bool)
        stored = net.weights.get(name)
        if stored:
            shape = tuple(stored[0].shape)
        else:
            need(in_shape, "its input's shape")
            shape = tuple(in_shape[axis : None if num_axes == -1 else axis + num_axes])
        module = ops.Scale(shape, len(in_shape) if in_shape is not None else 4, axis, bias=bias)
        blobs = net.blobs_of(layer, name, [shape, shape if bias else None])
        if blobs:
            _copy(module.weight, blobs[0])
            if bias:
                _copy(module.bias, blobs[1])
        return module, None

    if kind == "ReLU":
        slope = number(layer.msg("relu_param"), "negative_slope", 0.0, net)
        return (nn.LeakyReLU(slope) if slope else nn.ReLU()), None
    if kind == "PReLU":
        shared = number(layer.msg("prelu_param"), "channel_shared", False, net, bool)
        channels = 1 if shared else need(_channels(in_shape) or (net.weights[name][0].size if name in net.weights else None),
                                         "its input's channels")
        module = nn.PReLU(channels)
        blobs = net.blobs_of(layer, name, [(channels,)])
        if blobs:
            _copy(module.weight, blobs[0])
        return module, None
    if kind == "Eltwise":
        p = layer.msg("eltwise_param")
        operation = {"0": "PROD", "1": "SUM", "2": "MAX"}.get(str(p.get("operation", "SUM")), str(p.get("operation", "SUM")))
        coeffs = [float(c) for c in p.all("coeff")] or None
        if operation not in ("SUM", "PROD", "MAX"):
            net.fail(p.line_of("operation"), f"{where}: expected operation SUM, PROD or MAX, found {operation}")
        return ops.Eltwise(operation, coeffs), None
    if kind == "Concat":
        p = layer.msg("concat_param")
        return ops.Concat(number(p, "axis", number(p, "concat_dim", 1, net, int), net, int)), None
    if kind == "LRN":
        p = layer.msg("lrn_param")
        if str(p.get("norm_region", "ACROSS_CHANNELS")) not in ("ACROSS_CHANNELS", "0"):
            return Unsupported(f"caffe:{kind}", location), None
        return nn.LocalResponseNorm(number(p, "local_size", 5, net, int), number(p, "alpha", 1.0, net),
                                    number(p, "beta", 0.75, net), number(p, "k", 1.0, net)), None
    if kind == "Flatten":
        p = layer.msg("flatten_param")
        return nn.Flatten(number(p, "axis", 1, net, int), number(p, "end_axis", -1, net, int)), None
    if kind == "Reshape":
        p = layer.msg("reshape_param")
        dims = ints(p.msg("shape"), "dim", net)
        rank = need(len(in_shape) if in_shape is not None else None, "its input's rank")
        return ops.Reshape(dims, rank, number(p, "axis", 0, net, int), number(p, "num_axes", -1, net, int)), None
    if kind == "Slice":
        p = layer.msg("slice_param")
        points = [int(v) for v in p.all("slice_point")]
        axis = number(p, "axis", number(p, "slice_dim", 1, net, int), net, int)
        return ops.Slice(axis, points, len(layer.all("top"))), None
    if kind == "Power":
        p = layer.msg("power_param")
        return ops.Power(number(p, "power", 1.0, net), number(p, "scale", 1.0, net), number(p, "shift", 0.0, net)), None
    if kind == "Softmax":
        return nn.Softmax(dim=number(layer.msg("softmax_param"), "axis", 1, net, int)), None
    if kind == "Dropout":
        return nn.Dropout(number(layer.msg("dropout_param"), "dropout_ratio", 0.5, net)), None
    if kind == "ELU":
        return nn.ELU(number(layer.msg("elu_param"), "alpha", 1.0, net)), None
    simple = {"Sigmoid": nn.Sigmoid, "TanH": nn.Tanh, "AbsVal": ops.AbsVal, "BNLL": nn.Softplus}
    if kind in simple:
        return simple[kind](), None
    return Unsupported(f"caffe:{kind}", location), None
