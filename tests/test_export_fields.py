"""Structured nodes and recurrent layers export: .pt2 and ONNX keep batch, length and
mask dynamic and give the compiled model's outputs; the branch-free path they capture
equals the eager fast paths."""

import copy

import numpy as np
import pytest
import torch

import dagnet
from dagnet.export import export
from dagnet.fields import _logspace as ls
from dagnet.fields import chain
from tests.conftest import SPECS, import_file

FIELD_SPECS = ["cnf_tagger", "cnf_gestures", "ldcrf_gestures", "hcrf_gestures"]
SIZES = [(3, 7), (5, 30)]  # (batch, length): neither is the example's (2, 64)


def ragged(B: int, T: int, generator) -> torch.Tensor:
    """A mask with right padding, a full row and a gap."""
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    lengths[0] = T
    mask = torch.arange(T) < lengths[:, None]
    mask[-1, T // 2] = False
    return mask


def inputs(B, T, features=8, seed=0):
    g = torch.Generator().manual_seed(seed + B * T)
    return torch.randn(B, T, features, generator=g), ragged(B, T, g)


@pytest.fixture(scope="module", params=FIELD_SPECS)
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = dagnet.compile(SPECS / f"{request.param}.yaml").eval()
    folder = tmp_path_factory.mktemp(request.param)
    export(model, folder / "m.pt2")
    pytest.importorskip("onnxscript")
    export(model, folder / "m.onnx")
    return model, folder


@pytest.mark.parametrize("B, T", SIZES)
def test_pt2_equals_compiled(exported, B, T):
    model, folder = exported
    program = torch.export.load(str(folder / "m.pt2")).module()
    frames, mask = inputs(B, T)
    with torch.no_grad():
        torch.testing.assert_close(program(frames=frames, mask=mask), model(frames=frames, mask=mask),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B, T", SIZES)
def test_onnx_equals_compiled(exported, B, T):
    ort = pytest.importorskip("onnxruntime")
    model, folder = exported
    session = ort.InferenceSession(str(folder / "m.onnx"))
    frames, mask = inputs(B, T)
    (got,) = session.run(None, {"frames": frames.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(frames=frames, mask=mask).numpy(), atol=1e-5)


def test_torchscript_refuses_fields_clearly(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ValueError, match="export to .pt2 or .onnx instead"):
        export(model, tmp_path / "m.pt")


# -- the branch-free path equals the fast paths ---------------------------------------

def chain_case(B=4, T=9, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, K, generator=g, dtype=torch.float64) * 3
    emissions[1, 2] = float("nan")  # unselected below: must not leak in
    start, end = (torch.randn(K, generator=g, dtype=torch.float64) for _ in range(2))
    transitions = torch.randn(K, K, generator=g, dtype=torch.float64)
    mask = ragged(B, T, g)
    mask[1, 2] = False
    mask[2] = False  # an empty sequence
    return emissions, start, end, transitions, mask


@pytest.mark.parametrize("method", ["auto", "linear-exact", "linear-scaled", "parallel"])
def test_branch_free_equals_fast_paths(method):
    case = chain_case()
    fast_mu = chain.marginals(*case, method=method)
    fast_logz = chain.log_partition(*case, method=method)
    with ls.branch_free():
        mu = chain.marginals(*case, method=method)
        logz = chain.log_partition(*case, method=method)
    torch.testing.assert_close(mu, fast_mu, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(logz, fast_logz, atol=1e-12, rtol=1e-12)


def test_branch_free_without_mask_and_with_constraints():
    emissions, start, end, transitions, _ = chain_case(seed=1)
    emissions = emissions.nan_to_num()
    transitions[0, 1] = float("-inf")  # a constraint
    fast = chain.marginals(emissions, start, end, transitions)
    with ls.branch_free():
        torch.testing.assert_close(chain.marginals(emissions, start, end, transitions), fast,
                                   atol=1e-12, rtol=1e-12)


def test_branch_free_latent_models():
    from dagnet.fields.latent import HiddenCRF, LatentDynamicCRF
    torch.manual_seed(0)
    emissions, *_, mask = chain_case(K=6, seed=2)
    emissions = emissions.nan_to_num()
    for field in (HiddenCRF(3, 6).double(), LatentDynamicCRF(3, 2).double()):
        fast = field.marginals(emissions, mask)
        with ls.branch_free():
            torch.testing.assert_close(field.marginals(emissions, mask), fast, atol=1e-12, rtol=1e-12)


def test_pack_order_is_the_stable_sort():
    mask = ragged(6, 11, torch.Generator().manual_seed(3))
    mask[2, :4] = False  # left padding
    expected = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    assert torch.equal(ls.pack_order(mask), expected)


# -- recurrent layers and attention: TorchScript, torch.export, ONNX, standalone .py ----------------

RECURRENT = """
dagnet: 1
name: recurrent
inputs:
  x: {shape: [T, 6]}
nodes:
  lstm: {op: lstm, in: x, hidden_size: 5, num_layers: 2, bidirectional: true}
  gru: {op: gru, in: lstm, hidden_size: 4, bidirectional: true}
  attended: {op: multihead_attention, in: [gru, gru, gru], num_heads: 2}
  out: {op: linear, in: attended, out_features: 3}
outputs: [out]
"""


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory):
    spec = tmp_path_factory.mktemp("recurrent") / "recurrent.yaml"
    spec.write_text(RECURRENT)
    torch.manual_seed(0)
    return dagnet.compile(spec).eval()


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_recurrent_and_attention_export(tmp_path, recurrent, suffix):
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    export(recurrent, tmp_path / f"m{suffix}")
    for B, T in SIZES:
        x = torch.randn(B, T, 6)
        with torch.no_grad():
            expected = recurrent(x=x)
            if suffix == ".pt":
                got = torch.jit.load(str(tmp_path / "m.pt"))(x)
            elif suffix == ".pt2":
                got = torch.export.load(str(tmp_path / "m.pt2")).module()(x=x)
            else:
                session = ort.InferenceSession(str(tmp_path / "m.onnx"))
                got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_recurrent_scan_equals_fused(recurrent):
    x = torch.randn(3, 13, 6, dtype=torch.float64)
    for layer in (recurrent.lstm, recurrent.gru):
        layer = copy.deepcopy(layer).double()
        torch.testing.assert_close(layer.scanned(x), layer.fused(x), atol=1e-12, rtol=1e-12)
        x = layer.fused(x)


def test_recurrent_and_attention_standalone_file(tmp_path, recurrent):
    from dagnet.emit import standalone_source
    path = tmp_path / "recurrent_model.py"
    path.write_text(standalone_source(recurrent))
    standalone = getattr(import_file(path, "recurrent_model"), type(recurrent).__name__)().eval()
    standalone.load_state_dict(recurrent.state_dict())
    x = torch.randn(3, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), recurrent(x=x))


def test_the_cli_refuses_a_crf_to_torchscript_in_one_line_and_writes_nothing(tmp_path, capsys):
    from dagnet.cli import main
    target = tmp_path / "model.pt"
    assert main(["compile", str(SPECS / "cnf_tagger.yaml"), "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TorchScript cannot compile `crf`" in err and ".pt2 or .onnx" in err
    assert not target.exists()
