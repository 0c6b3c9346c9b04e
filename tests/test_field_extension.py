"""Every structured node implements the one Field protocol, and a new one comes in
through the public extension points (a Field subclass, one registry entry in a
plugin) and is checked, compiled, trained, summarised and rendered."""

import itertools
import json
import sys

import pytest
import torch

import dagnet
from dagnet import ops
from dagnet.cli import main
from dagnet.fields.protocol import QUERIES, Field, UnsupportedQuery
from dagnet.ops.registry import ModuleCall
from test_fields_ops import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_structured_op_builds_a_field_that_declares_its_queries(name):
    text, shapes, _ = CASES[name]
    model = dagnet.compile(f"dagnet: 1\n{text}outputs: [crf]\n")
    field = model.get_submodule("crf")
    assert isinstance(field, Field) and isinstance(field.num_labels, int)
    assert field.exact | field.approximate <= set(QUERIES) and not field.exact & field.approximate
    assert field.structure in ("sequence", "tree", "grid", "class")
    for query in set(QUERIES) - field.exact - field.approximate:
        with pytest.raises(UnsupportedQuery, match=f"does not answer `{query}`"):
            getattr(field, query)(*([torch.zeros(1, 2, 2)] + [1] * (query in ("kbest", "score", "nll"))))


PLUGIN = '''
"""A toy structured node: independent labels per position, with a learnt label bias.
Its one dynamic program is a product over positions of a sum over labels; the
semiring core gives every query from it."""
import torch
from torch import nn

from dagnet.fields import semiring as sr
from dagnet.fields._logspace import label_mask
from dagnet.fields.protocol import Field
from dagnet.ops import ModuleCall, OpDef, register


class UnaryField(Field):
    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "sequence"

    def __init__(self, num_labels):
        super().__init__()
        self.num_labels = num_labels
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def _dp(self, mask):
        def dp(semiring, potentials):
            B, T, K = potentials.shape
            per_position = semiring.sum(semiring.convert(potentials + self.bias), -1)  # (S, B, T)
            if mask is not None:
                per_position = torch.where(mask, per_position, semiring.one((B, T), per_position))
            owner = torch.arange(B).repeat_interleave(T)
            return sr.scatter_times(semiring, per_position.flatten(1), owner, B)
        return dp

    def log_partition(self, potentials, mask=None):
        return sr.log_partition(self._dp(mask), potentials)

    def marginals(self, potentials, mask=None):
        return sr.marginals(self._dp(mask), potentials)

    def clamped_log_partition(self, potentials, labels, mask=None):
        allowed = label_mask(labels, self.num_labels)
        return self.log_partition(potentials.masked_fill(~allowed, float("-inf")), mask)

    def score(self, potentials, labels, mask=None):
        return self.clamped_log_partition(potentials, labels, mask)

    def decode(self, potentials, mask=None):
        best, chosen = sr.best(self._dp(mask), potentials)
        return sr.recover(chosen), best

    def kbest(self, potentials, k, mask=None):
        scores, chosen = sr.kbest(self._dp(mask), potentials, k)
        return sr.recover(chosen).transpose(0, 1), scores

    def sample(self, potentials, n=1, mask=None, generator=None):
        return torch.stack([sr.recover(sr.samples(self._dp(mask), potentials, generator)[1])
                            for _ in range(n)])

    def entropy(self, potentials, mask=None):
        return sr.entropy(self._dp(mask), potentials)


register(OpDef(
    "unary_field", "field", "Independent labels per position over [T, K] scores; value: marginals [T, K].",
    (), lambda ins, a: ins[0], lambda ins, a: ModuleCall(UnaryField, {"num_labels": ins[0][1]}, "marginals"),
    arity=(1, 2), stochastic=True, params=lambda ins, a: ins[0][1], saves="inputs",
    title="unary field", task="sequence", pgm="chain", inferred=("num_labels",)))
'''

SPEC = """dagnet: 1
name: toy-field
inputs:
  frames: {shape: [T, 8]}
  mask: {shape: [T], dtype: bool}
nodes:
  emissions: {op: linear, in: frames, out_features: 4}
  field: {op: unary_field, in: [emissions, mask]}
outputs: [field]
loss: {op: crf_nll, node: field, target: labels, mask: mask}
train:
  data: {name: gestures, num: 40}
  epochs: 2
  batch_size: 8
  lr: 0.05
  seed: 0
"""


