"""Expansion: blocks, repeat, seq, residual/dense sugar, when, imports."""

import pytest
import torch

import dagnet
from dagnet.errors import SpecError

HEAD = "dagnet: 1\nname: t\ninputs:\n  x: {shape: [4, 6, 6]}\n"


def names(ir):
    return [n.name for n in ir.order()]


def test_repeat_gives_each_repetition_its_own_weights_and_index():
    ir = dagnet.load(HEAD + "nodes:\n  c:\n    op: conv2d\n    in: x\n    repeat: 3\n"
                     "    out_channels: 4 * (i + 1)\n    kernel_size: 1\noutputs: [c]\n")
    assert names(ir) == ["x", "c.0", "c.1", "c.2"]
    assert [ir.node(f"c.{k}").shape[0] for k in range(3)] == [4, 8, 12]
    assert ir.outputs == {"c": "c.2"}


def test_a_repeat_count_that_comes_to_one_still_gives_the_index():
    # Swin's stages repeat `* depth1`: a variant with one block per stage reads `i` as 0
    ir = dagnet.load(HEAD + "params: {n: 1}\nnodes:\n  c:\n    op: conv2d\n    in: x\n    repeat: n\n"
                     "    out_channels: 4 * (i + 1)\n    kernel_size: 1\noutputs: [c]\n")
    assert names(ir) == ["x", "c"] and ir.node("c").shape[0] == 4


def test_residual_connect_adds_each_output_to_its_input():
    ir = dagnet.load(HEAD + "nodes:\n  r:\n    in: x\n    seq: conv2d(4, 3, padding=1) -> relu\n"
                     "    repeat: 2\n    connect: residual\noutputs: [r]\n")
    assert ir.node("r.0_add").inputs == ["x", "r.0.1"]
    assert ir.node("r.1_add").inputs == ["r.0_add", "r.1.1"]
    assert ir.outputs["r"] == "r.1_add"


def test_dense_connect_concatenates_all_earlier_features():
    ir = dagnet.load(HEAD + "nodes:\n  d:\n    in: x\n    seq: conv2d(2, 1) -> relu\n    repeat: 3\n"
                     "    connect: dense\noutputs: [d]\n")
    assert ir.node("d.1_in").inputs == ["x", "d.0.1"]
    assert ir.node("d.2_in").inputs == ["x", "d.0.1", "d.1.1"]
    assert ir.node("d.cat").shape == (4 + 3 * 2, 6, 6)


BLOCKS = """
blocks:
  unit:
    params: {channels: null, gate: true}
    nodes:
      conv: {op: conv2d, in: x, out_channels: channels, kernel_size: 1}
      act: {op: relu, in: conv, when: gate}
    outputs: [act]
  split:
    inputs: [a, b]
    nodes:
      s: {op: add, in: [a, b]}
      t: {op: tanh, in: s}
    outputs: [s, t]
"""


def test_blocks_inline_with_parameters_and_when():
    ir = dagnet.load(HEAD + BLOCKS + "nodes:\n  u: {block: unit, in: x, channels: 4, gate: false}\n"
                     "  v: {block: unit, in: u, channels: 2 * 4}\noutputs: [v]\n")
    assert names(ir) == ["x", "u.conv", "v.conv", "v.act"]
    assert ir.node("v.conv").inputs == ["u.conv"]     # `u.act` is switched off: an alias of u.conv


def test_multi_input_multi_output_block():
    ir = dagnet.load(HEAD + BLOCKS + "nodes:\n  p: {block: split, in: [x, x]}\n"
                     "  q: {op: mul, in: [p.s, p.t]}\noutputs: [q]\n")
    assert ir.node("q").inputs == ["p.s", "p.t"]


def test_block_errors():
    with pytest.raises(SpecError) as info:
        dagnet.load(HEAD + BLOCKS + "nodes:\n  u: {block: unit, in: x, chanels: 4}\n"
                    "  p: {block: split, in: x}\n  q: {op: relu, in: p.z}\n  w: {block: unti, in: x}\n"
                    "outputs: [u, q, w]\n")
    text = str(info.value)
    assert "block `unit` has no parameter `chanels`" in text and "did you mean `channels`?" in text
    assert "block `unit` needs parameter `channels`" in text
    assert "block `split` takes 2 input(s) (a, b), `p` gives 1" in text
    assert "block `split` has no output `z`" in text
    assert "unknown block `unti`" in text


