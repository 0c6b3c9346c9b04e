"""Errors that help (issue 15): one error per mistake, the root cause first, no near name
offered for a different PyTorch function, and losses and `train:` checked with locations."""

import pytest

import dagnet
from dagnet.cli import main
from dagnet.errors import ErrorLog, Loc, SpecError, SpecErrors, did_you_mean
from tests.test_check import HEAD, errors_of


# a MobileNetV2-like spec: one block used five times, with three mistakes in its body
MOBILENET = """\
dagnet: 1
inputs:
  image: {shape: [3, 16, 16]}
blocks:
  inverted_residual:
    params: {channels: 8, expand: 6}
    nodes:
      pw: {op: conv2d, in: x, out_channels: channels * expand, kernel_size: 1}
      act: {op: relu7, in: pw}
      dw: {op: conv2d, in: act, out_channels: chanels, kernel_size: 3, padding: 1}
    outputs: [dw]
nodes:
  stem: {op: conv2d, in: image, out_channels: 8, kernel_size: 3, padding: 1}
  b1: {block: inverted_residual, in: stem}
  b2: {block: inverted_residual, in: b1}
  b3: {block: inverted_residual, in: b2, repeat: 3}
outputs: [b3]
"""

USES = "(in all 5 uses of block `inverted_residual`: `b1`, `b2`, `b3.0`, `b3.1`, `b3.2`)"


def test_a_mistake_in_a_block_is_one_error_naming_every_use():
    errs = errors_of(MOBILENET)
    assert [e.message for e in errs] == [f"unknown op `relu7` {USES}",
                                         f"`out_channels` of `conv2d`: unknown name `chanels` {USES}"]
    assert [e.loc.line for e in errs] == [9, 10]
    assert errs[0].hint == "did you mean `relu`? Custom ops load with --plugin MODULE"


def test_an_error_in_some_uses_only_says_which():
    spec = HEAD + """\
blocks:
  unit:
    params: {k: 1}
    nodes:
      c: {op: conv2d, in: x, out_channels: 4, kernel_size: 3 // k}
    outputs: [c]
nodes:
  a: {block: unit, in: image}
  b: {block: unit, in: a, k: 0}
  c: {block: unit, in: b}
outputs: [c]
"""
    (err,) = errors_of(spec)
    assert err.message.endswith("(in 1 of 3 uses of block `unit`: `b`)")


def test_a_block_used_once_keeps_its_message_plain():
    spec = HEAD + ("blocks:\n  unit:\n    nodes:\n      c: {op: relu7, in: x}\n    outputs: [c]\n"
                   "nodes:\n  a: {block: unit, in: image}\noutputs: [a]\n")
    (err,) = errors_of(spec)
    assert err.message == "unknown op `relu7`"


def test_a_long_list_of_uses_is_cut_short():
    spec = HEAD + ("blocks:\n  unit:\n    nodes:\n      c: {op: relu7, in: x}\n    outputs: [c]\n"
                   "nodes:\n  a: {block: unit, in: image, repeat: 17}\noutputs: [a]\n")
    (err,) = errors_of(spec)
    assert err.message.endswith("in all 17 uses of block `unit`: `a.0`, `a.1`, `a.2`, `a.3`, `a.4`, "
                                "`a.5` and 11 more)")


def test_a_dead_node_in_a_block_is_one_error():
    spec = HEAD + ("blocks:\n  unit:\n    nodes:\n      c: {op: relu, in: x}\n      dead: {op: tanh, in: x}\n"
                   "    outputs: [c]\nnodes:\n  a: {block: unit, in: image}\n  b: {block: unit, in: a, repeat: 2}\n"
                   "outputs: [b]\n")
    (err,) = errors_of(spec)
    assert err.message == ("node `dead` of block `unit` reaches no output "
                           "(in all 3 uses of block `unit`: `a`, `b.0`, `b.1`)")
    assert err.loc.line == 9


