"""The op registry owns every facet of an op: built-in ops declare them all, and an
op added through the public extension point is checked, compiled, summarised and
drawn from its own entry."""

import dataclasses

import pytest
import torch

import dagnet
from dagnet import ops
from dagnet.cli import main
from dagnet.ops.registry import PGM_KINDS, SAVES, TASKS, missing_facets
from dagnet.render import dot_source
from dagnet.render.styles import PAPER_LOOKS, SLIDES_LOOKS
from dagnet.schedule import forward_schedule, saves

BUILT_IN = sorted(ops.OPS)


def defaults(op) -> dict:
    return {a.name: a.default for a in op.args if not a.required}


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_built_in_op_declares_every_facet(name):
    op = ops.get(name)
    assert missing_facets(op) == []
    assert op.saves in SAVES
    assert op.title_for(defaults(op)).strip()
    assert op.style in PAPER_LOOKS and op.style in SLIDES_LOOKS
    assert not set(op.inferred) & set(op.positional), "an inferred argument is not also given"
    if op.view:
        assert op.saves == "nothing", "a view keeps no storage of its own"


@pytest.mark.parametrize("name", [n for n in BUILT_IN if ops.get(n).family == "field"])
def test_a_structured_op_says_what_it_predicts_and_how_it_is_drawn(name):
    op = ops.get(name)
    assert op.task in TASKS and op.pgm in PGM_KINDS


def test_the_self_test_names_what_an_op_leaves_out():
    bare = ops.OpDef("bare_crf", "field", "a CRF that declares nothing", (), lambda ins, a: ins[0],
                     lambda ins, a: None)
    assert missing_facets(bare) == ["saves", "title", "inferred", "task", "pgm"]
    merge = ops.OpDef("bare_merge", "merge", "", (), lambda ins, a: ins[0], lambda ins, a: None,
                      saves="nothing", title="m", inferred=())
    assert missing_facets(merge) == ["mark"]
    assert missing_facets(dataclasses.replace(merge, mark="m")) == ["mark_legend"]


def test_a_facet_outside_its_choices_is_refused_at_registration():
    with pytest.raises(ValueError, match="saves `everything` is not one of"):
        ops.register(ops.OpDef("greedy", "activation", "", (), lambda ins, a: ins[0],
                               lambda ins, a: None, saves="everything"))
    assert ops.get("greedy") is None


# -- a toy op through the public extension point --------------------------------------

SPEC = """dagnet: 1
name: toy
inputs:
  x: {shape: [4, 8]}
nodes:
  l: {op: linear, in: x, out_features: 6}
  s: {op: toy_scale, in: l, factor: 3}
  p: {op: toy_plain, in: s}
outputs: [p]
"""


@pytest.fixture
def toy_ops():
    """``toy_scale`` declares a title and what it saves; ``toy_plain`` declares no facet."""
    same = lambda ins, a: ins[0]    # noqa: E731
    ops.register(ops.OpDef(
        "toy_scale", "activation", "x times a constant factor.",
        (ops.Arg("factor", "float", 2.0),), same,
        lambda ins, a: ops.FunctionCall(torch.mul, {"other": a["factor"]}),
        params=lambda ins, a: 0, saves="nothing", title=lambda a: f"scale \u00d7{a['factor']:g}"))
    ops.register(ops.OpDef("toy_plain", "activation", "x itself.", (), same,
                           lambda ins, a: ops.FunctionCall(torch.clone)))
    yield
    for name in ("toy_scale", "toy_plain"):
        ops.OPS.pop(name, None)


def test_a_toy_op_is_checked_compiled_summarised_and_drawn_with_its_title(toy_ops, tmp_path, capsys):
    spec = tmp_path / "toy.yaml"
    spec.write_text(SPEC)
    assert main(["check", str(spec)]) == 0
    assert main(["summary", str(spec)]) == 0
    assert "total parameters: 54" in capsys.readouterr().out      # the linear's 8 * 6 + 6
    model = dagnet.compile(str(spec))
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(model(x=x), 3 * model.l(x))
    dot = dot_source(dagnet.load(str(spec)))
    assert "scale \u00d73" in dot and "toy plain" in dot          # its title; the default title


def test_a_toy_op_without_facets_gets_safe_defaults(toy_ops):
    plain = ops.get("toy_plain")
    assert plain.saved == "inputs" and plain.style == "activation" and plain.task is None
    assert saves("toy_scale") == "nothing"
    assert plain.infers("in_features") and not plain.infers("factor")


def test_the_memory_estimate_reads_what_the_toy_op_saves(toy_ops, tmp_path):
    spec = tmp_path / "toy.yaml"
    spec.write_text(SPEC)
    kept = {m.node: m.saved_until for m in forward_schedule(dagnet.load(str(spec)))}
    assert kept["l"] == -1          # toy_scale keeps nothing of its input
    assert kept["s"] >= 0           # toy_plain, declaring nothing, keeps its input
