"""The render pipeline: IR -> Figure -> DOT -> layout -> svg / png / pdf / json / tex."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from dagnet.ir import IR
from dagnet.render.arch import Options, arch_figure
from dagnet.render.dot import to_dot
from dagnet.render.drawing import Figure
from dagnet.render.layout import RenderError, find_engine, layout_json, run_engine
from dagnet.render.pdf import PAD, layout_to_pdf
from dagnet.render.png import with_dpi
from dagnet.render.pgm import is_field, model_figure
from dagnet.render.styles import black_and_white, theme as get_theme
from dagnet.render.tikz import TEX_TEXT_SCALE, to_tikz
from dagnet.render.typeface import SYSTEM_NAME

FORMATS = ("dot", "svg", "png", "pdf", "json", "tex")
VIEWS = ("auto", "arch", "model")
LABELS = ("readers", "names")       # block titles from the spec's doc or a humanised name; or raw names
UNITS = {"in": 72.0, "pt": 72 / 72.27, "bp": 1.0, "cm": 72 / 2.54, "mm": 72 / 25.4, "px": 0.75}
EXPANDED = 10_000           # --expand: every level open
PNG_DPI = {"paper": 300, "slides": 150}

__all__ = ["render", "figure", "dot_source", "tikz_source", "RenderError", "FORMATS", "VIEWS"]


def figure(ir: IR, view: str = "auto", depth: int = 0, expand: bool = False, rankdir: str = "TB",
           shapes: bool = True, params: bool = True, legend: bool = True, dims: dict | None = None,
           theme: str = "paper", wrap: bool = False, labels: str = "readers",
           max_width: float | None = None, text_scale: float = 1.0) -> Figure:
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
        return model_figure(ir, t.font, t.detail_size, max_width=max_width, text_scale=text_scale)
    if labels not in LABELS:
        raise RenderError(f"unknown --labels `{labels}`; choose one of {', '.join(LABELS)}")
    options = Options(depth=EXPANDED if expand else depth, fold=not expand, rankdir=rankdir,
                      shapes=shapes, params=params, dims=dims, legend=legend, wrap=wrap,
                      names=labels == "names")
    return arch_figure(ir, options)


def _theme(name: str, bw: bool):
    try:
        t = get_theme(name)
    except ValueError as exc:
        raise RenderError(str(exc)) from None
    return black_and_white(t) if bw else t


def dot_source(ir: IR, theme: str = "paper", bw: bool = False, text_scale: float = 1.0,
               **options) -> str:
    """The DOT text of the figure as asked (deterministic: node ids are spec paths); no fitting."""
    fig = figure(ir, theme=theme, text_scale=text_scale, **options)
    return to_dot(fig, _theme(theme, bw), options.get("rankdir", "TB"), text_scale)


def parse_width(width: str | float | None, t, rankdir: str = "TB") -> tuple[float, bool]:
    """``column``, ``page``, a length (``3.5in``, ``240pt``, ``8.5cm``) or points -> (points,
    whether asked for). None: a column when the figure flows down, the page when across."""
    if width is None:
        return (t.page if rankdir in ("LR", "RL") else t.column) * 72, False
    if isinstance(width, (int, float)):
        value = float(width)
    elif width == "column":
        value = t.column * 72
    elif width == "page":
        value = t.page * 72
    else:
        text = str(width).strip().lower()
        unit = next((u for u in UNITS if text.endswith(u)), None)
        try:
            value = float(text[:-len(unit)] if unit else text) * UNITS.get(unit, 1.0)
        except ValueError:
            value = -1
    if not value > 36:
        raise RenderError(f"--width expects column, page or a length of at least half an inch "
                          f"(3.5in, 240pt, 8.5cm), found `{width}`")
    return value, True


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


@dataclass
class Fitted:
    """A figure laid out within a width: what was drawn, how, and Graphviz's layout of it."""

    fig: Figure
    theme: object
    rankdir: str
    dot: str
    layout: dict
    width: float            # points, the page with its pad
    limit: float            # points, the width it had to keep within


