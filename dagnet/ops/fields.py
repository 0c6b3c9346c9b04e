"""Stochastic nodes: CRFs and latent-variable models as ops.

Each takes potentials from deterministic nodes and owns its pairwise
parameters (a module from :mod:`dagnet.fields`). In the forward graph a node's
value is what downstream layers and predictions use: marginals for the
chain, tree, grid and latent-dynamic CRFs, refined log-marginals for the
dense CRF, and log p(y | x) for the hidden CRF. Training losses (``crf_nll``)
call the module's ``nll`` on the node's potentials; decoding calls ``decode``.
"""

from __future__ import annotations

from dagnet.dims import fmt_shape, same
from dagnet.ops._util import expect_known, expect_rank
from dagnet.ops.registry import FINITE, POSITIVE, SIZE, Arg, ModuleCall, OpDef, Range, ShapeError, register


# how a chain's messages are computed: chosen from the shape, or a linear or log-depth scan
SCAN = Arg("method", "str", "auto", ("auto", "linear", "parallel"))
ITERATIONS = Range(0, 1000, meaning="rounds of message passing, from 0 (the unary scores alone) to 1000")
PARENT = Range(-1, meaning="each entry is the index of the node's parent, or -1 for a root")


def _mask_check(op, ins, length_dim=0):
    """An optional second input is a boolean mask over the positions: shape [T]."""
    if len(ins) == 2:
        mask, (length, *_) = ins[1], ins[0]
        if len(mask) != 1 or not same(mask[0], length):
            raise ShapeError(f"`{op}`: the mask must have shape [{length}], found {fmt_shape(mask)}")


def _chain_shape(ins, a):
    expect_rank(ins[0], 2, "chain_crf", "[T, K] (positions x tags)")
    expect_known(ins[0][1], "number of tags", "chain_crf")
    _mask_check("chain_crf", ins)
    return ins[0]


def _chain_params(ins, a):
    """Transitions [K, K], start and end scores [K] over the K states of [T, K] inputs."""
    return ins[0][1] * (ins[0][1] + 2)


def _chain_build(ins, a):
    from dagnet.fields.chain import ChainCRF
    return ModuleCall(ChainCRF, {"num_tags": ins[0][1], "method": a["method"]}, method="marginals")


register(OpDef(
    "chain_crf", "field",
    "Linear-chain CRF over [T, K] emission scores (+ optional [T] mask); value: tag marginals [T, K].",
    (SCAN,),
    _chain_shape, _chain_build, arity=(1, 2), stochastic=True,
    params=_chain_params,
    saves="inputs", title="linear-chain CRF", task="sequence", pgm="chain",
    inferred=("num_tags",)))


def _tree_shape(ins, a):
    expect_rank(ins[0], 2, "tree_crf", "[N, K] (tree nodes x states)")
    expect_known(ins[0][1], "number of states", "tree_crf")
    parents = a["parents"]
    if isinstance(ins[0][0], int) and len(parents) != ins[0][0]:
        raise ShapeError(f"`tree_crf`: `parents` has {len(parents)} entries for {ins[0][0]} nodes")
    if sum(1 for p in parents if p < 0) < 1 or any(p >= len(parents) for p in parents):
        raise ShapeError("`tree_crf`: `parents` must hold a parent index per node and -1 for a root")
    cycle = _parent_cycle(parents)
    if cycle:
        raise ShapeError(f"`tree_crf`: `parents` makes a cycle, not a tree: "
                         f"{' -> '.join(map(str, cycle + cycle[:1]))}",
                         "following parents from any node must reach a root (-1)")
    return ins[0]


def _parent_cycle(parents) -> list[int]:
    """The nodes of a cycle in a parent array (each node -> its parent), or [] for a forest."""
    settled = set()                 # nodes known to reach a root
    for start in range(len(parents)):
        path, node = [], start
        while node >= 0 and node not in settled:
            if node in path:
                return path[path.index(node):]
            path.append(node)
            node = parents[node]
        settled.update(path)
    return []


def _tree_build(ins, a):
    from dagnet.fields.tree import TreeCRF
    return ModuleCall(TreeCRF, {"num_tags": ins[0][1], "parents": list(a["parents"])}, method="marginals")


register(OpDef(
    "tree_crf", "field",
    "Tree CRF over [N, K] node scores, the tree given by `parents` (-1 for the root); "
    "value: node marginals [N, K].",
    (Arg("parents", "shape", range=PARENT),), _tree_shape, _tree_build, stochastic=True,
    params=lambda ins, a: ins[0][1] ** 2,       # one pairwise table shared by every edge
    saves="inputs", title="tree CRF", task="sequence", pgm="tree", inferred=("num_tags",)))


def _grid_shape(ins, a):
    expect_rank(ins[0], 3, "grid_crf", "[L, H, W] (labels x height x width)")
    expect_known(ins[0][0], "number of labels", "grid_crf")
    return ins[0]


def _grid_build(ins, a):
    from dagnet.fields.grid import GridCRF
    return ModuleCall(GridCRF, {"num_labels": ins[0][0], **a}, method="marginals")


