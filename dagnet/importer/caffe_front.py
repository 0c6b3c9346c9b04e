"""A Caffe net (``.prototxt`` plus optional ``.caffemodel``) becomes an ``nn.Module``.

Layers map one to one onto top-level submodules named after the layers
(``conv1``, ``res2a_branch1``): Convolution -> ``nn.Conv2d``, InnerProduct ->
``nn.Linear`` (after an ``nn.Flatten`` named ``<layer>_flatten`` where Caffe
flattens implicitly), Pooling -> ``nn.MaxPool2d``/``nn.AvgPool2d`` in ceil mode
(Caffe's output size rule), a BatchNorm followed by its Scale -> one affine
``nn.BatchNorm2d``, and so on. In-place layers (top == bottom) become new
values, Split layers aliases, loss and accuracy layers (training only) are
left out, and a layer type with no mapping, ``Python`` layers included, is an
:class:`~dagnet.importer.opaque.Unsupported` leaf. The files are read as data
(see :mod:`dagnet.importer._caffe_proto`); nothing in them executes.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from dagnet.importer._caffe_layers import build, ints as _ints, number as _number
from dagnet.importer._caffe_proto import CaffeImportError, Message, parse_text, read_weights
from dagnet.importer.opaque import Unsupported

__all__ = ["CaffeImport", "CaffeImportError", "load_caffe"]

DATA_LAYERS = {"Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "AnnotatedData"}
TRAINING_ONLY = {"SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "HingeLoss", "SigmoidCrossEntropyLoss",
                 "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence"}
V1_TYPES = {  # the V1 ``layers { type: CONVOLUTION }`` enum names
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "INNER_PRODUCT": "InnerProduct",
    "POOLING": "Pooling", "RELU": "ReLU", "SIGMOID": "Sigmoid", "TANH": "TanH", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "DROPOUT": "Dropout", "LRN": "LRN", "CONCAT": "Concat",
    "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "DATA": "Data", "IMAGE_DATA": "ImageData",
    "HDF5_DATA": "HDF5Data", "MEMORY_DATA": "MemoryData", "DUMMY_DATA": "DummyData", "ACCURACY": "Accuracy",
    "SPLIT": "Split", "SLICE": "Slice", "POWER": "Power", "ABSVAL": "AbsVal", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "SILENCE": "Silence", "BNLL": "BNLL", "WINDOW_DATA": "WindowData",
}


@dataclass
class CaffeImport:
    """An imported Caffe net: the module, its inputs' shapes as declared (batch dim
    included, ``None`` when the prototxt does not say), its output blobs, and the
    layers it could not map."""

    module: nn.Module
    inputs: dict[str, tuple | None]
    outputs: list[str]
    unsupported: list[Unsupported] = field(default_factory=list)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)  # float32: all Caffe blobs are


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name) or "layer"
    ident = "_" + ident if ident[0].isdigit() else ident
    return ident + "_" if keyword.iskeyword(ident) or hasattr(fx.GraphModule, ident) else ident


def _unique(name: str, used: set) -> str:
    candidate, k = name, 1
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


class _Net:
    """The state of one import: blobs by name (latest version), shapes, the fx graph."""

    def __init__(self, path: Path, weights: dict, weights_path: Path | None):
        self.path, self.weights, self.weights_path = path, weights, weights_path
        self.graph, self.root = fx.Graph(), nn.Module()
        self.blobs: dict[str, fx.Node | None] = {}  # None: a training label, not an input of the deployed net
        self.shapes: dict[fx.Node, tuple | None] = {}
        self.inputs: dict[str, tuple | None] = {}
        self.consumed: set[fx.Node] = set()
        self.produced: list[tuple[str, fx.Node]] = []
        self.names: set[str] = set()
        self.used_weights: set[str] = set()

    def fail(self, line: int, message: str):
        raise CaffeImportError(f"{self.path}:{line}: {message}")

    def add_input(self, blob: str, shape: tuple | None) -> None:
        node = self.graph.placeholder(_unique(_identifier(blob), self.names))
        self.blobs[blob], self.shapes[node] = node, shape
        self.inputs[node.target] = shape

    def read(self, layer: Message, name: str) -> list[fx.Node]:
        nodes = []
        for blob in layer.all("bottom"):
            if self.blobs.get(blob, "missing") is None:
                self.fail(layer.line_of("bottom"), f"layer '{name}' reads '{blob}', a training label; "
                          "expected a deploy net (give its input an Input layer)")
            if blob not in self.blobs:
                self.fail(layer.line_of("bottom"), f"layer '{name}' reads blob '{blob}', which no earlier layer "
                          "or input produces")
            nodes.append(self.blobs[blob])
        self.consumed.update(nodes)
        return nodes

    def call(self, module_name: str, module: nn.Module, args: list[fx.Node], tops: list[str]) -> None:
        target = _unique(_identifier(module_name), self.names)
        self.root.add_module(target, module)
        node = self.graph.call_module(target, tuple(args))
        outs = [node] if len(tops) == 1 else [self.graph.call_function(_getitem, (node, i)) for i in range(len(tops))]
        shapes = _out_shapes(module, [self.shapes.get(a) for a in args], len(tops))
        for top, out, shape in zip(tops, outs, shapes):
            self.blobs[top], self.shapes[out] = out, shape
            self.produced.append((top, out))

    def blobs_of(self, layer: Message, name: str, expected: list[tuple[int, ...] | None]) -> list[torch.Tensor] | None:
        """The layer's weights from the caffemodel, reshaped to what the prototxt needs (``None`` without one)."""
        if name not in self.weights:
            return None
        self.used_weights.add(name)
        blobs = self.weights[name]
        where = f"{self.weights_path}: layer '{name}'"
        if len(blobs) < sum(e is not None for e in expected):
            raise CaffeImportError(f"{where} has {len(blobs)} blobs, expected {len(expected)}")
        out = []
        for k, (blob, shape) in enumerate(zip(blobs, expected)):
            if shape is not None and blob.size != int(np.prod(shape)):
                raise CaffeImportError(f"{where} blob {k} has shape {tuple(blob.shape)}, expected {tuple(shape)}")
            out.append(torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32)).reshape(shape or blob.shape))
        return out