def fit(ir: IR, t, engine, width: str | float | None = None, text_scale: float = 1.0,
        fontname: str | None = None, **options) -> Fitted:
    """Lay the figure out no wider than ``width`` without shrinking its text below the theme's
    minimum: as asked, then in narrow boxes (titles broken, one detail per line, legend in one
    column), then with smaller titles and tighter spacing, then flowing left to right. A
    default width that nothing fits grows from a column to the page (a ``figure*``)."""
    rankdir = options.pop("rankdir", "TB")
    limit, asked = parse_width(width, t, rankdir)
    small = min(t.title_size, max(t.min_size, t.title_size - 1))
    tries = [(rankdir, False, t, None),
             (rankdir, True, t, 1),
             (rankdir, True, replace(t, title_size=small, cluster_size=min(t.cluster_size, small),
                                     nodesep=t.nodesep * 0.6), 1),
             (rankdir, True, replace(t, title_size=t.min_size, cluster_size=t.min_size,
                                     detail_size=t.min_size, nodesep=t.nodesep * 0.5), 1)]
    across = "LR" if rankdir in ("TB", "BT") else "TB"      # the other flow, as a last resort
    tries.append((across, True, replace(t, title_size=t.min_size, cluster_size=t.min_size,
                                        detail_size=t.min_size), None))
    if t.size and not asked:                # slides: scaled to the slide, no width to keep
        tries = tries[:1]
        limit = float("inf")
    limits = [limit] if asked or limit >= t.page * 72 else [limit, t.page * 72]
    best = None
    for room in limits:
        for flow, wrap, theme, cols in tries:
            fig = figure(ir, rankdir=flow, wrap=wrap, max_width=room - 2 * PAD, text_scale=text_scale,
                         theme=t.name, **options)
            dot = to_dot(fig, theme, flow, text_scale, cols, fontname)
            layout = layout_json(engine, dot, pinned=fig.pinned)
            x0, _, x1, _ = (float(v) for v in layout["bb"].split(","))
            done = Fitted(fig, theme, flow, dot, layout, x1 - x0 + 2 * PAD, room)
            if done.width <= room + 0.01:
                return done
            if best is None or done.width < best.width:
                best = done
            if fig.pinned:
                break
    raise RenderError(f"`{ir.name}` is {best.width / 72:.2f} in wide with its text at {t.min_size:g} pt, "
                      f"wider than {limits[-1] / 72:.2f} in: use a wider --width, a smaller --depth "
                      "or --rankdir LR")


# What an SVG viewer should look for, in order: the family, then faces with its metrics.
SVG_FAMILIES = {b'font-family="Times,serif"':
                b'font-family="Times,Liberation Serif,Tinos,Times New Roman,serif"',
                b'font-family="Helvetica,sans-Serif"':
                b'font-family="Helvetica,Liberation Sans,Arimo,Arial,sans-serif"'}


def svg_fonts(svg: bytes) -> bytes:
    """Name the metric-compatible faces after the family, so that a viewer without Times
    (or Helvetica) picks one with the same widths rather than any serif."""
    for old, new in SVG_FAMILIES.items():
        svg = svg.replace(old, new)
    return svg


def all_clusters(fig: Figure):
    stack = list(fig.clusters)
    while stack:
        c = stack.pop()
        yield c
        stack += c.clusters


def crossed_titles(layout: dict) -> set[str]:
    """Clusters whose title an edge runs across (its spline sampled against the title's box)."""
    titles = {}
    for obj in layout.get("objects", [])[:int(layout.get("_subgraph_cnt", 0))]:
        if "lp" in obj and "lwidth" in obj:
            x, y = (float(v) for v in obj["lp"].split(","))
            w, h = float(obj["lwidth"]) * 36 + 1, float(obj["lheight"]) * 36 + 1
            titles[obj["name"]] = (x - w, y - h, x + w, y + h)
    crossed = set()
    for edge in layout.get("edges", []):
        for op in edge.get("_draw_", []):
            if op["op"] != "b":
                continue
            pts = op["points"]
            for i in range(0, len(pts) - 3, 3):
                p0, p1, p2, p3 = pts[i:i + 4]
                for k in range(17):
                    t = k / 16
                    a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
                    x = a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0]
                    y = a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]
                    for name, (l, btm, r, top) in titles.items():
                        if l <= x <= r and btm <= y <= top:
                            crossed.add(name)
    return crossed