def test_the_same_error_twice_is_reported_once():
    log = ErrorLog()
    log.add("bad", Loc("f", 1, 1))
    log.add("bad", Loc("f", 1, 1))
    log.add("bad", Loc("f", 2, 1))
    assert [str(e.loc) for e in log.errors] == ["f:1:1", "f:2:1"]
    assert log.logged == 3
    err = SpecErrors([SpecError("x", Loc("f", 3, 1)), SpecError("y", Loc("f", 3, 1)), SpecError("x", Loc("f", 3, 1))])
    assert [e.message for e in err.errors] == ["x", "y"]          # once each, in the order found


def test_a_repeated_bad_argument_still_breaks_every_use():
    # the second use's error is a repeat; its node must not reach shape inference with the argument missing
    spec = HEAD + ("blocks:\n  unit:\n    nodes:\n      c: {op: linear, in: x, out_features: 4, bias: maybe}\n"
                   "    outputs: [c]\nnodes:\n  a: {block: unit, in: image}\n  b: {block: unit, in: a}\n"
                   "outputs: [b]\n")
    (err,) = errors_of(spec)
    assert "`bias` of `linear` must be true or false" in err.message


# -- the root cause first --------------------------------------------------------
MISSING_PARAM = HEAD + """\
blocks:
  unit:
    params: {channels: null, halved: channels // 2}
    nodes:
      c: {op: conv2d, in: x, out_channels: halved, kernel_size: 1}
      d: {op: conv2d, in: c, out_channels: channels // 2, kernel_size: 1}
    outputs: [d]
nodes:
  u: {block: unit, in: image}
outputs: [u]
"""


def test_a_missing_block_parameter_is_the_one_error():
    (err,) = errors_of(MISSING_PARAM)
    assert err.message == "block `unit` needs parameter `channels`"
    assert (err.loc.line, err.loc.col) == (13, 3)
    assert err.hint == "add `channels: ...` to `u`"


def test_a_missing_block_parameter_in_the_dsl_is_the_one_error(spec_file, capsys):
    text = ('model "m"\ninput image[3, 8, 8]\nblock unit(channels, halved = channels // 2) {\n'
            "    c = x -> conv2d(halved, 1)\n    output c\n}\nu = image -> unit\noutput u\n")
    assert check_output(spec_file, capsys, text, "model.dag") == [
        "model.dag:7:14: error: block `unit` needs parameter `channels`",
        "  hint: add `unit(channels=...)`",
    ]


def test_a_failed_parameter_is_reported_once_not_at_each_use():
    spec = HEAD + ("params: {width: wdth * 2}\nnodes:\n  a: {op: conv2d, in: image, out_channels: width,"
                   " kernel_size: 1}\n  b: {op: conv2d, in: a, out_channels: width + 1, kernel_size: 1}\n"
                   "outputs: [b]\n")
    (err,) = errors_of(spec)
    assert err.message == "parameter `width`: unknown name `wdth`"
    assert err.loc.line == 5


def test_a_failed_block_argument_is_reported_once():
    spec = HEAD + ("blocks:\n  unit:\n    params: {ch: 4}\n    nodes:\n"
                   "      c: {op: conv2d, in: x, out_channels: ch * 2, kernel_size: 1}\n    outputs: [c]\n"
                   "nodes:\n  u: {block: unit, in: image, ch: nope + 1}\noutputs: [u]\n")
    (err,) = errors_of(spec)
    assert err.message == "`ch` of `u`: unknown name `nope`"


# -- did you mean ---------------------------------------------------------------
def test_a_pytorch_op_dagnet_lacks_is_not_a_typo():
    spec = HEAD + "nodes:\n  a: {op: rrelu, in: image}\noutputs: [a]\n"
    (err,) = errors_of(spec)
    assert err.message == "`rrelu` is a PyTorch op dagnet does not have yet"
    assert "docs/custom_ops.md" in err.hint and "relu`" not in err.hint


@pytest.mark.parametrize("name", ["celu", "hardtanh", "softsign", "logsigmoid", "glu", "softshrink", "lp_pool2d", "RReLU"])
def test_other_pytorch_ops_are_named_as_such(name):
    (err,) = errors_of(HEAD + f"nodes:\n  a: {{op: {name}, in: image}}\noutputs: [a]\n")
    assert "is a PyTorch op dagnet does not have yet" in err.message