def _getitem(values, index):
    return values[index]


def _out_shapes(module: nn.Module, in_shapes: list, count: int) -> list:
    """The output shapes, by running the module on meta tensors (``None`` where unknown)."""
    if isinstance(module, Unsupported) or any(s is None or None in s for s in in_shapes):
        return [None] * count
    try:
        state = {k: v.to("meta") for k, v in (*module.named_parameters(), *module.named_buffers())}
        with torch.no_grad():
            out = torch.func.functional_call(module, state, tuple(torch.empty(s, device="meta") for s in in_shapes))
    except Exception:  # a shape the layer rejects shows when the module runs
        return [None] * count
    outs = out if isinstance(out, tuple) else (out,)
    return [tuple(o.shape) for o in outs]


def load_caffe(prototxt: str | Path, caffemodel: str | Path | None = None, *, name: str | None = None) -> CaffeImport:
    """Read a Caffe net and its weights and return it as an ``nn.Module`` (eval mode)."""
    path = Path(prototxt)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaffeImportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CaffeImportError(f"{path}: not a prototxt (expected UTF-8 protobuf text: {err})") from None
    net_msg = parse_text(text, path)
    weights_path = Path(caffemodel) if caffemodel is not None else None
    weights = read_weights(weights_path) if weights_path is not None else {}
    net = _Net(path, weights, weights_path)
    _net_inputs(net, net_msg)
    layers = net_msg.all("layer") or net_msg.all("layers")
    if not layers:
        net.fail(net_msg.line, "expected a NetParameter with `layer { ... }` entries, found none")
    kept = [layer for layer in layers if isinstance(layer, Message) and _in_deploy_phase(layer)]
    skip: set[int] = set()
    for index, layer in enumerate(kept):
        if index not in skip:
            folded = _add_layer(net, layer, kept[index + 1 :])
            if folded:
                skip.add(index + 1)
    if weights and not net.used_weights:
        raise CaffeImportError(f"{weights_path}: no layer of {path.name} has weights in it (a different net?)")
    outputs = [(top, node) for top, node in net.produced if node not in net.consumed]
    results = [node for _, node in outputs]
    net.graph.output(results[0] if len(results) == 1 else tuple(results))
    module = fx.GraphModule(net.root, net.graph, class_name=_identifier(name or net_msg.get("name") or path.stem))
    module.eval()
    unsupported = [m for m in module.modules() if isinstance(m, Unsupported)]
    dtypes = {name: torch.float32 for name in net.inputs}
    return CaffeImport(module, net.inputs, [top for top, _ in outputs], unsupported, dtypes)


