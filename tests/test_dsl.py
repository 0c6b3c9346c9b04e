"""The text DSL front end: every construct, its locations, and its error messages."""

import pytest

import dagnet
from dagnet.errors import Loc, SpecError
from dagnet.spec.dsl import load_dsl_spec, parse_dsl, parse_value
from tests.conftest import ROOT, SPECS
from tests.test_dsl_roundtrip import load_ir, signature

HEAD = "input x[3, H, W]\n"


def parse(body: str, **kw):
    return parse_dsl(body, "m.dag", **kw)


def error_of(text: str, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, **kw)
    return info.value.errors[0] if hasattr(info.value, "errors") else info.value


# -- constructs ----------------------------------------------------------------------
def test_chain_is_a_seq_and_single_call_is_the_node():
    spec = parse(HEAD + "a = x -> conv2d(8, 3, padding=1) -> batch_norm -> relu\nb = a -> relu\n"
                 "output b\n")
    a, b = spec.nodes["a"], spec.nodes["b"]
    assert a.kind == "seq" and [i.target for i in a.items] == ["conv2d", "batch_norm", "relu"]
    assert [i.name for i in a.items] == ["0", "1", "2"]
    assert a.items[0].posargs == [8, 3] and a.items[0].args == {"padding": 1}
    assert b.kind == "op" and b.target == "relu" and [r.name for r in b.inputs] == ["a"]


def test_modifiers_groups_and_sums():
    spec = parse(HEAD + "r = x -> (batch_norm -> relu -> conv2d(3, 3, padding=1)) * 4 residual\n"
                 "d = r -> conv2d(2, 1) repeat n dense checkpoint\n"
                 "w = r -> relu when i > 0 and flag\n"
                 "s = r + w + x\n"
                 "c = [r, w] -> concat(dim=1)\n"
                 "g = x -> (relu)\noutput s\n")
    r, d, w, s, c, g = (spec.nodes[k] for k in "rdwscg")
    assert (r.kind, r.repeat, r.connect, len(r.items)) == ("seq", 4, "residual", 3)
    assert (d.kind, d.repeat, d.connect, d.checkpoint) == ("op", "n", "dense", True)
    assert w.when == "i > 0 and flag"
    assert (s.target, [i.name for i in s.inputs]) == ("add", ["r", "w", "x"])
    assert [i.name for i in c.inputs] == ["r", "w"] and c.args == {"dim": 1}
    assert g.kind == "seq" and len(g.items) == 1         # a group is always a seq


def test_header_params_inputs_outputs_losses_train():
    spec = parse('model "my-net"\ndoc "one " "two"\n    "three"\n'
                 "param a = 2, b = a * 3\nparam c = [1, a]\n"
                 "input tokens[T]: int64\ninput image[3, b, b]\n"
                 "y = image -> relu\noutput y, tokens\n"
                 "loss cross_entropy(output=y, target=label, weight=0.5)\n"
                 "loss {op: mse, output: y}\n"
                 'train {\n  epochs: 3\n  "odd key": [1, 2.5, true, null]\n  opt: {name: adam}\n}\n')
    assert spec.name == "my-net" and spec.doc == "one twothree"
    assert spec.params == {"a": 2, "b": "a * 3", "c": [1, "a"]}
    assert spec.inputs["tokens"].dtype == "int64" and spec.inputs["tokens"].shape == ["T"]
    assert [r.name for r in spec.outputs] == ["y", "tokens"]
    assert [{k: v for k, v in loss.items() if k != "_loc"} for loss in spec.losses] == [
        {"op": "cross_entropy", "output": "y", "target": "label", "weight": 0.5},
        {"op": "mse", "output": "y"}]
    assert spec.train == {"epochs": 3, "odd key": [1, 2.5, True, None], "opt": {"name": "adam"}}


def test_blocks_inputs_outputs_and_kinds():
    spec = parse("block up(channels, scale=2) {\n  doc \"upsample and merge\"\n  input x, skip\n"
                 "  u = x -> interpolate(scale_factor=scale)\n  m = [u, skip] -> concat\n"
                 "  output m\n}\n" + HEAD + "y = [x, x] -> up(4)\nz = y -> up_sample\noutput z\n")
    block = spec.blocks["up"]
    assert block.params == {"channels": None, "scale": 2} and block.inputs == ["x", "skip"]
    assert block.doc == "upsample and merge" and [r.name for r in block.outputs] == ["m"]
    assert spec.nodes["y"].kind == "block" and spec.nodes["y"].posargs == [4]
    assert spec.nodes["z"].kind == "op"                 # not a block: checked later as an op


