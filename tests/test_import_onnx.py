"""The ONNX front end: models exported by torch.onnx come back as modules that
compute what onnxruntime computes, with the source's module paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.references import torchvision

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dagnet.importer.onnx_front import OnnxImportError, load_onnx  # noqa: E402
from dagnet.importer.opaque import Unsupported  # noqa: E402


def export(model: nn.Module, args: tuple, path, **kwargs) -> str:
    torch.onnx.export(model.eval(), args, str(path), **kwargs)
    return str(path)


def assert_matches_onnxruntime(path: str, feeds: dict[str, np.ndarray], imported) -> None:
    """Every output equals onnxruntime's to 1e-4 of the output's scale."""
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        ours = imported.module(*[torch.from_numpy(v) for v in feeds.values()])
    ours = ours if isinstance(ours, tuple) else (ours,)
    assert len(ours) == len(expected) == len(imported.outputs)
    for got, want in zip(ours, expected):
        assert tuple(got.shape) == want.shape
        scale = max(1.0, float(np.abs(want).max()))
        assert float(np.abs(got.numpy() - want).max()) <= 1e-4 * scale


def traced_targets(module: nn.Module) -> set[str]:
    graph = torch.fx.symbolic_trace(module).graph
    return {n.target for n in graph.nodes if n.op == "call_module"}


def test_resnet18_from_the_dynamo_exporter_keeps_its_module_paths(tmp_path):
    tv = torchvision()
    x = torch.randn(1, 3, 64, 64)
    path = export(tv.models.resnet18(), (x,), tmp_path / "resnet18.onnx", dynamo=True)
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"x": x.numpy()}, imported)
    modules = dict(imported.module.named_modules())
    # the exporter folds each BN into its conv; the conv keeps its own path
    assert isinstance(modules["layer1.0.conv1"], nn.Conv2d)
    assert isinstance(modules["layer2.0.downsample.0"], nn.Conv2d)
    assert isinstance(modules["fc"], nn.Linear)
    assert modules["layer1.0.relu"] is not None and isinstance(modules["layer1.0.relu"], nn.ReLU)
    assert {"layer1.0.conv1", "layer4.1.conv2", "layer1.0.relu", "fc"} <= traced_targets(imported.module)
    assert imported.inputs == {"x": (1, 3, 64, 64)}
    assert imported.unsupported == []


def test_the_torchscript_exporters_scoped_node_names_give_the_hierarchy(tmp_path):
    tv = torchvision()
    x = torch.randn(2, 3, 64, 64)
    path = export(tv.models.resnet18(), (x,), tmp_path / "resnet18.onnx", dynamo=False,
                  input_names=["image"], output_names=["logits"])
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"image": x.numpy()}, imported)
    modules = dict(imported.module.named_modules())
    assert isinstance(modules["layer3.0.downsample.0"], nn.Conv2d)
    assert isinstance(modules["avgpool"], nn.AdaptiveAvgPool2d)
    assert "layer2.1.conv2" in traced_targets(imported.module)
    assert imported.outputs == ["logits"]


def test_a_dynamic_batch_dim_is_none_and_any_batch_runs(tmp_path):
    tv = torchvision()
    x = torch.randn(2, 3, 32, 32)
    path = export(tv.models.resnet18(num_classes=7), (x,), tmp_path / "dyn.onnx", dynamo=False,
                  input_names=["image"], dynamic_axes={"image": {0: "batch"}})
    imported = load_onnx(path)
    assert imported.inputs == {"image": (None, 3, 32, 32)}
    assert_matches_onnxruntime(path, {"image": np.random.randn(3, 3, 32, 32).astype(np.float32)}, imported)
    assert "layer1.0.conv1" in traced_targets(imported.module)


def test_mobilenet_v3_small_matches_onnxruntime(tmp_path):
    tv = torchvision()
    x = torch.randn(1, 3, 64, 64)
    # the TorchScript exporter: a few times faster than dynamo here, names scoped just as well
    path = export(tv.models.mobilenet_v3_small(), (x,), tmp_path / "mnv3.onnx", dynamo=False, input_names=["x"])
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"x": x.numpy()}, imported)
    modules = dict(imported.module.named_modules())
    assert isinstance(modules["features.0.0"], nn.Conv2d)
    assert isinstance(modules["features.1.block.1.fc1"], nn.Conv2d)  # squeeze-excitation
    assert isinstance(modules["features.1.block.1.scale_activation"], nn.Hardsigmoid)
    assert any(isinstance(m, nn.Hardswish) for m in modules.values())
    assert "classifier.3" in traced_targets(imported.module)


def test_a_small_bert_encoder_matches_onnxruntime(tmp_path):
    torchvision()  # transformers imports torchvision, which needs its op schemas first
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 16))
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=64)}
    path = export(transformers.BertModel(config), (ids,), tmp_path / "bert.onnx", dynamo=True, dynamic_shapes=(dims,))
    imported = load_onnx(path)
    assert imported.inputs == {"input_ids": (None, None)} and imported.dtypes == {"input_ids": torch.int64}
    # other sizes than the export's: the shape arithmetic reads them off the input
    assert_matches_onnxruntime(path, {"input_ids": np.random.randint(0, 100, (3, 9))}, imported)
    traced = torch.fx.symbolic_trace(imported.module)
    other = np.random.randint(0, 100, (1, 21))
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": other})
    with torch.no_grad():
        got = traced(torch.from_numpy(other))
    assert max(float(np.abs(g.numpy() - w).max()) for g, w in zip(got, want)) <= 1e-4
    modules = dict(imported.module.named_modules())
    assert isinstance(modules["embeddings.word_embeddings"], nn.Embedding)
    assert isinstance(modules["encoder.layer.1.attention.self.query"], nn.Linear)
    assert isinstance(modules["encoder.layer.0.intermediate.dense"], nn.Linear)
    assert isinstance(modules["encoder.layer.0.output.LayerNorm"], nn.LayerNorm)
    targets = traced_targets(imported.module)
    assert {"encoder.layer.1.attention.self.query", "pooler.activation"} <= targets


@pytest.mark.slow
def test_a_transformer_encoder_matches_onnxruntime(tmp_path):
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    x = torch.randn(2, 10, 32)
    path = export(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (x,), tmp_path / "enc.onnx",
                  dynamo=True)
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"src": x.numpy()}, imported)
    assert {"layers.0.linear1", "layers.1.norm2"} <= traced_targets(imported.module)


@pytest.mark.slow
def test_resnet50_matches_onnxruntime(tmp_path):
    tv = torchvision()
    x = torch.randn(1, 3, 64, 64)
    path = export(tv.models.resnet50(), (x,), tmp_path / "resnet50.onnx", dynamo=True)
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"x": x.numpy()}, imported)
    assert {"layer1.0.conv1", "layer4.2.conv3", "layer3.0.downsample.0"} <= traced_targets(imported.module)


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hand_built", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model


def test_a_graph_without_scopes_comes_back_flat_in_graph_order(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="act"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="head", transB=1, alpha=0.5),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 23, 23])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    path = str(tmp_path / "flat.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    assert [name for name, _ in imported.module.named_children()] == ["conv", "act", "pool", "flat", "head"]
    assert isinstance(imported.module.pool, nn.MaxPool2d) and imported.module.pool.ceil_mode
    assert imported.inputs == {"x": (None, 3, 23, 23)}
    assert_matches_onnxruntime(path, {"x": rng.standard_normal((2, 3, 23, 23)).astype(np.float32)}, imported)


def test_an_op_with_no_mapping_becomes_an_unsupported_leaf(tmp_path):
    nodes = [
        helper.make_node("Relu", ["boxes"], ["b"], name="clean"),
        helper.make_node("NonMaxSuppression", ["b", "scores", "k"], ["keep"], name="nms"),
        helper.make_node("Mystery", ["b"], ["m"], name="custom", domain="com.example"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 10])],
        [helper.make_tensor_value_info("keep", TensorProto.INT64, None),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([3], dtype=np.int64), "k")],
        opsets=(("", 17), ("com.example", 1)),
    )
    path = str(tmp_path / "nms.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    ops = {u.source_op: u for u in imported.unsupported}
    assert set(ops) == {"onnx::NonMaxSuppression", "com.example::Mystery"}
    assert ops["onnx::NonMaxSuppression"].location == "nms"
    assert ops["onnx::NonMaxSuppression"].out_shapes == [(3,)]  # (selected, 3) less the first dim
    assert all(isinstance(m, Unsupported) for m in (imported.module.nms, imported.module.custom))
    assert isinstance(imported.module.clean, nn.ReLU)


@pytest.mark.parametrize("content", [b"\x00\x01garbage\xff" * 10, b"this is not a model\n", b""])
def test_a_file_that_is_not_onnx_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxImportError) as err:
        load_onnx(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "ONNX" in message
    assert isinstance(err.value, ValueError)


def test_a_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(OnnxImportError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")


def test_a_zoo_of_ops_matches_onnxruntime(tmp_path):
    """Leaves and generic ops side by side, each against onnxruntime's reading of the op."""
    rng = np.random.default_rng(1)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    inits = {
        "w": f32(8, 4, 3, 3), "b": f32(8), "scale": f32(8), "shift": f32(8), "mean": f32(8),
        "var": np.abs(f32(8)) + 0.5, "fc": f32(8, 6), "fc_b": f32(6), "ln_w": f32(6), "ln_b": f32(6),
        "shape": np.array([0, -1, 3], dtype=np.int64), "idx": np.array([2, 0], dtype=np.int64),
        "pads": np.array([0, 0, 1, 2, 0, 0, 0, 1], dtype=np.int64), "two": np.array(2.0, dtype=np.float32),
        "split": np.array([4, 4], dtype=np.int64), "axes": np.array([2, 3], dtype=np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], pads=[1, 0, 1, 2], strides=[1, 1]),  # asymmetric pads
        n("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"], epsilon=1e-3),
        n("Sigmoid", ["bn"], ["sig"]), n("Mul", ["bn", "sig"], ["silu"]),
        n("Split", ["silu", "split"], ["s1", "s2"], axis=1),
        n("AveragePool", ["s1"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("MaxPool", ["s2"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        n("Clip", ["ap", "", ""], ["ap_c"]), n("LeakyRelu", ["mp"], ["mp_l"], alpha=0.2),
        n("Concat", ["ap_c", "mp_l"], ["cat"], axis=1),
        n("Pad", ["cat", "pads"], ["padded"], mode="reflect"),
        n("ReduceMean", ["padded", "axes"], ["gap"], keepdims=0),
        n("MatMul", ["gap", "fc"], ["mm"]), n("Add", ["mm", "fc_b"], ["lin"]),
        n("LayerNormalization", ["lin", "ln_w", "ln_b"], ["ln"], axis=-1),
        n("Pow", ["ln", "two"], ["sq"]), n("Sqrt", ["sq"], ["abs"]), n("Div", ["ln", "abs"], ["sign"]),
        n("Reshape", ["sign", "shape"], ["r"]), n("Transpose", ["r"], ["tr"], perm=[0, 2, 1]),
        n("Gather", ["tr", "idx"], ["g"], axis=1), n("Softmax", ["g"], ["y"], axis=-1),
        n("HardSigmoid", ["ln"], ["hs"], alpha=1 / 6, beta=0.5), n("HardSwish", ["ln"], ["hw"]),
        n("Add", ["hs", "hw"], ["y2"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 9, 10])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(v, k) for k, v in inits.items()], opsets=(("", 18),))
    path = str(tmp_path / "zoo.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    assert imported.unsupported == []
    kinds = {type(m) for m in imported.module.modules()}
    assert {nn.BatchNorm2d, nn.SiLU, nn.AvgPool2d, nn.MaxPool2d, nn.Linear, nn.LayerNorm, nn.Hardsigmoid} <= kinds
    assert_matches_onnxruntime(path, {"x": f32(3, 4, 9, 10)}, imported)
    traced_targets(imported.module)


def test_a_node_reading_an_unknown_value_is_a_one_line_error(tmp_path):
    nodes = [helper.make_node("Relu", ["ghost"], ["y"], name="act")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "dangling.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OnnxImportError, match=r"node 'act' reads 'ghost'") as err:
        load_onnx(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_softmax_before_opset_13_runs_over_all_dims_from_its_axis(tmp_path):
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="soft", axis=1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])], opsets=(("", 11),))
    path = str(tmp_path / "softmax11.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"x": np.random.randn(2, 3, 4).astype(np.float32)}, imported)
    traced_targets(imported.module)


class _Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        near = F.interpolate(y, scale_factor=2, mode="nearest")
        smooth = F.interpolate(y, size=(20, 14), mode="bilinear", align_corners=False)
        corners = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        return near, smooth, corners


def test_resize_maps_onto_interpolate(tmp_path):
    x = torch.randn(2, 3, 10, 7)
    path = export(_Upsampler(), (x,), tmp_path / "up.onnx", dynamo=False, input_names=["x"])
    imported = load_onnx(path)
    assert imported.unsupported == []
    assert_matches_onnxruntime(path, {"x": x.numpy()}, imported)
    assert "conv" in traced_targets(imported.module)


def test_optional_outputs_nobody_reads_are_dropped_and_read_ones_are_unsupported(tmp_path):
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),  # the mask: never read
        helper.make_node("MaxPool", ["d"], ["p", "where"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Cast", ["where"], ["where_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["p", "where_f"], ["y"], name="sum"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("d", TensorProto.FLOAT, None)])
    path = str(tmp_path / "outs.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    assert [u.source_op for u in imported.unsupported] == ["onnx::MaxPool"]  # its indices are read
    assert isinstance(imported.module.drop, nn.Identity)
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(imported.module.drop(x), x)


def test_more_ops_match_onnxruntime(tmp_path):
    rng = np.random.default_rng(2)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    inits = {"w": f32(6, 3, 3, 3), "wt": f32(6, 4, 2, 2), "bt": f32(4), "slope": np.abs(f32(4, 1, 1)) * 0.3,
             "fc": f32(4, 5), "fc_b": f32(5), "reps": np.array([1, 2], dtype=np.int64),
             "zero": np.array(0.0, dtype=np.float32), "target": np.array([2, 3, 1, 1], dtype=np.int64)}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2]),
        n("ConvTranspose", ["c", "wt", "bt"], ["up"], strides=[2, 2], output_padding=[1, 0]),
        n("PRelu", ["up", "slope"], ["pr"]), n("Elu", ["pr"], ["el"], alpha=0.7),
        n("GlobalAveragePool", ["el"], ["gap"]), n("Flatten", ["gap"], ["flat"]),
        n("Gemm", ["flat", "fc", "fc_b"], ["lin"], beta=0.5),
        n("Tile", ["lin", "reps"], ["tiled"]),
        n("Greater", ["tiled", "zero"], ["pos"]), n("Where", ["pos", "tiled", "zero"], ["relu"]),
        n("Unsqueeze", ["relu", "reps"], ["u"]),
        n("Expand", ["u", "target"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 7])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = str(tmp_path / "more.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    assert imported.unsupported == []
    kinds = {type(m) for m in imported.module.modules()}
    assert {nn.Conv2d, nn.ConvTranspose2d, nn.PReLU, nn.ELU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear} <= kinds
    assert_matches_onnxruntime(path, {"x": f32(1, 3, 9, 7)}, imported)
    traced_targets(imported.module)


# -- the ONNX route folds as the nn.Module route does ------------------------------------------------
def _module_route_statements(source: nn.Module, size: int) -> int:
    import dagnet
    return dagnet.import_model(source, example_inputs=(torch.randn(2, 3, size, size),), verify=True).statements()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_an_exported_resnet18_folds_into_the_blocks_of_its_module_import(tmp_path, dynamo):
    """Both exporters' scopes give back the module tree: ops with no weights (the residual add, a
    reshape) sit in their block under one name whatever the exporter numbered them, so the eight
    basic blocks share one template and each stage is a repeat; the doc names the file."""
    import dagnet
    tv = torchvision()
    source = tv.models.resnet18(num_classes=10).eval()
    path = export(source, (torch.randn(1, 3, 64, 64),), tmp_path / "r18.onnx", dynamo=dynamo)
    imported = dagnet.import_model(path)
    assert imported.example_inputs[0].shape[0] == 1             # a static batch of 1, as exported
    assert imported.verify() <= dagnet.importer.imported.TOLERANCE
    text = imported.text()
    assert imported.statements() <= _module_route_statements(source, 64) + 3
    stages = [line for line in text.splitlines() if line.startswith("layer") and line.rstrip().endswith("* 2")]
    assert len(stages) == 4, text
    assert text.count("\nblock ") == 1, text                    # one block: layer1.0 and layer1.1 merged
    # the dynamo exporter records the source classes; the TorchScript one only the paths
    assert ("block basic_block(" if dynamo else "block layer_block(") in text
    assert "Imported by `dagnet import` from r18.onnx." in text
    assert "GraphModule" not in text
    # the weights land where the compiled spec wants them, and the spec computes the source
    model = imported.compile()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-4, atol=1e-4)


