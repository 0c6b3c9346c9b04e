"""Trees in every deployment format: the portable twins of CKYCRF and the projective DependencyCRF
(dagnet.fields.portable.cky, .dependency) against their fields on ragged batches, and the .pt, .pt2,
.onnx and standalone .py files of small parsers against the compiled model, decoding included. The
non-projective DependencyCRF is refused in one line."""

import subprocess
import sys

import pytest
import torch

import dagnet
from dagnet.emit import standalone_source
from dagnet.export import ExportError, export
from dagnet.fields.cky import CKYCRF
from dagnet.fields.dependency import DependencyCRF
from dagnet.fields.portable import twin
from tests.conftest import SPECS
from tests.test_export_fields import STANDALONE, Deployed, check

SIZES = [(3, 7), (2, 12), (1, 1)]  # (batch, length): none is the example's (2, 64)

FIELDS = {
    "cky": lambda: CKYCRF(3),
    "dependency": lambda: DependencyCRF(),
    "dependency-multiroot": lambda: DependencyCRF(multiroot=True),
    "labelled-dependency": lambda: DependencyCRF(3),
    "labelled-dependency-multiroot": lambda: DependencyCRF(3, multiroot=True),
}


def sentences(B: int, N: int, generator) -> torch.Tensor:
    """A prefix mask (the tree fields take no other): a full row, a word, an empty sentence, then random."""
    lengths = torch.randint(1, N + 1, (B,), generator=generator)
    lengths[:3] = torch.tensor([N, 1, 0])[:B]
    return torch.arange(N) < lengths[:, None]


def scores(field, B: int, N: int, generator) -> torch.Tensor:
    shape = (B, N, N, field.num_labels) if field.num_labels else (B, N, N)
    return 3 * torch.randn(shape, generator=generator, dtype=torch.float64)


def partial(labels: torch.Tensor, generator) -> torch.Tensor:
    """Labels with about half the entries unknown (-1)."""
    return labels.masked_fill(torch.rand(labels.shape, generator=generator) < 0.5, -1)


@pytest.mark.parametrize("name", FIELDS)
def test_the_twin_equals_its_field(name):
    """log Z, marginals, the best tree and its score, and nll (full and partial labels), in float64,
    eager and in TorchScript; with hard constraints that leave some sentences no tree."""
    g = torch.Generator().manual_seed(0)
    field = FIELDS[name]()
    portable = twin(field)
    scripted = torch.jit.script(portable)
    x, mask = scores(field, 6, 9, g), sentences(6, 9, g)
    torch.testing.assert_close(portable.log_partition(x, mask), field.log_partition(x, mask))
    torch.testing.assert_close(portable.marginals(x, mask), field.marginals(x, mask).detach())
    labels, score = field.decode(x, mask)
    for model in (portable, scripted):
        got, got_score = model.decode(x, mask)
        assert torch.equal(got, labels)
        torch.testing.assert_close(got_score, score)
    for given in (labels, partial(labels, g)):
        torch.testing.assert_close(scripted.nll(x, given, mask, "none"), field.nll(x, given, mask, "none"))
    torch.testing.assert_close(portable.nll(x, labels, mask), field.nll(x, labels, mask))

    banned = (torch.rand(x.shape[:3], generator=g) < 0.3).view(x.shape[:3] + (1,) * (x.dim() - 3))
    allowed = (torch.rand(x.shape, generator=g) > 0.3) & ~banned  # some labels, some whole spans or arcs
    logz = field.log_partition(x, mask, allowed)
    assert logz.isinf().any() and logz.isfinite().any()
    torch.testing.assert_close(portable.log_partition(x, mask, allowed), logz)
    labels, score = field.decode(x, mask, allowed)
    got, got_score = portable.decode(x, mask, allowed)
    assert torch.equal(got, labels)
    torch.testing.assert_close(got_score, score)
    some = logz.isfinite()  # the field's marginals of a sentence with no tree are not defined
    torch.testing.assert_close(portable.marginals(x, mask, allowed)[some], field.marginals(x, mask, allowed)[some])


def test_ties_break_as_in_the_field():
    """Equal scores everywhere: every split and head ties, and the twin picks the field's tree."""
    x = torch.zeros(2, 8, 8, 3)
    mask = sentences(2, 8, torch.Generator().manual_seed(0))
    for field in (CKYCRF(3), DependencyCRF(3), DependencyCRF(multiroot=True)):
        y = x if field.num_labels else x[..., 0]
        assert torch.equal(twin(field).decode(y, mask)[0], field.decode(y, mask)[0])


