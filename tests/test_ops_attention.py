"""Attention, tensor-algebra, learned and position ops against the PyTorch they stand for,
in float64: forward values, input gradients and parameter counts; and their spec errors."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dagnet
from dagnet import ops
from dagnet.emit import standalone_source
from dagnet.errors import SpecError
from tests.conftest import import_file

B = 3


def one_node(inputs: dict, op: str, **args) -> str:
    """A spec whose node `y` (line 4 + the number of inputs) applies ``op`` to the inputs in order."""
    lines = ["dagnet: 1", "name: one-node", "inputs:"]
    lines += [f"  {name}: {{shape: {shape}{', dtype: ' + dtype if dtype else ''}}}"
              for name, (shape, dtype) in inputs.items()]
    body = ", ".join(f"{k}: {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                     for k, v in args.items())
    lines += ["nodes:", f"  y: {{op: {op}, in: [{', '.join(inputs)}]{', ' + body if body else ''}}}", "outputs: [y]"]
    return "\n".join(lines) + "\n"


def compiled(inputs: dict, op: str, **args):
    return dagnet.compile(one_node(inputs, op, **args)).double()


def floats(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def assert_same_with_gradients(ours, theirs, leaves):
    """Equal values, and equal gradients of a random projection of them with respect to ``leaves``."""
    torch.testing.assert_close(ours, theirs)
    weight = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * weight).sum(), leaves, retain_graph=True)
    expected = torch.autograd.grad((theirs * weight).sum(), leaves)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)


def params_rule(text: str) -> int:
    ir = dagnet.load(text)
    return ops.count_params(ir, ir.node("y"))


# -- attention ------------------------------------------------------------------------------

def test_multihead_attention_matches_nn_with_a_padding_mask_and_a_causal_mask():
    T, E = 5, 8
    text = one_node({"q": ([T, E], None), "k": ([T, E], None), "v": ([T, E], None),
                     "pad": ([T], "bool"), "causal": ([T, T], "bool")}, "multihead_attention", num_heads=2)
    model = dagnet.compile(text).double()
    reference = nn.MultiheadAttention(E, 2, batch_first=True, dtype=torch.float64)
    reference.load_state_dict(model.y.state_dict())
    q, k, v = floats(B, T, E), floats(B, T, E), floats(B, T, E)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 3:] = True                                       # the last two keys of example 1 are padding
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)    # true: not attended
    ours = model(q=q, k=k, v=v, pad=pad, causal=causal.expand(B, T, T))
    theirs = reference(q, k, v, key_padding_mask=pad, attn_mask=causal, need_weights=False)[0]
    assert_same_with_gradients(ours, theirs, (q, k, v))
    assert params_rule(text) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("bias", [True, False])
def test_multihead_attention_infers_kdim_and_vdim(bias):
    text = one_node({"q": ([4, 8], None), "k": ([6, 5], None), "v": ([6, 3], None)},
                    "multihead_attention", num_heads=4, bias=bias)
    model = dagnet.compile(text).double()
    reference = nn.MultiheadAttention(8, 4, bias=bias, kdim=5, vdim=3, batch_first=True, dtype=torch.float64)
    reference.load_state_dict(model.y.state_dict())
    q, k, v = floats(B, 4, 8), floats(B, 6, 5), floats(B, 6, 3)
    ours = model(q=q, k=k, v=v)
    assert ours.shape == (B, 4, 8)
    assert_same_with_gradients(ours, reference(q, k, v, need_weights=False)[0], (q, k, v))
    assert params_rule(text) == sum(p.numel() for p in reference.parameters())


def test_scaled_dot_product_attention_over_heads_with_a_mask():
    mask = torch.rand(B, 5, 6) < 0.7
    mask[..., 0] = True                                     # true: attended; every query sees a key
    model = compiled({"q": ([2, 5, 4], None), "k": ([2, 6, 4], None), "v": ([2, 6, 3], None),
                      "m": ([5, 6], "bool")}, "scaled_dot_product_attention", scale=0.3)
    q, k, v = floats(B, 2, 5, 4), floats(B, 2, 6, 4), floats(B, 2, 6, 3)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=0.3)
    assert_same_with_gradients(model(q=q, k=k, v=v, m=mask), theirs, (q, k, v))


def test_scaled_dot_product_attention_causal_and_its_dropout_acts_in_training_only():
    model = compiled({"q": ([5, 4], None), "k": ([5, 4], None), "v": ([5, 4], None)},
                     "scaled_dot_product_attention", is_causal=True, dropout_p=0.5)
    q, k, v = floats(B, 5, 4), floats(B, 5, 4), floats(B, 5, 4)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_same_with_gradients(model.eval()(q=q, k=k, v=v), theirs, (q, k, v))
    torch.manual_seed(0)
    assert not torch.allclose(model.train()(q=q, k=k, v=v), theirs)


# -- tensor algebra -------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [([5, 4], [4, 3]), ([4], [4]), ([4], [2, 4, 3]), ([5, 4], [4]),
                                  ([2, 5, 4], [4, 3]), ([5, 4], [3, 4, 6])])
def test_matmul_is_torch_matmul_of_each_example(a, b):
    model = compiled({"a": (a, None), "b": (b, None)}, "matmul")
    x, y = floats(B, *a), floats(B, *b)
    theirs = torch.stack([torch.matmul(x[i], y[i]) for i in range(B)])
    assert_same_with_gradients(model(a=x, b=y), theirs, (x, y))


@pytest.mark.parametrize("equation, shapes", [("td,sd->ts", [[5, 4], [6, 4]]), ("ij,jk", [[3, 4], [4, 2]]),
                                              ("ii->i", [[4, 4]]), ("td, de, e -> t", [[5, 4], [4, 2], [2]])])
def test_einsum_is_torch_einsum_of_each_example(equation, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    model = compiled({n: (s, None) for n, s in zip(names, shapes)}, "einsum", equation=equation)
    tensors = [floats(B, *s) for s in shapes]
    theirs = torch.stack([torch.einsum(equation.replace(" ", ""), [t[i] for t in tensors]) for i in range(B)])
    assert_same_with_gradients(model(**dict(zip(names, tensors))), theirs, tensors)


@pytest.mark.parametrize("op, args, reference", [
    ("transpose", {"dim0": 1, "dim1": -1}, lambda x: x.transpose(1, -1)),
    ("mean", {}, lambda x: x.mean((1, 2, 3))),
    ("mean", {"dim": [1, -1], "keepdim": True}, lambda x: x.mean((1, 3), keepdim=True)),
    ("sum", {"dim": 2}, lambda x: x.sum(2)),
    ("amax", {"dim": [2, 3]}, lambda x: x.amax((2, 3))),
    ("select", {"dim": 2, "index": -1}, lambda x: x[:, :, -1]),
    ("narrow", {"dim": 3, "start": 1, "length": 2}, lambda x: x[..., 1:3]),
    ("scale", {"factor": -0.5}, lambda x: -0.5 * x),
    ("add_scalar", {"value": 2.5}, lambda x: x + 2.5),
])
def test_one_input_tensor_op_is_its_torch_function(op, args, reference):
    model = compiled({"x": ([3, 4, 5], None)}, op, **args)
    x = floats(B, 3, 4, 5)
    assert_same_with_gradients(model(x=x), reference(x), (x,))


def test_masked_mean_averages_the_selected_positions_and_gives_zeros_for_none():
    model = compiled({"x": ([5, 2, 3], None), "m": ([5], "bool")}, "masked_mean")
    x = floats(4, 5, 2, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.stack([x[i][mask[i]].mean(0) if mask[i].any() else torch.zeros(2, 3, dtype=x.dtype)
                            for i in range(4)])
    assert_same_with_gradients(model(x=x, m=mask), expected, (x,))


# -- learned tensors and positions ----------------------------------------------------------

@pytest.mark.parametrize("init, check", [
    ("zeros", lambda w: bool((w == 0).all())),
    ("normal", lambda w: 0.15 < w.std() < 0.25),
    ("trunc_normal", lambda w: w.abs().max() <= 0.4 and 0.12 < w.std() < 0.2),
    ("uniform", lambda w: w.abs().max() <= 0.2 * math.sqrt(3) and 0.15 < w.std() < 0.25),
])
def test_parameter_is_one_learned_tensor_repeated_over_the_batch(init, check):
    text = one_node({"x": ([7], None)}, "parameter", shape=[40, 50], init=init, std=0.2)
    model = dagnet.compile(text)
    out = model(x=torch.randn(B, 7))
    weight = model.y.weight
    assert out.shape == (B, 40, 50) and torch.equal(out[1], weight) and check(weight.detach())
    out.sum().backward()
    torch.testing.assert_close(weight.grad, torch.full_like(weight, B))
    assert params_rule(text) == 2000


def test_parameter_init_constant_sets_every_entry_to_value():
    # ConvNeXt's layer scale: a [C, 1, 1] tensor of 1e-6, multiplied into the block
    text = one_node({"x": ([4, 3, 3], None)}, "parameter", shape=[4, 1, 1], init="constant", value=1e-6)
    model = dagnet.compile(text)
    assert torch.equal(model.y.weight.detach(), torch.full((4, 1, 1), 1e-6))
    assert torch.equal(dagnet.compile(one_node({"x": ([2], None)}, "parameter", shape=[3], init="constant")
                                      ).y.weight.detach(), torch.zeros(3))


@pytest.mark.parametrize("shape, dim, channels", [([5, 6], -1, 6), ([4, 3, 3], 1, 4)])
def test_layer_scale_scales_each_channel(shape, dim, channels):
    text = one_node({"x": (shape, None)}, "layer_scale", init_values=1e-6, dim=dim)
    model = dagnet.compile(text)
    assert torch.equal(model.y.gamma, torch.full((channels,), 1e-6))
    gamma = model.double().y.gamma
    with torch.no_grad():
        gamma.copy_(torch.randn(channels))
    x = floats(B, *shape)
    view = [channels if i == dim % (len(shape) + 1) else 1 for i in range(len(shape) + 1)]
    assert_same_with_gradients(model(x=x), x * gamma.view(view), (x,))
    assert params_rule(text) == channels


def test_positions_feed_an_embedding():
    text = """dagnet: 1