def test_an_exported_mobilenet_v3_folds_about_as_its_module_import(tmp_path):
    """The dynamo exporter's MobileNetV3 (flat, 117 statements for 122 ops, before its scopes were
    followed) folds to about the statements of its nn.Module import (47)."""
    import dagnet
    tv = torchvision()
    source = tv.models.mobilenet_v3_small().eval()
    path = export(source, (torch.randn(1, 3, 64, 64),), tmp_path / "mnv3.onnx", dynamo=True)
    imported = dagnet.import_model(path, verify=True)
    assert imported.statements() <= _module_route_statements(source, 64) + 3
    assert imported.statements() < len(imported.captured.ops) // 2        # not the flat graph
    assert "* 2" in imported.text() and "block squeeze_excitation(" in imported.text()    # classes from the file


def test_weight_free_ops_of_one_kind_in_one_scope_stay_apart(tmp_path):
    """The exporter's `select` and `select_1` in one block are both named `select` there, but they pick
    different channels (a constant the module holds): each keeps its own module (one shared module
    would pick the first channel twice)."""

    class Picks(nn.Module):
        def forward(self, x):
            return torch.relu(x[:, 0]) * x[:, 1] + x[:, 2]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.picks = nn.Conv2d(3, 4, 3), Picks()

        def forward(self, x):
            return self.picks(self.conv(x))

    x = torch.randn(1, 3, 8, 8)
    path = export(Net(), (x,), tmp_path / "picks.onnx", dynamo=True)
    imported = load_onnx(path)
    assert_matches_onnxruntime(path, {"x": x.numpy()}, imported)
    modules = dict(imported.module.named_modules())
    assert {"picks.select", "picks.select_1", "picks.select_2"} <= set(modules)