register(OpDef(
    "grid_crf", "field",
    "Potts (or full-compatibility) CRF on the 4-connected pixel grid of [L, H, W] unary scores, "
    "by loopy BP or mean field; value: marginals [L, H, W].",
    (Arg("pairwise", "str", "potts", ("potts", "full")), Arg("weight", "float", 1.0, range=FINITE),
     Arg("inference", "str", "bp", ("bp", "mean_field")), Arg("iterations", "int", 30, range=ITERATIONS),
     Arg("damping", "float", 0.5, range=Range(0, 1, high_open=True, meaning="the share of the old message "
                                                  "kept at each step: from 0 up to, not including, 1")),
     Arg("schedule", "str", "checkerboard", ("checkerboard", "parallel"))),
    _grid_shape, _grid_build, stochastic=True,
    params=lambda ins, a: 1 if a["pairwise"] == "potts" else ins[0][0] ** 2,
    saves="inputs", title="grid CRF", task="segmentation", pgm="grid",
    inferred=("num_labels",)))


def _dense_shape(ins, a):
    logits, image = ins
    expect_rank(logits, 3, "dense_crf", "[L, H, W] unary scores")
    expect_known(logits[0], "number of labels", "dense_crf")
    if len(image) != 3 or image[0] != 3:
        raise ShapeError(f"`dense_crf`: the second input must be an RGB image [3, H, W], found {fmt_shape(image)}")
    for d, e in zip(logits[1:], image[1:]):
        if not same(d, e):
            raise ShapeError(f"`dense_crf`: scores {fmt_shape(logits)} and image {fmt_shape(image)} differ in size",
                             "upsample the scores to the image: `interpolate` with the image as second input")
    return logits


def _dense_build(ins, a):
    from dagnet.fields.dense_crf import DenseCRF
    return ModuleCall(DenseCRF, {"num_labels": ins[0][0], **a})


register(OpDef(
    "dense_crf", "field",
    "Fully connected CRF (DeepLab, CRF-as-RNN): mean field with spatial and bilateral Gaussian kernels "
    "on a permutohedral lattice, over [L, H, W] scores and the [3, H, W] image (0-255); "
    "value: refined log-marginals [L, H, W].",
    (Arg("iterations", "int", 5, range=ITERATIONS), Arg("spatial_sxy", "float", 3.0, range=POSITIVE),
     Arg("spatial_weight", "float", 3.0, range=FINITE), Arg("bilateral_sxy", "float", 80.0, range=POSITIVE),
     Arg("bilateral_srgb", "float", 13.0, range=POSITIVE), Arg("bilateral_weight", "float", 10.0, range=FINITE),
     Arg("compatibility", "str", "potts", ("potts",)),
     Arg("method", "str", "lattice", ("lattice", "exact")), Arg("learn_bandwidths", "bool", False)),
    _dense_shape, _dense_build, arity=(2, 2), stochastic=True,
    # compatibility [L, L], two kernel weights, three bandwidths if learnt
    params=lambda ins, a: ins[0][0] ** 2 + 2 + (3 if a["learn_bandwidths"] else 0),
    saves="inputs", title="dense CRF", task="segmentation", pgm="clique",
    inferred=("num_labels",)))


def _hidden_shape(ins, a):
    expect_rank(ins[0], 2, "hidden_crf", "[T, H] (positions x hidden states)")
    expect_known(ins[0][1], "number of hidden states", "hidden_crf")
    _mask_check("hidden_crf", ins)
    return (a["num_labels"],)


def _hidden_build(ins, a):
    from dagnet.fields.latent import HiddenCRF
    return ModuleCall(HiddenCRF, {"num_labels": a["num_labels"], "num_hidden": ins[0][1],
                                  "method": a["method"]}, method="log_prob")


register(OpDef(
    "hidden_crf", "field",
    "Hidden CRF (Quattoni et al.): one label per sequence, a latent chain of part states scored by "
    "[T, H] inputs; value: log p(y | x) [num_labels].",
    (Arg("num_labels", "int", range=SIZE), SCAN),
    _hidden_shape, _hidden_build, arity=(1, 2), stochastic=True,
    # per label: a bias, start/end/state scores over the hidden states, hidden transitions
    params=lambda ins, a: a["num_labels"] * (1 + 3 * ins[0][1] + ins[0][1] ** 2),
    saves="inputs", title="hidden CRF", task="classification", pgm="hidden",
    inferred=("num_hidden",)))


def _ldcrf_shape(ins, a):
    expect_rank(ins[0], 2, "latent_dynamic_crf", "[T, L * hidden_per_label]")
    states = expect_known(ins[0][1], "number of hidden states", "latent_dynamic_crf")
    if states % a["num_labels"]:
        raise ShapeError(f"`latent_dynamic_crf`: {states} hidden-state scores do not split evenly "
                         f"over {a['num_labels']} labels", "give num_labels * hidden_per_label scores")
    _mask_check("latent_dynamic_crf", ins)
    return (ins[0][0], a["num_labels"])


def _ldcrf_build(ins, a):
    from dagnet.fields.latent import LatentDynamicCRF
    return ModuleCall(LatentDynamicCRF, {"num_labels": a["num_labels"],
                                         "hidden_per_label": ins[0][1] // a["num_labels"],
                                         "method": a["method"]}, method="marginals")


