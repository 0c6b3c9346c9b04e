"""The printers (canonical DSL, YAML) and the `fmt` / `convert` commands."""

import argparse
import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dagnet
from dagnet.errors import Loc, SpecError
from dagnet.spec.cli import add_commands, format_text, render_error
from dagnet.spec.dsl import parse_dsl, parse_value
from dagnet.spec.model import InputSpec, NodeSpec, Ref, Spec
from dagnet.spec.printer import scan_notes, to_dsl, value_text
from dagnet.spec.yaml_printer import _call_text, to_yaml
from dagnet.spec.yaml_loader import _literal, load_yaml_spec
from tests.conftest import SPECS
from tests.test_dsl_roundtrip import load_ir, signature

TRICKY = st.sampled_from(["true", "null", "None", "1e5", "-1", " x", "a b", "x.y", "if", "dense",
                          "a -> b", "#x", "width*2", "width * 2", "2 if i == 0 else 1", "", "é", "'", '"',
                          "\\", "a\nb", "lambda", "input", "[1, 2]", "{a: 1}", "f(x)", "x[0]", "1_0"])
STRINGS = st.one_of(TRICKY, st.text(max_size=10))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), STRINGS,
                    st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(STRINGS, st.integers(0, 99)), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_every_value_reads_back_exactly(value):
    assert parse_value(value_text(value)) == value


@settings(max_examples=200, deadline=None)
@given(STRINGS)
def test_strings_survive_the_yaml_call_form(text):
    call = _call_text("f", [text], {})
    assert [_literal(a) for a in ast.parse(call, mode="eval").body.args] == [text]


def _arg_spec(args: dict, posargs: list) -> Spec:
    node = NodeSpec("y", Loc("<spec>", 3, 1), "op", "identity", inputs=[Ref("x", Loc("<spec>", 3, 5))],
                    args=args, posargs=posargs)
    return Spec(name="m", file="<spec>", loc=Loc("<spec>", 1, 1), inputs={"x": InputSpec("x", [2], Loc())},
                nodes={"y": node}, outputs=[Ref("y", Loc())])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda k: k not in ("in", "op", "seq", "block", "repeat", "connect", "when", "checkpoint", "doc")),
    VALUES, max_size=3), st.lists(st.one_of(STRINGS, st.integers(0, 10), st.booleans()), max_size=2))
def test_node_arguments_survive_both_printers(args, posargs):
    spec = _arg_spec(args, posargs)
    again = parse_dsl(to_dsl(spec), "m.dag").nodes["y"]
    assert (again.args, again.posargs) == (args, posargs)
    again = load_yaml_spec(to_yaml(spec)).nodes["y"]
    assert again.args == args and again.posargs == posargs


MESSY = """# header comment
model   m   # the model
param a=1,b=a*2
input x[3,H,W]

# about y
y=x->conv2d(a,3,padding=1)->relu   # trailing y
# about z
z = y -> (relu->tanh)*2 residual
w = [y, z] -> concat(dim = 1)
v = w -> conv2d(a, 1) -> batch_norm -> relu -> conv2d(b, 3, padding=1) -> batch_norm -> relu -> max_pool2d(2)


output v
"""

CANONICAL = """# header comment
model m  # the model

param a = 1, b = a * 2

input x[3, H, W]

# about y
y = x -> conv2d(a, 3, padding=1) -> relu  # trailing y
# about z
z = y -> (relu -> tanh) * 2 residual
w = [y, z] -> concat(dim=1)
v = w -> conv2d(a, 1) -> batch_norm -> relu -> conv2d(b, 3, padding=1) -> batch_norm
    -> relu -> max_pool2d(2)

output v
"""


def fmt(text: str) -> str:
    return to_dsl(parse_dsl(text, "m.dag"), scan_notes(text))


def test_fmt_is_canonical_idempotent_and_keeps_comments():
    assert fmt(MESSY) == CANONICAL
    assert fmt(CANONICAL) == CANONICAL


