"""Tree CRF: exact sum-product and max-product over labellings of a forest.

A labelling y of the nodes scores
    score(y) = sum_n pot[n, y_n] + sum_{n with a parent p} pair[y_p, y_n],
with node potentials (B, N, K) from the network and one shared (K, K)
pairwise parameter [parent state, child state]. Trees are given as parent
arrays (root: -1), fixed at construction or per example as (B, N); several
roots make a forest, whose log Z is the sum over its trees.

Schedule. networkx turns the parent arrays into depth levels
(``topological_generations``); every node of a level is handled in one
batched step, across the whole batch:

    inside  (leaves -> roots):  in_n = pot_n + sum_{c child of n} msg_c,
                                msg_c[j] = logsumexp_k pair[j, k] + in_c[k]
    outside (roots -> leaves):  out_c[k] = logsumexp_j pair[j, k] + in_p[j] + out_p[j] - msg_c[j]
    marginal: p(y_n = k) = exp(in_n[k] + out_n[k] - log Z),  log Z = sum_roots logsumexp in_r.

Replacing logsumexp by max (and keeping the argmax) gives the MAP labelling;
sampling draws the roots from in_r and each child from pair[y_p, :] + in_c.

``mask`` (B, N) selects the nodes present; a present node whose parent is
absent becomes a root. Absent nodes get marginal 0 and state -1.
"""
from typing import List, NamedTuple, Optional, Sequence

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import _logspace as ls
from ._logspace import label_mask, reduce_loss


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


def _lse(x: Tensor) -> Tensor:
    return ls.logsumexp(x, -1)


def _upward(pot: Tensor, pair: Tensor, levels: List[Level], reduce) -> tuple:
    """Inside pass, deepest level first. Returns per level the inside scores in_n
    (n_d, K) and ``reduce`` of pair[j, k] + in_c[k] over k: the message to the parent
    (and, for max, the best child state per parent state)."""
    K = pot.shape[-1]
    inside, sent = [None] * len(levels), [None] * len(levels)
    incoming = pot.new_zeros(len(levels[-1].nodes), K)
    for d in reversed(range(len(levels))):
        inside[d] = pot[levels[d].nodes] + incoming
        if d:
            sent[d] = reduce(pair + inside[d].unsqueeze(1))
            message = sent[d][0] if isinstance(sent[d], tuple) else sent[d]
            incoming = pot.new_zeros(len(levels[d - 1].nodes), K).index_add(
                0, levels[d].parent_pos, message)
    return inside, sent


def _downward(inside: List[Tensor], messages: List[Tensor], pair: Tensor, levels,
              logz: Tensor) -> tuple:
    """Outside pass, roots first. Returns per level out_n (n_d, K) and the parent's
    score without this child's own message, excl_c[j] = in_p[j] + out_p[j] - msg_c[j].
    A root's outside score is the log Z of the other trees of its forest."""
    own = _lse(inside[0])
    others = (logz[levels[0].batch] - own).masked_fill(own == ls.NEG_INF, 0.0)
    outside, excluded = [others.unsqueeze(-1).expand_as(inside[0])], [None]
    for d in range(1, len(levels)):
        around = (inside[d - 1] + outside[d - 1])[levels[d].parent_pos]
        # msg_c[j] = -inf means no child state is possible under j; around[j] is -inf too.
        excl = (around - messages[d]).masked_fill(messages[d] == ls.NEG_INF, ls.NEG_INF)
        outside.append(ls.logsumexp(excl.unsqueeze(-1) + pair, 1))
        excluded.append(excl)
    return outside, excluded


def _root_total(inside0: Tensor, level0: Level, batch: int, reduce) -> Tensor:
    """Per example, the sum over its roots of ``reduce`` of the root's inside scores."""
    return inside0.new_zeros(batch).index_add(0, level0.batch, reduce(inside0))