def test_did_you_mean_is_bounded_by_edit_distance():
    assert did_you_mean("conv2e", ["conv2d"]) == "did you mean `conv2d`?"
    assert did_you_mean("imgae", ["image"]) == "did you mean `image`?"          # a swap is one edit
    assert did_you_mean("Conv2d", ["conv2d"]) == "did you mean `conv2d`?"
    assert did_you_mean("lstm_cell", ["lstm"]) is None                       # difflib says 0.62
    assert did_you_mean("x", ["y"]) is None
    assert did_you_mean("max_pool3d", ["max_pool2d", "max_pool1d"]) == "did you mean `max_pool2d`?"


# -- losses and `train:` in `dagnet check` --------------------------------------------
def check_output(spec_file, capsys, text: str, name: str = "model.yaml") -> list[str]:
    """`dagnet check` on ``text``: its error lines (`file:line:col: error: ...`) and hints."""
    path = spec_file(text, name)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    return [line.replace(str(path), name) for line in err.splitlines()
            if ": error: " in line or line.startswith("  hint:")]


MODEL = "dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n  fc: {op: linear, in: x, out_features: 3}\noutputs: [fc]\n"


def test_check_reports_a_loss_naming_a_missing_node_and_an_unknown_key(spec_file, capsys):
    lines = check_output(spec_file, capsys, MODEL + "loss: {op: cross_entropy, output: fcc, target: label,"
                                                    " smoothing: 0.1}\n")
    assert lines == [
        "model.yaml:7:27: error: a loss's `output` names no node: `fcc`",
        "  hint: did you mean `fc`?",
        "model.yaml:7:55: error: unknown key `smoothing` in a `cross_entropy` loss",
        "  hint: a `cross_entropy` loss takes op, weight, name, output, target, ignore_index, mask, label_smoothing",
    ]


@pytest.mark.parametrize("loss, message", [
    ("{op: cross_entropi, output: fc, target: y}", "unknown loss `cross_entropi`"),
    ("{op: [mse], output: fc, target: y}", "unknown loss `['mse']`"),
    ("{output: fc, target: y}", "a loss without `op`"),
    ("{op: mse, output: fc}", "a `mse` loss needs `target`"),
    ("{op: mse, output: fc, target: y, weight: heavy}", "the `weight` of a `mse` loss must be a finite number"),
    ("{op: crf_nll, node: fc, target: y}", "`crf_nll` needs a CRF node, `fc` is a `linear`"),
    ("{op: crf_nll, node: fc, target: y, potentials: fc}", "unknown key `potentials` in a `crf_nll` loss"),
])
def test_check_validates_every_loss(spec_file, capsys, loss, message):
    lines = check_output(spec_file, capsys, MODEL + f"loss: {loss}\n")
    assert any(message in line for line in lines), lines


def test_check_reports_train_settings_with_their_location(spec_file, capsys):
    lines = check_output(spec_file, capsys, MODEL + """\
loss: {op: cross_entropy, output: fc, target: label}
train:
  learning_rate: 0.1
  epochs: 2.5
  optimizer: adam
  nesterov: true
  schedule: {name: cosine, gamma: 2}
  data: digits
""")
    assert lines == [
        "model.yaml:9:3: error: unknown training setting `learning_rate`",
        "  hint: did you mean `lr`?",
        "model.yaml:10:3: error: training setting `epochs`: expected int, got 2.5",
        "model.yaml:12:3: error: training setting `nesterov`: applies only to optimizer: sgd",
        "model.yaml:13:28: error: training setting `schedule.gamma`: must be in (0, 1]",
    ]


