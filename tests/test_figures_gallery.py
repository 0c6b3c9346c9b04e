"""The gallery as a regression test: each figure rendered again, through svg and pdf, and
compared with the committed one (its nodes, its text, its page size), its text checked
against its boxes from the PDF's pixels. A few figures always; the whole gallery with
``-m slow``. Regenerate with ``python -m dagnet.render.gallery`` and read the diff."""

import re

import pytest

import dagnet
from dagnet.render import render
from dagnet.render.gallery import FIGURES, ROOT
from dagnet.render.layout import find_engine
from dagnet.render.pdf import layout_to_pdf
from dagnet.render.pipeline import _theme, fit
from tests.test_figures_fit import DPI, RED, check_pixels, rasterise

GALLERY = ROOT / "docs" / "gallery"
SVGS = [(spec, name, opts) for spec, name, opts in FIGURES
        if name.endswith(".svg") and (ROOT / "specs" / f"{spec}.yaml").exists()]
QUICK = {"resnet50.svg", "unet_depth1.svg", "cnf_tagger.svg", "fcn_densecrf.svg"}
CASES = [pytest.param(*case, id=case[1], marks=() if case[1] in QUICK else pytest.mark.slow) for case in SVGS]


def svg_facts(svg: str) -> tuple:
    ids = sorted(set(re.findall(r'<g id="([^"]+)" class="(?:node|cluster)"', svg)))
    texts = sorted(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
    size = tuple(float(v) for v in re.search(r'<svg width="([0-9.]+)pt" height="([0-9.]+)pt"', svg).groups())
    return ids, texts, size


def media_box(pdf: bytes) -> tuple:
    return tuple(float(v) for v in re.search(rb"/MediaBox \[([-0-9. ]+)\]", pdf).group(1).split())


@pytest.mark.parametrize("spec, name, options", CASES)
def test_gallery_figure_is_unchanged_and_fits(spec, name, options, tmp_path):
    ir = dagnet.load(ROOT / "specs" / f"{spec}.yaml")
    svg = render(ir, tmp_path / name, engine="graphviz-pure", **options).read_text()
    ids, texts, size = svg_facts(svg)
    old_ids, old_texts, old_size = svg_facts((GALLERY / name).read_text())
    assert ids == old_ids, f"{name}: nodes differ from docs/gallery (regenerate it?)"
    assert texts == old_texts, f"{name}: text differs from docs/gallery"
    assert size == pytest.approx(old_size, abs=0.5)
    pdf_name = name.replace(".svg", ".pdf")
    pdf = render(ir, tmp_path / pdf_name, engine="graphviz-pure", **options).read_bytes()
    assert media_box(pdf) == pytest.approx(media_box((GALLERY / pdf_name).read_bytes()), abs=0.01)
    theme = options.get("theme", "paper")
    t = _theme(theme, options.get("bw", False))
    layout_options = {k: v for k, v in options.items() if k not in ("theme", "bw")}
    done = fit(ir, t, find_engine("graphviz-pure"), **layout_options)
    if theme == "paper":
        assert media_box(pdf)[2] <= done.limit + 0.01                 # the width contract
    image = rasterise(layout_to_pdf(done.layout, done.theme.font, text_color=RED))
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    check_pixels(image, done.layout, DPI / 72, pdf_name)