def _finite_or_zero(x: Tensor) -> Tensor:
    return x.masked_fill(~torch.isfinite(x), 0.0)


def _node_marginals(inside, outside, logz, levels) -> List[Tensor]:
    """exp(in + out - log Z) per level; 0 for examples with Z = 0."""
    out = []
    for d, level in enumerate(levels):
        z = logz[level.batch]
        logp = (inside[d] + outside[d] - _finite_or_zero(z)[:, None])
        out.append(logp.masked_fill(~torch.isfinite(z)[:, None], ls.NEG_INF).exp())
    return out


def _scatter(levels: List[Level], values: List[Tensor], fill, shape) -> Tensor:
    """Per-level results (n_d, ...) into a (B, N, ...) tensor; absent nodes get ``fill``."""
    B, N = shape
    first = values[0] if values else torch.zeros(0)
    out = first.new_full((B * N,) + first.shape[1:], fill)
    if values:
        out = out.index_copy(0, torch.cat([lv.nodes for lv in levels]), torch.cat(values))
    return out.view((B, N) + first.shape[1:])


class _TreeLogPartition(torch.autograd.Function):
    """log Z per example; the backward pass is the outside pass: d log Z / d pot =
    node marginals, d / d pair = summed edge marginals. Stores O(B N K)."""

    @staticmethod
    def forward(ctx, pot, pair, levels, batch):
        inside, messages = _upward(pot, pair, levels, _lse)
        logz = _root_total(inside[0], levels[0], batch, _lse)
        ctx.save_for_backward(pot, pair, logz)
        ctx.levels, ctx.inside, ctx.messages = levels, inside, messages
        return logz

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pot, pair, logz = ctx.saved_tensors
        levels, inside = ctx.levels, ctx.inside
        outside, excluded = _downward(inside, ctx.messages, pair, levels, logz)
        marg = _node_marginals(inside, outside, logz, levels)
        d_pot = torch.zeros_like(pot).index_copy(
            0, torch.cat([lv.nodes for lv in levels]),
            torch.cat([m * grad[lv.batch, None] for m, lv in zip(marg, levels)]))
        d_pair = torch.zeros_like(pair)
        for d in range(1, len(levels)):
            # edge marginal xi_c[j, k] = exp(excl_c[j] + pair[j, k] + in_c[k] - log Z)
            z = logz[levels[d].batch]
            xi = excluded[d].unsqueeze(-1) + pair + inside[d].unsqueeze(1)
            xi = (xi - _finite_or_zero(z)[:, None, None]).masked_fill(
                ~torch.isfinite(z)[:, None, None], ls.NEG_INF).exp()
            d_pair = d_pair + torch.einsum("n,njk->jk", grad[levels[d].batch], xi)
        return d_pot, d_pair, None, None