name: positions
inputs:
  tokens: {shape: [T], dtype: int64}
nodes:
  p: {op: positions, in: tokens}
  e: {op: embedding, in: p, num_embeddings: 16, embedding_dim: 4}
outputs: [p, e]
"""
    model = dagnet.compile(text)
    out = model(tokens=torch.randint(0, 5, (B, 7)))
    assert out["p"].dtype == torch.int64 and torch.equal(out["p"], torch.arange(7).expand(B, 7))
    torch.testing.assert_close(out["e"], model.e.weight[:7].expand(B, 7, 4))


@pytest.mark.parametrize("d_model", [6, 5])
def test_sinusoidal_positions_are_the_transformer_papers(d_model):
    model = compiled({"x": ([7, 2], None)}, "sinusoidal_positions", d_model=d_model)
    out = model(x=floats(B, 7, 2))
    expected = torch.tensor([[math.sin(t / 10000 ** (i / d_model)) if i % 2 == 0
                              else math.cos(t / 10000 ** ((i - 1) / d_model)) for i in range(d_model)]
                             for t in range(7)], dtype=torch.float64)
    torch.testing.assert_close(out, expected.expand(B, 7, d_model))
    assert params_rule(one_node({"x": ([7, 2], None)}, "sinusoidal_positions", d_model=d_model)) == 0


# -- spec errors ----------------------------------------------------------------------------

def spec_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        dagnet.load(text)
    return info.value


def test_num_heads_that_do_not_divide_embed_dim_are_a_located_error():
    text = one_node({"q": ([4, 12], None), "k": ([4, 12], None), "v": ([4, 12], None)},
                    "multihead_attention", num_heads=5)
    error = spec_error(text)
    assert error.message == "y: `multihead_attention`: num_heads 5 does not divide embed_dim 12"
    assert error.loc.line == 8 and "1, 2, 3, 4, 6, 12" in error.hint


@pytest.mark.parametrize("equation, shapes, message", [
    ("td,sd->t.s", [[5, 4], [6, 4]], "equation `td,sd->t.s` has `.`"),
    ("...td,...sd->...ts", [[5, 4], [6, 4]], "has `.`"),
    ("t1,sd", [[5, 4], [6, 4]], "has `1`"),
    ("td,sd->ts->t", [[5, 4], [6, 4]], "a stray `-` or `>`"),
    ("td->t", [[5, 4], [6, 4]], "has 1 operand(s), the node has 2 input(s)"),
    ("tdx,sd->ts", [[5, 4], [6, 4]], "operand 1 `tdx` has 3 letter(s), input 1 has shape [5, 4]"),
    ("td,sd->ts", [[5, 4], [6, 3]], "the sizes of `d` in operands 1 and 2 differ: 4 vs 3"),
    ("td,sd->tz", [[5, 4], [6, 4]], "output letter `z` of `td,sd->tz` is in no operand"),
    ("td,sd->tt", [[5, 4], [6, 4]], "output letter `t` of `td,sd->tt` appears twice"),
])
def test_a_bad_einsum_equation_is_a_located_error(equation, shapes, message):
    names = [f"x{i}" for i in range(len(shapes))]
    error = spec_error(one_node({n: (s, None) for n, s in zip(names, shapes)}, "einsum", equation=equation))
    assert message in error.message and error.message.startswith("y: `einsum`")
    assert error.loc.line == 4 + len(shapes) + 1 and error.hint


@pytest.mark.parametrize("inputs, op, args, message", [
    ({"q": ([4, 8], None), "k": ([5, 8], None), "v": ([6, 8], None)}, "multihead_attention", {"num_heads": 2},
     "key and value differ in length"),
    ({"q": ([4, 8], None), "k": ([5, 8], None), "v": ([5, 8], None), "m": ([4], "bool")}, "multihead_attention",
     {"num_heads": 2}, "key_padding_mask (input 4) must have shape [5], found [4]"),
    ({"q": ([4, 8], None), "k": ([5, 8], None), "v": ([5, 8], None), "m": ([4, 5], None)},
     "scaled_dot_product_attention", {"is_causal": True}, "an attn_mask and is_causal together"),
    ({"q": ([4, 8], None), "k": ([5, 7], None), "v": ([5, 8], None)}, "scaled_dot_product_attention", {},
     "the key (input 2) must have shape [5, 8], found [5, 7]"),
    ({"a": ([4, 8], None), "b": ([7, 3], None)}, "matmul", {}, "the inner sizes of [4, 8] @ [7, 3] differ: 8 vs 7"),
    ({"x": ([4, 8], None), "m": ([5], "bool")}, "masked_mean", {}, "the mask must have shape [4], found [5]"),
    ({"x": ([4, 8], None)}, "mean", {"dim": [2, -1]}, "dim [2, -1] must name each dim once"),
    ({"x": ([4, 8], None)}, "sum", {"dim": 0}, "cannot act on the batch dimension"),
    ({"x": ([4, 8], None)}, "select", {"dim": 2, "index": 8}, "index 8 is outside dim 2 of [4, 8]"),
    ({"x": ([4, 8], None)}, "narrow", {"dim": 1, "start": 2, "length": 3}, "positions 2 .. 4 run past dim 1"),
])
def test_shapes_that_do_not_fit_are_located_errors_with_a_hint(inputs, op, args, message):
    error = spec_error(one_node(inputs, op, **args))
    assert message in error.message and error.loc.line == 4 + len(inputs) + 1 and error.hint


# -- a whole model --------------------------------------------------------------------------

TINY_TRANSFORMER = """dagnet: 1
name: tiny-transformer
inputs:
  tokens: {shape: [T], dtype: int64}
  pad: {shape: [T], dtype: bool}
  keep: {shape: [T], dtype: bool}
