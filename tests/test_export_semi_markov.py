"""The semi-Markov CRF's portable twin (dagnet.fields.portable.semi_markov): the real field's
answers in float64, eagerly and in TorchScript, for both input modes and both label kinds; and
specs/semimarkov_gestures.yaml in every deployment format, giving the compiled model's marginals
and decoded frame labels at sizes other than the example's, on ragged masks."""
import subprocess
import sys

import pytest
import torch

import dagnet
from dagnet.emit import standalone_source
from dagnet.export import export
from dagnet.fields.portable import twin
from dagnet.fields.semi_markov import SemiMarkovCRF
from tests.conftest import SPECS
from tests.test_export_fields import STANDALONE, Deployed, check

K, L = 3, 4
SIZES = [(3, 7), (4, 23), (1, 1)]  # (batch, length): none is the example's (2, 64)


def prefix_mask(B: int, T: int, g: torch.Generator) -> torch.Tensor:
    """Ragged lengths: a full row, an empty one and a single position when B > 2."""
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    if B > 2:
        lengths[1:3] = torch.tensor([0, 1])
    return torch.arange(T) < lengths[:, None]


def field(inputs: str, targets: str, constrained: bool = False, seed: int = 0) -> SemiMarkovCRF:
    """A float64 field with random parameters (zeros would hide a swapped start and end)."""
    torch.manual_seed(seed)
    allowed = ~torch.eye(K, dtype=torch.bool) if constrained else None  # no label twice in a row
    crf = SemiMarkovCRF(K, L, inputs, targets, allowed).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def case(crf: SemiMarkovCRF, B: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, K) if crf.inputs == "emissions" else (B, T, L, K)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    mask = prefix_mask(B, T, g)
    labels = crf.decode(x + torch.randn(shape, generator=g, dtype=torch.float64), mask)[0]  # valid, not the best
    labels[:, ::3] = -1  # partial labels: summed out
    return x, mask, labels


CONFIGS = [("emissions", "frames", False), ("emissions", "segments", True),
           ("segments", "frames", True), ("segments", "segments", False)]


@pytest.mark.parametrize("inputs,targets,constrained", CONFIGS)
def test_the_twin_answers_as_the_field(inputs, targets, constrained):
    crf = field(inputs, targets, constrained)
    eager = twin(crf)
    scripted = torch.jit.script(eager)
    assert eager.state_dict().keys() == crf.state_dict().keys()
    for seed, (B, T) in enumerate([(5, 11), (1, 1), (3, 2)]):
        x, mask, labels = case(crf, B, T, seed)
        allowed = torch.rand(x.shape[:2] + (K,), generator=torch.Generator().manual_seed(seed)) > 0.2
        expected = {"log Z": crf.log_partition(x, mask), "log Z allowed": crf.log_partition(x, mask, allowed),
                    "marginals": crf.marginals(x, mask), "nll": crf.nll(x, labels, mask, "none"),
                    "decode": crf.decode(x, mask), "decode allowed": crf.decode(x, mask, allowed)}
        for model in (eager, scripted):
            got = {"log Z": model.log_partition(x, mask), "log Z allowed": model.log_partition(x, mask, allowed),
                   "marginals": model.marginals(x, mask), "nll": model.nll(x, labels, mask, "none"),
                   "decode": model.decode(x, mask), "decode allowed": model.decode(x, mask, allowed)}
            for name in ("log Z", "log Z allowed", "marginals", "nll"):
                torch.testing.assert_close(got[name], expected[name].detach(), atol=1e-10, rtol=1e-10, msg=name)
            for name in ("decode", "decode allowed"):
                assert torch.equal(got[name][0], expected[name][0]), name
                torch.testing.assert_close(got[name][1], expected[name][1], atol=1e-10, rtol=1e-10)
            assert torch.isfinite(got["nll"]).all() and (got["nll"] >= -1e-9).all()


def test_the_twin_ignores_what_the_padding_holds():
    crf = field("emissions", "segments")
    x, mask, _ = case(crf, 4, 9, 0)
    noisy = x.masked_fill(~mask.unsqueeze(-1), float("nan"))
    model = twin(crf)
    torch.testing.assert_close(model.marginals(noisy, mask), model.marginals(x, mask))
    assert torch.equal(model.decode(noisy, mask)[0], crf.decode(x, mask)[0])


# -- the gesture segmenter in every format ------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    torch.manual_seed(0)
    model = dagnet.compile(SPECS / "semimarkov_gestures.yaml").eval()
    with torch.no_grad():  # scores of a trained model's size, so that decoding finds several segments
        for p in model.segmenter.parameters():
            p.normal_()
    return Deployed(model), tmp_path_factory.mktemp("semimarkov")


def inputs(B: int, T: int):
    g = torch.Generator().manual_seed(B * T)
    return torch.randn(B, T, 8, generator=g) * 3, prefix_mask(B, T, g)


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_every_format_equals_the_compiled_model(deployed, suffix):
    model, folder = deployed
    path = folder / f"m{suffix}"
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    export(model, path)
    if suffix == ".pt":
        run = torch.jit.load(str(path))
    elif suffix == ".pt2":
        run = torch.export.load(str(path)).module()
    else:
        session = ort.InferenceSession(str(path))

        def run(frames, mask):
            value, labels = session.run(None, {"frames": frames.numpy(), "mask": mask.numpy()})
            return {"value": torch.from_numpy(value), "decode": torch.from_numpy(labels)}
    for B, T in SIZES:
        frames, mask = inputs(B, T)
        with torch.no_grad():
            expected = model(frames=frames, mask=mask)
            check(run(frames=frames, mask=mask), expected)
        if T > 1:
            assert expected["decode"][0].unique().numel() > 1  # a segmentation, not one segment


def test_the_standalone_file_equals_the_compiled_model(deployed):
    """Run in a fresh, isolated interpreter (python -I) where dagnet cannot be imported."""
    model, folder = deployed
    compiled = model.model
    (folder / "model.py").write_text(standalone_source(compiled))
    cases = [inputs(B, T) for B, T in SIZES]
    with torch.no_grad():
        args = {"class": type(compiled).__name__, "state": compiled.state_dict(), "field": "segmenter",
                "inputs": [(f, m, model.potentials(frames=f, mask=m)) for f, m in cases]}
        expected = [model(frames=f, mask=m) for f, m in cases]
    torch.save(args, folder / "args.pt")
    subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(folder / "model.py"), str(folder / "args.pt"),
                    str(folder / "out.pt")], check=True, timeout=300)
    for got, want in zip(torch.load(folder / "out.pt"), expected):
        check(got, want)


def test_the_cli_writes_the_gesture_segmenter(tmp_path):
    from dagnet.cli import main
    target = tmp_path / "model.pt"
    assert main(["compile", str(SPECS / "semimarkov_gestures.yaml"), "-o", str(target)]) == 0
    frames, mask = inputs(2, 5)
    marginals = torch.jit.load(str(target))(frames, mask)
    assert marginals.shape == (2, 5, 4)
    torch.testing.assert_close(marginals.sum(-1), mask.float())
