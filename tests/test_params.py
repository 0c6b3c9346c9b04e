"""Parameter counts come from each op's own rule, without torch, and match the modules built.

Reading, checking, summarising and drawing a spec never load torch (1.5 s of
start-up), so those rules must give exactly what the emitted module owns.
"""

import subprocess
import sys

import pytest

import dagnet
from dagnet import ops
from tests.conftest import SPECS
from tests.test_fields_ops import CASES as FIELD_CASES
from tests.test_ops import CASES as OP_CASES
from tests.test_ops import _spec

# variants whose parameters differ from the cases that test shapes
VARIANTS = [
    ("conv2d", [[4, "H", "W"]], {"out_channels": 6, "kernel_size": [3, 5], "groups": 2, "bias": False}),
    ("conv_transpose2d", [[4, "H", "W"]], {"out_channels": 6, "kernel_size": 2, "groups": 2}),
    ("conv_transpose1d", [[3, "T"]], {"out_channels": 2, "kernel_size": 4, "bias": False}),
    ("linear", [[3, 7]], {"out_features": 2, "bias": False}),
    ("layer_norm", [["T", 6]], {"elementwise_affine": False}),
    ("group_norm", [[6, "H", "W"]], {"num_groups": 2, "affine": False}),
    ("lstm", [["T", 5]], {"hidden_size": 3, "num_layers": 3, "bias": False}),
    ("gru", [["T", 5]], {"hidden_size": 4, "num_layers": 2, "bidirectional": True}),
]
FIELD_VARIANTS = [
    "inputs:\n  e: {shape: [4, H, W]}\nnodes:\n  crf: {op: grid_crf, in: e, pairwise: full}\n",
    "inputs:\n  e: {shape: [3, H, W]}\n  image: {shape: [3, H, W]}\nnodes:\n"
    "  crf: {op: dense_crf, in: [e, image], learn_bandwidths: true}\n",
]


def module_params(ir, node) -> int:
    """What the emitted module owns: the reference the rules must meet."""
    return ops.module_params(ops.build_call(ir, node)) if ops.get(node.op) else 0    # inputs have no op


def _irs():
    for name, cases in sorted(OP_CASES.items()):
        for i, (shapes, args) in enumerate(cases):
            yield f"{name}-{i}", lambda s=shapes, a=args, n=name: dagnet.load(_spec(n, s, a))
    for name, shapes, args in VARIANTS:
        yield f"{name}-variant", lambda s=shapes, a=args, n=name: dagnet.load(_spec(n, s, a))
    for name, (text, _, _) in sorted(FIELD_CASES.items()):
        yield name, lambda t=text: dagnet.load(f"dagnet: 1\n{t}outputs: [crf]\n")
    for i, text in enumerate(FIELD_VARIANTS):
        yield f"field-variant-{i}", lambda t=text: dagnet.load(f"dagnet: 1\n{t}outputs: [crf]\n")


@pytest.mark.parametrize("case", list(_irs()), ids=lambda c: c[0])
def test_rule_matches_the_module(case):
    ir = case[1]()
    for node in ir.order():
        assert ops.count_params(ir, node) == module_params(ir, node), node.name


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_rules_match_the_modules_of_every_example(path):
    ir = dagnet.load(path)
    counts = [(n.name, ops.count_params(ir, n), module_params(ir, n)) for n in ir.order()]
    assert [c[1] for c in counts] == [c[2] for c in counts], [c for c in counts if c[1] != c[2]]


def test_every_builtin_op_has_a_rule():
    assert not [name for name in {*OP_CASES, *FIELD_CASES} if ops.get(name).params is None]


def test_an_op_without_a_rule_is_counted_on_its_module():
    from dataclasses import replace
    ir = dagnet.load(_spec("conv2d", [[3, "H", "W"]], {"out_channels": 4, "kernel_size": 3}))
    conv = ir.node("y")
    saved = ops.OPS["conv2d"]
    ops.OPS["conv2d"] = replace(saved, params=None)
    try:
        assert ops.count_params(ir, conv) == 4 * 3 * 9 + 4
    finally:
        ops.OPS["conv2d"] = saved


def test_a_module_that_cannot_be_built_on_meta_is_counted_on_the_cpu():
    from dataclasses import replace
    ir = dagnet.load(f"dagnet: 1\n{FIELD_CASES['tree_crf'][0]}outputs: [crf]\n")
    saved = ops.OPS["tree_crf"]
    ops.OPS["tree_crf"] = replace(saved, params=None)     # TreeCRF copies its parents in
    try:
        assert ops.count_params(ir, ir.node("crf")) == 3 * 3
    finally:
        ops.OPS["tree_crf"] = saved


def test_reading_checking_and_drawing_do_not_import_torch(tmp_path):
    script = f"""
import sys, contextlib, io
from dagnet.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for spec in ("resnet50.yaml", "densenet121.dag", "fcn_densecrf.yaml", "ldcrf_gestures.yaml"):
        path = r"{SPECS}/" + spec
        assert main(["check", path]) == 0
        assert main(["summary", path]) == 0
        assert main(["render", path, "-o", r"{tmp_path}/figure.dot"]) == 0
    for spec in ("squeezenet", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3", "mnasnet",
                 "efficientnet", "efficientnet_v2", "shufflenet_v2", "regnet", "convnext", "vit", "swin",
                 "bert", "gpt2", "bert_crf_tagger"):     # the op library of 2026, too
        assert main(["summary", r"{SPECS}/" + spec + ".dag"]) == 0
    assert main(["fmt", "--check", r"{SPECS}/resnet50.dag"]) == 0
    assert main(["ops"]) == 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
loaded += [m for m in ("dagnet.api", "dagnet.emit") if m in sys.modules]   # the emitter's side
print(loaded[:5], loaded[-2:])
sys.exit(1 if loaded else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
