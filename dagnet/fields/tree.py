"""Tree CRF: every exact query over labellings of a forest, from one dynamic program.

A labelling y of the nodes scores
    score(y) = sum_n pot[n, y_n] + sum_{n with a parent p} pair[y_p, y_n],
with node potentials (B, N, K) from the network and one shared (K, K)
pairwise parameter [parent state, child state]. Trees are given as parent
arrays (root: -1), fixed at construction or per example as (B, N); several
roots make a forest, whose value is the product over its trees.

Schedule. networkx turns the parent arrays into depth levels
(``topological_generations``); every node of a level is handled in one
batched step, across the whole batch.

The dynamic program, written once over a semiring ((+), (x)), is the inside
pass, deepest level first:

    in_n   = pot_n (x) (x)_{c child of n} msg_c
    msg_c[j] = (+)_k pair[j, k] (x) in_c[k]
    value  = (x)_{roots r of the example} (+)_k in_r[k]

Which semiring answers which query (:mod:`dagnet.fields.semiring`):

==================  ===========  ==============================================
query               semiring     how
==================  ===========  ==============================================
``log_partition``   ``LOG``      the value
``marginals``       ``LOG``      the gradient of log Z w.r.t. the potentials
``decode``          ``MAX``      the best score; its gradient marks the argmax
``kbest``           ``KMax(k)``  the k best scores; the gradient of each, its labelling
``sample``          ``Sampled``  log Z; its gradient marks one exact sample
``entropy``         ``ENTROPY``  the value's entropy part
==================  ===========  ==============================================

``mask`` (B, N) selects the nodes present; a present node whose parent is
absent becomes a root. Absent nodes get marginal 0 and state -1; an example
with no node present has one (empty) labelling of score 0.
"""
from typing import List, NamedTuple, Optional, Sequence

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn

from . import semiring as sr
from ._logspace import label_mask
from .protocol import Field, check_k, check_reduction, reduce_loss

NEG_INF = float("-inf")


class Level(NamedTuple):
    """The nodes at one depth, over the whole batch (flat ids b * N + n)."""

    nodes: Tensor  # (n_d,)
    parent_pos: Tensor  # (n_d,) index of each node's parent within the previous level
    batch: Tensor  # (n_d,) example of each node


