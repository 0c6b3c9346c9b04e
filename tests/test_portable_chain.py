"""The portable twins of the chain-family fields (dagnet.fields.portable.chain): the same
state, and the same answers as the real fields in float64, eagerly and in TorchScript,
on ragged masks, constraints, extreme scores and the smallest sizes."""

import ast
import copy
from pathlib import Path

import pytest
import torch

from dagnet.export import ExportError
from dagnet.fields import ChainCRF, HiddenCRF, LatentDynamicCRF, bio_constraints
from dagnet.fields.portable import TWINS, portable, source_files, twin
from dagnet.fields.portable import chain as pc
from dagnet.fields.protocol import Field

TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
SIZES = [(4, 9), (1, 1), (3, 1), (1, 6), (5, 20)]  # (batch, length)


def case(B, T, K, seed, scale=3.0):
    """Emissions (float64) with NaN where the mask is off, and a mask with a full row,
    right padding, a gap, left padding and (B > 2) an empty sequence."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, K, generator=g, dtype=torch.float64) * scale
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T) < lengths[:, None]
    if T > 2:
        mask[-1, T // 2] = False
        mask[min(1, B - 1), 0] = False
    if B > 2:
        mask[2] = False
    x = x.masked_fill(~mask[..., None], float("nan"))
    labels = torch.randint(-1, K, (B, T), generator=g)
    return x, mask, labels, g


def extreme(x, g):
    """±1e4 scores at random places (and a -inf tag)."""
    spots = torch.rand(x.shape, generator=g, dtype=torch.float64)
    x = torch.where(spots > 0.8, torch.full_like(x, 1e4), x)
    x = torch.where(spots < 0.2, torch.full_like(x, -1e4), x)
    return x.masked_fill(spots > 0.97, float("-inf"))


def chain_fields():
    torch.manual_seed(0)
    plain = ChainCRF(len(TAGS)).double()
    constrained = ChainCRF(len(TAGS), bio_constraints(TAGS)).double()
    with torch.no_grad():  # scores of a trained size, not the tiny initial ones
        for crf in (plain, constrained):
            for p in crf.parameters():
                p.normal_(0, 2)
    return {"plain": plain, "constrained": constrained}


def close(a, b, atol=1e-9):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-9)


@pytest.mark.parametrize("B, T", SIZES)
@pytest.mark.parametrize("kind", ["plain", "constrained"])
@pytest.mark.parametrize("scores", ["random", "extreme"])
def test_chain_twin_equals_the_field(B, T, kind, scores):
    field = chain_fields()[kind]
    tw = twin(field)
    x, mask, labels, g = case(B, T, len(TAGS), seed=B * 100 + T)
    if scores == "extreme":
        x = extreme(x, g)
    atol = 1e-9 if scores == "random" else 1e-6  # sums of ±1e4 terms: 1e-12 relative
    close(tw.marginals(x, mask), field.marginals(x, mask), atol)
    close(tw.log_partition(x, mask), field.log_partition(x, mask), atol)
    tags, score = tw.decode(x, mask)
    expected_tags, expected_score = field.decode(x, mask)
    assert torch.equal(tags, expected_tags)
    close(score, expected_score.detach(), atol)
    for reduction in ("none", "sum"):
        close(tw.nll(x, labels, mask, reduction), field.nll(x, labels, mask, reduction), atol)
    close(tw(x, labels, mask), field(x, labels, mask), atol)


def test_chain_twin_without_a_mask_and_with_allowed_tags():
    field = chain_fields()["plain"]
    tw = twin(field)
    x, _, labels, _ = case(3, 8, len(TAGS), seed=5)
    x = x.nan_to_num()
    allowed = labels.clamp_min(0)[..., None] != torch.arange(len(TAGS))
    close(tw.marginals(x), field.marginals(x))
    close(tw.marginals(x, allowed=allowed), field.marginals(x, allowed=allowed))
    close(tw.log_partition(x, allowed=allowed), field.log_partition(x, allowed=allowed))
    assert torch.equal(tw.decode(x)[0], field.decode(x)[0])


def test_ties_decode_to_the_lowest_tag_as_in_the_field():
    field = ChainCRF(3).double()
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
    x = torch.zeros(2, 5, 3, dtype=torch.float64)
    assert torch.equal(twin(field).decode(x)[0], field.decode(x)[0])


def test_the_fast_path_is_proven_exact_or_left():
    """Tame scores run the rescaled recursion; ±1e4 and near-impossible states under
    constraints are caught by the check (and the answers above agree either way)."""
    field = chain_fields()["plain"]
    x, mask, _, g = case(4, 30, len(TAGS), seed=1)

    def risky(x, trans):
        rows, lengths, _, _, factors, _, wide = pc._chain_prepare(x.unsqueeze(0), mask[:, :x.shape[1]], False)
        start = field.start.detach()[None]
        return bool(pc._chain_scaled(factors, lengths, start, trans[None])[2] | wide)

    trans = field.transitions.detach()
    assert not risky(x, trans)
    assert not risky(x * 8, trans)  # scores spread over 100 nats and more: still exact in float64
    assert risky(extreme(x, g), trans)
    # tag 1 only follows itself and grows ever less likely, never impossible: after a few
    # steps its messages are below e^-249 of the others', which the check sees
    only_itself = trans.clone()
    only_itself[:, 1] = float("-inf")
    only_itself[1, 1] = 0.0
    drifting = x.nan_to_num() - 40.0 * (torch.arange(len(TAGS)) == 1)
    assert risky(drifting, only_itself) and not risky(drifting[:, :3], only_itself)


def fading(T=48, K=5):
    """A constrained chain the rescaled recursion alone would get wrong: tag 1 only follows
    itself, and its emissions fall 40 nats behind the others' per step, then gain 50 per
    step. Mid-sequence its messages drop below float64's range (and float32 scores
    are within 80 nats at every position, so only the messages show it); at the end
    it is the likeliest tag."""
    field = ChainCRF(K, torch.ones(K, K, dtype=torch.bool).index_fill(1, torch.tensor([1]), False)
                     .index_fill(0, torch.tensor([1]), True)).double()
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
    x = torch.zeros(1, T, K, dtype=torch.float64)
    x[0, :, 1] = torch.cat([torch.full((T // 2,), -40.0), torch.full((T - T // 2,), 50.0)])
    return field, x


def test_a_state_fading_under_constraints_takes_the_exact_path():
    field, x = fading()
    expected = field.marginals(x)
    assert expected[0, -1, 1] > 0.99
    close(twin(field).marginals(x), expected)
    close(twin(field).log_partition(x), field.log_partition(x))


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_exported_twins_take_the_exact_path_too(tmp_path, suffix):
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    field, x = fading()
    module = torch.nn.Module()
    module.crf = twin(field.float())
    module.forward = lambda x: module.crf.marginals(x)
    example = torch.zeros(2, 10, 5)
    dynamic = ({0: torch.export.Dim.AUTO(min=1), 1: torch.export.Dim.AUTO(min=1)},)
    if suffix == ".pt2":
        got = torch.export.export(module, (example,), dynamic_shapes=dynamic).module()(x.float())
    else:
        path = tmp_path / "m.onnx"
        torch.onnx.export(module, (example,), dynamic_shapes=dynamic, dynamo=True, verbose=False).save(str(path))
        session = ort.InferenceSession(str(path))
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.float().numpy()})[0])
    close(got.double(), field.marginals(x), 1e-5)


def test_hidden_twin_equals_the_field():
    torch.manual_seed(0)
    field = HiddenCRF(3, 6).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0, 2)
    tw = twin(field)
    for B, T in SIZES:
        x, mask, _, g = case(B, T, 6, seed=T)
        labels = torch.randint(-1, 3, (B,), generator=g)
        for scores in (x, extreme(x, g)):
            close(tw.log_prob(scores, mask), field.log_prob(scores, mask), 1e-6)
            close(tw.marginals(scores, mask), field.marginals(scores, mask), 1e-6)
            close(tw.log_partition(scores, mask), field.log_partition(scores, mask), 1e-6)
            labels_got, score = tw.decode(scores, mask)
            labels_expected, score_expected = field.decode(scores, mask)
            assert torch.equal(labels_got, labels_expected)
            close(score, score_expected, 1e-6)
            close(tw.nll(scores, labels, mask, "none"), field.nll(scores, labels, mask, "none"), 1e-6)


def test_latent_dynamic_twin_equals_the_field():
    torch.manual_seed(0)
    field = LatentDynamicCRF(3, 2).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0, 2)
    tw = twin(field)
    for B, T in SIZES:
        x, mask, _, g = case(B, T, 6, seed=T + 7)
        labels = torch.randint(-1, 3, (B, T), generator=g)
        for scores in (x, extreme(x, g)):
            close(tw.marginals(scores, mask), field.marginals(scores, mask), 1e-6)
            close(tw.log_partition(scores, mask), field.log_partition(scores, mask), 1e-6)
            for method in ("marginal", "viterbi"):
                got, expected = tw.decode(scores, mask, method), field.decode(scores, mask, method)
                assert torch.equal(got[0], expected[0])
                close(got[1], expected[1], 1e-6)
            close(tw.nll(scores, labels, mask, "none"), field.nll(scores, labels, mask, "none"), 1e-6)


STATES = [  # a field, and its twin built as a standalone file builds it
    (lambda: ChainCRF(5), lambda: pc.ChainCRF(5)),
    (lambda: ChainCRF(5, bio_constraints(TAGS)), lambda: pc.ChainCRF(5, bio_constraints(TAGS))),
    (lambda: HiddenCRF(3, 4), lambda: pc.HiddenCRF(3, 4)),
    (lambda: LatentDynamicCRF(3, 2), lambda: pc.LatentDynamicCRF(3, 2)),
]


@pytest.mark.parametrize("make_field, make_twin", STATES)
def test_twins_have_the_fields_state(make_field, make_twin):
    field = make_field()
    tw = twin(field)
    assert type(tw).__name__ == type(field).__name__
    assert list(tw.state_dict()) == list(field.state_dict())
    for key, value in field.state_dict().items():
        assert torch.equal(tw.state_dict()[key], value) and tw.state_dict()[key].dtype == value.dtype
    make_twin().load_state_dict(field.state_dict())  # strict: the names match one to one


def test_twins_compile_with_torchscript():
    fields = chain_fields()
    x, mask, labels, g = case(4, 11, len(TAGS), seed=3)
    wild = extreme(x, g)
    for field in fields.values():
        scripted = torch.jit.script(twin(field))
        close(scripted.marginals(x, mask), field.marginals(x, mask))
        close(scripted.log_partition(x, mask), field.log_partition(x, mask))
        assert torch.equal(scripted.decode(x, mask)[0], field.decode(x, mask)[0])
        close(scripted.nll(x, labels, mask, "none"), field.nll(x, labels, mask, "none"))
        close(scripted.marginals(wild, mask), field.marginals(wild, mask), 1e-6)
    hidden = HiddenCRF(3, len(TAGS)).double()
    close(torch.jit.script(twin(hidden)).log_prob(x, mask), hidden.log_prob(x, mask))
    latent = LatentDynamicCRF(len(TAGS), 1).double()
    assert torch.equal(torch.jit.script(twin(latent)).decode(x, mask)[0], latent.decode(x, mask)[0])


def test_float32_twins_match_float64_to_float32_rounding():
    field = chain_fields()["plain"]
    x, mask, _, _ = case(4, 50, len(TAGS), seed=9)
    expected = field.marginals(x, mask)
    got = twin(copy.deepcopy(field).float()).marginals(x.float(), mask)
    assert got.dtype == torch.float32
    close(got.double(), expected, 1e-6)


def test_portable_swaps_fields_in_a_copy():
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), ChainCRF(5))
    swapped = portable(model)
    assert isinstance(model[1], ChainCRF) and isinstance(swapped[1], pc.ChainCRF)
    assert source_files(model) == [Path(pc.__file__)]
    plain = torch.nn.Linear(2, 2)
    assert portable(plain) is plain and source_files(plain) == []


def test_a_field_without_a_twin_is_one_line():
    class Lonely(Field):
        pass

    with pytest.raises(ExportError) as info:
        portable(torch.nn.Sequential(Lonely()))
    assert "\n" not in str(info.value) and "Lonely" in str(info.value) and "ChainCRF" in str(info.value)


def test_twin_files_import_only_torch_and_prefix_their_names():
    """A standalone model file holds each twin file verbatim, one after another."""
    for module, _ in TWINS.values():
        path = Path(pc.__file__).with_name(f"{module}.py")
        tree = ast.parse(path.read_text())
        for stmt in tree.body:
            if isinstance(stmt, ast.Import):
                assert all(a.name in ("math", "torch", "torch.nn", "torch.nn.functional") for a in stmt.names), \
                    ast.dump(stmt)
            elif isinstance(stmt, ast.ImportFrom):
                assert stmt.module in ("typing", "torch"), ast.dump(stmt)
            elif isinstance(stmt, (ast.FunctionDef, ast.Assign)):
                names = [stmt.name] if isinstance(stmt, ast.FunctionDef) else [t.id for t in stmt.targets]
                assert all(n.startswith(f"_{module}_") or n.startswith(f"_{module.upper()}_") for n in names), names
            elif isinstance(stmt, ast.ClassDef):
                assert stmt.name in {name for m, name in TWINS.values() if m == module}, stmt.name


def test_layout_is_the_stable_sort():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(6, 11, generator=g) > 0.4
    mask[2, :4] = False
    lengths, order, slot = pc._chain_layout(mask)
    assert torch.equal(order, torch.argsort((~mask).to(torch.uint8), dim=1, stable=True))
    assert torch.equal(order.gather(1, slot), torch.arange(11).expand(6, 11))
    assert torch.equal(lengths, mask.sum(1))
