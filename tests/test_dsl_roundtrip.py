"""YAML <-> DSL round trips: every example spec, and hypothesis-generated specs.

Converting twice must give an identical IR (node names, ops, arguments, inputs,
shapes, outputs, losses, training settings), and the two forms of every example
must compile to the same module (same state_dict, same outputs for the same weights).
"""

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagnet
from dagnet.check import check
from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.ir import expand
from dagnet.spec.dsl import parse_dsl
from dagnet.spec.model import BlockSpec, InputSpec, NodeSpec, Ref, Spec
from dagnet.spec.cli import convert
from dagnet.spec.printer import to_dsl
from dagnet.spec.yaml_printer import to_yaml
from dagnet.spec.yaml_loader import load_yaml_spec
from tests.conftest import SPECS

EXAMPLES = sorted(SPECS.glob("*.yaml"))
SMALL = {"fcn8s": {"width": 4, "fc": 16}, "vgg16": {"classes": 10}}


def signature(ir):
    """Everything of an IR that a front end decides, without source locations."""
    nodes = [(n.name, n.op, tuple(n.inputs), repr(sorted(n.args.items())), str(n.shape), n.dtype,
              n.block, n.checkpoint) for n in (ir.node(k) for k in ir.graph.nodes)]
    losses = [{k: v for k, v in loss.items() if k != "_loc"} for loss in ir.losses]
    return nodes, sorted(ir.graph.edges), ir.outputs, losses, ir.train, ir.params, ir.name


def load_ir(spec):
    errors = ErrorLog()
    return check(expand(spec, None, errors), errors)


# -- the example specs -----------------------------------------------------------------
def test_every_yaml_example_has_a_dag_twin():
    for path in EXAMPLES + sorted((SPECS / "blocks").glob("*.yaml")):
        assert path.with_suffix(".dag").is_file(), f"{path.name} has no .dag version"


def _example(node):
    """Random values for a float input; token ids (zeros) or an all-true mask for the others."""
    shape = (1, *[d if isinstance(d, int) else 32 for d in node.shape])
    if node.dtype == "bool":
        return torch.ones(shape, dtype=torch.bool)
    if node.dtype.startswith("int"):
        return torch.zeros(shape, dtype=getattr(torch, node.dtype))
    return torch.randn(shape)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_both_forms_compile_to_the_same_module(path):
    small = SMALL.get(path.stem, {})
    from_yaml = dagnet.compile(path, overrides=small).eval()
    from_dag = dagnet.compile(path.with_suffix(".dag"), overrides=small).eval()
    shapes = {k: tuple(v.shape) for k, v in from_yaml.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in from_dag.state_dict().items()}
    from_dag.load_state_dict(from_yaml.state_dict())
    ir = dagnet.load(path, small)
    torch.manual_seed(0)
    inputs = {name: _example(ir.node(name)) for name in ir.inputs}
    with torch.no_grad():
        a, b = from_yaml(**inputs), from_dag(**inputs)
    for x, y in zip(a.values() if isinstance(a, dict) else [a], b.values() if isinstance(b, dict) else [b]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_converting_twice_gives_the_same_ir(path, tmp_path):
    reference = signature(dagnet.load(path))
    dag = tmp_path / f"{path.stem}.dag"
    dag.write_text(convert(path, "dag", tmp_path))
    assert signature(dagnet.load(dag)) == reference
    back = tmp_path / f"{path.stem}.yaml"
    back.write_text(convert(dag, "yaml", tmp_path))
    assert signature(dagnet.load(back)) == reference
    twin = tmp_path / "twin.yaml"                       # the hand-written DSL, to YAML
    twin.write_text(convert(path.with_suffix(".dag"), "yaml", tmp_path))
    assert signature(dagnet.load(twin)) == reference


# -- generated specs -----------------------------------------------------------------
NAMES = ["a", "b", "conv", "input", "output", "dense", "loss", "when", "model", "x1", "train", "block"]
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " _-.:#'\"\\/{}[](),=*+<>é\n\t",
               max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), TEXT)
FREE = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True) | TEXT,
                                                 inner, max_size=3)), max_leaves=8)