def test_recursive_block_is_reported():
    text = HEAD + ("blocks:\n  loop:\n    nodes:\n      y: {block: loop, in: x}\n    outputs: [y]\n"
                   "nodes:\n  a: {block: loop, in: x}\noutputs: [a]\n")
    with pytest.raises(SpecError, match="recursive block: loop -> loop"):
        dagnet.load(text)


def test_runaway_repeat_is_bounded():
    with pytest.raises(SpecError, match="`repeat` must be between 0 and 10000"):
        dagnet.load(HEAD + "nodes:\n  a: {op: relu, in: x, repeat: 10 ** 9}\noutputs: [a]\n")


def test_imports_and_import_cycles(tmp_path):
    (tmp_path / "lib.yaml").write_text("dagnet: 1\nblocks:\n  act:\n    nodes:\n"
                                       "      y: {op: relu, in: x}\n    outputs: [y]\n")
    main = tmp_path / "main.yaml"
    main.write_text(HEAD + "imports: [lib.yaml]\nnodes:\n  a: {block: act, in: x}\noutputs: [a]\n")
    assert names(dagnet.load(main)) == ["x", "a.y"]
    (tmp_path / "a.yaml").write_text("dagnet: 1\nimports: [b.yaml]\nblocks: {}\n")
    (tmp_path / "b.yaml").write_text("dagnet: 1\nimports: [a.yaml]\nblocks: {}\n")
    main.write_text(HEAD + "imports: [a.yaml]\nnodes:\n  a: {op: relu, in: x}\noutputs: [a]\n")
    with pytest.raises(SpecError, match="import cycle"):
        dagnet.load(main)


def test_call_form_binds_positional_arguments_in_pytorch_order():
    ir = dagnet.load(HEAD + "nodes:\n  c:\n    in: x\n    op: conv2d(8, 3, 2, 1, bias=false)\noutputs: [c]\n")
    args = ir.node("c").args
    assert (args["out_channels"], args["kernel_size"], args["stride"], args["padding"], args["bias"]) \
        == (8, 3, 2, 1, False)
    assert ir.node("c").shape == (8, 3, 3)


def test_set_overrides_parameters():
    text = HEAD.replace("name: t", "params: {width: 4}") + \
        "nodes:\n  c: {op: conv2d, in: x, out_channels: width * 2, kernel_size: 1}\noutputs: [c]\n"
    assert dagnet.load(text).node("c").shape[0] == 8
    assert dagnet.load(text, {"width": "5"}).node("c").shape[0] == 10


def test_symbolic_input_sizes_flow_through():
    ir = dagnet.load("dagnet: 1\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
                     "  c: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}\n"
                     "outputs: [c]\n")
    shape = ir.node("c").shape
    assert str(shape) == "(4, floor(H/2 - 1/2) + 1, floor(W/2 - 1/2) + 1)"
    from dagnet.dims import substitute
    assert substitute(shape, {"H": 9, "W": 10}) == (4, 5, 5)
    model = dagnet.compile(ir)
    assert model(x=torch.randn(1, 3, 9, 10)).shape == (1, 4, 5, 5)


# -- `when` on nodes of any arity --------------------------------------------------------
INVERTED = """
blocks:
  inverted:
    params: {cin: null, cout: null, stride: 1}
    nodes:
      h:
        in: x
        seq: conv2d(cin * 2, 1) -> relu -> conv2d(cin * 2, 3, stride=stride, padding=1, groups=cin * 2)
      proj: {op: conv2d, in: h, out_channels: cout, kernel_size: 1}
      out: {op: add, in: [proj, x], when: stride == 1 and cin == cout}
    outputs: [out]
"""