@pytest.fixture
def toy_field(tmp_path, monkeypatch):
    (tmp_path / "toy_field_plugin.py").write_text(PLUGIN)
    (tmp_path / "toy.yaml").write_text(SPEC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    ops.OPS.pop("unary_field", None)
    sys.modules.pop("toy_field_plugin", None)


def test_a_toy_field_is_checked_compiled_trained_summarised_and_rendered(toy_field, capsys):
    spec, plugin = str(toy_field / "toy.yaml"), ["--plugin", "toy_field_plugin"]
    assert main([*plugin, "check", spec]) == 0
    assert main([*plugin, "summary", spec]) == 0
    assert "total parameters: 40" in capsys.readouterr().out      # the linear's 8 * 4 + 4, the bias's 4
    run = toy_field / "run"
    assert main([*plugin, "train", spec, "--out", str(run)]) == 0
    assert "completed: 2 epochs" in capsys.readouterr().out
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_accuracy", "val_macro_f1"} <= last.keys()      # metrics decoded through the protocol
    assert main([*plugin, "render", spec, "-o", str(toy_field / "toy.dot"), "--view", "arch"]) == 0
    assert "unary field" in (toy_field / "toy.dot").read_text()
    assert main([*plugin, "render", spec, "-o", str(toy_field / "pgm.svg")]) == 0
    model = dagnet.compile(spec)
    value = model(frames=torch.randn(2, 5, 8), mask=torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(value.sum(-1), torch.ones(2, 5))


def test_the_semiring_core_answers_every_query_of_the_toy_field(toy_field):
    sys.path.insert(0, str(toy_field))
    from toy_field_plugin import UnaryField
    field = UnaryField(3).double()
    with torch.no_grad():
        field.bias.normal_()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    for b in range(2):
        where = mask[b].nonzero().flatten()
        labellings = list(itertools.product(range(3), repeat=len(where)))
        scores = torch.stack([sum(x[b, t, y] + field.bias[y] for t, y in zip(where, ys))
                              for ys in labellings])
        log_p = scores.log_softmax(0)
        torch.testing.assert_close(field.log_partition(x, mask)[b], scores.logsumexp(0))
        torch.testing.assert_close(field.entropy(x, mask)[b], -(log_p.exp() * log_p).sum())
        labels, top = field.kbest(x, 4, mask)
        torch.testing.assert_close(top[b], scores.sort(descending=True).values[:4])
        best = labellings[int(scores.argmax())]
        assert labels[b, 0, where].tolist() == list(best) and (labels[b, :, ~mask[b]] == -1).all()
        assert field.decode(x, mask)[0][b, where].tolist() == list(best)
    assert field.sample(x, 5, mask, torch.Generator().manual_seed(0)).shape == (5, 2, 3)
    assert field.nll(x, torch.tensor([[0, 1, 2], [2, -1, 0]]), mask) > 0
    assert isinstance(ops.get("unary_field").build([(3, 3)], {}), ModuleCall)


def test_crf_nll_on_a_field_that_needs_more_inputs_than_the_potentials_is_a_located_error(tmp_path, capsys):
    spec = tmp_path / "dense.yaml"
    spec.write_text("dagnet: 1\ninputs:\n  e: {shape: [3, H, W]}\n  image: {shape: [3, H, W]}\nnodes:\n"
                    "  crf: {op: dense_crf, in: [e, image]}\noutputs: [crf]\n"
                    "loss: {op: crf_nll, node: crf, target: mask}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:8:21: error" in err and "`crf_nll` cannot score `crf`" in err and "cross_entropy" in err


def test_every_key_of_a_loss_is_typed_and_located(tmp_path, capsys):
    spec = tmp_path / "losses.yaml"
    spec.write_text("dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n  a: {op: linear, in: x, out_features: 3}\n"
                    "outputs: [a]\nlosses:\n"
                    "  - {op: cross_entropy, output: a, target: 3, label_smoothing: 2}\n"
                    "  - {op: mse, output: a, target: value, weight: .nan}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:8:36: error: the `target` of a `cross_entropy` loss must be a name, found `3`" in err
    assert f"{spec}:8:47: error: the `label_smoothing` of a `cross_entropy` loss must be a number from 0 to 1" in err
    assert f"{spec}:9:41: error: the `weight` of a `mse` loss must be a finite number" in err
