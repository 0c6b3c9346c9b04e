"""The graphical-model view: each CRF drawn as its structure, in the usual notation."""

from collections import Counter

import pytest

import dagnet
from dagnet.render import figure, tikz_source
from dagnet.render.styles import THEMES, black_and_white
from tests.conftest import SPECS
from tests.test_render_fixtures import FIELD_OPS, field_ir


def kinds(fig):
    return Counter(n.kind for n in fig.nodes.values() if not n.id.startswith("legend."))


def test_auto_view_picks_the_model_for_a_crf():
    fig = figure(field_ir("chain_crf"))
    assert fig.view == "model" and fig.pinned
    assert figure(field_ir("chain_crf"), view="arch").view == "arch"


def test_chain_is_unrolled_with_factors_and_an_ellipsis():
    fig = figure(field_ir("chain_crf"))
    k = kinds(fig)
    assert k["label"] == 4 and k["observed"] == 1 and k["network"] == 1 and k["plate"] == 1
    assert k["factor"] == 4 + 4                    # 4 pairwise between 5 slots, 4 unary
    assert fig.nodes["y.dots"].lines[0].tex == "$\\cdots$"
    assert fig.nodes["y.T"].lines[0].tex == "$y_{T}$"
    links = {(e.tail, e.head) for e in fig.edges}
    assert ("y.1", "y.pair.0") in links and ("y.2", "y.pair.0") in links
    assert ("x", "f") in links and ("f", "y.1.unary") in links
    assert "T positions, 5 labels" in fig.caption.text


def test_hidden_states_differ_from_labels():
    hcrf = kinds(figure(field_ir("hidden_crf")))
    assert hcrf["hidden"] == 4 and hcrf["label"] == 1            # one label per sequence
    ldcrf = kinds(figure(field_ir("latent_dynamic_crf")))
    assert ldcrf["hidden"] == 4 and ldcrf["label"] == 4
    looks = THEMES["paper"].looks
    assert "dashed" in looks["hidden"].style and "dashed" not in looks["label"].style


def test_grid_tree_and_clique_structures():
    grid = figure(field_ir("grid_crf"))
    assert kinds(grid)["label"] == 9 and kinds(grid)["factor"] == 12 + 9     # lattice + unary
    tree = figure(field_ir("tree_crf", {"parents": [-1, 0, 0, 1, 1, 2]}))
    assert kinds(tree)["label"] == 6 and kinds(tree)["factor"] == 5 + 6
    assert tree.nodes["y.1"].pos[1] > tree.nodes["y.4"].pos[1]           # the root on top
    big = figure(field_ir("tree_crf", {"parents": [-1] + list(range(40))}))
    assert kinds(big)["label"] == 7                                          # drawn as a sample
    dense = figure(field_ir("dense_crf"))
    assert kinds(dense)["label"] == 5 and kinds(dense)["factor"] == 10 + 5   # every pair
    assert kinds(dense)["deterministic"] == 5                                 # φ per pixel
    phis = {n for n in dense.nodes if n.endswith(".phi")}
    assert {e.head for e in dense.edges if e.tail == "f"} == phis       # f_θ feeds the clique's φ


def test_observed_shaded_or_bold_in_line_art():
    paper = THEMES["paper"]
    assert paper.looks["observed"].fill != "#ffffff"
    bw = black_and_white(paper)
    assert bw.looks["observed"].fill == "#ffffff" and "bold" in bw.looks["observed"].style


@pytest.mark.parametrize("op", FIELD_OPS)
def test_every_field_draws_in_tikz_with_math(op):
    tex = tikz_source(field_ir(op), engine="graphviz-pure")
    assert "$f_\\theta$" in tex and "ellipse" in tex


def test_example_crf_spec_if_present():
    path = SPECS / "cnf_tagger.yaml"
    if not path.exists():
        pytest.skip("no CRF example spec")
    fig = figure(dagnet.load(path))
    assert fig.view == "model" and kinds(fig)["label"] == 4


# -- structures with a drawing of their own: segments, arcs, spans ------------------------------

def _square_ir(op, args=None, labels=True):
    """field_ir with [T, T(, L)] scores, as a parser's arc or span scores are laid out."""
    import sympy
    ir = field_ir(op, args)
    T = sympy.Symbol("T", integer=True, positive=True)
    ir.node("crf").shape = ir.node("scores").shape = (T, T, 5) if labels else (T, T)
    return ir


def test_semi_markov_draws_segments_over_runs_of_frames():
    fig = figure(dagnet.load(SPECS / "semimarkov_gestures.yaml"))
    k = kinds(fig)
    assert k["segment"] == 3 and k["label"] == 3 and k["hidden"] == 3      # y_j, d_j, a bracket each
    assert k["factor"] == 3 + 3                                             # transitions, segment factors
    assert fig.nodes["seg.1"].lines[0].text == "\u03c61 \u03c62 \u03c63"     # a run of three frames
    assert fig.nodes["seg.1"].size[0] > fig.nodes["seg.2"].size[0]          # longer run, wider bracket
    links = {(e.tail, e.head) for e in fig.edges}
    for j in ("1", "2", "J"):     # one factor joins the label, the length and the frames' potentials
        assert {(f"y.{j}", f"seg.{j}.factor"), (f"d.{j}", f"seg.{j}.factor"),
                (f"seg.{j}", f"seg.{j}.factor")} <= links
        assert ("f", f"seg.{j}") in links
        assert fig.nodes[f"y.{j}"].pos[0] == fig.nodes[f"seg.{j}"].pos[0]   # the label over its run
    assert "segments of up to 16 frames" in fig.caption.text
    assert "segment" in {n.kind for n in fig.nodes.values() if n.id.startswith("legend.")}


