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