# -- compiled parsers in every format ------------------------------------------------------------

SPEC = """
dagnet: 1
name: {name}
inputs:
  frames: {{shape: [T, 8]}}
  mask: {{shape: [T], dtype: bool}}
nodes:
  left: {{op: linear, in: frames, out_features: 6}}
  right: {{op: linear, in: frames, out_features: 6}}
  weights: {{op: parameter, in: frames, shape: {shape}, init: normal, std: 0.5}}
  scores: {{op: einsum, in: [left, weights, right], equation: "{equation}"}}
  parser: {{op: {op}, in: [scores, mask]{options}}}
outputs: [parser]
"""
PARSERS = {  # span scores [i, j, label]; arc scores [head, modifier(, relation)]
    "spans": {"shape": "[3, 6, 6]", "equation": "id,lde,je->ijl", "op": "cky_crf", "options": ""},
    "arcs": {"shape": "[3, 6, 6]", "equation": "hd,rde,me->hmr", "op": "dependency_crf", "options": ""},
    "multiroot_arcs": {"shape": "[6, 6]", "equation": "hd,de,me->hm", "op": "dependency_crf",
                       "options": ", multiroot: true"},
}


def write_spec(folder, name: str, **changes) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, **{**PARSERS[name], **changes}))
    return str(path)


@pytest.fixture(scope="module", params=PARSERS)
def parser(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    return Deployed(dagnet.compile(write_spec(folder, request.param)).eval()), folder


def inputs(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed + B * T)
    return torch.randn(B, T, 8, generator=g), sentences(B, T, g)


SLOW = pytest.mark.slow  # torch.export traces each pass's loop: 20-50 s a file


@pytest.mark.parametrize("suffix", [".pt", pytest.param(".pt2", marks=SLOW), pytest.param(".onnx", marks=SLOW)])
def test_every_format_equals_the_compiled_model(parser, suffix):
    model, folder = parser
    if suffix != ".pt" and folder.name.startswith("multiroot"):
        pytest.skip("one dependency parser per slow format")
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
            check(run(frames=frames, mask=mask), model(frames=frames, mask=mask))


def test_the_standalone_file_equals_the_compiled_model(parser):
    """Run in a fresh, isolated interpreter (python -I) where dagnet cannot be imported."""
    model, folder = parser
    compiled = model.model
    (folder / "model.py").write_text(standalone_source(compiled))
    cases = [inputs(B, T) for B, T in SIZES]
    with torch.no_grad():
        args = {"class": type(compiled).__name__, "state": compiled.state_dict(), "field": "parser",
                "inputs": [(f, m, model.potentials(frames=f, mask=m)) for f, m in cases]}
        expected = [model(frames=f, mask=m) for f, m in cases]
    torch.save(args, folder / "args.pt")
    subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(folder / "model.py"), str(folder / "args.pt"),
                    str(folder / "out.pt")], check=True, timeout=300)
    for got, want in zip(torch.load(folder / "out.pt"), expected):
        check(got, want)


def test_the_cli_writes_a_parser_to_torchscript(tmp_path):
    from dagnet.cli import main
    target = tmp_path / "model.pt"
    assert main(["compile", write_spec(tmp_path, "arcs"), "-o", str(target)]) == 0
    frames, mask = inputs(2, 5)
    assert torch.jit.load(str(target))(frames, mask).shape == (2, 5, 5, 3)


def test_a_non_projective_parser_is_refused_in_one_line(tmp_path, capsys):
    from dagnet.cli import main
    model = dagnet.compile(SPECS / "biaffine_parser.yaml").eval()
    for suffix in (".pt", ".pt2", ".onnx"):
        with pytest.raises(ExportError, match="non-projective tree's decoding, Chu-Liu-Edmonds") as info:
            export(model, tmp_path / f"m{suffix}")
        assert "\n" not in str(info.value) and not (tmp_path / f"m{suffix}").exists()
    with pytest.raises(ExportError, match="Chu-Liu-Edmonds"):
        standalone_source(model)
    with pytest.raises(ExportError, match="Chu-Liu-Edmonds"):
        twin(DependencyCRF(projective=False))
    spec = write_spec(tmp_path, "arcs", options=", projective: false")
    assert main(["compile", spec, "-o", str(tmp_path / "m.py")]) == 1
    assert "Chu-Liu-Edmonds" in capsys.readouterr().err and not (tmp_path / "m.py").exists()
