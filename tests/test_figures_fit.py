"""Every route, read back from its pixels: no text leaves its box, nothing leaves the page,
and no figure is wider than its width.

Each route draws the figure with all text in pure red (the same layout, the same
fonts, only the colour changed): the direct PDF (rasterised with pypdfium2 or
pdftoppm), the PNG itself, the SVG through rsvg-convert (or cairosvg), the TikZ
file through pdflatex and system Graphviz's PDF (set DAGNET_DOT to test a dot
that is not on PATH), where those are installed. Every red pixel must lie inside the box of a node
(shrunk by half a point, so text touching an edge fails too), a cluster title or
the legend; the raster's outermost pixels must be white; the page no wider than
the width asked for. Routes whose tools are missing are skipped.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

import dagnet
from dagnet.render.layout import RenderError, find_engine, run_engine
from dagnet.render.pdf import layout_to_pdf
from dagnet.render.pipeline import PNG_DPI, TEX_TEXT_SCALE, _theme, _tikz, fit, svg_fonts
from dagnet.render.png import with_dpi, dpi_of
from dagnet.render.typeface import SYSTEM_NAME
from tests.conftest import SPECS

DPI = 200
RED = "#ff0000"
INSET = 0.5                 # points: text must keep this far inside its box

# the figures the issue names; model views for the sequence CRFs, the parser and the segmenter
FIGURES = [("resnet50", {}), ("densenet121", {}), ("unet", {}), ("fcn8s", {}), ("deeplab_shapes", {}),
           ("cnf_tagger", {"view": "model"}), ("ldcrf_gestures", {"view": "model"}),
           ("biaffine_parser", {"view": "model"}), ("semimarkov_gestures", {"view": "model"})]


def _pdfium():
    try:
        import pypdfium2
        return pypdfium2
    except ImportError:
        return None


def rasterise(pdf: bytes, dpi: int = DPI) -> Image.Image | None:
    """A PDF's first page as RGB pixels: pypdfium2, else pdftoppm; None without either."""
    pdfium = _pdfium()
    if pdfium is not None:
        doc = pdfium.PdfDocument(pdf)
        image = doc[0].render(scale=dpi / 72).to_pil().convert("RGB")
        doc.close()
        return image
    if shutil.which("pdftoppm"):
        proc = subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", "-", "-"],
                              input=pdf, capture_output=True, timeout=60, check=True)
        return Image.open(io.BytesIO(proc.stdout)).convert("RGB")
    return None


def red_dot(dot: str) -> str:
    """The same DOT with every piece of text in red."""
    dot = re.sub(r'(<FONT[^>]*?) COLOR="#[0-9a-fA-F]+"', r"\1", dot)
    return dot.replace("  node [", f'  node [fontcolor="{RED}", ', 1).replace(
        "  graph [", f'  graph [fontcolor="{RED}", ', 1)


def red_tex(tex: str) -> str:
    tex = re.sub(r"text=[^,\]]+, ", "", tex)
    return tex.replace("\\node[", "\\node[text=red, ")


# -- where text may be ----------------------------------------------------------------

def _outline(obj: dict):
    """A node's outline: its first drawn shape, or its box where nothing is drawn (plain text)."""
    for op in obj.get("_draw_", []):
        if op["op"] in ("p", "P", "b", "B"):
            return "poly", [tuple(map(float, p)) for p in op["points"]]
        if op["op"] in ("e", "E"):
            return "ellipse", [float(v) for v in op["rect"]]
    x, y = (float(v) for v in obj["pos"].split(","))
    w, h = float(obj["width"]) * 36, float(obj["height"]) * 36
    return "poly", [(x - w, y - h), (x + w, y - h), (x + w, y + h), (x - w, y + h)]


def allowed_mask(layout: dict, size: tuple[int, int], scale: float) -> np.ndarray:
    """Pixels where text may be: node interiors (inset), cluster titles and the legend."""
    x0, y0, x1, y1 = (float(v) for v in layout["bb"].split(","))
    width, height = size
    pad_x = (width / scale - (x1 - x0)) / 2
    pad_y = (height / scale - (y1 - y0)) / 2

    def px(x, y):
        return ((x - x0 + pad_x) * scale, (y1 - y + pad_y) * scale)

    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    inset = INSET * scale
    n_sub = int(layout.get("_subgraph_cnt", 0))
    for obj in layout.get("objects", [])[n_sub:]:
        if not obj.get("_ldraw_"):
            continue
        kind, geo = _outline(obj)
        if kind == "ellipse":
            cx, cy, rx, ry = geo
            (a, b), (c, d) = px(cx - rx, cy + ry), px(cx + rx, cy - ry)
            draw.ellipse([a + inset, b + inset, c - inset, d - inset], fill=255)
        elif kind == "poly":
            draw.polygon([px(*p) for p in geo], fill=255)
            draw.line([px(*p) for p in geo] + [px(*geo[0])], fill=0, width=max(1, round(2 * inset)))
    labelled = [layout] + layout.get("objects", [])[:n_sub]
    for obj in labelled:                     # the legend (the graph's label) and cluster titles
        if "lp" in obj and "lwidth" in obj:
            lx, ly = (float(v) for v in obj["lp"].split(","))
            w, h = float(obj["lwidth"]) * 72, float(obj["lheight"]) * 72
            (a, b), (c, d) = px(lx - w / 2 - 1, ly + h / 2 + 1), px(lx + w / 2 + 1, ly - h / 2 - 1)
            draw.rectangle([a, b, c, d], fill=255)
    return np.asarray(mask) > 0