def _net_inputs(net: _Net, msg: Message) -> None:
    """Net-level ``input:`` blobs with ``input_shape { dim }`` or four ``input_dim`` each."""
    names = msg.all("input")
    shapes = [tuple(_ints(s, "dim", net)) for s in msg.all("input_shape") if isinstance(s, Message)]
    dims = _ints(msg, "input_dim", net)
    for i, blob in enumerate(names):
        shape = shapes[i] if i < len(shapes) else tuple(dims[4 * i : 4 * i + 4]) if len(dims) >= 4 * i + 4 else None
        net.add_input(str(blob), shape)


def _in_deploy_phase(layer: Message) -> bool:
    """The layers a deployed (TEST phase) net runs."""
    phases = lambda rule: [r.get("phase") for r in layer.all(rule) if isinstance(r, Message)]  # noqa: E731
    include, exclude = phases("include"), phases("exclude")
    return (not include or any(p in ("TEST", "1") for p in include)) and not any(p in ("TEST", "1") for p in exclude)


def _add_layer(net: _Net, layer: Message, following: list[Message]) -> bool:
    """Add one layer; ``True`` when it also consumed the next layer (a BatchNorm's Scale)."""
    kind = str(layer.get("type", ""))
    kind = V1_TYPES.get(kind, kind)
    name = str(layer.get("name") or f"{kind.lower()}_{layer.line}")
    tops = [str(t) for t in layer.all("top")]
    if not kind:
        net.fail(layer.line, f"layer '{name}' has no type")
    if kind in DATA_LAYERS:
        _data_layer(net, layer, kind, tops)
        return False
    if kind in TRAINING_ONLY:
        return False
    args = net.read(layer, name)
    if kind == "Split":
        for top in tops:
            net.blobs[top] = args[0]
        return False
    if not tops:
        net.fail(layer.line, f"layer '{name}' ({kind}) has no top")
    in_shape = net.shapes.get(args[0]) if args else None
    scale = _scale_after(layer, following)
    module, flatten = build(net, layer, kind, name, in_shape, scale)
    if flatten is not None:
        net.call(f"{name}_flatten", flatten, args, [f"{name}_flatten"])
        args = [net.blobs.pop(f"{name}_flatten")]
        net.consumed.update(args)
    net.call(name, module, args, [str(t) for t in (scale.all("top") if scale is not None else tops)])
    return scale is not None


def _scale_after(layer: Message, following: list[Message]) -> Message | None:
    """The Scale layer right after a BatchNorm, reading only its output: folded into one affine BN."""
    if str(layer.get("type")) != "BatchNorm" or not following:
        return None
    scale = following[0]
    top = layer.get("top")
    if str(scale.get("type")) != "Scale" or scale.all("bottom") != [top] or len(scale.all("top")) != 1:
        return None
    scale_param = scale.msg("scale_param")
    if scale_param.get("axis", "1") != "1" or scale_param.get("num_axes", "1") != "1":
        return None
    if scale.get("top") != top and any(top in later.all("bottom") for later in following[1:]):
        return None  # the BN's own output is read again: keep the two apart
    return scale


def _data_layer(net: _Net, layer: Message, kind: str, tops: list[str]) -> None:
    if kind == "Input":
        shapes = [tuple(_ints(s, "dim", net)) for s in layer.msg("input_param").all("shape") if isinstance(s, Message)]
        for i, top in enumerate(tops):
            net.add_input(top, shapes[i] if i < len(shapes) else shapes[0] if len(shapes) == 1 else None)
        return
    shape = None
    if kind == "MemoryData":
        p = layer.msg("memory_data_param")
        shape = tuple(int(_number(p, k, 1, net, int)) for k in ("batch_size", "channels", "height", "width"))
    elif kind == "DummyData":
        shapes = [tuple(_ints(s, "dim", net)) for s in layer.msg("dummy_data_param").all("shape")]
        shape = shapes[0] if shapes else None
    net.add_input(tops[0], shape)
    for top in tops[1:]:  # labels: read only by the loss and accuracy layers a deploy net drops
        net.blobs[top] = None