def tree_schedule(parents: Tensor, mask: Optional[Tensor] = None) -> List[Level]:
    """Depth levels of the forest given by parent arrays (B, N), derived with networkx."""
    B, N = parents.shape
    par = parents.detach().cpu().numpy()
    if ((par < -1) | (par >= N)).any():
        raise ValueError(f"parent indices must lie in [-1, {N}), got {par.min()}..{par.max()}")
    present = np.ones((B, N), bool) if mask is None else mask.detach().cpu().numpy() > 0
    b, n = np.nonzero(present & (par >= 0))
    keep = present[b, par[b, n]]  # a node whose parent is absent is a root
    graph = nx.DiGraph()
    graph.add_nodes_from(np.flatnonzero(present).tolist())
    graph.add_edges_from(zip((b * N + par[b, n])[keep].tolist(), (b * N + n)[keep].tolist()))
    if graph.number_of_nodes() == 0:
        return []
    if not nx.is_forest(graph):
        cycle = [node % N for node, _ in nx.find_cycle(graph.to_undirected())]
        raise ValueError(f"parents do not form a tree: nodes {cycle} form a cycle")
    flat_parent = (np.arange(B)[:, None] * N + par).reshape(-1)
    position = np.zeros(B * N, dtype=np.int64)
    levels = []
    for depth, generation in enumerate(nx.topological_generations(graph)):
        nodes = np.sort(np.asarray(generation, dtype=np.int64))
        position[nodes] = np.arange(len(nodes))
        parent_pos = position[flat_parent[nodes]] if depth else np.zeros(0, dtype=np.int64)
        levels.append(Level(*(torch.from_numpy(a).to(parents.device)
                              for a in (nodes, parent_pos, nodes // N))))
    return levels


def tile_schedule(levels: List[Level], batch: int, size: int) -> List[Level]:
    """The schedule of one N-node forest, repeated for a batch of B copies."""
    out, previous = [], 0
    for level in levels:
        rows = torch.arange(batch, device=level.nodes.device)[:, None]
        out.append(Level((rows * size + level.nodes).flatten(),
                         (rows * previous + level.parent_pos).flatten(),
                         rows.expand(batch, len(level.nodes)).flatten()))
        previous = len(level.nodes)
    return out


def inside(pair: Tensor, levels: List[Level]) -> sr.DP:
    """The forest's inside pass over any semiring (module doc), for potentials (B, N, K):
    values (S, B). Examples with no node present have the value ``one``."""
    def dp(semiring: sr.Semiring, potentials: Tensor) -> Tensor:
        B, N, K = potentials.shape
        if not levels:  # the empty labelling; the empty sum keeps the value on the autograd graph
            return semiring.mul_score(semiring.one((B,), potentials), potentials.flatten(1)[:, :0].sum(1))
        nodes = torch.cat([level.nodes for level in levels])
        pots = potentials.reshape(B * N, K)[nodes].split([len(level.nodes) for level in levels])
        incoming = semiring.one(pots[-1].shape, potentials)
        for d in range(len(levels) - 1, 0, -1):
            inside_d = semiring.mul_score(incoming, pots[d])  # (S, n_d, K)
            messages = semiring.sum(semiring.mul_score(inside_d.unsqueeze(-2), pair), -1)
            incoming = sr.scatter_times(semiring, messages, levels[d].parent_pos, len(pots[d - 1]))
        roots = semiring.sum(semiring.mul_score(incoming, pots[0]), -1)  # (S, n_0)
        return sr.scatter_times(semiring, roots, levels[0].batch, B)
    return dp


class TreeCRF(Field):
    """CRF over the nodes of a tree (or forest) with ``num_tags`` states per node.

    ``parents``: the parent array of a fixed tree (root -1), or None to pass a
    (B, N) parent LongTensor as ``parents=`` with every call. ``pairwise`` (K, K)
    scores [parent state, child state]. Potentials are (B, N, K), labels (B, N).
    """

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "tree"

    def __init__(self, num_tags: int, parents: Optional[Sequence[int]] = None):
        super().__init__()
        self.num_labels = self.num_tags = num_tags
        self.pairwise = nn.Parameter(torch.empty(num_tags, num_tags))
        nn.init.uniform_(self.pairwise, -0.1, 0.1)
        fixed = None if parents is None else torch.as_tensor(parents, dtype=torch.long)
        self.register_buffer("parents", fixed)
        self._one_tree = None if fixed is None else tree_schedule(fixed.unsqueeze(0))

    def parent_arrays(self, potentials: Tensor, parents=None) -> Tensor:
        """(B, N) parents: the given ones, else the fixed tree's."""
        B, N, _ = potentials.shape
        if parents is None:
            if self.parents is None:
                raise ValueError("this TreeCRF has no fixed tree: pass parents (B, N)")
            parents = self.parents
        return torch.as_tensor(parents, device=potentials.device).expand(B, N)

    def schedule(self, potentials: Tensor, mask=None, parents=None) -> List[Level]:
        B, N, _ = potentials.shape
        if parents is None and mask is None and self.parents is not None:
            one = [Level(*(t.to(potentials.device) for t in lv)) for lv in self._one_tree]
            return tile_schedule(one, B, N)
        return tree_schedule(self.parent_arrays(potentials, parents), mask)

    def _dp(self, potentials: Tensor, mask, parents) -> sr.DP:
        return inside(self.pairwise.to(potentials.dtype), self.schedule(potentials, mask, parents))

    def log_partition(self, potentials, mask=None, parents=None, allowed=None) -> Tensor:
        """log Z (B,); with ``allowed`` (B, N, K) bool, over the labellings using only allowed states."""
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed, NEG_INF)
        return sr.log_partition(self._dp(potentials, mask, parents), potentials)

    def marginals(self, potentials, mask=None, parents=None) -> Tensor:
        """Node marginals (B, N, K), the gradient of log Z; differentiable."""
        return sr.marginals(self._dp(potentials, mask, parents), potentials)

    def score(self, potentials, labels, mask=None, parents=None) -> Tensor:
        """score(labels) (B,) over the present nodes and the edges between present nodes."""
        present = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
        parents = self.parent_arrays(potentials, parents)
        par, y = parents.clamp_min(0), labels.clamp_min(0)
        nodes = potentials.gather(2, y.unsqueeze(-1)).squeeze(-1).masked_fill(~present, 0.0)
        edge = (parents >= 0) & present & present.gather(1, par)
        pairs = self.pairwise.to(potentials.dtype)[y.gather(1, par), y].masked_fill(~edge, 0.0)
        return nodes.sum(1) + pairs.sum(1)

    def clamped_log_partition(self, potentials, labels, mask=None, parents=None) -> Tensor:
        """log Z over the labellings that agree with ``labels`` where they are not -1."""
        labelled = labels >= 0 if mask is None else (labels >= 0) | ~mask.bool()
        if bool(labelled.all()):  # one labelling agrees: its score
            return self.score(potentials, labels, mask, parents)
        return self.log_partition(potentials, mask, parents, label_mask(labels, self.num_labels))

    def nll(self, potentials, labels, mask=None, reduction="mean", parents=None) -> Tensor:
        """-log p(labels | x), reduced; label -1 is summed out (the protocol's, with ``parents``)."""
        check_reduction(reduction)
        losses = (self.log_partition(potentials, mask, parents)
                  - self.clamped_log_partition(potentials, labels, mask, parents))
        return reduce_loss(losses, reduction)

    forward = nll

    def decode(self, potentials, mask=None, parents=None) -> tuple:
        """MAP states (B, N) (-1 for absent nodes) and their scores (B,), differentiable."""
        with torch.no_grad():
            _, chosen = sr.best(self._dp(potentials, mask, parents), potentials)
        labels = sr.recover(chosen)
        return labels, self.score(potentials, labels, mask, parents)

    @torch.no_grad()
    def kbest(self, potentials, k: int, mask=None, parents=None) -> tuple:
        """The k best labellings (B, k, N) and their scores (B, k), best first; missing
        ones (fewer than k exist) score -inf, with labels -1."""
        scores, chosen = sr.kbest(self._dp(potentials, mask, parents), potentials, check_k(k))
        labels = sr.recover(chosen).masked_fill((scores == NEG_INF).t()[..., None], -1)
        return labels.transpose(0, 1), scores

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, mask=None, generator=None, parents=None) -> Tensor:
        """n exact samples (n, B, N), from the inside pass of n copies of the batch;
        -1 for absent nodes and for examples with Z = 0."""
        B, N, _ = potentials.shape
        tiled = tile_schedule(self.schedule(potentials, mask, parents), n, B * N)
        copies = [level._replace(batch=level.nodes // N) for level in tiled]  # example of copy c: c B + b
        dp = inside(self.pairwise.to(potentials.dtype), copies)
        logz, chosen = sr.samples(dp, potentials.repeat(n, 1, 1), generator)
        labels = sr.recover(chosen).masked_fill(~torch.isfinite(logz)[:, None], -1)
        return labels.view(n, B, N)

    def entropy(self, potentials, mask=None, parents=None) -> Tensor:
        """H(p(y | x)) (B,) in nats."""
        return sr.entropy(self._dp(potentials, mask, parents), potentials)

    def extra_repr(self) -> str:
        fixed = "per example" if self.parents is None else f"{len(self.parents)} nodes"
        return f"num_tags={self.num_tags}, tree={fixed}"