def _arcs(fig):
    """(head, dependent) of each drawn arc, from the arrow that ends at the dependent."""
    out = set()
    for e in fig.edges:
        if e.tail.startswith("arc.") and e.kind == "arrow":
            _, h, m = e.tail.split(".")
            assert e.head == f"w.{m}" and e.points is not None
            out.add((int(h), int(m)))
    return out


def _is_tree(arcs, n):
    heads = {m: h for h, m in arcs}
    if sorted(heads) != list(range(1, n + 1)) or sum(1 for h in heads.values() if h == 0) != 1:
        return False
    for m in heads:                         # every word reaches ROOT
        seen, k = set(), m
        while k != 0:
            if k in seen:
                return False
            seen.add(k)
            k = heads[k]
    return True


def _crossing(arcs):
    spans = [tuple(sorted(a)) for a in arcs]
    return any(a < c < b < d for a, b in spans for c, d in spans)


def test_dependency_draws_a_tree_of_curved_arcs_from_root():
    ir = dagnet.load(SPECS / "biaffine_parser.yaml")
    fig = figure(ir)
    words = [n for n in fig.nodes if n.startswith("w.")]
    arcs = _arcs(fig)
    assert _is_tree(arcs, len(words))
    assert ir.node("parser").args["projective"] is False and _crossing(arcs)   # non-projective: a crossing arc
    text = (SPECS / "biaffine_parser.yaml").read_text().replace("projective: false", "projective: true")
    projective = figure(dagnet.load(text))
    assert not _crossing(_arcs(projective))
    assert fig.nodes["root"].lines[0].text == "ROOT"
    for h, m in arcs:                      # the factor on each arc's apex, above both ends, fed by f_θ
        f = fig.nodes[f"arc.{h}.{m}"]
        assert f.kind == "factor" and f.pos[1] > fig.nodes[f"w.{m}"].pos[1] + 10
        curves = [e for e in fig.edges if f.id in (e.tail, e.head) and e.points]
        assert len(curves) == 2 and curves[0].points[-1] == curves[1].points[0] == f.pos
        assert ("f", f.id) in {(e.tail, e.head) for e in fig.edges}
    higher = {abs(h - m): fig.nodes[f"arc.{h}.{m}"].pos[1] for h, m in arcs}
    assert higher[2] > higher[1]                                            # longer arcs rise higher
    assert "non-projective (matrix-tree)" in fig.caption.text
    assert "projective (Eisner)" in projective.caption.text and "non-" not in projective.caption.text
    loose = figure(_square_ir("dependency_crf", {"projective": False}, labels=False))
    assert _is_tree(_arcs(loose), 5) and _crossing(_arcs(loose))            # an arc that crosses
    assert "non-projective (matrix-tree)" in loose.caption.text


def test_dependency_arcs_are_curves_in_every_route():
    from dagnet.render import dot_source
    dot = dot_source(dagnet.load(SPECS / "biaffine_parser.yaml"), view="model")
    assert dot.count('pos="e,') == 5                                        # five arrowed curves
    tex = tikz_source(dagnet.load(SPECS / "biaffine_parser.yaml"), view="model", engine="graphviz-pure")
    assert tex.count(".. controls") >= 10 and "\\textsc{root}" in tex


def test_cky_draws_a_binary_bracketing_over_the_words():
    fig = figure(_square_ir("cky_crf"))
    k = kinds(fig)
    assert k["label"] == 7 and k["observed"] == 4 + 1                       # 2n - 1 spans over 4 words
    spans = {tuple(int(c) for c in n.split(".")[1]) for n in fig.nodes
             if n.startswith("y.") and fig.nodes[n].kind == "label"}
    links = {(e.tail, e.head) for e in fig.edges}
    for i, j in spans:
        if i < j:                          # a span splits into two that tile it
            kids = [(a, b) for a, b in spans if (f"y.{i}{j}", f"y.{a}{b}") in links]
            assert len(kids) == 2 and sorted(kids)[0][0] == i and sorted(kids)[1][1] == j
            assert sorted(kids)[0][1] + 1 == sorted(kids)[1][0]
        else:
            assert (f"y.{i}{i}", f"w.{i}") in links
        assert (f"y.{i}{j}", f"y.{i}{j}.span") in links                     # its own score factor
        assert fig.nodes[f"y.{i}{j}"].pos[1] > fig.nodes["w.1"].pos[1]
    assert "binary trees" in fig.caption.text and "5 span labels" in fig.caption.text


def test_cky_figure_text_fits_in_the_direct_pdf():
    from dagnet.render.layout import find_engine
    from dagnet.render.pdf import layout_to_pdf
    from dagnet.render.pipeline import _theme, fit
    from tests.test_figures_fit import DPI, RED, check_pixels, rasterise
    done = fit(_square_ir("cky_crf"), _theme("paper", False), find_engine("graphviz-pure"), view="model")
    image = rasterise(layout_to_pdf(done.layout, done.theme.font, text_color=RED))
    if image is None:
        pytest.skip("neither pypdfium2 nor pdftoppm to rasterise PDF")
    assert image.size[0] / DPI * 72 <= done.limit + 1
    check_pixels(image, done.layout, DPI / 72, "cky.pdf")
