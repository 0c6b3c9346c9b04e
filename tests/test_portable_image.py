"""The portable tree, grid and dense CRFs (dagnet.fields.portable): each equals its
field, exports to .pt2 and ONNX with dynamic batch (and H, W), scripts, and runs
from a file that imports only torch."""

import ast
import subprocess
import sys

import numpy as np
import pytest
import torch

import dagnet
from dagnet.export import _dynamic_shapes, example_inputs
from dagnet.fields.dense_crf import DenseCRF
from dagnet.fields.grid import GridCRF
from dagnet.fields.portable import portable, source_files, twin
from dagnet.fields.tree import TreeCRF
from tests.conftest import SPECS

FOREST = [-1, 0, 0, 1, 1, 2, -1, 6, 7, 3]


def randomised(field, seed=0):
    """``field`` in float64 with random parameters (not the identity-like defaults)."""
    field = field.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return field


def image_batch(B, L, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, H, W, generator=g, dtype=torch.float64) * 2
    return logits, torch.rand(B, 3, H, W, generator=g, dtype=torch.float64)


# -- each twin equals its field -------------------------------------------------------------

def test_tree_twin_equals_the_field():
    field = randomised(TreeCRF(4, FOREST))
    x = torch.randn(3, len(FOREST), 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    x[0, 3, 1] = float("-inf")                      # a disallowed state
    for module in (twin(field), torch.jit.script(twin(field))):
        torch.testing.assert_close(module.marginals(x), field.marginals(x), atol=1e-12, rtol=0)
        torch.testing.assert_close(module.log_partition(x), field.log_partition(x), atol=1e-12, rtol=0)
        labels, score = module.decode(x)
        expected_labels, expected_score = field.decode(x)
        assert torch.equal(labels, expected_labels)
        torch.testing.assert_close(score, expected_score, atol=1e-12, rtol=0)


def test_tree_twin_needs_a_fixed_tree():
    with pytest.raises(ValueError, match="fixed tree"):
        twin(TreeCRF(3))


@pytest.mark.parametrize("options", [{}, {"pairwise": "full"}, {"inference": "mean_field"},
                                     {"inference": "mean_field", "schedule": "parallel"}])
def test_grid_twin_equals_the_field(options):
    field = randomised(GridCRF(4, iterations=6, **options))
    logits, _ = image_batch(2, 4, 5, 7)
    mask = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(2)) > 0.2
    for module in (twin(field), torch.jit.script(twin(field))):
        for m in (None, mask):
            torch.testing.assert_close(module.marginals(logits, m), field.marginals(logits, m), atol=1e-12, rtol=0)
        labels, score = module.decode(logits, mask)
        expected_labels, expected_score = field.decode(logits, mask)
        assert torch.equal(labels, expected_labels)
        torch.testing.assert_close(score, expected_score, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["lattice", "exact"])
def test_dense_twin_equals_the_field(method):
    field = randomised(DenseCRF(4, iterations=3, method=method, bilateral_sxy=8, bilateral_srgb=0.1))
    logits, image = image_batch(3, 4, 9, 11)
    for module in (twin(field), torch.jit.script(twin(field))):
        torch.testing.assert_close(module(logits, image), field(logits, image), atol=1e-11, rtol=0)
        labels, score = module.decode(logits, image)
        expected_labels, expected_score = field.decode(logits, image=image)
        assert torch.equal(labels, expected_labels)
        torch.testing.assert_close(score, expected_score, atol=1e-10, rtol=0)


def test_dense_twin_learnable_bandwidths_load_one_to_one():
    field = DenseCRF(3, learn_bandwidths=True)
    copy = twin(field)
    assert dict(copy.named_parameters()).keys() == dict(field.named_parameters()).keys()
    assert copy.state_dict().keys() == field.state_dict().keys()


def test_portable_replaces_every_field():
    model = dagnet.compile(SPECS / "grid_segmenter.yaml").eval()
    swapped = portable(model)
    assert type(swapped.crf).__module__ == "dagnet.fields.portable.grid"
    assert type(model.crf) is GridCRF                 # the original is left alone
    assert swapped.state_dict().keys() == model.state_dict().keys()


# -- exported models equal the compiled ones ------------------------------------------------

TREE_SPEC = """dagnet: 1
name: tiny-tree
inputs:
  x: {shape: [10, 6]}
nodes:
  scores: {op: linear, in: x, out_features: 3}
  crf: {op: tree_crf, in: scores, parents: [-1, 0, 0, 1, 1, 2, -1, 6, 7, 3]}
outputs: [crf]
"""

IMAGE_SPEC = """dagnet: 1
name: tiny-{name}
inputs:
  image: {{shape: [3, H, W]}}
nodes:
  scores: {{op: conv2d, in: image, out_channels: 3, kernel_size: 3, padding: 1}}
  crf: {node}
outputs: [crf]
"""
TINY = {"tree": TREE_SPEC,
        "grid": IMAGE_SPEC.format(name="grid", node="{op: grid_crf, in: scores, iterations: 3}"),
        "dense": IMAGE_SPEC.format(name="dense", node="{op: dense_crf, in: [scores, image], iterations: 1, "
                                                       "bilateral_sxy: 8, bilateral_srgb: 0.1}")}
