"""The TikZ figures compile in a two-column paper without an overfull box.

Each of the issue's figures is written as .tex at its default width, then
``\\input`` into a two-column ``article`` (a column figure in ``figure``, a
page-wide one in ``figure*``, as the file's header says); pdflatex must finish
with no ``Overfull \\hbox`` and no line of text scaled to fit its box. Skipped cleanly where pdflatex (with tikz) is not
installed.
"""

import re
import shutil
import subprocess

import pytest

import dagnet
from dagnet.render import render
from tests.conftest import SPECS
from tests.test_figures_fit import FIGURES

pytestmark = pytest.mark.skipif(not shutil.which("pdflatex"), reason="no pdflatex")


def pdflatex(folder, name: str) -> tuple[int, str]:
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name],
                          cwd=folder, capture_output=True, timeout=300)
    log = (folder / name.replace(".tex", ".log")).read_text(errors="replace")
    return proc.returncode, log


def test_two_column_paper_has_no_overfull_box(tmp_path):
    body = []
    for name, options in FIGURES:
        tex = render(dagnet.load(SPECS / f"{name}.yaml"), tmp_path / f"{name}.tex", **options).read_text()
        width = float(re.search(r"^%% width: ([0-9.]+) bp", tex, re.M).group(1))
        star = "*" if "figure*" in tex.splitlines()[1] else ""
        assert width <= (6.75 if star else 3.25) * 72
        body.append(f"\\begin{{figure{star}}}\\centering\\input{{{name}.tex}}"
                    f"\\caption{{{name.replace('_', ' ')}}}\\end{{figure{star}}}\nSome text.\n")
    (tmp_path / "paper.tex").write_text("\\documentclass[twocolumn]{article}\n\\usepackage{tikz}\n"
                                        "\\begin{document}\nA two-column paper.\n\n" + "\n".join(body)
                                        + "\\end{document}\n")
    code, log = pdflatex(tmp_path, "paper.tex")
    assert code == 0, log[-2000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)[:3]
    # set at its size: no line had to be fitted to its box (Computer Modern, the default fonts)
    assert "dagnet: text fitted" not in log, re.findall(r"dagnet: text fitted.*", log)[:3]
    assert (tmp_path / "paper.pdf").stat().st_size > 10_000


def test_each_figure_compiles_on_its_own(tmp_path):
    for name, options in FIGURES[3:6]:
        render(dagnet.load(SPECS / f"{name}.yaml"), tmp_path / f"{name}.tex", **options)
        code, log = pdflatex(tmp_path, f"{name}.tex")
        assert code == 0, log[-2000:]
        assert "Overfull \\hbox" not in log
