"""Spec errors: located, all reported in one run, with a hint where one helps."""

import pytest

import dagnet
from dagnet.errors import SpecError, SpecErrors

HEAD = "dagnet: 1\nname: t\ninputs:\n  image: {shape: [3, 8, 8]}\n"


def errors_of(text: str) -> list[SpecError]:
    with pytest.raises(SpecError) as info:
        dagnet.load(text)
    err = info.value
    return err.errors if isinstance(err, SpecErrors) else [err]


def only(text: str) -> SpecError:
    errs = errors_of(text)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


def test_unknown_op_suggests_the_closest():
    err = only(HEAD + "nodes:\n  c1: {op: conv2e, in: image, out_channels: 4, kernel_size: 3}\noutputs: [c1]\n")
    assert "unknown op `conv2e`" in err.message
    assert err.hint == "did you mean `conv2d`? Custom ops load with --plugin MODULE"
    assert (err.loc.line, err.loc.col) == (6, 3)


def test_unknown_argument_and_inferred_argument():
    errs = errors_of(HEAD + "nodes:\n  c1: {op: conv2d, in: image, out_channel: 4, kernel_size: 3,"
                     " in_channels: 3}\noutputs: [c1]\n")
    messages = {e.message: e.hint for e in errs}
    assert messages["`conv2d` has no argument `out_channel`"] == "did you mean `out_channels`?"
    assert "inferred" in messages["`conv2d` has no argument `in_channels`"]
    assert "`conv2d` needs `out_channels`" not in messages     # the misspelling is that mistake


def test_duplicate_yaml_keys_are_errors():
    err = only(HEAD + "nodes:\n  a: {op: relu, in: image}\n  a: {op: tanh, in: image}\noutputs: [a]\n")
    assert "duplicate key `a` (first written at line 6)" in err.message
    assert err.loc.line == 7


def test_unknown_key_is_never_dropped():
    err = only(HEAD + "nodes:\n  a: {op: relu, in: image}\noutputs: [a]\noutput: [a]\n")
    assert "unknown key `output`" in err.message and err.hint == "did you mean `outputs`?"


def test_missing_reference_suggests_a_name():
    err = only(HEAD + "nodes:\n  conv: {op: relu, in: imgae}\noutputs: [conv]\n")
    assert "unknown node `imgae`" in err.message and err.hint == "did you mean `image`?"


def test_cycle_is_printed_with_lines():
    err = only(HEAD + "nodes:\n  a: {op: relu, in: c}\n  b: {op: relu, in: a}\n"
               "  c: {op: add, in: [b, image]}\noutputs: [c]\n")
    assert err.message == "cycle: `a` (line 6) -> `b` (line 7) -> `c` (line 8) -> `a`"


def test_all_errors_in_one_run():
    errs = errors_of(HEAD + "nodes:\n  a: {op: rleu, in: image}\n  b: {op: relu, in: nope}\n"
                     "  c: {op: linear, in: image}\noutputs: [a, b, c]\n")
    assert len(errs) == 3
    assert [e.loc.line for e in errs] == [6, 7, 8]


def test_shape_mismatch_at_add_names_both_shapes():
    err = only(HEAD + "nodes:\n  c: {op: conv2d, in: image, out_channels: 4, kernel_size: 1}\n"
               "  s: {op: add, in: [image, c]}\noutputs: [s]\n")
    assert "input 1 has shape [3, 8, 8], input 2 has shape [4, 8, 8]" in err.message


def test_symbolic_mismatch_found_at_a_witness_size():
    text = ("dagnet: 1\ninputs:\n  x: {shape: [3, H, W]}\nnodes:\n"
            "  p: {op: max_pool2d, in: x, kernel_size: 2}\n"
            "  u: {op: upsample, in: p, scale_factor: 2}\n"
            "  s: {op: concat, in: [x, u]}\noutputs: [s]\n")
    err = only(text)
    assert "may disagree" in err.message and "H=225" in err.message


def test_concat_checks_all_but_the_concat_dim():
    text = HEAD + ("nodes:\n  p: {op: max_pool2d, in: image, kernel_size: 2}\n"
                   "  s: {op: concat, in: [image, p]}\noutputs: [s]\n")
    assert "outside dim 1" in only(text).message


def test_arity():
    err = only(HEAD + "nodes:\n  s: {op: add, in: image}\noutputs: [s]\n")
    assert "`add` takes 2 or more input(s), `s` has 1" in err.message


def test_unreached_node():
    err = only(HEAD + "nodes:\n  a: {op: relu, in: image}\n  b: {op: tanh, in: image}\noutputs: [a]\n")
    assert err.message == "node `b` reaches no output" and err.loc.line == 7


def test_rank_error_has_hint():
    err = only("dagnet: 1\ninputs:\n  x: {shape: [10]}\nnodes:\n"
               "  c: {op: conv2d, in: x, out_channels: 4, kernel_size: 3}\noutputs: [c]\n")
    assert "expects a [C, H, W] input" in err.message and err.hint


def test_bad_yaml_is_located():
    err = only("dagnet: 1\ninputs: {x: {shape: [3]}\nnodes: {}\n")
    assert err.message.startswith("invalid YAML") and err.loc.line >= 2


def test_flow_style_commas_get_a_hint():
    err = errors_of(HEAD + "nodes:\n  a: {in: image, seq: conv2d(4, 3) -> relu}\noutputs: [a]\n")[0]
    assert "block style" in err.hint


def test_unknown_set_parameter():
    with pytest.raises(SpecError, match="no parameter `clases`") as info:
        dagnet.load(HEAD.replace("name: t", "params: {classes: 3}")
                    + "nodes:\n  a: {op: relu, in: image}\noutputs: [a]\n", {"clases": "2"})
    assert "classes" in str(info.value)


def test_python_tags_are_rejected():
    text = HEAD + "nodes:\n  a: !!python/object/apply:os.system ['echo hacked']\noutputs: [a]\n"
    with pytest.raises(SpecError, match="invalid YAML"):
        dagnet.load(text)