def test_values_are_canonical_python():
    assert parse_value("width*2") == "width * 2"
    assert parse_value("-3") == -3 and parse_value("+2.5") == 2.5 and parse_value("(4)") == 4
    assert parse_value("1_000") == 1000 and parse_value("1e-3") == 0.001
    assert parse_value("true") is True and parse_value("null") is None
    assert parse_value("'a\\tb'") == "a\tb" and parse_value('"x" "y"') == "xy"
    assert parse_value("2 if i == 0 else 1") == "2 if i == 0 else 1"
    assert parse_value("[a, -1, {k: 'v'}]") == ["a", -1, {"k": "v"}]
    assert parse_value("not flag") == "not flag"
    assert parse_value("bilinear") == "bilinear"


def test_keywords_are_names_where_no_keyword_fits():
    spec = parse("param when = 1, dense = 2\ninput input[3]\n"
                 "dense = input -> linear(dense) when when\nloss = dense -> relu * 2 dense\n"
                 "output = loss + dense\noutput output\n")
    assert set(spec.nodes) == {"dense", "loss", "output"}
    assert spec.nodes["dense"].when == "when" and spec.nodes["dense"].posargs == ["dense"]
    assert spec.nodes["loss"].connect == "dense"


def test_line_breaks_comments_and_separators():
    spec = parse("# header\n" + HEAD + "a = x  # trailing\n    -> conv2d(4,\n      3) ->\n"
                 "    relu\nb = a -> relu; c = b \\\n  -> tanh\n\n\noutput c\n")
    assert [i.target for i in spec.nodes["a"].items] == ["conv2d", "relu"]
    assert spec.nodes["a"].items[0].posargs == [4, 3]
    assert set(spec.nodes) == {"a", "b", "c"}


def test_locations_point_into_the_file():
    spec = parse("param k = 3\n" + HEAD + "a = x -> conv2d(4, k, stride=2) -> relu\noutput a\n")
    a = spec.nodes["a"]
    assert spec.param_locs["k"] == Loc("m.dag", 1, 7)
    assert spec.inputs["x"].loc == Loc("m.dag", 2, 7)
    assert a.loc == Loc("m.dag", 3, 1) and a.inputs[0].loc == Loc("m.dag", 3, 5)
    assert a.items[0].loc == Loc("m.dag", 3, 10) and a.items[1].loc == Loc("m.dag", 3, 36)
    assert a.items[0].arg_locs["stride"] == Loc("m.dag", 3, 23)
    assert spec.outputs[0].loc == Loc("m.dag", 4, 8)


def test_checking_errors_point_at_the_dag_source(tmp_path):
    path = tmp_path / "bad.dag"
    path.write_text(HEAD + "body = x -> conv2d(4, 3, strid=2) -> relu\nout = bdy -> conv2e(4, 1)\n"
                    "output out\n")
    with pytest.raises(SpecError) as info:
        dagnet.load(path)
    text = str(info.value)
    assert f"{path}:2:26: error: `conv2d` has no argument `strid`" in text
    assert f"{path}:3:7: error: unknown node `bdy`" in text and "did you mean `body`?" in text
    assert f"{path}:3:14: error: unknown op `conv2e`" in text and "did you mean `conv2d`?" in text


def test_same_model_as_yaml(tmp_path):
    yaml_text = ("dagnet: 1\nname: m\nparams: {c: 4}\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
                 "  a:\n    in: x\n    seq: conv2d(c, 3, padding=1) -> relu\n"
                 "  b: {op: conv2d, in: a, out_channels: c, kernel_size: 1, repeat: 2}\n"
                 "  s: {op: add, in: [a, b]}\noutputs: [s]\n")
    dag_text = ("model m\nparam c = 4\ninput x[3, H, W]\na = x -> conv2d(c, 3, padding=1) -> relu\n"
                "b = a -> conv2d(out_channels=c, kernel_size=1) * 2\ns = a + b\noutput s\n")
    (tmp_path / "m.yaml").write_text(yaml_text)
    (tmp_path / "m.dag").write_text(dag_text)
    assert signature(dagnet.load(tmp_path / "m.dag")) == signature(dagnet.load(tmp_path / "m.yaml"))


