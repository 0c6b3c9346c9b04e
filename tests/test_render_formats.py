"""Every format renders, the same spec gives the same bytes, and the CLI works.

svg, png, json, dot and tex must work with graphviz-pure alone (what
``pip install dagnet`` brings); pdf and the system-dot and LaTeX routes are
tested where their tools are installed and skipped cleanly elsewhere.
"""

import argparse
import json
import shutil
import subprocess

import pytest

import dagnet
from dagnet.errors import SpecError
from dagnet.render import RenderError, render
from dagnet.render import layout as layout_mod
from dagnet.render.cli import add_commands
from dagnet.render.layout import find_engine
from dagnet.render.png import dpi_of
from tests.test_render_fixtures import TINY, field_ir

PURE = "graphviz-pure"


@pytest.fixture(scope="module")
def tiny():
    return dagnet.load(TINY)


@pytest.mark.parametrize("fmt", ["dot", "svg", "png", "json", "tex"])
def test_formats_with_graphviz_pure_alone(tiny, tmp_path, fmt):
    path = render(tiny, tmp_path / f"tiny.{fmt}", depth=1, engine=PURE)
    data = path.read_bytes()
    head = {"dot": b"// tiny", "svg": b"<?xml", "png": b"\x89PNG", "json": b"{", "tex": b"%% tiny"}[fmt]
    assert data.startswith(head)
    again = render(tiny, tmp_path / f"again.{fmt}", depth=1, engine=PURE).read_bytes()
    assert again == data                                   # same spec, same bytes
    if fmt == "json":
        lay = json.loads(data)
        assert {"stage.0", "stage.1-2"} <= {o["name"] for o in lay["objects"]}
    if fmt == "svg":
        assert b'id="stage.1&#45;2"' in data and "basic \u00d7 2".encode() in data
    if fmt == "png":
        assert dpi_of(data) == pytest.approx(300, abs=0.01)     # \includegraphics sizes it right
    if fmt == "tex":
        text = data.decode()
        assert "\\begin{tikzpicture}" in text and "$8{\\times}H{\\times}W$" in text
        assert "\\node" in text and ".. controls" in text


def test_model_view_renders(tmp_path):
    ir = field_ir("chain_crf")
    tex = render(ir, tmp_path / "chain.tex", engine=PURE).read_text()
    assert "$y_{1}$" in tex and "$f_\\theta$" in tex and "$x$" in tex
    svg = render(ir, tmp_path / "chain.svg", engine=PURE, bw=True).read_text()
    assert "factor" in svg or "pair" in svg


def test_pdf_needs_no_system_tool_and_is_byte_stable(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(layout_mod.shutil, "which", lambda name: None)   # no dot, LaTeX, rsvg
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    data = render(tiny, tmp_path / "tiny.pdf", depth=1).read_bytes()
    assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
    assert render(tiny, tmp_path / "again.pdf", depth=1).read_bytes() == data
    assert b"/FontFile2" in data and b"+LiberationSerif" in data and b"CreationDate" not in data
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = render(tiny, tmp_path / "dated.pdf", depth=1).read_bytes()
    assert b"/CreationDate (D:20231114221320Z)" in dated


def test_missing_engine_says_what_to_install(monkeypatch):
    monkeypatch.delenv("DAGNET_DOT", raising=False)
    monkeypatch.setattr(layout_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(layout_mod, "_script", lambda name: None)
    with pytest.raises(RenderError, match="pip install graphviz-pure"):
        find_engine()


def test_unknown_suffix(tiny, tmp_path):
    with pytest.raises(RenderError, match=r"\.svg"):
        render(tiny, tmp_path / "tiny.gif")


@pytest.mark.skipif(not shutil.which("dot"), reason="system Graphviz is not installed")
def test_system_dot_renders(tiny, tmp_path):
    for fmt in ("svg", "pdf"):
        assert render(tiny, tmp_path / f"tiny.{fmt}", engine="dot").stat().st_size > 500


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="no pdflatex")
def test_tikz_compiles_standalone_and_input(tiny, tmp_path):
    render(tiny, tmp_path / "fig.tex", depth=1, engine=PURE)
    run = dict(cwd=tmp_path, capture_output=True, timeout=120)
    alone = subprocess.run(["pdflatex", "-interaction=nonstopmode", "fig.tex"], **run)
    assert alone.returncode == 0, alone.stdout[-2000:]
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\\usepackage{tikz}\n"
                                        "\\begin{document}\nText before.\n\n\\input{fig.tex}\n\n"
                                        "Text after.\n\\end{document}\n")
    inside = subprocess.run(["pdflatex", "-interaction=nonstopmode", "paper.tex"], **run)
    assert inside.returncode == 0, inside.stdout[-2000:]
    assert (tmp_path / "paper.pdf").exists()


def parser():
    p = argparse.ArgumentParser(prog="dagnet")
    add_commands(p.add_subparsers())
    return p


def test_cli_render(tmp_path, spec_file, capsys):
    spec = spec_file(TINY)
    out = tmp_path / "fig.svg"
    args = parser().parse_args(["render", str(spec), "-o", str(out), "--depth", "1", "--rankdir", "LR",
                                "--theme", "slides", "--no-params", "--engine", PURE, "--set", "classes=5"])
    assert args.func(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert b"fc, 5" in out.read_bytes()


def test_cli_errors(tmp_path, spec_file, capsys):
    bad = parser().parse_args(["render", str(spec_file(TINY)), "-o", str(tmp_path / "x.bmp")])
    assert bad.func(bad) == 1
    assert "dagnet render: error: cannot tell the format" in capsys.readouterr().err
    broken = spec_file("dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n  a: {op: relu, in: y}\noutputs: [a]\n")
    args = parser().parse_args(["render", str(broken), "-o", str(tmp_path / "x.svg")])
    with pytest.raises(SpecError):                        # the main CLI prints spec errors
        args.func(args)
    with pytest.raises(SystemExit):
        parser().parse_args(["render", "x.yaml"])             # -o is required


def test_auto_engine_falls_back_to_graphviz_pure(monkeypatch):
    real_which = layout_mod.shutil.which
    monkeypatch.setattr(layout_mod.shutil, "which", lambda name: None if name == "dot" else real_which(name))
    monkeypatch.delenv("DAGNET_DOT", raising=False)
    assert find_engine().name == PURE
    assert "pdf" not in find_engine().formats