SIZES = [(1, 12, 20), (3, 17, 9)]   # (batch, H, W): none is the example's (2, 16, 16)


def exported_program(model):
    ir = model.dagnet_ir
    inputs = example_inputs(ir, dims={"H": 16, "W": 16})
    return torch.export.export(portable(model), (), inputs, dynamic_shapes=_dynamic_shapes(ir))


def feeds(model, B, H, W):
    """Inputs of the model's spec at batch B and image size H x W (images in [0, 1])."""
    torch.manual_seed(B * H * W)
    return {name: tensor.abs() for name, tensor in example_inputs(model.dagnet_ir, B, {"H": H, "W": W}).items()}


def as_list(outputs):
    """A model's outputs in order: one tensor, a tuple, or a dict of the spec's outputs."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def check_exports(model, tmp_path, onnx=True):
    """The .pt2 program (and the ONNX file, in onnxruntime) equal ``model`` at SIZES, to float32
    rounding: the dense CRF's sums run in another order, and 5 mean-field iterations
    with kernel weight 10 amplify that to a few 1e-4 in log Q."""
    model = model.eval()
    program = exported_program(model)
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    session = None
    if onnx:
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        torch.onnx.export(program, (), kwargs=example_inputs(model.dagnet_ir, dims={"H": 16, "W": 16}),
                          dynamo=True, verbose=False).save(str(tmp_path / "m.onnx"))
        session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    image = "image" in model.dagnet_ir.inputs
    for B, H, W in (SIZES if image else [(1, 0, 0), (4, 0, 0)]):
        inputs = feeds(model, B, H, W)
        with torch.no_grad():
            expected = as_list(model(**inputs))
            for got, want in zip(as_list(loaded(**inputs)), expected):
                torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)
        if session is not None:
            got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
            for g, want in zip(got, expected):
                np.testing.assert_allclose(g, want.numpy(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["tree", "grid"])
def test_tiny_exports_equal_compiled(name, tmp_path):
    torch.manual_seed(0)
    check_exports(dagnet.compile(TINY[name]), tmp_path)


def test_tiny_dense_pt2_equals_compiled(tmp_path):
    torch.manual_seed(0)
    check_exports(dagnet.compile(TINY["dense"]), tmp_path, onnx=False)


@pytest.mark.slow
def test_tiny_dense_onnx_equals_compiled(tmp_path):
    torch.manual_seed(0)
    check_exports(dagnet.compile(TINY["dense"]), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["grid_segmenter", "fcn_densecrf", "deeplab_shapes"])
def test_spec_exports_equal_compiled(spec, tmp_path):
    torch.manual_seed(0)
    check_exports(dagnet.compile(SPECS / f"{spec}.yaml"), tmp_path)


@pytest.mark.parametrize("name", ["tree", "grid", "dense"])
def test_torchscript_compiles_portable_models(name):
    model = dagnet.compile(TINY[name]).eval()
    scripted = torch.jit.script(portable(model))
    inputs = feeds(model, 2, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(**inputs), model(**inputs), atol=1e-5, rtol=1e-5)


# -- a file that imports only torch ---------------------------------------------------------

RUN = """
torch.manual_seed(0)
state = torch.load(PATH + "/state.pt")
inputs = torch.load(PATH + "/inputs.pt")
tree = TreeCRF(4, {forest}).double()
tree.load_state_dict(state["tree"])
grid = GridCRF(4, "full", inference="bp", iterations=5).double()
grid.load_state_dict(state["grid"])
dense = DenseCRF(4, 2).double()
dense.load_state_dict(state["dense"])
torch.save([tree.marginals(inputs[0]), grid.marginals(inputs[1]), dense(inputs[1], inputs[2])],
           PATH + "/outputs.pt")
"""


def test_concatenated_twins_run_with_only_torch(tmp_path):
    model = torch.nn.ModuleDict({"tree": TreeCRF(4, FOREST), "grid": GridCRF(4, "full", iterations=5),
                                 "dense": DenseCRF(4, iterations=2)})
    sources = [path.read_text() for path in source_files(model)]
    source = "\n\n".join(sources)
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert len(sources) == 3 and imported == {"math", "typing", "torch"}
    for field in model.values():
        randomised(field)
    logits, image = image_batch(2, 4, 6, 7)
    inputs = [torch.randn(2, len(FOREST), 4, dtype=torch.float64), logits, image]
    torch.save({k: v.state_dict() for k, v in model.items()}, tmp_path / "state.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    script = source + f"\n\nPATH = {str(tmp_path)!r}\n" + RUN.format(forest=FOREST)
    (tmp_path / "crfs.py").write_text(script)
    subprocess.run([sys.executable, "-I", str(tmp_path / "crfs.py")], check=True, cwd=tmp_path, timeout=120)
    outputs = torch.load(tmp_path / "outputs.pt")
    with torch.no_grad():
        expected = [model["tree"].marginals(inputs[0]), model["grid"].marginals(inputs[1]),
                    model["dense"](inputs[1], inputs[2])]
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