def test_when_on_a_node_with_several_inputs_as_in_yaml(tmp_path):
    yaml_text = ("dagnet: 1\nname: m\nparams: {stride: 1}\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
                 "  proj: {op: conv2d, in: x, out_channels: 3, kernel_size: 3, stride: stride, padding: 1}\n"
                 "  out: {op: add, in: [proj, x], when: stride == 1}\noutputs: [out]\n")
    dag_text = ("model m\nparam stride = 1\ninput x[3, H, W]\n"
                "proj = x -> conv2d(3, 3, stride=stride, padding=1)\n"
                "out = [proj, x] -> add when stride == 1\noutput out\n")
    (tmp_path / "m.yaml").write_text(yaml_text)
    (tmp_path / "m.dag").write_text(dag_text)
    for stride in ("1", "2"):
        ir = dagnet.load(tmp_path / "m.dag", {"stride": stride})
        assert signature(ir) == signature(dagnet.load(tmp_path / "m.yaml", {"stride": stride}))
        assert ir.outputs == {"out": "out" if stride == "1" else "proj"}


def test_repeat_carrying_inputs_as_in_yaml(tmp_path):
    block = ("block layer {\n    input h, mask\n    y = h -> linear(8)\n    g = [y, mask] -> mul\n"
             "    out = [g, h] -> add\n    output out\n}\n")
    dag_text = ("model m\nparam layers = 3\n" + block + "input h[5, 8]\ninput mask[5, 8]\n"
                "enc = [h, mask] -> layer * layers\noutput enc\n")
    yaml_text = ("dagnet: 1\nname: m\nparams: {layers: 3}\nblocks:\n  layer:\n    inputs: [h, mask]\n"
                 "    nodes:\n      y: {op: linear, in: h, out_features: 8}\n      g: {op: mul, in: [y, mask]}\n"
                 "      out: {op: add, in: [g, h]}\n    outputs: [out]\n"
                 "inputs:\n  h: {shape: [5, 8]}\n  mask: {shape: [5, 8]}\n"
                 "nodes:\n  enc: {block: layer, in: [h, mask], repeat: layers}\noutputs: [enc]\n")
    (tmp_path / "m.yaml").write_text(yaml_text)
    (tmp_path / "m.dag").write_text(dag_text)
    ir = dagnet.load(tmp_path / "m.dag")
    assert signature(ir) == signature(dagnet.load(tmp_path / "m.yaml"))
    assert ir.node("enc.2.g").inputs == ["enc.2.y", "mask"]
    (tmp_path / "bad.dag").write_text(dag_text.replace("[h, mask] -> layer", "h -> layer"))
    with pytest.raises(SpecError) as info:
        dagnet.load(tmp_path / "bad.dag")
    assert f"{tmp_path / 'bad.dag'}:12:12: error: block `layer` takes 2 input(s)" in str(info.value)


def test_imports_of_dag_and_yaml_libraries(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.dag").write_text('library a\nimport "b.yaml"\n'
                                            "block twice {\n  y = x -> once -> once\n  output y\n}\n")
    (tmp_path / "lib" / "b.yaml").write_text("dagnet: 1\nblocks:\n  once:\n    nodes:\n"
                                             "      y: {op: relu, in: x}\n    outputs: [y]\n")
    (tmp_path / "m.dag").write_text('import "lib/a.dag"\n' + HEAD + "y = x -> twice\noutput y\n")
    spec = load_dsl_spec(tmp_path / "m.dag")
    assert set(spec.blocks) == {"once", "twice"} and spec.imports == ["lib/a.dag"]
    assert spec.blocks["twice"].nodes["y"].items[0].kind == "block"
    assert "y.y.1.y" in dagnet.load(tmp_path / "m.dag").graph


def test_import_errors(tmp_path):
    (tmp_path / "a.dag").write_text('import "b.dag"\nblock p {\n  y = x -> relu\n  output y\n}\n')
    (tmp_path / "b.dag").write_text('import "a.dag"\n')
    with pytest.raises(SpecError, match="import cycle"):
        load_dsl_spec(tmp_path / "a.dag", library=True)
    err = error_of('import "nowhere.dag"\n' + HEAD + "y = x -> relu\noutput y\n")
    assert "cannot import `nowhere.dag`" in err.message and err.loc.line == 1


