"""The Caffe front end: prototxt + caffemodel written here (no caffe needed) come
back as modules computing what a hand-written torch reference computes from the
same tensors, with Caffe's own rules (ceil-mode pooling, BatchNorm's scale
factor, AVE pooling's divisor) written out in the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dagnet.importer.caffe_front import CaffeImportError, load_caffe
from dagnet.importer.opaque import Unsupported

# -- a protobuf wire-format writer for NetParameter { layer { name type blobs } } --


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(array: np.ndarray) -> bytes:
    shape = _field(1, b"".join(_varint(d) for d in array.shape))  # BlobShape.dim, packed
    return _field(7, shape) + _field(5, array.astype("<f4").tobytes())  # BlobProto.shape, .data


def write_caffemodel(path, layers: dict[str, list[np.ndarray]]) -> str:
    net = _field(1, b"from_the_test")
    for name, blobs in layers.items():
        body = _field(1, name.encode()) + _field(2, b"Whatever") + b"".join(_field(7, _blob(b)) for b in blobs)
        net += _field(100, body)  # NetParameter.layer
    path.write_bytes(net)
    return str(path)


def rand(*shape, positive=False):
    a = torch.randn(*shape)
    return (a.abs() + 0.5 if positive else a).numpy()


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-5


LENET = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 2 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def test_lenet_matches_a_torch_reference_from_the_same_weights(tmp_path):
    w = {"conv1": [rand(20, 1, 5, 5), rand(20)], "conv2": [rand(50, 20, 5, 5) * 0.1, rand(50)],
         "ip1": [rand(500, 800) * 0.05, rand(500)], "ip2": [rand(10, 500) * 0.05, rand(10)]}
    (tmp_path / "lenet.prototxt").write_text(LENET)
    imported = load_caffe(tmp_path / "lenet.prototxt", write_caffemodel(tmp_path / "lenet.caffemodel", w))
    x = torch.randn(2, 1, 28, 28)
    y = F.max_pool2d(F.conv2d(x, t(w["conv1"][0]), t(w["conv1"][1])), 2, 2)
    y = F.max_pool2d(F.conv2d(y, t(w["conv2"][0]), t(w["conv2"][1])), 2, 2)
    y = F.relu(F.linear(y.flatten(1), t(w["ip1"][0]), t(w["ip1"][1])))
    want = torch.softmax(F.linear(y, t(w["ip2"][0]), t(w["ip2"][1])), dim=1)
    with torch.no_grad():
        assert_close(imported.module(x), want)
    assert imported.inputs == {"data": (2, 1, 28, 28)} and imported.dtypes == {"data": torch.float32}
    assert imported.outputs == ["prob"]
    children = dict(imported.module.named_children())
    assert list(children) == ["conv1", "pool1", "conv2", "pool2", "ip1_flatten", "ip1", "relu1", "ip2", "prob"]
    assert isinstance(children["ip1"], nn.Linear) and isinstance(children["pool1"], nn.MaxPool2d)
    traced = torch.fx.symbolic_trace(imported.module).graph
    assert [n.target for n in traced.nodes if n.op == "call_module"] == list(children)


RESNET = """
name: "TinyResNet"
input: "data"
input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
# block a: identity shortcut
layer { name: "res2a_branch2a" type: "Convolution" bottom: "pool1" top: "res2a_branch2a"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn2a_branch2a" type: "BatchNorm" bottom: "res2a_branch2a" top: "res2a_branch2a" }
layer { name: "scale2a_branch2a" type: "Scale" bottom: "res2a_branch2a" top: "res2a_branch2a" scale_param { bias_term: true } }
layer { name: "res2a_branch2a_relu" type: "ReLU" bottom: "res2a_branch2a" top: "res2a_branch2a" }
layer { name: "res2a_branch2b" type: "Convolution" bottom: "res2a_branch2a" top: "res2a_branch2b"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn2a_branch2b" type: "BatchNorm" bottom: "res2a_branch2b" top: "res2a_branch2b" }
layer { name: "scale2a_branch2b" type: "Scale" bottom: "res2a_branch2b" top: "res2a_branch2b" scale_param { bias_term: true } }
layer { name: "res2a" type: "Eltwise" bottom: "pool1" bottom: "res2a_branch2b" top: "res2a" }
layer { name: "res2a_relu" type: "ReLU" bottom: "res2a" top: "res2a" }
# block b: projection shortcut, stride 2
layer { name: "res3a_branch1" type: "Convolution" bottom: "res2a" top: "res3a_branch1"
        convolution_param { num_output: 16 kernel_size: 1 stride: 2 bias_term: false } }
layer { name: "bn3a_branch1" type: "BatchNorm" bottom: "res3a_branch1" top: "res3a_branch1" }
layer { name: "scale3a_branch1" type: "Scale" bottom: "res3a_branch1" top: "res3a_branch1" scale_param { bias_term: true } }
layer { name: "res3a_branch2a" type: "Convolution" bottom: "res2a" top: "res3a_branch2a"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 stride: 2 bias_term: false } }
layer { name: "bn3a_branch2a" type: "BatchNorm" bottom: "res3a_branch2a" top: "res3a_branch2a" }
layer { name: "scale3a_branch2a" type: "Scale" bottom: "res3a_branch2a" top: "res3a_branch2a" scale_param { bias_term: true } }
layer { name: "res3a_branch2a_relu" type: "ReLU" bottom: "res3a_branch2a" top: "res3a_branch2a" }
layer { name: "res3a" type: "Eltwise" bottom: "res3a_branch1" bottom: "res3a_branch2a" top: "res3a"
        eltwise_param { operation: SUM } }
layer { name: "res3a_relu" type: "ReLU" bottom: "res3a" top: "res3a" }
layer { name: "pool5" type: "Pooling" bottom: "res3a" top: "pool5" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc10" type: "InnerProduct" bottom: "pool5" top: "fc10" inner_product_param { num_output: 10 } }
"""


def _bn_weights(c: int) -> tuple[list, list]:
    factor = np.array([2.5], dtype=np.float32)  # Caffe stores running sums times this factor
    return [rand(c) * factor, rand(c, positive=True) * factor, factor], [rand(c, positive=True), rand(c)]


def _bn_reference(x, bn, scale):
    mean, var = t(bn[0]) / float(bn[2][0]), t(bn[1]) / float(bn[2][0])
    y = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
    return y * t(scale[0])[:, None, None] + t(scale[1])[:, None, None]


def test_a_resnet_style_net_matches_a_torch_reference(tmp_path):
    w = {}
    convs = {"conv1": (8, 3, 3), "res2a_branch2a": (8, 8, 3), "res2a_branch2b": (8, 8, 3),
             "res3a_branch1": (16, 8, 1), "res3a_branch2a": (16, 8, 3)}
    bns = {"conv1": ("bn_conv1", "scale_conv1"), "res2a_branch2a": ("bn2a_branch2a", "scale2a_branch2a"),
           "res2a_branch2b": ("bn2a_branch2b", "scale2a_branch2b"), "res3a_branch1": ("bn3a_branch1", "scale3a_branch1"),
           "res3a_branch2a": ("bn3a_branch2a", "scale3a_branch2a")}
    for conv, (cout, cin, k) in convs.items():
        w[conv] = [rand(cout, cin, k, k) * 0.1]
        w[bns[conv][0]], w[bns[conv][1]] = _bn_weights(cout)
    w["fc10"] = [rand(10, 16) * 0.1, rand(10)]
    (tmp_path / "resnet.prototxt").write_text(RESNET)
    imported = load_caffe(tmp_path / "resnet.prototxt", write_caffemodel(tmp_path / "resnet.caffemodel", w))

    def unit(x, conv, stride=1, relu=True):
        k = convs[conv][2]
        y = F.conv2d(x, t(w[conv][0]), stride=stride, padding=k // 2)
        y = _bn_reference(y, w[bns[conv][0]], w[bns[conv][1]])
        return F.relu(y) if relu else y

    x = torch.randn(2, 3, 16, 16)
    y = unit(x, "conv1")
    # Caffe rounds pooled sizes up: 16 -> ceil((16 - 3) / 2) + 1 = 8 windows, the last one clipped
    y = F.max_pool2d(F.pad(y, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    assert y.shape[-1] == 8
    y = F.relu(y + unit(unit(y, "res2a_branch2a"), "res2a_branch2b", relu=False))
    y = F.relu(unit(y, "res3a_branch1", 2, relu=False) + unit(y, "res3a_branch2a", 2))
    want = F.linear(y.mean(dim=(2, 3)), t(w["fc10"][0]), t(w["fc10"][1]))
    with torch.no_grad():
        assert_close(imported.module(x), want)
    children = dict(imported.module.named_children())
    # each BatchNorm + Scale pair is one affine BatchNorm2d named after the BatchNorm layer
    assert isinstance(children["bn2a_branch2b"], nn.BatchNorm2d) and children["bn2a_branch2b"].affine
    assert not any(name.startswith("scale") for name in children)
    assert {"res2a", "res3a", "res3a_relu", "pool5", "fc10"} <= set(children)
    assert imported.inputs == {"data": (2, 3, 16, 16)} and imported.outputs == ["fc10"]


OPS = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 16 dim: 16 } } }
layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 } }
layer { name: "b" type: "Convolution" bottom: "x" top: "b" convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "max" eltwise_param { operation: MAX } }
layer { name: "diff" type: "Eltwise" bottom: "a" bottom: "b" top: "diff" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "cat" type: "Concat" bottom: "prod" bottom: "max" bottom: "diff" top: "cat" }
layer { name: "norm" type: "LRN" bottom: "cat" top: "norm" lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 } }
layer { name: "drop" type: "Dropout" bottom: "norm" top: "norm" dropout_param { dropout_ratio: 0.3 } }
layer { name: "avg" type: "Pooling" bottom: "norm" top: "avg" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "act" type: "TanH" bottom: "avg" top: "avg" }
layer { name: "flat" type: "Flatten" bottom: "avg" top: "flat" }
"""


def _caffe_ave_pool(x, k, s, p):
    """Caffe's AVE pooling loop: ceil-mode windows, divided by the window clipped to the padded input."""
    n, c, h, w = x.shape
    out = -(-(h + 2 * p - k) // s) + 1
    if (out - 1) * s >= h + p:
        out -= 1
    y = torch.zeros(n, c, out, out)
    for i in range(out):
        for j in range(out):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
            size = (h1 - h0) * (w1 - w0)
            y[:, :, i, j] = x[:, :, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w)].sum(dim=(2, 3)) / size
    return y


def test_eltwise_concat_lrn_and_ave_pooling_follow_caffe(tmp_path):
    w = {"a": [rand(6, 4, 3, 1), rand(6)], "b": [rand(6, 2, 3, 3), rand(6)]}
    (tmp_path / "ops.prototxt").write_text(OPS)
    imported = load_caffe(tmp_path / "ops.prototxt", write_caffemodel(tmp_path / "ops.caffemodel", w))
    x = torch.randn(1, 4, 16, 16)
    a = F.conv2d(x, t(w["a"][0]), t(w["a"][1]), padding=(1, 0))
    b = F.conv2d(x, t(w["b"][0]), t(w["b"][1]), padding=1, groups=2)
    cat = torch.cat([a * b, torch.maximum(a, b), a - 0.5 * b], dim=1)
    window = F.pad(cat.square(), (0, 0, 0, 0, 2, 2)).unfold(1, 5, 1).sum(-1)  # 5 channels centred on each
    norm = cat / (1.0 + 0.1 / 5 * window) ** 0.75
    want = torch.tanh(_caffe_ave_pool(norm, 3, 2, 1)).flatten(1)
    with torch.no_grad():
        assert_close(imported.module(x), want)
    assert want.shape == (1, 18 * 9 * 9)


TRAIN_VAL = """
name: "Phases"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN } data_param { batch_size: 64 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST } data_param { batch_size: 100 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "hook" type: "Python" bottom: "ip" top: "hooked" python_param { module: "os" layer: "system" } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_a_train_val_net_keeps_its_deploy_layers_and_python_layers_are_unsupported(tmp_path):
    w = {"ip": [rand(3, 12), rand(3)]}
    (tmp_path / "train_val.prototxt").write_text(TRAIN_VAL)
    imported = load_caffe(tmp_path / "train_val.prototxt", write_caffemodel(tmp_path / "w.caffemodel", w))
    assert imported.inputs == {"data": None}
    assert imported.outputs == ["hooked"]
    (hook,) = imported.unsupported
    assert isinstance(hook, Unsupported) and hook.source_op == "caffe:Python"
    assert hook.location == f"{tmp_path / 'train_val.prototxt'}:6"
    x = torch.randn(5, 3, 2, 2)
    with torch.no_grad():  # the layers before the hook run; the hook itself never does
        got = imported.module.ip(imported.module.ip_flatten(x))
    assert_close(got, F.linear(x.flatten(1), t(w["ip"][0]), t(w["ip"][1])))


def test_without_a_caffemodel_the_net_still_builds_from_shapes(tmp_path):
    (tmp_path / "lenet.prototxt").write_text(LENET)
    imported = load_caffe(tmp_path / "lenet.prototxt")
    assert imported.module.ip1.in_features == 800
    assert imported.module(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("text, line, words", [
    ('layer { name: "a" type: "ReLU" bottom: "x" top: "a"\n', 2, "expected '}'"),
    ('input: "x"\nlayer {\n  name: "a" type: "ReLU" bottom: "y" top: "a" }\n', 3, "reads blob 'y'"),
    ('layer { name: "x" type: "Input" top: "x" }\nlayer { name = "c" }\n', 2, "expected"),
    ('input: "x"\nlayer { name: "c" type: "Convolution" bottom: "x" top: "c"\n  convolution_param { kernel_size: 3 } }\n',
     2, "num_output"),
    ('input: "x"\nlayer { name: "p" type: "Pooling" bottom: "x" top: "p"\n  pooling_param { kernel_size: two } }\n',
     3, "expected integers"),
])
def test_a_bad_prototxt_is_a_one_line_error_naming_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeImportError) as err:
        load_caffe(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:{line}:") and words in message
    assert isinstance(err.value, ValueError)


def test_weights_that_do_not_fit_the_prototxt_are_a_one_line_error(tmp_path):
    (tmp_path / "lenet.prototxt").write_text(LENET)
    bad = write_caffemodel(tmp_path / "bad.caffemodel", {"conv1": [rand(20, 1, 3, 3), rand(20)]})
    with pytest.raises(CaffeImportError, match=r"bad.caffemodel: layer 'conv1' blob 0 has shape \(20, 1, 3, 3\)"):
        load_caffe(tmp_path / "lenet.prototxt", bad)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\xff" * 40)
    with pytest.raises(CaffeImportError, match="not a caffemodel"):
        load_caffe(tmp_path / "lenet.prototxt", garbage)


V1_NET = """
name: "V1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""


def _v1_blob(array: np.ndarray) -> bytes:
    """A BlobProto with the legacy num/channels/height/width fields and unpacked floats."""
    dims = (1,) * (4 - array.ndim) + array.shape
    head = b"".join(_varint(k << 3) + _varint(d) for k, d in zip((1, 2, 3, 4), dims))
    return head + b"".join(_varint(5 << 3 | 5) + np.float32(v).tobytes() for v in array.reshape(-1))


def test_a_v1_net_with_legacy_blobs_loads(tmp_path):
    w = {"conv": [rand(4, 3, 3, 3), rand(4)], "fc": [rand(5, 144), rand(5)]}
    net = b"".join(_field(2, _field(4, name.encode()) + b"".join(_field(6, _v1_blob(b)) for b in blobs))
                   for name, blobs in w.items())  # NetParameter.layers: V1LayerParameter name=4, blobs=6
    (tmp_path / "v1.caffemodel").write_bytes(net)
    (tmp_path / "v1.prototxt").write_text(V1_NET)
    imported = load_caffe(tmp_path / "v1.prototxt", tmp_path / "v1.caffemodel")
    x = torch.randn(1, 3, 8, 8)
    y = F.relu(F.conv2d(x, t(w["conv"][0]), t(w["conv"][1])))
    with torch.no_grad():
        assert_close(imported.module(x), F.linear(y.flatten(1), t(w["fc"][0]), t(w["fc"][1])))
    assert imported.inputs == {"data": (1, 3, 8, 8)}