def check_pixels(image: Image.Image, layout: dict, scale: float, route: str) -> int:
    """Assert the text-fit and page rules on ``image``; return the number of text pixels."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 170) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    assert red.sum() > 200, f"{route}: no text found"
    outside = red & ~allowed_mask(layout, image.size, scale)
    if outside.sum() > 2:
        ys, xs = np.nonzero(outside)
        raise AssertionError(f"{route}: {outside.sum()} text pixels outside their box, first at "
                             f"({xs[0] / scale:.1f}, {ys[0] / scale:.1f}) pt from the top left")
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    assert edge.min() >= 235, f"{route}: the drawing reaches the page edge (cut off)"
    return int(red.sum())


# -- routes ----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=FIGURES, ids=[name for name, _ in FIGURES])
def laid_out(request):
    name, options = request.param
    ir = dagnet.load(SPECS / f"{name}.yaml")
    return name, ir, options


def test_direct_pdf_text_fits_and_width(laid_out):
    name, ir, options = laid_out
    t = _theme("paper", False)
    done = fit(ir, t, find_engine("graphviz-pure"), **options)
    assert done.width <= 3.25 * 72 + 0.01 or done.limit == 6.75 * 72
    pdf = layout_to_pdf(done.layout, done.theme.font, text_color=RED)
    image = rasterise(pdf)
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    assert image.size[0] / DPI * 72 <= done.limit + 1
    check_pixels(image, done.layout, DPI / 72, f"{name}.pdf")


def test_png_text_fits_and_width(laid_out):
    name, ir, options = laid_out
    t = _theme("paper", False)
    engine = find_engine("graphviz-pure")
    done = fit(ir, t, engine, **options)
    dpi = PNG_DPI["paper"]
    png = with_dpi(run_engine(engine, red_dot(done.dot), "png", done.fig.pinned, (f"-Gdpi={dpi}",)), dpi)
    assert dpi_of(png) == pytest.approx(dpi, abs=0.01)
    image = Image.open(io.BytesIO(png))
    assert image.size[0] / dpi * 72 <= done.limit + 1
    check_pixels(image, done.layout, dpi / 72, f"{name}.png")


def svg_raster(svg: bytes, dpi: int = DPI) -> Image.Image | None:
    """An SVG as pixels through rsvg-convert (what a paper's toolchain would use), or cairosvg."""
    if shutil.which("rsvg-convert"):
        proc = subprocess.run(["rsvg-convert", "-d", str(dpi), "-p", str(dpi), "-b", "white", "-f", "png"],
                              input=svg, capture_output=True, timeout=60, check=True)
        return Image.open(io.BytesIO(proc.stdout)).convert("RGB")
    try:
        import cairosvg
    except (ImportError, OSError):
        return None
    return Image.open(io.BytesIO(cairosvg.svg2png(bytestring=svg, scale=dpi / 72,
                                                   background_color="white"))).convert("RGB")


def test_svg_text_fits_and_width(laid_out):
    name, ir, options = laid_out
    t = _theme("paper", False)
    engine = find_engine("graphviz-pure")
    done = fit(ir, t, engine, **options)
    svg = svg_fonts(run_engine(engine, red_dot(done.dot), "svg", done.fig.pinned))
    width = float(re.search(rb'<svg width="([0-9.]+)pt"', svg).group(1))
    assert width <= done.limit + 0.5
    image = svg_raster(svg)
    if image is None:
        pytest.skip("neither rsvg-convert nor cairosvg to rasterise SVG")
    check_pixels(image, done.layout, DPI / 72, f"{name}.svg")


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="no pdflatex")
def test_tikz_text_fits_and_width(laid_out, tmp_path):
    name, ir, options = laid_out
    t = _theme("paper", False)
    done = fit(ir, t, find_engine("graphviz-pure"), text_scale=TEX_TEXT_SCALE, **options)
    (tmp_path / "fig.tex").write_text(red_tex(_tikz(done)))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "fig.tex"],
                          cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-1500:]
    image = rasterise((tmp_path / "fig.pdf").read_bytes())
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    assert image.size[0] / DPI * 72 <= done.limit + 1
    check_pixels(image, done.layout, DPI / 72, f"{name}.tex")


def _system_dot():
    try:
        return find_engine("dot")               # on PATH, or DAGNET_DOT
    except RenderError:
        return None


@pytest.mark.skipif(_system_dot() is None, reason="system Graphviz is not installed")
def test_system_dot_pdf_text_fits_and_width(laid_out):
    name, ir, options = laid_out
    t = _theme("paper", False)
    engine = find_engine("dot")
    done = fit(ir, t, engine, fontname=SYSTEM_NAME[t.font], **options)
    pdf = run_engine(engine, red_dot(done.dot), "pdf", done.fig.pinned)
    assert run_engine(engine, done.dot, "pdf", done.fig.pinned) == run_engine(engine, done.dot, "pdf",
                                                                               done.fig.pinned)
    image = rasterise(pdf)
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    assert image.size[0] / DPI * 72 <= done.limit + 1
    check_pixels(image, done.layout, DPI / 72, f"{name}.pdf (dot)")


def test_the_check_sees_text_that_spills(tmp_path):
    """The check itself: a box made too narrow for its text is caught."""
    ir = dagnet.load(SPECS / "resnet50.yaml")
    t = _theme("paper", False)
    engine = find_engine("graphviz-pure")
    done = fit(ir, t, engine)
    narrow = re.sub(r'width="[0-9.]+"', 'width="0.2"', done.dot)
    narrow = narrow.replace('node [', 'node [fixedsize="true", ', 1)
    from dagnet.render.layout import layout_json
    layout = layout_json(engine, narrow)
    image = rasterise(layout_to_pdf(layout, t.font, text_color=RED))
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    with pytest.raises(AssertionError, match="outside their box"):
        check_pixels(image, layout, DPI / 72, "narrow")
