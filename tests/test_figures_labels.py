"""Labels written for readers, every label escaped for every route, the width option,
and the graphical-model fixes (the plate's corner, the network feeding the CRF)."""

import re
import xml.dom.minidom

import numpy as np
import pytest

import dagnet
from dagnet.render import RenderError, figure, render
from dagnet.render.dot import to_dot
from dagnet.render.drawing import Figure, FNode
from dagnet.render.labels import plain
from dagnet.render.layout import find_engine, layout_json, run_engine
from dagnet.render.pdf import layout_to_pdf
from dagnet.render.pipeline import _theme, fit, parse_width, tex_map
from dagnet.render.tikz import to_tikz
from tests.conftest import SPECS
from tests.test_figures_fit import rasterise

PURE = find_engine("graphviz-pure")


def texts(fig):
    out = [ln.text for n in fig.nodes.values() for ln in n.lines]
    stack = list(fig.clusters)
    while stack:
        c = stack.pop()
        out.append(c.label.text)
        stack += c.clusters
    return out


def test_block_titles_are_words_and_counts_read_times_n():
    ir = dagnet.load(SPECS / "densenet121.yaml")
    readers = texts(figure(ir))
    assert "dense layer \u00d7 6, dense" in readers and "conv \u2013 batch norm \u2013 ReLU \u2013 max pool" in readers
    assert not any("_" in t for t in readers) and not any(t.endswith("layers") for t in readers)
    names = texts(figure(ir, labels="names"))
    assert "dense_layer \u00d7 6, dense" in names
    with pytest.raises(RenderError, match="--labels"):
        figure(ir, labels="ids")


def test_opened_blocks_show_no_placeholder_names():
    unet = texts(figure(dagnet.load(SPECS / "unet.yaml"), depth=1))
    assert "out" not in unet and "enc1: double conv" in unet
    assert "(conv \u2013 batch norm \u2013 ReLU) \u00d7 2" in unet
    assert not any("_" in t for t in unet)


NASTY = 'a<b> & "c" {d}_%$#\\'


def nasty_figure() -> Figure:
    fig = Figure("x<y>&z", "arch")
    fig.add(FNode(NASTY, "conv", [plain(NASTY), plain("</TD></TABLE> ]]> \u00d7", "op")]))
    fig.add(FNode("b>c", "dense", [plain("fc, 10")]))
    fig.add(FNode("<in>", "input", [plain("<in>")]))      # an id DOT could take for HTML
    fig.link("<in>", NASTY)
    fig.link(NASTY, "b>c")
    return fig


def test_every_label_is_escaped_for_every_route():
    fig, t = nasty_figure(), _theme("paper", False)
    dot = to_dot(fig, t)
    svg = run_engine(PURE, dot, "svg")
    doc = xml.dom.minidom.parseString(svg)                    # well-formed XML
    words = " ".join(n.data for n in _text_nodes(doc))
    assert NASTY in words and "</TD></TABLE> ]]>" in words
    layout = layout_json(PURE, dot)
    tex = to_tikz(layout, tex_map(fig), fig.name)
    assert "{d}" not in tex and "\\{d\\}\\_\\%\\$\\#\\textbackslash{}" in tex
    pdf = layout_to_pdf(layout, t.font, title=fig.name)
    image = rasterise(pdf)
    if image is not None:
        import pypdfium2
        page = pypdfium2.PdfDocument(pdf)[0]
        found = page.get_textpage().get_text_range()
        assert "a<b> & \"c\"" in found and "]]>" in found


def _text_nodes(node):
    for child in node.childNodes:
        if child.nodeType == child.TEXT_NODE:
            yield child
        else:
            yield from _text_nodes(child)


def test_width_option():
    t = _theme("paper", False)
    assert parse_width("column", t) == (3.25 * 72, True)
    assert parse_width("page", t) == (6.75 * 72, True)
    assert parse_width("3.5in", t)[0] == pytest.approx(252)
    assert parse_width("8.5cm", t)[0] == pytest.approx(240.94, abs=0.01)
    assert parse_width(None, t, "LR") == (6.75 * 72, False)
    for bad in ("wide", "3.5 furlongs", "0.1in", "-3in"):
        with pytest.raises(RenderError, match="--width expects"):
            parse_width(bad, t)


def test_a_figure_too_wide_is_reflowed_not_shrunk(tmp_path):
    ir = dagnet.load(SPECS / "fcn8s.yaml")
    t = _theme("paper", False)
    done = fit(ir, t, PURE)                                   # 4.8 in as drawn: reflowed
    assert done.width <= 3.25 * 72
    assert done.theme.detail_size >= 7 and done.theme.title_size >= 7
    assert not re.search(r"[ ,\[]size=", done.dot.split("\n")[2])   # no Graphviz `size`: no scaling
    with pytest.raises(RenderError, match=r"wider than 1\.50 in: use a wider --width"):
        render(ir, tmp_path / "x.pdf", width="1.5in")


def test_plate_corner_is_unbroken_and_the_network_feeds_the_crf():
    ir = dagnet.load(SPECS / "cnf_tagger.yaml")
    t = _theme("paper", False)
    done = fit(ir, t, PURE, view="model")
    assert "filled" not in [ln for ln in done.dot.splitlines() if '"plate.N" [' in ln][0]
    image = rasterise(layout_to_pdf(done.layout, t.font))
    if image is None:
        pytest.skip("nothing to rasterise PDF")
    plate = next(o for o in done.layout["objects"] if o["name"] == "plate")
    points = next(op["points"] for op in plate["_draw_"] if op["op"] in ("b", "B"))
    x0, y0, x1, y1 = (float(v) for v in done.layout["bb"].split(","))
    grey = np.asarray(image.convert("L")).astype(int)
    scale = 200 / 72
    pad = (image.size[0] / scale - (x1 - x0)) / 2
    for x, y in points[::3]:                                  # every on-curve point is inked
        px, py = round((x - x0 + pad) * scale), round((y1 - y + pad) * scale)
        assert grey[py - 2:py + 3, px - 2:px + 3].min() < 140, (x, y)
    deeplab = figure(dagnet.load(SPECS / "deeplab_shapes.yaml"))
    phis = {n for n in deeplab.nodes if n.endswith(".phi")}
    network = {e.head for e in deeplab.edges if e.tail.endswith("f") and e.kind in ("arrow", "feed")}
    assert phis and phis <= network


def test_edges_keep_off_cluster_titles():
    from dagnet.render.pipeline import crossed_titles
    t = _theme("paper", False)
    for name, depth in (("resnet50", 1), ("unet", 2)):
        done = fit(dagnet.load(SPECS / f"{name}.yaml"), t, PURE, depth=depth)
        assert len(done.fig.clusters) >= 4
        assert crossed_titles(done.layout) == set(), name
    # the check sees a crossing: one long title over a narrow cluster, on one line
    one_line = re.sub(r'</FONT><BR ALIGN="LEFT"/><FONT POINT-SIZE="8">', " ", done.dot)
    assert crossed_titles(layout_json(PURE, one_line))