def test_libraries_hold_only_blocks():
    spec = parse('library lib\nblock b {\n  y = x -> relu\n  output y\n}\n', library=True)
    assert list(spec.blocks) == ["b"] and not spec.nodes
    err = error_of("library lib\nparam a = 1\nblock b {\n  y = x -> relu\n  output y\n}\n", library=True)
    assert "a block library holds only blocks" in err.message


# -- error messages ------------------------------------------------------------------
SYNTAX_ERRORS = [
    # (text, line, col, message part, hint part)
    (HEAD + "c1 = conv2d(64, 3)\n", 2, 12, "unexpected `(`; expected `->`",
     "a node names its input first: `c1 = <input> -> conv2d(...)`"),
    (HEAD + "c1: conv2d\n", 2, 3, "unexpected `:`; expected `=`", "`c1 = <input> -> <op>(...)`"),
    ("dagnet: 1\nname: x\n", 1, 7, "expected `=`", "this looks like YAML"),
    (HEAD + "y = x -> relu\nouput y\n", 3, 7, "unexpected name `y`; expected `=`",
     "did you mean `output`?"),
    (HEAD + "x -> relu\n", 2, 3, "unexpected `->`", "a chain needs a name"),
    (HEAD + "y = x -> conv2d(64, 3\nz = y -> relu\n", 3, 1, "expected `,`, `)` or an operator",
     "the `(` at line 2, column 16 is not closed"),
    ("block b {\n  out = x -> relu\n  output out\n", 3, 13, "unexpected end of the file; expected `}`",
     "the `{` at line 1, column 9 is not closed"),
    (HEAD + "y = x -> conv2d(64 3)\n", 2, 20, "unexpected number `3`; expected `,`, `)` or an operator",
     None),
    (HEAD + "y = x -> relu ->\noutput y\n", 3, 8, "unexpected name `y`",
     "line 2 ends with `->`, so line 3 continues it"),
    (HEAD + "y = relu <- x\n", 2, 10, "unexpected `<`", "chains run left to right"),
    (HEAD + "y = x -> relu whne flag\n", 2, 15, "a modifier (`* N`, `residual`, `dense`, `when`",
     "did you mean `when`?"),
    (HEAD + "y = x -> relu when i = 0\n", 2, 22, "unexpected `=`", "compare with `==`"),
    ("input x(3, H)\n", 1, 8, "unexpected `(`; expected `[`", "write the shape in brackets"),
    ('model "abc\n', 1, 7, "unterminated string", "close it on the same line"),
    (HEAD + "y = x -> relu @ 2\n", 2, 15, "unexpected character `@`", None),
    (HEAD + "y = x -> conv2d(out_channels=)\n", 2, 30, "unexpected `)`; expected a value", None),
    (HEAD + "y = x -> -> relu\n", 2, 10, "unexpected `->`; expected `(` or a name", None),
]


@pytest.mark.parametrize("text, line, col, message, hint", SYNTAX_ERRORS,
                         ids=[f"{i}" for i in range(len(SYNTAX_ERRORS))])
def test_syntax_errors_say_what_was_expected(text, line, col, message, hint):
    err = error_of(text)
    assert (err.loc.line, err.loc.col) == (line, col)
    assert message in err.message
    assert "NAME" not in err.message and "RPAR" not in err.message and "_NL" not in err.message
    source_line, caret = err.message.split("\n")[1:3]
    assert source_line.strip() == text.split("\n")[line - 1].strip()
    assert caret.index("^") - 4 == col - 1                      # the caret sits under the column
    if hint:
        assert hint in (err.hint or "")