class TreeCRF(nn.Module):
    """CRF over the nodes of a tree (or forest) with ``num_tags`` states per node.

    ``parents``: the parent array of a fixed tree (root -1), or None to pass a
    (B, N) parent LongTensor with every call. ``pairwise`` (K, K) scores
    [parent state, child state]. Potentials are (B, N, K).
    """

    def __init__(self, num_tags: int, parents: Optional[Sequence[int]] = None):
        super().__init__()
        self.num_tags = num_tags
        self.pairwise = nn.Parameter(torch.empty(num_tags, num_tags))
        nn.init.uniform_(self.pairwise, -0.1, 0.1)
        fixed = None if parents is None else torch.as_tensor(parents, dtype=torch.long)
        self.register_buffer("parents", fixed)
        self._one_tree = None if fixed is None else tree_schedule(fixed.unsqueeze(0))

    def schedule(self, potentials: Tensor, parents=None, mask=None) -> List[Level]:
        B, N, _ = potentials.shape
        if parents is None:
            if self.parents is None:
                raise ValueError("this TreeCRF has no fixed tree: pass parents (B, N)")
            if mask is None:
                one = [Level(*(t.to(potentials.device) for t in lv)) for lv in self._one_tree]
                return tile_schedule(one, B, N)
            parents = self.parents
        return tree_schedule(torch.as_tensor(parents).expand(B, N), mask)

    def log_partition(self, potentials, parents=None, mask=None, allowed=None) -> Tensor:
        """log Z (B,) over the labellings whose states are allowed ((B, N, K) bool)."""
        levels = self.schedule(potentials, parents, mask)
        B, N, K = potentials.shape
        if allowed is not None:
            potentials = potentials.masked_fill(~allowed, ls.NEG_INF)
        if not levels:
            return potentials.new_zeros(B)
        pot = potentials.reshape(B * N, K)
        return _TreeLogPartition.apply(pot, self.pairwise.to(pot.dtype), levels, B)

    def marginals(self, potentials, parents=None, mask=None) -> Tensor:
        """Node marginals (B, N, K), by the inside and outside passes (differentiable)."""
        levels = self.schedule(potentials, parents, mask)
        B, N, K = potentials.shape
        if not levels:
            return torch.zeros_like(potentials)
        pot, pair = potentials.reshape(B * N, K), self.pairwise.to(potentials.dtype)
        inside, messages = _upward(pot, pair, levels, _lse)
        logz = _root_total(inside[0], levels[0], B, _lse)
        outside, _ = _downward(inside, messages, pair, levels, logz)
        return _scatter(levels, _node_marginals(inside, outside, logz, levels), 0.0, (B, N))

    def nll(self, potentials, labels, parents=None, mask=None, reduction="mean") -> Tensor:
        """log Z(all) - log Z(labellings consistent with labels); label -1 is summed out."""
        allowed = label_mask(labels, self.num_tags)
        losses = (self.log_partition(potentials, parents, mask)
                  - self.log_partition(potentials, parents, mask, allowed))
        return reduce_loss(losses, reduction)

    forward = nll

    @torch.no_grad()
    def decode(self, potentials, parents=None, mask=None):
        """MAP states (B, N) (-1 for absent nodes) and their scores (B,)."""
        levels = self.schedule(potentials, parents, mask)
        B, N, K = potentials.shape
        if not levels:
            return torch.full((B, N), -1, dtype=torch.long), potentials.new_zeros(B)
        pot = potentials.reshape(B * N, K)
        inside, best = _upward(pot, self.pairwise.to(pot.dtype), levels, lambda x: x.max(-1))
        states = [inside[0].argmax(-1)]
        for d in range(1, len(levels)):  # y_c = argmax_k pair[y_p, k] + in_c[k]
            parent = states[d - 1][levels[d].parent_pos]
            states.append(best[d][1].gather(1, parent.unsqueeze(1)).squeeze(1))
        score = _root_total(inside[0], levels[0], B, lambda x: x.amax(-1))
        return _scatter(levels, states, -1, (B, N)), score

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, parents=None, mask=None, generator=None):
        """n exact samples (n, B, N): roots from in_r, then each child given its parent."""
        levels = self.schedule(potentials, parents, mask)
        B, N, K = potentials.shape
        if not levels:
            return torch.full((n, B, N), -1, dtype=torch.long)
        pot, pair = potentials.reshape(B * N, K), self.pairwise.to(potentials.dtype)
        inside, _ = _upward(pot, pair, levels, _lse)
        states = [ls.gumbel_argmax(inside[0].expand(n, -1, -1), generator)]
        for d in range(1, len(levels)):
            parent = states[d - 1][:, levels[d].parent_pos]  # (n, n_d)
            states.append(ls.gumbel_argmax(pair[parent] + inside[d], generator))
        return _scatter(levels, [s.t() for s in states], -1, (B, N)).permute(2, 0, 1)

    def extra_repr(self) -> str:
        fixed = "per example" if self.parents is None else f"{len(self.parents)} nodes"
        return f"num_tags={self.num_tags}, tree={fixed}"