def test_check_reports_losses_and_train_settings_of_the_dsl_with_their_location(spec_file, capsys):
    text = ('model "t"\ninput x[4]\nfc = x -> linear(3)\noutput fc\nloss cross_entropy(output=fcc, target=y)\n'
            "train {lr: -1, schedule: {name: cosine, warmpu_epochs: 1}}\n")
    lines = check_output(spec_file, capsys, text, "model.dag")
    assert lines == [
        "model.dag:5:20: error: a loss's `output` names no node: `fcc`",
        "  hint: did you mean `fc`?",
        "model.dag:6:8: error: training setting `lr`: must be > 0",
        "model.dag:6:41: error: unknown training setting `schedule.warmpu_epochs`",
        "  hint: did you mean `schedule.warmup_epochs`?",
    ]


def test_check_reports_graph_and_training_errors_together(spec_file, capsys):
    text = MODEL.replace("linear", "lineer") + "loss: {op: mse, output: fc, target: y}\ntrain: {epoch: 3}\n"
    lines = check_output(spec_file, capsys, text)
    # the loss names `fc`, whose op is wrong: one error there, not a second one for the loss
    assert [line.split(": error: ")[1] for line in lines if ": error: " in line] == [
        "unknown op `lineer`", "unknown training setting `epoch`"]


def test_a_train_section_leaves_the_data_source_to_train(spec_file, capsys):
    path = spec_file(MODEL + "loss: {op: mse, output: fc, target: y}\ntrain: {data: {path: absent.npz}}\n")
    assert main(["check", str(path)]) == 0


def test_train_reports_a_bad_loss_located_before_building(spec_file):
    from dagnet.train.from_spec import spec_losses
    ir = dagnet.load(spec_file(MODEL + "loss: {op: mse, output: fcc, target: y}\n"))
    with pytest.raises(SpecError) as info:
        spec_losses(ir)
    assert (info.value.loc.line, info.value.message) == (7, "a loss's `output` names no node: `fcc`")


@pytest.mark.parametrize("setting", ["epochs: .inf", "epochs: .nan", "seed: 1e400", "early_stopping: {patience: .inf}",
                                     "lr: .inf"])
def test_non_finite_training_settings_are_errors_not_tracebacks(spec_file, capsys, setting):
    lines = check_output(spec_file, capsys, MODEL + f"loss: {{op: mse, output: fc, target: y}}\ntrain: {{{setting}}}\n")
    assert len(lines) == 1 and "model.yaml:8:" in lines[0] and "expected" in lines[0], lines


def test_a_misspelt_required_argument_is_one_error():
    """`out_channel` is both an unknown argument and a missing `out_channels`: one mistake."""
    (err,) = errors_of(HEAD + "nodes:\n  c1: {op: conv2d, in: image, out_channel: 4, kernel_size: 3}\n"
                              "outputs: [c1]\n")
    assert err.message == "`conv2d` has no argument `out_channel`"
    assert err.hint == "did you mean `out_channels`?"
    (err,) = errors_of(HEAD + "nodes:\n  c1: {op: conv2d, in: image, kernel_size: 3}\noutputs: [c1]\n")
    assert err.message == "`conv2d` needs `out_channels`"       # truly missing: still reported


def test_train_reports_train_settings_located_and_writes_nothing(spec_file, capsys, tmp_path):
    path = spec_file(MODEL + "loss: {op: mse, output: fc, target: y}\ntrain: {epochs: -1, data: {name: digits}}\n")
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:8:9: error: training setting `epochs`"), err
    assert not (tmp_path / "run").exists()


def test_arithmetic_on_a_null_parameter_says_so_in_the_spec_s_words():
    (err,) = errors_of("dagnet: 1\nparams: {a: null, b: a // 2}\n" + HEAD[10:] +
                       "nodes:\n  y: {op: linear, in: image, out_features: 3}\noutputs: [y]\n")
    assert err.message == "parameter `b`: `//` cannot combine null and `2`"     # not Python's NoneType message


def test_an_input_dim_below_one_names_the_bound():
    (err,) = errors_of(HEAD.replace("[3, 8, 8]", "[3, 0, 8]") + "nodes:\n  y: {op: relu, in: image}\noutputs: [y]\n")
    assert err.message == "a dim of input `image` must be >= 1, found 0"