def test_a_scalar_constant_of_the_file_is_a_scalar_argument(tmp_path):
    """The dynamo exporter writes `x * 2.0` as Mul by a 0-dim initializer: it imports as `scale`."""
    import dagnet

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.relu(self.conv(x) * 2.0) * 3.0

    path = export(Net(), (torch.randn(1, 3, 8, 8),), tmp_path / "scales.onnx", dynamo=True)
    imported = dagnet.import_model(path, verify=True)
    assert imported.unsupported == [] and imported.max_abs_diff <= 1e-5
    assert "scale(" in imported.text() or "mul" not in imported.text()


# -- attention: the exporters' decomposition comes back as one scaled_dot_product_attention ---------------
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_an_exported_bert_encoder_imports_with_one_attention_op_per_layer(tmp_path, dynamo):
    """The dynamo exporter's aten SDPA scope folds the batch into the heads (Reshape [B*H, T, d],
    IsNaN/Where), the TorchScript one writes MatMul/Mul/Softmax/MatMul: both come back as one
    scaled_dot_product_attention, so the encoder layers fold into a repeat and the spec computes
    what onnxruntime does."""
    import dagnet
    torchvision()  # transformers imports torchvision, which needs its op schemas first
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    path = export(Encoder(), (torch.randint(0, 100, (1, 16)),), tmp_path / "bert.onnx", dynamo=dynamo,
                  input_names=["ids"])
    imported = dagnet.import_model(path)
    assert imported.unsupported == []
    text = imported.text()
    assert "* 2" in text, text
    assert text.count("scaled_dot_product_attention(scale=0.3535") == 1, text     # 1/sqrt(8), in the one layer block
    assert "isnan" not in text and "where" not in text
    ids = np.random.default_rng(0).integers(0, 100, (1, 16))
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    with torch.no_grad():
        got = imported.compile()(torch.from_numpy(ids)).numpy()
    assert float(np.abs(got - want).max()) <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_attention_with_a_divided_scale_and_a_run_time_mask_is_one_call(tmp_path):
    """MatMul -> Div -> Add(mask) -> Softmax -> MatMul, keys transposed by their own Transpose: one
    Attention module whose scale is 1/divisor and whose mask is its fourth argument."""
    from dagnet.importer._onnx_attention import Attention
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),    # k is [B, T, H, d]
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Div", ["s", "d"], ["sd"]),
        helper.make_node("Add", ["sd", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    shapes = {"q": [2, 3, 5, 4], "k": [2, 5, 3, 4], "v": [2, 3, 5, 4], "mask": [2, 1, 5, 5]}
    inputs = [helper.make_tensor_value_info(name, f32, shape) for name, shape in shapes.items()]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", f32, [2, 3, 5, 4])],
                   [numpy_helper.from_array(np.array(3.0, dtype=np.float32), "d")])
    path = str(tmp_path / "attention.onnx")
    onnx.save(model, path)
    imported = load_onnx(path)
    attention = [m for m in imported.module.modules() if isinstance(m, Attention)]
    assert len(attention) == 1 and attention[0].scale == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    assert_matches_onnxruntime(path, feeds, imported)
    graph = imported.module.graph
    ops = [type(imported.module.get_submodule(n.target)).__name__ for n in graph.nodes if n.op == "call_module"]
    assert ops == ["OnnxOp", "Attention"]       # the keys' permute, then the one call
