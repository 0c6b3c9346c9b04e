"""Ops with several outputs (`chunk`, `split`): outputs named `s.0`, `s.1`, ..., one IR node each."""

import pytest
import torch

import dagnet
from dagnet.errors import SpecError
from dagnet.render.arch import arch_figure
from dagnet.spec.dsl import parse_dsl
from dagnet.spec.printer import to_dsl
from dagnet.spec.yaml_printer import to_yaml
from tests.test_dsl_roundtrip import load_ir, signature

YAML = """dagnet: 1
name: m
inputs:
  x: {shape: [7, 4]}
blocks:
  glu:
    nodes:
      s: {op: chunk, in: x, chunks: 2, dim: 1}
      g: {op: sigmoid, in: s.1}
      y: {op: mul, in: [s.0, g]}
    outputs: [y, s.1]
nodes:
  t: {op: split, in: x, split_size_or_sections: [2, 4, 1], dim: 1}
  u: {block: glu, in: t.1}
  c: {op: concat, in: [t.0, u, u.s.1]}
outputs: [c, t.2]
"""
DSL = """model m

block glu {
    s = x -> chunk(2, dim=1)
    g = s.1 -> sigmoid
    y = [s.0, g] -> mul
    output y, s.1
}

input x[7, 4]

t = x -> split([2, 4, 1], dim=1)
u = t.1 -> glu
c = [t.0, u, u.s.1] -> concat

output c, t.2
"""


def test_each_output_named_is_a_node():
    ir = dagnet.load(YAML)
    assert [n.name for n in ir.order()] == ["x", "t.0", "t.1", "t.2", "u.s.0", "u.s.1", "u.g", "u.y", "c"]
    assert [ir.node(f"t.{k}").shape for k in range(3)] == [(2, 4), (4, 4), (1, 4)]
    assert ir.node("u.y").inputs == ["u.s.0", "u.g"] and ir.node("c").inputs == ["t.0", "u.y", "u.s.1"]
    assert ir.outputs == {"c": "c", "t.2": "t.2"}


def test_outputs_equal_torch_chunk_and_split():
    model = dagnet.compile(YAML)
    x = torch.randn(3, 7, 4)
    t = torch.split(x, [2, 4, 1], dim=1)
    s = torch.chunk(t[1], 2, dim=1)
    out = model(x=x)
    assert torch.equal(out["c"], torch.cat([t[0], s[0] * torch.sigmoid(s[1]), s[1]], dim=1))
    assert torch.equal(out["t.2"], t[2])
    assert "t_1 = torch.narrow(x, dim = 1, start = 2, length = 4)" in model.code


@pytest.mark.parametrize("size, args", [(7, {"chunks": 3}), (4, {"chunks": 3}), (6, {"chunks": 4}),
                                        (7, {"split_size_or_sections": 3}), (6, {"split_size_or_sections": 2})])
def test_pieces_follow_pytorch(size, args):
    op = "chunk" if "chunks" in args else "split"
    first = next(iter(args.values()))
    pieces = (torch.chunk if op == "chunk" else torch.split)(torch.randn(1, size), first, 1)
    picks = ", ".join(f"s.{k}" for k in range(len(pieces)))
    ir = dagnet.load(f"dagnet: 1\ninputs:\n  x: {{shape: [{size}]}}\nnodes:\n"
                     f"  s: {{op: {op}, in: x, {op == 'chunk' and 'chunks' or 'split_size_or_sections'}: {first}, "
                     f"dim: 1}}\noutputs: [{picks}]\n")
    assert [ir.node(f"s.{k}").shape for k in range(len(pieces))] == [tuple(p.shape[1:]) for p in pieces]


def test_dsl_reads_and_prints_output_references():
    spec = parse_dsl(DSL, "m.dag")
    assert [r.name for r in spec.nodes["c"].inputs] == ["t.0", "u", "u.s.1"]
    yaml_ir = dagnet.load(YAML)
    assert signature(load_ir(spec)) == signature(yaml_ir)
    assert to_dsl(spec) == DSL
    assert signature(load_ir(parse_dsl(to_dsl(dagnet.parse(YAML)), "m.dag"))) == signature(yaml_ir)
    assert "  u: {block: glu, in: t.1}\n" in to_yaml(spec)


def test_gradients_of_the_message_passing_engine_equal_autograd():
    x = torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for backward in ("autograd", "messages"):
        model = dagnet.compile(YAML, backward=backward).double()
        out = model(x=x)
        (grad,) = torch.autograd.grad(out["c"].square().sum() + out["t.2"].sum(), x)
        grads.append(grad)
    assert torch.allclose(*grads)


def test_a_figure_draws_one_node_per_op():
    fig = arch_figure(dagnet.load(YAML))
    assert {"t", "u"} <= set(fig.nodes) and not any(n.startswith("t.") for n in fig.nodes)


@pytest.mark.parametrize("body, where, message, hint", [
    ("s = x -> chunk(2, dim=1)\ny = s -> relu\noutput y\n", (4, 5), "`s` (chunk) has several outputs",
     "name one by its index: `s.0`, `s.1`, ..."),
    ("s = x -> chunk(2, dim=1)\ny = s.first -> relu\noutput y\n", (4, 5), "`s` (chunk) has no output `first`",
     "name one by its index"),
    ("s = x -> chunk(2, dim=1)\ny = s.2 -> relu\noutput y\n", (3, 10),
     "s: `chunk` gives 2 outputs here (0, 1), not output 2", "name one of its outputs"),
    ("y = x -> relu -> chunk(2, dim=1)\noutput y\n", (3, 18),
     "`chunk` has several outputs: it cannot be an item of a chain", "give it a node of its own"),
    ("s = x -> chunk(2, dim=1) when false\ny = s.0 -> relu\noutput y\n", (3, 10),
     "`s` (chunk) has several outputs: it takes no `when` or `repeat`", "switch off or repeat what reads"),
    ("s = x -> split(3, dim=2)\ny = s.0 -> relu\noutput y\n", (3, 10),
     "s: `split` needs a known size along dim 2, found `T`", "must not depend on symbolic input sizes"),
    ("s = x -> split([1, 2], dim=1)\ny = [s.0, s.1] -> add\noutput y\n", (3, 10),
     "s: `split`: sections [1, 2] add up to 3, dim 1 has size 4", "must add up"),
    ("s = x -> chunk(2, dim=1)\ny = x -> relu\noutput y\n", (3, 10), "node `s.0` reaches no output", None),
])
def test_errors_are_located(tmp_path, body, where, message, hint):
    """Each mistake once, where it is written; a mistake of the op is not repeated for each output."""
    path = tmp_path / "m.dag"
    path.write_text("model m\ninput x[4, T]\n" + body)
    with pytest.raises(SpecError) as info:
        dagnet.load(path)
    (error,) = info.value.errors
    assert ((error.loc.line, error.loc.col), error.message) == (where, message)
    assert hint is None or hint in error.hint