def test_fmt_keeps_blank_lines_between_groups_and_wraps_docs():
    text = ('model m\ndoc "' + "word " * 30 + '"\n\ninput x[2]\n\na = x -> relu\n\n\nb = a -> tanh\n'
            "c = b -> relu\n\noutput c\n")
    out = fmt(text)
    assert "a = x -> relu\n\nb = a -> tanh\nc = b -> relu\n" in out
    assert all(len(line) <= 88 for line in out.splitlines())
    assert parse_dsl(out, "m.dag").doc == "word " * 30 and fmt(out) == out


@pytest.mark.parametrize("path", sorted(SPECS.glob("**/*.dag")), ids=lambda p: p.stem)
def test_example_dag_files_are_canonical(path):
    text = path.read_text()
    assert to_dsl(parse_dsl(text, str(path), library=True, imports=False), scan_notes(text)) == text


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_fmt_is_idempotent(path, tmp_path):
    (tmp_path / "blocks").symlink_to(SPECS / "blocks")
    first = tmp_path / path.name
    first.write_text(format_text(path.read_text(), path))
    assert format_text(first.read_text(), first) == first.read_text()
    assert signature(dagnet.load(first)) == signature(dagnet.load(path))


@pytest.mark.parametrize("path", sorted((SPECS / "blocks").glob("*.*")), ids=lambda p: p.name)
def test_fmt_keeps_libraries_whole(path, tmp_path):
    first = tmp_path / path.name
    first.write_text(format_text(path.read_text(), path))
    assert format_text(first.read_text(), first) == first.read_text()
    assert ("doc: " if path.suffix == ".yaml" else 'doc "') in first.read_text()
    assert first.read_text().count("block") >= 1


def test_yaml_printer_styles():
    spec = parse_dsl("model m\nblock b(k=1) {\n  y = x -> relu * k\n  output y\n}\ninput x[4]\n"
                     "a = x -> linear(4) -> relu\nb = a -> (relu -> b(2)) * 2 residual\n"
                     "c = a -> linear(out_features=4)\nd = [a, c] -> concat\noutput b, d\n", "m.dag")
    text = to_yaml(spec)
    assert "  a: {in: x, seq: linear(4) -> relu}\n" in text
    assert "  c: {op: linear, in: a, out_features: 4}\n" in text
    assert "  b: {in: a, seq: [relu, {block: b(2)}], repeat: 2, connect: residual}\n" in text
    assert "  d: {op: concat, in: [a, c]}\n" in text
    assert signature(dagnet.load(text)) == signature(load_ir(spec))


def test_yaml_printer_breaks_what_does_not_fit(tmp_path):
    doc = "A " + "long " * 30 + "description."
    text = ("dagnet: 1\nname: m\ndoc: " + doc + "\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
            "  wide: {op: conv2d, in: x, out_channels: 8, kernel_size: 3, padding: 1, dilation: 1,\n"
            "         groups: 1, bias: false}  # two lines, aligned under the first key\n"
            "  conv: {in: wide, seq: batch_norm -> relu -> max_pool2d(2)}\n"
            "  deep:   # three lines would not be a one-liner any more\n"
            "    in: conv\n    seq: conv2d(8, 3, padding=1) -> batch_norm -> relu -> conv2d(8, 3, padding=1)\n"
            "         -> batch_norm -> relu -> conv2d(8, 3, padding=1) -> batch_norm -> relu\n"
            "outputs: [deep]\nloss: {op: mse, output: deep, target: y}\n")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    out = format_text(text, path)
    assert out.startswith("dagnet: 1\nname: m\ndoc: >-\n  A long long")       # folded, read back equal
    assert ("  wide: {op: conv2d, in: x, out_channels: 8, kernel_size: 3, padding: 1, dilation: 1,\n"
            "         groups: 1, bias: false}  # two lines, aligned under the first key\n") in out
    assert "  conv: {in: wide, seq: batch_norm -> relu -> max_pool2d(2)}\n" in out
    assert "  deep:  # three lines would not be a one-liner any more\n    in: conv\n    seq: " in out
    assert "\nloss: {op: mse, output: deep, target: y}\n" in out
    path.write_text(out)
    assert format_text(out, path) == out
    assert load_yaml_spec(out).doc == doc


