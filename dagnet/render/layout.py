"""Layout engines, run as subprocesses: Graphviz's ``dot`` when installed, else ``graphviz-pure``.

graphviz-pure (a PyPI wheel, a self-contained port of Graphviz's dot) comes with
``pip install dagnet``, so rendering works without a system Graphviz; it writes
svg, png and json but not pdf. Converters for PDF are found here too: system
``dot -Tpdf``, LaTeX (for the TikZ route) and ``rsvg-convert``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import re
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 120           # seconds; an expanded densenet121 lays out in a few

INSTALL_GRAPHVIZ = ("install Graphviz (`apt-get install graphviz`, `brew install graphviz` or "
                    "`conda install -c conda-forge graphviz`) or the layout engine that dagnet "
                    "depends on (`pip install graphviz-pure`)")
INSTALL_PDF = ("PDF needs one of: Graphviz's own dot (`apt-get install graphviz`, "
               "`brew install graphviz`), a LaTeX with TikZ for the TikZ route (`apt-get install "
               "texlive-latex-base texlive-pictures`, or TeX Live / MiKTeX), or rsvg-convert "
               "(`apt-get install librsvg2-bin`, `brew install librsvg`); or write .svg or .tex instead")


# The drawing state xdot's operations set, as the PDF and TikZ writers replay a laid-out figure.
XDOT_STATE = {"pen": "#000000", "fill": "#000000", "width": 1.0, "dash": None, "size": 14.0,
              "bold": False, "italic": False, "sub": False, "sup": False}


def set_state(state: dict, op: dict, style) -> bool:
    """Apply one xdot operation that changes the drawing state (pen and fill colour, line style
    through ``style(state, name)``, font, font flags) to ``state``; False for an operation that
    draws, which is the caller's."""
    kind = op["op"]
    if kind == "c":
        state["pen"] = op["color"]
    elif kind == "C":
        state["fill"] = op["color"]
    elif kind == "S":
        style(state, op["style"])
    elif kind == "F":
        state["size"] = float(op["size"])
        state["bold"] = "Bold" in op["face"]
        state["italic"] = "Italic" in op["face"]
    elif kind == "t":
        flags = int(op["fontchar"])
        state.update(bold=bool(flags & 1), italic=bool(flags & 2), sup=bool(flags & 8), sub=bool(flags & 16))
    else:
        return False
    return True


class RenderError(Exception):
    """A figure could not be written: a tool is missing or failed. Says what to install."""


@dataclass(frozen=True)
class Engine:
    name: str           # "dot" or "graphviz-pure"
    path: str

    @property
    def formats(self) -> tuple[str, ...]:
        if self.name == "graphviz-pure":
            return ("svg", "png", "json", "dot")
        return ("svg", "png", "pdf", "json", "dot")


