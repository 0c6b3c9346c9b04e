"""The render pipeline: IR -> Figure -> DOT -> layout -> svg / png / pdf / json / tex."""

from __future__ import annotations

from pathlib import Path

from dagnet.ir import IR
from dagnet.render.arch import Options, arch_figure
from dagnet.render.dot import to_dot
from dagnet.render.drawing import Figure
from dagnet.render.layout import (INSTALL_PDF, RenderError, find_engine, find_latex, latex_to_pdf,
                                  layout_json, run_engine, svg_to_pdf)
from dagnet.render.pgm import is_field, model_figure
from dagnet.render.styles import black_and_white, theme as get_theme
from dagnet.render.tikz import TEX_TEXT_SCALE, to_tikz

FORMATS = ("dot", "svg", "png", "pdf", "json", "tex")
VIEWS = ("auto", "arch", "model")
EXPANDED = 10_000           # --expand: every level open
PNG_DPI = {"paper": 300, "slides": 150}

__all__ = ["render", "figure", "dot_source", "tikz_source", "RenderError", "FORMATS", "VIEWS"]


def figure(ir: IR, view: str = "auto", depth: int = 0, expand: bool = False, rankdir: str = "TB",
           shapes: bool = True, params: bool = True, legend: bool = True, dims: dict | None = None,
           theme: str = "paper") -> Figure:
    """The figure of ``ir``: ``view`` arch (layers), model (the CRFs' factor graph) or auto
    (model when the spec has a stochastic node, else arch)."""
    if view not in VIEWS:
        raise RenderError(f"unknown view `{view}`; choose one of {', '.join(VIEWS)}")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise RenderError(f"unknown --rankdir `{rankdir}`; choose TB or LR (or BT, RL)")
    if view == "auto":
        view = "model" if any(is_field(ir.node(n)) for n in ir.graph.nodes) else "arch"
    if view == "model":
        t = get_theme(theme)
        return model_figure(ir, t.font, t.detail_size)
    options = Options(depth=EXPANDED if expand else depth, fold=not expand, rankdir=rankdir,
                      shapes=shapes, params=params, dims=dims, legend=legend)
    return arch_figure(ir, options)


def _theme(name: str, bw: bool):
    try:
        t = get_theme(name)
    except ValueError as exc:
        raise RenderError(str(exc)) from None
    return black_and_white(t) if bw else t


def dot_source(ir: IR, theme: str = "paper", bw: bool = False, text_scale: float = 1.0,
               **options) -> str:
    """The DOT text of the figure (deterministic: node ids are spec paths)."""
    fig = figure(ir, theme=theme, **options)
    return to_dot(fig, _theme(theme, bw), options.get("rankdir", "TB"), text_scale)


def tex_map(fig: Figure) -> dict[str, str]:
    """Graphviz text -> LaTeX, for every line the figure writes."""
    out = {}
    for node in fig.nodes.values():
        for line in node.lines:
            out[line.text] = line.tex
    stack = list(fig.clusters)
    while stack:
        c = stack.pop()
        out[c.label.text] = c.label.tex
        stack += c.clusters
    if fig.caption is not None:
        out[fig.caption.text] = fig.caption.tex
    return out


def node_tex(fig: Figure) -> dict[str, str]:
    """Whole-node LaTeX for the variables of the model view (subscripts are math there)."""
    return {n.id: n.lines[0].tex for n in fig.nodes.values()
            if n.lines and n.lines[0].role == "var"}


def tikz_source(ir: IR, theme: str = "paper", bw: bool = False, engine: str = "auto",
                **options) -> str:
    """A TikZ picture laid out by Graphviz, with text left to LaTeX (standalone or \\input-able)."""
    fig = figure(ir, theme=theme, **options)
    return _tikz(fig, _theme(theme, bw), options.get("rankdir", "TB"), engine)


def _tikz(fig: Figure, t, rankdir: str, engine: str) -> str:
    dot = to_dot(fig, t, rankdir, TEX_TEXT_SCALE)
    layout = layout_json(find_engine(engine), dot, pinned=fig.pinned)
    return to_tikz(layout, tex_map(fig), fig.name, t.tex_family, node_tex(fig))


def render(ir: IR, path, *, view: str = "auto", depth: int = 0, expand: bool = False,
           rankdir: str = "TB", theme: str = "paper", shapes: bool = True, params: bool = True,
           legend: bool = True, dims: dict | None = None, bw: bool = False,
           engine: str = "auto") -> Path:
    """Write the figure of ``ir`` to ``path``; the format comes from the suffix.

    ``.dot`` (Graphviz source), ``.svg``, ``.png``, ``.pdf``, ``.json`` (the layout:
    positions, sizes and splines) or ``.tex`` (TikZ). ``depth`` opens that many
    levels of blocks as clusters (``expand`` opens all and folds nothing);
    ``shapes``/``params`` toggle the output shape and parameter count in the
    nodes; ``dims`` gives symbolic sizes values (``{"H": 224}``); ``bw`` draws
    black-and-white line art; ``engine`` is auto, dot or graphviz-pure.
    Raises RenderError (saying what to install) when a format's tool is missing.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise RenderError(f"cannot tell the format of `{path}`: use one of "
                          + ", ".join("." + f for f in FORMATS))
    options = dict(view=view, depth=depth, expand=expand, rankdir=rankdir, shapes=shapes,
                   params=params, legend=legend, dims=dims)
    t = _theme(theme, bw)
    fig = figure(ir, theme=theme, **options)
    if fmt == "dot":
        data = to_dot(fig, t, rankdir).encode()
    elif fmt == "tex":
        data = _tikz(fig, t, rankdir, engine).encode()
    else:
        data = _graphviz_output(fig, t, fmt, rankdir, engine)
    path.write_bytes(data)
    return path


def _graphviz_output(fig: Figure, t, fmt: str, rankdir: str, engine_name: str) -> bytes:
    engine = find_engine(engine_name)
    dot = to_dot(fig, t, rankdir)
    if fmt in engine.formats:
        extra = (f"-Gdpi={PNG_DPI.get(t.name, 150)}",) if fmt == "png" else ()
        return run_engine(engine, dot, fmt, fig.pinned, extra)
    # PDF without a Graphviz that writes it: system dot if there is one, else TikZ through
    # LaTeX (the paper's look), else an SVG converter that embeds the fonts.
    if engine.name != "dot":
        try:
            system = find_engine("dot")
            return run_engine(system, dot, "pdf", fig.pinned)
        except RenderError:
            pass
    latex = find_latex()
    if latex:
        return latex_to_pdf(_tikz(fig, t, rankdir, engine_name), latex)
    pdf = svg_to_pdf(run_engine(engine, dot, "svg", fig.pinned))
    if pdf is None:
        raise RenderError(f"cannot write {fmt}: {INSTALL_PDF}")
    return pdf