def test_yaml_comments_carry_over_to_the_dsl():
    text = (SPECS / "densenet121.yaml").read_text()
    out = to_dsl(load_yaml_spec(SPECS / "densenet121.yaml"), scan_notes(text, yaml_syntax=True))
    assert "param growth = 32  # k, channels each dense layer adds\n" in out
    assert "# `connect: dense` feeds each layer" in out


def test_what_the_dsl_cannot_say_is_an_error():
    spec = _arg_spec({}, [])
    spec.nodes["conv-1"] = spec.nodes.pop("y")
    with pytest.raises(SpecError, match="cannot print the node name `conv-1`"):
        to_dsl(spec)
    with pytest.raises(SpecError, match="cannot print the number inf"):
        value_text(float("inf"))


# -- the commands ------------------------------------------------------------------------
def run(*argv) -> int:
    parser = argparse.ArgumentParser(prog="dagnet")
    add_commands(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_fmt_command(tmp_path, capsys):
    path = tmp_path / "m.dag"
    path.write_text(MESSY)
    assert run("fmt", path) == 0 and capsys.readouterr().out == CANONICAL
    assert run("fmt", "--check", path) == 1
    assert "not in canonical form" in capsys.readouterr().err
    assert run("fmt", "-w", path) == 0 and path.read_text() == CANONICAL
    assert run("fmt", "--check", path) == 0


def test_fmt_reports_errors_with_a_caret(tmp_path, capsys):
    path = tmp_path / "bad.dag"
    path.write_text("input x[3]\nc1 = conv2d(64, 3)\n")
    assert run("fmt", path) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:12: error: unexpected `(`" in err
    assert "    c1 = conv2d(64, 3)\n               ^\n" in err and "hint: a node names its input first" in err


def test_convert_both_ways_with_imports(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert run("convert", SPECS / "resnet18.yaml", "-o", out / "r.dag") == 0
    text = (out / "r.dag").read_text()
    assert 'import "../' in text and text.rstrip().endswith("output fc")
    assert signature(dagnet.load(out / "r.dag")) == signature(dagnet.load(SPECS / "resnet18.yaml"))
    assert run("convert", out / "r.dag", "-o", out / "r.yaml") == 0
    assert "imports: [../" in (out / "r.yaml").read_text() and "blocks/resnet.yaml" in (out / "r.yaml").read_text()
    assert signature(dagnet.load(out / "r.yaml")) == signature(dagnet.load(SPECS / "resnet18.yaml"))
    capsys.readouterr()
    assert run("convert", SPECS / "lenet.dag") == 0 and capsys.readouterr().out.startswith("dagnet: 1\n")
    assert run("convert", SPECS / "lenet.dag", "-o", out / "x.dag") == 1
    assert "are both dag files" in capsys.readouterr().err


def test_convert_keeps_a_dag_import_without_a_yaml_twin(tmp_path):
    (tmp_path / "lib.dag").write_text("library lib\nblock b {\n  y = x -> relu\n  output y\n}\n")
    (tmp_path / "m.dag").write_text('import "lib.dag"\ninput x[2]\ny = x -> b\noutput y\n')
    assert run("convert", tmp_path / "m.dag", "-o", tmp_path / "m.yaml") == 0
    assert "imports: [lib.dag]" in (tmp_path / "m.yaml").read_text()     # a YAML spec imports .dag files
    assert signature(dagnet.load(tmp_path / "m.yaml")) == signature(dagnet.load(tmp_path / "m.dag"))


def test_render_error_adds_the_source_line(tmp_path):
    path = tmp_path / "m.dag"
    path.write_text("input x[3]\ny = x -> conv2e(4)\noutput y\n")
    with pytest.raises(SpecError) as info:
        dagnet.load(path)
    text = render_error(info.value)
    assert "unknown op `conv2e`\n    y = x -> conv2e(4)\n             ^" in text


def test_help_texts():
    parser = argparse.ArgumentParser(prog="dagnet")
    sub = parser.add_subparsers()
    add_commands(sub)
    assert "canonical" in sub.choices["fmt"].format_help()
    assert ".yaml <-> .dag" in sub.choices["convert"].format_help()


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_example_yaml_files_are_canonical(path):
    """`dagnet fmt --check specs/*.yaml` passes: the examples look as the formatter writes them."""
    assert format_text(path.read_text(), path) == path.read_text()