def test_when_switches_off_a_node_with_several_inputs():
    ir = dagnet.load(HEAD + INVERTED + "nodes:\n  a: {block: inverted, in: x, cin: 4, cout: 4}\n"
                     "  b: {block: inverted, in: a, cin: 4, cout: 8, stride: 2}\noutputs: [b]\n")
    assert ir.node("a.out").inputs == ["a.proj", "x"]
    assert "b.out" not in ir.graph and ir.outputs == {"b": "b.proj"}
    assert ir.node("b.h.0").inputs == ["a.out"]
    assert ir.node("b.proj").shape == (8, 3, 3)


@pytest.mark.parametrize("cout, stride, hand_written", [
    (4, 1, "      out: {op: add, in: [proj, x]}\n"),
    (8, 2, "      out: {op: identity, in: proj}\n"),
])
def test_when_compiles_to_the_hand_written_block(cout, stride, hand_written):
    use = f"nodes:\n  b: {{block: inverted, in: x, cin: 4, cout: {cout}, stride: {stride}}}\noutputs: [b]\n"
    switched = dagnet.compile(HEAD + INVERTED + use).eval()
    plain = INVERTED.replace("      out: {op: add, in: [proj, x], when: stride == 1 and cin == cout}\n",
                             hand_written)
    reference = dagnet.compile(HEAD + plain + use).eval()
    reference.load_state_dict(switched.state_dict())
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(switched(x=x), reference(x=x))


def test_a_branch_only_a_switched_off_node_consumed_is_dropped():
    text = (HEAD.replace("inputs:", "params: {gated: false}\ninputs:") +
            "  m: {shape: [4, 6, 6]}\nnodes:\n"
            "  gate:\n    in: x\n    seq: conv2d(4, 1) -> sigmoid\n"
            "  y: {op: mul, in: [x, gate], when: gated}\n  z: {op: add, in: [y, m], when: gated}\n"
            "  w: {op: relu, in: z}\noutputs: [w]\n")
    assert names(dagnet.load(text, {"gated": "true"})) == ["x", "m", "gate.0", "gate.1", "y", "z", "w"]
    with pytest.raises(SpecError) as info:          # model inputs are kept, and said to be unused
        dagnet.load(text)
    assert str(info.value).count("error") == 1 and "input `m` reaches no output" in str(info.value)
    ir = dagnet.load(text.replace("  z: {op: add, in: [y, m], when: gated}\n", "  z: {op: add, in: [y, m]}\n"))
    assert names(ir) == ["x", "m", "z", "w"] and ir.node("z").inputs == ["x", "m"]


def test_a_node_that_was_dead_anyway_is_still_reported():
    with pytest.raises(SpecError, match="node `dead` reaches no output"):
        dagnet.load(HEAD + "nodes:\n  dead: {op: relu, in: x}\n  y: {op: tanh, in: x}\noutputs: [y]\n")


def test_when_errors_are_located():
    wrong = INVERTED.replace("when: stride == 1 and cin == cout", "when: stride == 1")
    with pytest.raises(SpecError) as info:
        dagnet.load(HEAD + wrong + "nodes:\n  b: {block: inverted, in: x, cin: 4, cout: 8}\noutputs: [b]\n")
    assert str(info.value).startswith("<spec>:14:7: error: b.out: `add` inputs disagree")


# -- `repeat` carrying extra inputs ------------------------------------------------------
SEQ_HEAD = "dagnet: 1\nname: t\nparams: {layers: 3}\ninputs:\n  h: {shape: [5, 8]}\n  mask: {shape: [5, 8]}\n"
LAYER = """
blocks:
  layer:
    inputs: [h, mask]
    nodes:
      y: {op: linear, in: h, out_features: 8}
      g: {op: mul, in: [y, mask]}
      out: {op: add, in: [g, h]}
      aux: {op: tanh, in: g}
    outputs: [out, aux]
"""