def tikz_source(ir: IR, theme: str = "paper", bw: bool = False, engine: str = "auto",
                width: str | float | None = None, **options) -> str:
    """A TikZ picture laid out by Graphviz, with text left to LaTeX (standalone or \\input-able),
    no wider than ``width``."""
    done = fit(ir, _theme(theme, bw), find_engine(engine), width, TEX_TEXT_SCALE, **options)
    return _tikz(done)


def _tikz(done: Fitted) -> str:
    return to_tikz(done.layout, tex_map(done.fig), done.fig.name, done.theme.tex_family,
                   node_tex(done.fig), limit=done.limit)


def render(ir: IR, path, *, view: str = "auto", depth: int = 0, expand: bool = False,
           rankdir: str = "TB", theme: str = "paper", shapes: bool = True, params: bool = True,
           legend: bool = True, dims: dict | None = None, bw: bool = False,
           engine: str = "auto", width: str | float | None = None, labels: str = "readers") -> Path:
    """Write the figure of ``ir`` to ``path``; the format comes from the suffix.

    ``.dot`` (Graphviz source), ``.svg``, ``.png``, ``.pdf``, ``.json`` (the layout:
    positions, sizes and splines) or ``.tex`` (TikZ). ``depth`` opens that many
    levels of blocks as clusters (``expand`` opens all and folds nothing);
    ``shapes``/``params`` toggle the output shape and parameter count in the
    nodes; ``dims`` gives symbolic sizes values (``{"H": 224}``); ``bw`` draws
    black-and-white line art; ``width`` is column, page or a length the figure
    never exceeds (text is reflowed, not shrunk); ``labels`` readers or names;
    ``engine`` is auto, dot or graphviz-pure. PDF is written directly (fonts
    embedded, byte-stable) unless ``engine="dot"`` asks for system Graphviz's own.
    Raises RenderError (saying what to install) when a format's tool is missing.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise RenderError(f"cannot tell the format of `{path}`: use one of "
                          + ", ".join("." + f for f in FORMATS))
    options = dict(view=view, depth=depth, expand=expand, rankdir=rankdir, shapes=shapes,
                   params=params, legend=legend, dims=dims, labels=labels)
    t = _theme(theme, bw)
    if fmt == "dot":
        try:
            find_engine(engine)
        except RenderError:                 # DOT needs no engine: written as asked, not fitted
            fig = figure(ir, theme=theme, **options)
            path.write_bytes(to_dot(fig, t, rankdir).encode())
            return path
    found = find_engine(engine)
    if fmt == "tex":
        data = _tikz(fit(ir, t, found, width, TEX_TEXT_SCALE, **options)).encode()
    elif fmt == "pdf" and engine != "dot":
        done = fit(ir, t, found, width, **options)
        data = layout_to_pdf(done.layout, done.theme.font, title=ir.name)
    else:
        system = found.name == "dot"
        done = fit(ir, t, found, width, fontname=SYSTEM_NAME.get(t.font) if system else None, **options)
        if fmt == "dot":
            data = done.dot.encode()
        elif fmt == "json":
            data = json.dumps(done.layout, indent=1, sort_keys=True).encode()
        else:
            extra = (f"-Gdpi={PNG_DPI.get(t.name, 150)}",) if fmt == "png" else ()
            data = run_engine(found, done.dot, fmt, done.fig.pinned, extra)
            if fmt == "png":
                data = with_dpi(data, PNG_DPI.get(t.name, 150))
            elif fmt == "svg":
                data = svg_fonts(data)
    path.write_bytes(data)
    return path
