"""Stochastic nodes in specs: shapes checked, values as documented, losses and engines work."""

import pytest
import torch

import dagnet
from dagnet.errors import SpecError

CASES = {
    "chain_crf": ("inputs:\n  e: {shape: [T, 4]}\nnodes:\n  crf: {op: chain_crf, in: e}\n", {"e": (6, 4)}, (6, 4)),
    "tree_crf": ("inputs:\n  e: {shape: [5, 3]}\nnodes:\n  crf: {op: tree_crf, in: e, parents: [-1, 0, 0, 1, 1]}\n",
                 {"e": (5, 3)}, (5, 3)),
    "grid_crf": ("inputs:\n  e: {shape: [3, H, W]}\nnodes:\n  crf: {op: grid_crf, in: e, iterations: 5}\n",
                 {"e": (3, 5, 6)}, (3, 5, 6)),
    "dense_crf": ("inputs:\n  e: {shape: [3, H, W]}\n  image: {shape: [3, H, W]}\nnodes:\n"
                  "  crf: {op: dense_crf, in: [e, image], iterations: 2}\n",
                  {"e": (3, 9, 7), "image": (3, 9, 7)}, (3, 9, 7)),
    "hidden_crf": ("inputs:\n  e: {shape: [T, 4]}\nnodes:\n  crf: {op: hidden_crf, in: e, num_labels: 3}\n",
                   {"e": (6, 4)}, (3,)),
    "latent_dynamic_crf": ("inputs:\n  e: {shape: [T, 6]}\nnodes:\n"
                           "  crf: {op: latent_dynamic_crf, in: e, num_labels: 3}\n", {"e": (6, 6)}, (6, 3)),
    "semi_markov_crf": ("inputs:\n  e: {shape: [T, 3]}\nnodes:\n  crf: {op: semi_markov_crf, in: e, max_len: 4}\n",
                        {"e": (7, 3)}, (7, 3)),
    "dependency_crf": ("inputs:\n  e: {shape: [N, N]}\nnodes:\n  crf: {op: dependency_crf, in: e}\n",
                       {"e": (5, 5)}, (5, 5)),
    "cky_crf": ("inputs:\n  e: {shape: [N, N, 2]}\nnodes:\n  crf: {op: cky_crf, in: e}\n", {"e": (4, 4, 2)}, (4, 4, 2)),
}


def test_every_stochastic_op_has_a_case():
    from dagnet import ops
    assert {n for n, op in ops.OPS.items() if op.stochastic} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_shape_and_normalisation(name):
    text, shapes, out_shape = CASES[name]
    model = dagnet.compile(f"dagnet: 1\n{text}outputs: [crf]\n")
    inputs = {k: torch.rand(2, *s) * (255 if k == "image" else 1) for k, s in shapes.items()}
    value = model(**inputs)
    assert value.shape == (2, *out_shape)
    if name in ("chain_crf", "tree_crf", "latent_dynamic_crf", "semi_markov_crf"):
        torch.testing.assert_close(value.sum(-1), torch.ones(value.shape[:-1]))
    elif name == "dependency_crf":          # every word has one head (the root's arcs on the diagonal)
        torch.testing.assert_close(value.sum(1), torch.ones(2, 5))
    elif name == "cky_crf":                 # every one-word span is a constituent
        torch.testing.assert_close(value.diagonal(0, 1, 2).sum(1), torch.ones(2, 4))
    elif name == "grid_crf":
        torch.testing.assert_close(value.sum(1), torch.ones(2, *out_shape[1:]))
    else:                                   # log-probabilities
        dim = 1
        torch.testing.assert_close(value.exp().sum(dim), torch.ones(value.shape[:dim] + value.shape[dim + 1:]))


def test_potential_shapes_are_checked():
    with pytest.raises(SpecError, match=r"mask must have shape \[T\]"):
        dagnet.load("dagnet: 1\ninputs:\n  e: {shape: [T, 4]}\n  m: {shape: [5]}\n"
                    "nodes:\n  crf: {op: chain_crf, in: [e, m]}\noutputs: [crf]\n")
    with pytest.raises(SpecError, match="do not split evenly over 4 labels"):
        dagnet.load("dagnet: 1\ninputs:\n  e: {shape: [T, 6]}\n"
                    "nodes:\n  crf: {op: latent_dynamic_crf, in: e, num_labels: 4}\noutputs: [crf]\n")
    with pytest.raises(SpecError, match="differ in size"):
        dagnet.load("dagnet: 1\ninputs:\n  e: {shape: [3, 8, 8]}\n  image: {shape: [3, 16, 16]}\n"
                    "nodes:\n  crf: {op: dense_crf, in: [e, image]}\noutputs: [crf]\n")


def test_summary_counts_field_parameters():
    from dagnet.summary import summarize
    ir = dagnet.load("dagnet: 1\ninputs:\n  e: {shape: [T, 4]}\nnodes:\n  crf: {op: chain_crf, in: e}\noutputs: [crf]\n")
    assert [r.params for r in summarize(ir) if r.op == "chain_crf"] == [4 + 4 + 16]


def test_message_engine_through_a_crf():
    text = ("dagnet: 1\ninputs:\n  x: {shape: [T, 3]}\nnodes:\n  e: {op: linear, in: x, out_features: 4}\n"
            "  crf: {op: chain_crf, in: e}\noutputs: [crf]\n")
    torch.manual_seed(0)
    a = dagnet.compile(text).double()
    b = dagnet.compile(text, backward="messages").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    w = torch.randn(2, 5, 4, dtype=torch.float64)
    (a(x=x) * w).sum().backward()
    (b(x=x) * w).sum().backward()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=0)