def test_repeat_threads_the_first_input_and_carries_the_others():
    ir = dagnet.load(SEQ_HEAD + LAYER + "nodes:\n  enc: {block: layer, in: [h, mask], repeat: layers}\n"
                     "  a: {op: relu, in: enc.aux}\noutputs: [enc, a]\n")
    assert ir.node("enc.0.y").inputs == ["h"] and ir.node("enc.0.out").inputs == ["enc.0.g", "h"]
    assert [ir.node(f"enc.{k}.g").inputs for k in (1, 2)] == [["enc.1.y", "mask"], ["enc.2.y", "mask"]]
    assert ir.node("enc.2.y").inputs == ["enc.1.out"]
    assert ir.outputs["enc"] == "enc.2.out" and ir.node("a").inputs == ["enc.2.aux"]
    assert ir.node("enc.2.out").shape == (5, 8)


def test_repeated_block_equals_the_unrolled_spec():
    unrolled = "".join(f"  e{k}: {{block: layer, in: [{'e' + str(k - 1) if k else 'h'}, mask]}}\n" for k in range(3))
    layer = LAYER.replace("      aux: {op: tanh, in: g}\n", "").replace("[out, aux]", "[out]")
    rolled = dagnet.compile(SEQ_HEAD + layer + "nodes:\n  enc: {block: layer, in: [h, mask], repeat: 3}\n"
                            "outputs: [enc]\n")
    reference = dagnet.compile(SEQ_HEAD + layer + "nodes:\n" + unrolled + "outputs: [e2]\n")
    assert list(reference.state_dict()) == [k.replace("enc.", "e", 1)
                                            for k in rolled.state_dict()]
    reference.load_state_dict(dict(zip(reference.state_dict(), rolled.state_dict().values())))
    h, mask = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    assert torch.equal(rolled(h=h, mask=mask), reference(h=h, mask=mask))


def test_residual_and_zero_repeats_with_carried_inputs():
    ir = dagnet.load(SEQ_HEAD + "nodes:\n  r: {op: mul, in: [h, mask], repeat: 2, connect: residual}\n"
                     "  z: {op: mul, in: [r, mask], repeat: 0}\n  o: {op: relu, in: z}\noutputs: [o]\n")
    assert ir.node("r.1").inputs == ["r.0_add", "mask"] and ir.node("r.1_add").inputs == ["r.0_add", "r.1"]
    assert ir.node("o").inputs == ["r.1_add"]


def test_repeated_block_with_the_wrong_number_of_inputs():
    with pytest.raises(SpecError) as info:
        dagnet.load(SEQ_HEAD + LAYER + "nodes:\n  enc: {block: layer, in: h, repeat: 3}\noutputs: [enc]\n")
    error = info.value.errors[0]
    assert len(info.value.errors) == 1 and (error.loc.line, error.loc.col) == (18, 3)
    assert error.message == "block `layer` takes 2 input(s) (h, mask), `enc` gives 1"
    assert error.hint.startswith("give one node per input, in this order: h, mask; under `repeat`")


BLOCK_CALLS = """model t

block conv_bn(c, kernel=1, pad=0) {
    out = x -> conv2d(c, kernel, padding=pad) -> batch_norm
    output out
}

param depth = 1

input image[3, H, W]

a = image -> conv_bn(8, [1, 7], pad=[0, 3])
b = a -> conv_bn(8 + i, 3, pad=1) * depth
output b
"""


def dag_file(tmp_path, text):
    path = tmp_path / "t.dag"
    path.write_text(text)
    return path


def test_a_list_parameter_feeds_an_ints_argument_and_a_repeat_of_one_has_i(tmp_path):
    ir = dagnet.load(dag_file(tmp_path, BLOCK_CALLS))
    assert ir.node("a.out.0").args["kernel_size"] == [1, 7] and ir.node("a.out.0").args["padding"] == [0, 3]
    assert ir.node("b.out.0").shape[0] == 8                          # i = 0 in the one repetition
    assert dagnet.load(dag_file(tmp_path, BLOCK_CALLS), {"depth": 2}).node("b.1.out.0").shape[0] == 9


def test_a_block_parameter_given_twice_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="`c` of block `conv_bn` given twice"):
        dagnet.load(dag_file(tmp_path, BLOCK_CALLS.replace("conv_bn(8 + i, 3, pad=1)", "conv_bn(8, 3, c=4)")))