class _Gen:
    """Builds a random but valid spec: channel counts are tracked so every graph checks."""

    def __init__(self, data):
        self.draw, self.line = data.draw, 0

    def loc(self) -> Loc:
        self.line += 1
        return Loc("<spec>", self.line, 1)

    def op(self) -> NodeSpec:
        """One op that keeps the shape [4, H, W], in call form or with keyword arguments."""
        kind = self.draw(st.sampled_from(["relu", "batch_norm", "conv", "conv_kw", "dropout", "leaky"]))
        loc = self.loc()
        if kind == "conv":
            out = self.draw(st.sampled_from([4, "c", "c * 2 // 2"]))
            return NodeSpec("0", loc, "op", "conv2d", posargs=[out, 3], args={"padding": 1},
                            arg_locs={"padding": loc})
        if kind == "conv_kw":
            return NodeSpec("0", loc, "op", "conv2d", args={"out_channels": 4, "kernel_size": 1,
                                                           "bias": self.draw(st.booleans())})
        if kind == "dropout":
            return NodeSpec("0", loc, "op", "dropout", args={"p": self.draw(st.sampled_from([0.1, "p / 2"]))})
        if kind == "leaky":
            return NodeSpec("0", loc, "op", "leaky_relu", posargs=[0.2])
        return NodeSpec("0", loc, "op", kind)

    def item(self, depth: int = 0) -> NodeSpec:
        """An op, a block use or a (nested) seq, with random modifiers; the shape never changes."""
        choice = self.draw(st.sampled_from(["op", "op", "block", "seq"] if depth < 2 else ["op", "block"]))
        if choice == "block":
            node = NodeSpec("0", self.loc(), "block", "unit", posargs=[4] if self.draw(st.booleans()) else [],
                            args={"flag": self.draw(st.sampled_from([True, "n == 2", "c > 3"]))})
        elif choice == "seq":
            node = NodeSpec("0", self.loc(), "seq", items=[self.item(depth + 1)
                                                           for _ in range(self.draw(st.integers(1, 3)))])
            for k, item in enumerate(node.items):
                item.name = str(k)
        else:
            node = self.op()
        if self.draw(st.integers(0, 3)) == 0:
            node.repeat = self.draw(st.sampled_from([2, "n", "n + 1", 0]))
            node.connect = self.draw(st.sampled_from(["sequential", "residual"]))
        node.when = self.draw(st.sampled_from([None, None, None, "flag", "c > 2 and not flag", False]))
        node.checkpoint = self.draw(st.integers(0, 4)) == 0
        return node

    def spec(self) -> Spec:
        spec = Spec(name=self.draw(st.sampled_from(["gen", "gen-model", "model"])), file="<spec>",
                    loc=Loc("<spec>", 1, 1), doc=self.draw(TEXT))
        spec.params = {"c": 4, "n": 2, "p": 0.25, "flag": self.draw(st.booleans())}
        spec.param_locs = {k: self.loc() for k in spec.params}
        unit = {"y": NodeSpec("y", self.loc(), "op", "conv2d", posargs=["channels", 1], inputs=[Ref("x", Loc())],
                              when="flag"),
                "z": NodeSpec("z", self.loc(), "op", "add", inputs=[Ref("y", Loc()), Ref("x", Loc())])}
        spec.blocks = {"unit": BlockSpec("unit", self.loc(), {"channels": 4, "flag": None}, {}, ["x"], unit,
                                         [Ref("z", Loc())], doc=self.draw(TEXT))}
        spec.inputs = {"img": InputSpec("img", [4, "H", "W"], self.loc())}
        names, available = iter(NAMES), ["img"]
        for _ in range(self.draw(st.integers(1, 6))):
            name = next(names)
            source = self.draw(st.sampled_from(available))
            if self.draw(st.integers(0, 5)) == 0 and len(available) > 1:
                other = self.draw(st.sampled_from(available))
                node = NodeSpec(name, self.loc(), "op", self.draw(st.sampled_from(["add", "mul"])),
                                inputs=[Ref(source, self.loc()), Ref(other, self.loc())],
                                repeat=self.draw(st.sampled_from([1, 1, 2])),
                                when=self.draw(st.sampled_from([None, None, "flag"])))
            else:
                node = self.item()
                node.name, node.inputs = name, [Ref(source, self.loc())]
            spec.nodes[name] = node
            available.append(name)
        used = {r.name for node in spec.nodes.values() for r in node.inputs}
        spec.outputs = [Ref(n, self.loc()) for n in spec.nodes if n not in used]     # no dead nodes
        spec.losses = [dict(loss, op="mse", _loc=self.loc()) for loss in self.draw(
            st.lists(st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), FREE, max_size=3),
                     max_size=2))]
        spec.train = self.draw(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), FREE, max_size=4))
        return spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_specs_round_trip(data):
    spec = _Gen(data).spec()
    try:
        reference = signature(load_ir(spec))
    except SpecError as exc:            # a generator bug, not a printer bug: say so plainly
        raise AssertionError(f"the generator built an invalid spec: {exc}") from None
    dsl = to_dsl(spec)
    from_dsl = parse_dsl(dsl, "gen.dag")
    assert signature(load_ir(from_dsl)) == reference, dsl
    assert to_dsl(from_dsl) == dsl                       # canonical form is a fixed point
    yaml_text = to_yaml(from_dsl)
    from_yaml = load_yaml_spec(yaml_text)
    assert signature(load_ir(from_yaml)) == reference, yaml_text
    assert to_dsl(from_yaml) == dsl


def test_generated_spec_example_is_readable():
    """A fixed example of what the generator builds, so its output can be eyeballed."""
    spec = Spec(name="m", file="<spec>", loc=Loc("<spec>", 1, 1), params={"c": 4},
                inputs={"x": InputSpec("x", [4], Loc("<spec>", 2, 1))},
                nodes={"y": NodeSpec("y", Loc("<spec>", 3, 1), "op", "linear", posargs=["c"],
                                     inputs=[Ref("x", Loc("<spec>", 3, 5))])},
                outputs=[Ref("y", Loc("<spec>", 4, 1))])
    assert to_dsl(spec) == "model m\n\nparam c = 4\n\ninput x[4]\n\ny = x -> linear(c)\n\noutput y\n"
