"""The architecture view: collapsing blocks, folding repeats, labels, merge marks, skips."""

import pytest
import sympy

import dagnet
from dagnet.dims import symbol
from dagnet.render import RenderError, figure
from dagnet.render.labels import nominal_dim, op_title, params_text, shape_line
from dagnet.render.styles import FAMILY_ORDER, THEMES, luminance
from dagnet.ops import count_params
from tests.conftest import SPECS
from tests.test_render_fixtures import TINY


@pytest.fixture(scope="module")
def tiny():
    return dagnet.load(TINY)


def texts(node):
    return [line.text for line in node.lines]


def test_top_level_nodes_collapse_to_one_box_each(tiny):
    fig = figure(tiny)
    assert list(fig.nodes) == ["image", "stem", "stage", "dense", "pool", "flat", "fc"]
    stage = fig.nodes["stage"]
    assert stage.kind == "block" and texts(stage)[:2] == ["stage", "basic \u00d7 3"]
    assert fig.nodes["dense"].lines[1].text == "(batch norm \u2013 ReLU \u2013 3\u00d73 conv, 4) \u00d7 3, dense"
    assert fig.nodes["fc"].output and not fig.nodes["pool"].output
    assert fig.nodes["image"].kind == "input"
    assert [(e.tail, e.head) for e in fig.edges] == [
        ("image", "stem"), ("stem", "stage"), ("stage", "dense"), ("dense", "pool"),
        ("pool", "flat"), ("flat", "fc")]


def test_params_are_summed_over_what_a_node_draws(tiny):
    total = sum(count_params(tiny, n) for n in tiny.order())
    for depth in (0, 1, 2):
        fig = figure(tiny, depth=depth)
        assert sum(n.params for n in fig.nodes.values()) == total
        drawn = [m for n in fig.nodes.values() for m in n.members]
        assert sorted(drawn) == sorted(tiny.graph.nodes)          # every IR node, once


def test_identical_repeats_fold_with_a_count(tiny):
    fig = figure(tiny, depth=1)
    assert "stage.0" in fig.nodes and "stage.1-2" in fig.nodes     # stage.0 projects: it differs
    folded = fig.nodes["stage.1-2"]
    assert texts(folded)[0] == "basic \u00d7 2"
    assert folded.params == sum(count_params(tiny, tiny.node(m)) for m in folded.members)
    assert [c.id for c in fig.clusters] == ["cluster_stem", "cluster_stage", "cluster_dense"]
    # dense repetitions see more channels each time: not identical, so not folded
    assert {"dense.0", "dense.1", "dense.2"} <= set(fig.nodes)
    assert ("note", "\u00d7 N: N identical repeats") in fig.legend


def test_merges_are_marks_and_side_inputs_are_skips(tiny):
    fig = figure(tiny, depth=2)
    assert fig.nodes["stage.1.sum"].kind == "merge" and texts(fig.nodes["stage.1.sum"]) == ["+"]
    assert texts(fig.nodes["dense.cat"]) == ["C"]
    kinds = {(e.tail, e.head): e.kind for e in fig.edges}
    assert kinds[("stage.1.body", "stage.1.sum")] == "data"        # the main path goes straight
    assert kinds[("stage.0.out", "stage.1.sum")] == "skip"         # the identity shortcut
    assert kinds[("stage.2.out", "dense.cat")] == "skip"           # dense edges
    assert ("mark:+", "add (residual)") in fig.legend


def test_expand_draws_every_layer_and_folds_nothing(tiny):
    fig = figure(tiny, expand=True)
    assert set(fig.nodes) == set(tiny.graph.nodes)
    assert fig.edges and all(len(n.members) == 1 for n in fig.nodes.values())


def test_toggles_and_reflow(tiny):
    tb = figure(tiny, depth=1)
    assert texts(tb.nodes["stem.0"]) == ["3\u00d73 conv, 8", "8\u00d7H\u00d7W  \u00b7  224 params"]
    lr = figure(tiny, depth=1, rankdir="LR")
    assert texts(lr.nodes["stem.0"]) == ["3\u00d73 conv", "8", "8\u00d7H\u00d7W", "224 params"]
    bare = figure(tiny, depth=1, shapes=False, params=False)
    assert texts(bare.nodes["stem.0"]) == ["3\u00d73 conv, 8"]
    sized = figure(tiny, depth=1, dims={"H": 32, "W": 32})
    assert texts(sized.nodes["stage.0"])[1].startswith("16\u00d716\u00d716")


def test_resnet50_collapsed_reads_like_the_paper():
    ir = dagnet.load(SPECS / "resnet50.yaml")
    fig = figure(ir)
    assert len(fig.nodes) < 15
    assert texts(fig.nodes["layer3"])[:2] == ["layer3", "bottleneck \u00d7 6"]
    assert texts(fig.nodes["layer4"])[2].startswith("2048\u00d7H/32\u00d7W/32")
    assert sum(n.params for n in fig.nodes.values()) == 25_557_032
    fig1 = figure(ir, depth=1)
    assert texts(fig1.nodes["layer3.1-5"])[0] == "bottleneck \u00d7 5"
    assert texts(fig1.nodes["stem.0"])[0] == "7\u00d77 conv, 64, /2"


def test_nominal_sizes():
    H = symbol("H")
    e = sympy.floor(sympy.floor(H / 2 - sympy.Rational(1, 2)) / 2) + 1
    assert nominal_dim(e)[0] == "H/4"
    assert nominal_dim(H - 4)[0] == "H\u22124"
    assert nominal_dim(3 * H / 4)[0] == "3H/4"
    assert nominal_dim(64)[0] == "64"
    assert shape_line((64, H, H)).tex == "$64{\\times}H{\\times}H$"
    assert params_text(9408) == "9.41k" and params_text(25_557_032) == "25.6M" and params_text(12) == "12"


def test_op_titles():
    assert op_title("conv2d", {"kernel_size": 7, "out_channels": 64, "stride": 2}) == "7\u00d77 conv, 64, /2"
    assert op_title("conv_transpose2d", {"kernel_size": 2, "out_channels": 8, "stride": 2}) \
        == "2\u00d72 up-conv, 8, \u00d72"
    assert op_title("max_pool2d", {"kernel_size": 3, "stride": 2}) == "3\u00d73 max pool, /2"
    assert op_title("adaptive_avg_pool2d", {"output_size": 1}) == "global avg pool"
    assert op_title("lstm", {"hidden_size": 32, "bidirectional": True}) == "BiLSTM, 32"
    assert op_title("chain_crf", {}) == "linear-chain CRF"
    assert op_title("mystery_op", {}) == "mystery op"


def test_paper_theme_is_greyscale_safe():
    """Families drawn with the same outline differ in luminance by at least 0.15."""
    looks = THEMES["paper"].looks
    by_outline = {}
    for fam in FAMILY_ORDER:
        look = looks[fam]
        by_outline.setdefault((look.shape, look.style), []).append(luminance(look.fill))
    for values in by_outline.values():
        values.sort()
        assert all(b - a >= 0.15 for a, b in zip(values, values[1:])), values


def test_bad_options_say_what_to_use(tiny):
    with pytest.raises(RenderError, match="choose one of auto, arch, model"):
        figure(tiny, view="tree")
    with pytest.raises(RenderError, match="no stochastic node"):
        figure(tiny, view="model")