nodes:
  emb: {op: embedding, in: tokens, num_embeddings: 20, embedding_dim: 8}
  pos: {op: sinusoidal_positions, in: tokens, d_model: 8}
  x: {op: add, in: [emb, pos]}
  attn: {op: multihead_attention, in: [x, x, x, pad], num_heads: 2}
  ls: {op: layer_scale, in: attn, init_values: 0.1}
  h: {op: add, in: [x, ls]}
  cls: {op: parameter, in: tokens, shape: [1, 8], init: trunc_normal}
  scores: {op: einsum, in: [cls, h], equation: "qd,td->qt"}
  weights: {op: softmax, in: scores, dim: -1}
  pooled: {op: matmul, in: [weights, h]}
  first: {op: select, in: pooled, dim: 1, index: 0}
  mean: {op: masked_mean, in: [h, keep]}
  both: {op: concat, in: [first, mean]}
  logits: {op: linear, in: both, out_features: 3}
outputs: [logits]
"""


def test_a_tiny_transformer_runs_from_its_standalone_file(tmp_path):
    model = dagnet.compile(TINY_TRANSFORMER).eval()
    path = tmp_path / "model.py"
    path.write_text(standalone_source(model))
    standalone = getattr(import_file(path, "tiny_transformer"), type(model).__name__)().eval()
    standalone.load_state_dict(model.state_dict())
    tokens, pad = torch.randint(0, 20, (B, 6)), torch.zeros(B, 6, dtype=torch.bool)
    pad[0, 4:] = True
    with torch.no_grad():
        out = model(tokens=tokens, pad=pad, keep=~pad)
        torch.testing.assert_close(standalone(tokens, pad, ~pad), out)
    assert out.shape == (B, 3)


def test_checking_summarising_and_drawing_the_new_ops_need_no_torch(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_TRANSFORMER)
    script = f"""
import sys, contextlib, io
from dagnet.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    for command in (["check"], ["summary"], ["render", "-o", r"{tmp_path}/figure.dot"]):
        assert main([command[0], r"{spec}", *command[1:]]) == 0
sys.exit(1 if "torch" in sys.modules else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "attention" in (tmp_path / "figure.dot").read_text()