def _script(name: str) -> str | None:
    """A console script: on PATH, or beside this Python (a venv that is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        for candidate in (folder / name, folder / (name + ".exe")):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def find_engine(prefer: str = "auto") -> Engine:
    """``auto``: system dot when on PATH, else graphviz-pure; or the one asked for."""
    if prefer not in ("auto", "dot", "graphviz-pure"):
        raise RenderError(f"unknown layout engine `{prefer}`; choose auto, dot or graphviz-pure")
    names = ["dot", "graphviz-pure"] if prefer == "auto" else [prefer]
    for name in names:
        path = os.environ.get("DAGNET_DOT") if name == "dot" and os.environ.get("DAGNET_DOT") else None
        path = path or (shutil.which(name) if name == "dot" else _script(name))
        if path:
            return Engine(name, path)
    raise RenderError(f"no layout engine found: {INSTALL_GRAPHVIZ}")


def reproducible_env() -> dict:
    """No dates in the output: tools that stamp one take it from SOURCE_DATE_EPOCH."""
    env = dict(os.environ)
    env.update(SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
    return env


def run_engine(engine: Engine, dot_text: str, fmt: str, pinned: bool = False,
               extra: tuple = ()) -> bytes:
    """Lay out ``dot_text`` and return the output of ``-T<fmt>``."""
    if fmt not in engine.formats:
        raise RenderError(f"{engine.name} cannot write {fmt}")
    cmd = [engine.path, f"-T{fmt}", *extra]
    if pinned:
        cmd[1:1] = ["-Kneato", "-n2"]
    env = reproducible_env()
    with tempfile.TemporaryDirectory(prefix="dagnet-fc-") as tmp:
        if engine.name == "dot":             # system Graphviz draws with the bundled faces
            from dagnet.render.typeface import fontconfig_file
            env["FONTCONFIG_FILE"] = str(fontconfig_file(Path(tmp)))
        try:
            proc = subprocess.run(cmd, input=dot_text.encode(), capture_output=True, timeout=TIMEOUT,
                                  env=env)
        except subprocess.TimeoutExpired:
            raise RenderError(f"{engine.name} took longer than {TIMEOUT} s to lay out the graph; "
                              "try a smaller --depth") from None
        except OSError as exc:
            raise RenderError(f"could not run {engine.path}: {exc}") from None
    if proc.returncode != 0:
        err = " ".join(proc.stderr.decode(errors="replace").split())
        raise RenderError(f"{engine.name} failed (exit {proc.returncode}): {err[:300]}")
    return fixed_dates(proc.stdout) if fmt == "pdf" else proc.stdout


DATE = re.compile(rb"/(CreationDate|ModDate) \(D:[0-9]{14}[^)]*\)")


def fixed_dates(pdf: bytes) -> bytes:
    """Cairo stamps the time of the run: write SOURCE_DATE_EPOCH (or 1970) in the same bytes."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "0").strip()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(epoch) if epoch.isdigit() else 0)).encode()

    def same_length(m):
        old = m.group(0)
        new = b"/" + m.group(1) + b" (D:" + stamp + b"Z"
        return new + b" " * (len(old) - len(new) - 1) + b")" if len(new) < len(old) else old
    return DATE.sub(same_length, pdf)


def layout_json(engine: Engine, dot_text: str, pinned: bool = False) -> dict:
    """Graphviz's own layout: positions, sizes and drawing operations (xdot) of everything."""
    return json.loads(run_engine(engine, dot_text, "json", pinned))


def find_latex() -> str | None:
    """A LaTeX that can compile the standalone TikZ figure to PDF."""
    for name in ("pdflatex", "lualatex", "xelatex"):
        path = shutil.which(name)
        if path:
            return path
    return None


def latex_to_pdf(tex: str, latex: str) -> bytes:
    """Compile a standalone .tex in a scratch folder; return the PDF."""
    with tempfile.TemporaryDirectory(prefix="dagnet-tex-") as tmp:
        src = Path(tmp) / "figure.tex"
        src.write_text(tex, encoding="utf-8")
        try:
            # -no-shell-escape: \write18 stays off even where a texmf.cnf enables it
            proc = subprocess.run([latex, "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
                                   src.name],
                                  cwd=tmp, capture_output=True, timeout=TIMEOUT, env=reproducible_env())
        except subprocess.TimeoutExpired:
            raise RenderError(f"{Path(latex).name} took longer than {TIMEOUT} s") from None
        pdf = Path(tmp) / "figure.pdf"
        if proc.returncode != 0 or not pdf.exists():
            log = proc.stdout.decode(errors="replace")
            first = next((ln for ln in log.splitlines() if ln.startswith("!")), log[-400:])
            raise RenderError(f"{Path(latex).name} failed on the TikZ figure: {first}\n"
                              "  hint: the figure needs the LaTeX packages tikz and geometry")
        return pdf.read_bytes()


def svg_to_pdf(svg: bytes) -> bytes | None:
    """Convert with rsvg-convert (embeds the fonts), or cairosvg if importable; None if neither."""
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        proc = subprocess.run([rsvg, "-f", "pdf"], input=svg, capture_output=True, timeout=TIMEOUT,
                              env=reproducible_env())
        if proc.returncode == 0:
            return proc.stdout
    try:
        import cairosvg             # optional: needs the Cairo library
    except (ImportError, OSError):
        return None
    return cairosvg.svg2pdf(bytestring=svg)