SEMANTIC_ERRORS = [
    (HEAD + "y = x -> relu(repeat=3)\noutput y\n", "`repeat` is not an argument of `relu`", "`* N`"),
    (HEAD + "y = x -> relu\ny = x -> tanh\noutput y\n", "node `y` is defined twice (first at line 2)", None),
    (HEAD + "y = x -> conv2d(stride=2, 64)\noutput y\n", "a positional argument follows a keyword",
     "put positional arguments first"),
    (HEAD + "y = x -> conv2d(lambda + 1)\noutput y\n", "cannot read the expression `lambda + 1`", None),
    (HEAD + "y = x -> conv2d(4, k=1, k=2)\noutput y\n", "argument `k` given twice", None),
    ("param a = 1, a = 2\n" + HEAD + "y = x -> relu\noutput y\n", "parameter `a` is defined twice", None),
    (HEAD + "y = x -> relu\n", "no `output` declared", "add `output <node>`"),
    ("y = x -> relu\noutput y\n", "the spec declares no inputs", "input image[3, H, W]"),
    ("block b {\n  y = x -> relu\n}\n" + HEAD + "z = x -> b\noutput z\n",
     "block `b` declares no outputs", None),
    ("train {a: 1, a: 2}\n" + HEAD + "y = x -> relu\noutput y\n", "duplicate key `a`", None),
    # escapes are Python's; one it cannot read (found by the fuzzer as a bare SyntaxError)
    ('doc "short \\x0"\n' + HEAD + "y = x -> relu\noutput y\n", "cannot read this string", "\\xHH"),
    ('doc "a\\n\x00"\n' + HEAD + "y = x -> relu\noutput y\n", "cannot read this string", None),
    (HEAD + 'y = x -> relu\noutput y\ntrain {data: {name: "\\N{nope}"}}\n', "cannot read this string", None),
]


@pytest.mark.parametrize("text, message, hint", SEMANTIC_ERRORS,
                         ids=[f"{i}" for i in range(len(SEMANTIC_ERRORS))])
def test_semantic_errors(text, message, hint):
    err = error_of(text)
    assert message in err.message
    if hint:
        assert hint in (err.hint or "")


def test_all_errors_of_a_file_at_once():
    with pytest.raises(SpecError) as info:
        parse(HEAD + "y = x -> relu(repeat=2)\ny = x -> relu(when=1)\noutput y\n")
    assert len(info.value.errors) == 3


def test_api_dispatches_dag_files(tmp_path):
    (tmp_path / "m.dag").write_text(HEAD + "y = x -> relu\noutput y\n")
    assert dagnet.parse(tmp_path / "m.dag").nodes["y"].target == "relu"
    assert dagnet.load(str(tmp_path / "m.dag")).outputs == {"y": "y"}


# -- editor support ------------------------------------------------------------------
def test_pygments_lexer_covers_every_example():
    pytest.importorskip("pygments")
    from pygments.token import Error, Keyword, Name

    from dagnet.spec.pygments_lexer import DagnetLexer
    for path in sorted(SPECS.glob("**/*.dag")):
        text = path.read_text()
        tokens = list(DagnetLexer().get_tokens(text))
        assert "".join(v for _, v in tokens) == text and not [t for t in tokens if t[0] is Error]
    tokens = [t for t in DagnetLexer().get_tokens("block b(k=1) {\n    y = x -> relu * 2 residual\n}\n")
              if t[1].strip()]
    assert (Name.Class, "b") in tokens and (Name.Variable, "y") in tokens
    assert (Keyword, "residual") in tokens and (Name.Attribute, "k") in tokens


def test_textmate_grammar_is_valid():
    import json
    import re
    grammar = json.loads((ROOT / "editors" / "dagnet.tmLanguage.json").read_text())
    assert grammar["scopeName"] == "source.dagnet" and grammar["fileTypes"] == ["dag"]
    patterns = [grammar["repository"][k] for k in grammar["repository"]]
    patterns += grammar["repository"]["expression"]["patterns"]
    for pattern in patterns:
        if "match" in pattern:
            re.compile(pattern["match"])
    node = re.compile(grammar["repository"]["node-definition"]["match"])
    assert node.match("    body = x -> relu").group(1) == "body"


def test_the_documented_resnet50_is_short_and_exact():
    from dagnet.summary import summarize
    docs = (ROOT / "docs" / "dsl.md").read_text()
    section = docs.split("## ResNet-50 in ")[1]
    lines = int(section.split(" ")[0])
    code = section.split("```dagnet\n")[1].split("```")[0]
    assert len(code.splitlines()) == lines < 40
    ir = load_ir(parse_dsl(code, "resnet50.dag"))
    assert sum(r.params for r in summarize(ir)) == 25_557_032
    assert signature(ir)[0] == signature(dagnet.load(SPECS / "resnet50.yaml"))[0]
