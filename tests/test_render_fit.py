"""Text never spills out of its box.

The layout engine (graphviz-pure, the one every install has) reports where it
put each line of text and how wide it thinks it is; the fonts' own metrics
(render/metrics.py, Adobe's AFM widths for Times and Helvetica) say how wide it
really is. Every line, measured truly, must sit inside its node's box.
"""

import json

import pytest

import dagnet
from dagnet.render import RenderError, dot_source
from dagnet.render.layout import find_engine, run_engine
from dagnet.render.metrics import text_width
from tests.conftest import SPECS
from tests.test_render_fixtures import TINY

try:
    ENGINE = find_engine("graphviz-pure")
except RenderError:                                    # pragma: no cover - it is a dependency
    ENGINE = None
needs_engine = pytest.mark.skipif(ENGINE is None, reason="graphviz-pure is not installed")
FAMILY = {"Times-Roman": "Times-Roman", "Times": "Times-Roman", "Helvetica": "Helvetica"}


def layout(dot: str) -> dict:
    return json.loads(run_engine(ENGINE, dot, "json"))


def text_spans(obj: dict):
    """(centre x, middle y, true width, Graphviz's width, text) of every line of a node's label."""
    size, bold, family = 14.0, False, "Times-Roman"
    for op in obj.get("_ldraw_", []):
        if op["op"] == "F":
            size, bold, family = float(op["size"]), "Bold" in op["face"], FAMILY.get(op["face"], "Times-Roman")
        elif op["op"] == "t":
            bold = bool(int(op["fontchar"]) & 1)
        elif op["op"] == "T":
            gv = float(op["width"])
            x = float(op["pt"][0]) + {"l": gv / 2, "c": 0, "r": -gv / 2}[op["align"]]
            y = float(op["pt"][1]) + 0.35 * size
            yield x, y, text_width(op["text"], family, size, bold=bold), gv, op["text"]


def inside(obj: dict, y: float) -> tuple[float, float]:
    """The x-range of the node's outline (its first drawn shape) on the line at height y."""
    shape = next(op for op in obj["_draw_"] if op["op"] in ("p", "P", "b", "B", "e", "E"))
    if shape["op"] in ("e", "E"):
        cx, cy, rx, ry = shape["rect"]
        dx = rx * max(0.0, 1 - ((y - cy) / ry) ** 2) ** 0.5
        return cx - dx, cx + dx
    pts = shape["points"]
    xs = []
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
            xs.append(x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return min(xs), max(xs)


def check_fits(lay: dict, margin: float = 1.0) -> int:
    checked = 0
    for obj in lay["objects"][int(lay.get("_subgraph_cnt", 0)):]:
        for x, y, true_w, _, text in text_spans(obj):
            left, right = inside(obj, y)
            assert x - true_w / 2 >= left + margin, f"`{text}` spills left of {obj['name']}"
            assert x + true_w / 2 <= right - margin, f"`{text}` spills right of {obj['name']}"
            checked += 1
    return checked


def test_metrics_agree_with_graphviz_on_ascii():
    assert text_width("layer1", "Times-Roman", 14) == pytest.approx(34.986, abs=0.01)
    # Helvetica: 6 4 = 556 each, space 278, x 500, H 722, / 278 (1/1000 em)
    assert text_width("64 x H/4", "Helvetica", 10) == pytest.approx(37.24, abs=0.01)


@needs_engine
@pytest.mark.parametrize("theme", ["paper", "slides"])
@pytest.mark.parametrize("options", [dict(), dict(depth=1), dict(depth=2, rankdir="LR"), dict(expand=True)])
def test_text_fits_its_box(theme, options):
    lay = layout(dot_source(dagnet.load(TINY), theme=theme, **options))
    assert check_fits(lay) > 10
    for obj in lay["objects"][int(lay.get("_subgraph_cnt", 0)):]:   # and our metrics are Graphviz's
        for _, _, true_w, gv, text in text_spans(obj):
            if text.isascii():
                assert true_w == pytest.approx(gv, rel=0.02, abs=0.3), text


@needs_engine
def test_text_fits_in_resnet50_and_unet():
    for spec, depth in (("resnet50", 1), ("unet", 1)):
        assert check_fits(layout(dot_source(dagnet.load(SPECS / f"{spec}.yaml"), depth=depth))) > 20
