"""Hostile and mutated specs never raise anything but a located SpecError, and never hang."""

import json
import random
import re

import pytest

import dagnet
from dagnet.errors import SpecError
from tests.fuzz_specs import BAD_BYTES, BOMS, HOSTILE_NAMES, PAYLOADS, check_one, mutate, run

BILLION_LAUGHS = "dagnet: 1\n" + "\n".join(
    ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, 10)]
) + "\ninputs: {x: {shape: [1]}}\nnodes: {a: {op: relu, in: x}}\noutputs: [a]\ntrain: {data: *l9}\n"

ATTACKS = {
    "python object": "dagnet: 1\nname: !!python/object/apply:os.system ['touch /tmp/dagnet-pwned']\n",
    "python name": "dagnet: 1\nname: !!python/name:os.system\n",
    "billion laughs": BILLION_LAUGHS,
    "expression escape": ("dagnet: 1\nparams: {w: \"__import__('os').system('touch /tmp/dagnet-pwned')\"}\n"
                          "inputs: {x: {shape: [3]}}\nnodes: {a: {op: linear, in: x, out_features: w}}\n"
                          "outputs: [a]\n"),
    "dunder walk": ("dagnet: 1\nparams: {w: ().__class__.__bases__[0].__subclasses__()}\n"
                    "inputs: {x: {shape: [3]}}\nnodes: {a: {op: linear, in: x, out_features: w}}\n"
                    "outputs: [a]\n"),
    "huge repeat": ("dagnet: 1\ninputs: {x: {shape: [3]}}\n"
                    "nodes: {a: {op: relu, in: x, repeat: 99999999}}\noutputs: [a]\n"),
    "deep nesting": "dagnet: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_located_errors_and_run_nothing(name, tmp_path):
    marker = tmp_path / "nothing-ran"
    text = ATTACKS[name].replace("/tmp/dagnet-pwned", str(marker))
    assert check_one(text, seconds=20) is None
    with pytest.raises(SpecError):
        dagnet.load(text)
    assert not marker.exists()


def test_mutated_example_specs():
    failures = run(cases=300, seed=12345)
    assert not failures, failures[0]


def test_mutated_dsl_specs():
    failures = run(cases=200, seed=54321, suffix=".dag")
    assert not failures, failures[0]


def test_a_pickle_payload_in_a_checkpoint_runs_nothing(tmp_path):
    import os
    import pickle

    from dagnet.train.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.pt"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(Exception):
        load_checkpoint(path)                   # torch.load(weights_only=True) refuses the global
    import torch
    torch.save({"model": Payload()}, tmp_path / "best.pt")
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "best.pt")
    assert not marker.exists()


TINY = "dagnet: 1\ninputs: {x: {shape: [3]}}\nnodes: {a: {op: relu, in: x}}\noutputs: [a]\n"
TINY_DAG = "input x[3]\na = x -> relu\noutput a\n"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("suffix, text", [(".yaml", TINY), (".dag", TINY_DAG)])
def test_hostile_names_are_checked_or_refused(name, suffix, text):
    for old in ("a", "x"):              # a node, then an input
        renamed = re.sub(rf"\b{old}\b", lambda _: name, text)
        assert check_one(renamed, suffix=suffix) is None
        assert check_one(renamed.encode("utf-8", "surrogatepass"), suffix=suffix) is None


@pytest.mark.parametrize("bad", BAD_BYTES + BOMS)
@pytest.mark.parametrize("suffix, text", [(".yaml", TINY), (".dag", TINY_DAG)])
def test_bad_bytes_anywhere_are_located_errors(bad, suffix, text):
    data = text.encode()
    for pos in (0, 1, data.index(b"\n") + 1, len(data) // 2, len(data)):
        assert check_one(data[:pos] + bad + data[pos:], suffix=suffix) is None


def test_mutations_include_hostile_names_and_bytes():
    rng = random.Random(0)
    specs = [mutate(TINY, rng) for _ in range(400)]
    assert sum(isinstance(s, bytes) for s in specs) > 20
    assert any(isinstance(s, str) and any(n in s for n in HOSTILE_NAMES if len(n) > 3) for s in specs)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_names_are_refused_before_anything_is_built(payload):
    text = f"dagnet: 1\ninputs:\n  x: {{shape: [3]}}\nnodes:\n  {json.dumps(payload)}: {{op: relu, in: x}}\n" \
           f"outputs: [{json.dumps(payload)}]\n"
    assert check_one(text, build=True) is None
    with pytest.raises(SpecError, match="error: node .*\n  hint: rename it"):
        dagnet.load(text)


def test_the_fuzzer_sees_a_payload_that_runs(monkeypatch):
    """With the naming rule and the emitter's guard switched off, fx runs the first payload; the fuzzer says so."""
    monkeypatch.setattr("dagnet.ir.check_names", lambda spec, errors: None)
    monkeypatch.setattr("dagnet.emit._checked_path", lambda path: path)
    name = json.dumps(PAYLOADS[0])
    text = f"dagnet: 1\ninputs:\n  x: {{shape: [3]}}\nnodes:\n  {name}: {{op: linear, in: x, out_features: 2}}\n" \
           f"outputs: [{name}]\n"
    assert check_one(text, build=True) == "a name in the spec ran code"