register(OpDef(
    "latent_dynamic_crf", "field",
    "Latent-dynamic CRF (Morency et al.): a label per position, each label owning its own hidden "
    "states, scored by [T, L * h] inputs; value: label marginals [T, L].",
    (Arg("num_labels", "int", range=SIZE), SCAN),
    _ldcrf_shape, _ldcrf_build, arity=(1, 2), stochastic=True,
    params=_chain_params,       # its parameters are a chain CRF's over the hidden states
    saves="inputs", title="latent-dynamic CRF", task="sequence", pgm="latent_dynamic",
    inferred=("hidden_per_label",)))


def _semi_markov_shape(ins, a):
    scores = ins[0]
    if len(scores) not in (2, 3):
        raise ShapeError(f"`semi_markov_crf`: expected [T, K] emissions or [T, max_len, K] segment scores, "
                         f"found {fmt_shape(scores)}")
    expect_known(scores[-1], "number of labels", "semi_markov_crf")
    if len(scores) == 3 and isinstance(scores[1], int) and scores[1] != a["max_len"]:
        raise ShapeError(f"`semi_markov_crf`: segment scores {fmt_shape(scores)} have {scores[1]} lengths "
                         f"for max_len={a['max_len']}", "give [T, max_len, K] scores, or set max_len")
    _mask_check("semi_markov_crf", ins)
    return scores


def _semi_markov_build(ins, a):
    from dagnet.fields.semi_markov import SemiMarkovCRF
    inputs = "emissions" if len(ins[0]) == 2 else "segments"
    return ModuleCall(SemiMarkovCRF, {"num_labels": ins[0][-1], "max_len": a["max_len"], "inputs": inputs,
                                      "targets": a["targets"]}, method="marginals")


register(OpDef(
    "semi_markov_crf", "field",
    "Semi-Markov CRF over segments of up to `max_len` positions, from [T, K] emissions (+ a learned "
    "length model) or [T, max_len, K] segment scores (+ optional [T] mask); labels per frame "
    "(`targets=frames`, segmentation summed out) or begin/inside tags (`segments`); value: marginals "
    "laid out like the scores.",
    (Arg("max_len", "int", range=SIZE), Arg("targets", "str", "segments", ("segments", "frames"))),
    _semi_markov_shape, _semi_markov_build, arity=(1, 2), stochastic=True,
    # transitions [K, K], start and end [K], length model [max_len, K]
    params=lambda ins, a: ins[0][-1] * (ins[0][-1] + 2 + a["max_len"]),
    saves="inputs", title="semi-Markov CRF", task="sequence", pgm="chain", inferred=("num_labels", "inputs")))


def _square_scores(op, ins, what):
    scores = ins[0]
    if len(scores) not in (2, 3) or not same(scores[0], scores[1]):
        raise ShapeError(f"`{op}`: expected {what}, found {fmt_shape(scores)}")
    _mask_check(op, ins)
    return scores


def _dependency_build(ins, a):
    from dagnet.fields.dependency import DependencyCRF
    relations = ins[0][2] if len(ins[0]) == 3 else 0
    return ModuleCall(DependencyCRF, {"num_relations": relations, "projective": a["projective"],
                                      "multiroot": a["multiroot"]}, method="marginals")


register(OpDef(
    "dependency_crf", "field",
    "Dependency-tree CRF over [N, N] arc scores [head, modifier] (root arcs on the diagonal) or "
    "[N, N, R] labelled arcs (+ optional [N] mask): projective (Eisner) or not (matrix-tree theorem, "
    "Chu-Liu-Edmonds); value: arc marginals laid out like the scores.",
    (Arg("projective", "bool", True), Arg("multiroot", "bool", False)),
    lambda ins, a: _square_scores("dependency_crf", ins, "[N, N] or [N, N, R] arc scores"),
    _dependency_build, arity=(1, 2), stochastic=True, params=lambda ins, a: 0,
    saves="inputs", title="dependency CRF", task="parse", pgm="tree", inferred=("num_relations",)))


def _cky_shape(ins, a):
    if len(ins[0]) != 3:
        raise ShapeError(f"`cky_crf`: expected [N, N, L] span scores, found {fmt_shape(ins[0])}")
    expect_known(ins[0][2], "number of span labels", "cky_crf")
    return _square_scores("cky_crf", ins, "[N, N, L] span scores")


def _cky_build(ins, a):
    from dagnet.fields.cky import CKYCRF
    return ModuleCall(CKYCRF, {"num_labels": ins[0][2]}, method="marginals")


register(OpDef(
    "cky_crf", "field",
    "Constituency-tree CRF over [N, N, L] labelled span scores (+ optional [N] mask): inside-outside "
    "marginals, CKY for the best binary tree; value: span-label marginals [N, N, L].",
    (), _cky_shape, _cky_build, arity=(1, 2), stochastic=True, params=lambda ins, a: 0,
    saves="inputs", title="CKY CRF", task="sequence", pgm="tree", inferred=("num_labels",)))
