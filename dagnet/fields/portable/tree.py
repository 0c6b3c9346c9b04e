"""Tree CRF, portable: sum-product and max-product over a fixed tree, in plain torch.

The tree (a parent array, -1 for a root; several roots make a forest) is
fixed at construction, so its schedule is too: nodes grouped by depth,
visited deepest level first (inside) and then root level first (outside).
Every step is one batched tensor operation over a level, and the number of
steps is the tree's depth, so an exported graph has no branch on the data.

Marginals come from the inside and outside passes, not from autograd:
with in_n = pot_n + sum_{c child of n} up_c, up_c[j] = logsumexp_k(pair[j, k]
+ in_c[k]) and out_c[k] = logsumexp_j(out_p[j] + in_p[j] - up_c[j] + pair[j, k])
(out = 0 at a root), node n's marginal is softmax_k(in_n[k] + out_n[k]).
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn


def _tree_levels(parents: List[int]) -> List[List[int]]:
    """The nodes of each depth, roots first; the parents must form a forest."""
    depth = [-1] * len(parents)
    for start in range(len(parents)):
        path, node = [], start
        while node >= 0 and depth[node] < 0:
            if node in path:
                raise ValueError(f"parents do not form a tree: node {node} is its own ancestor")
            path.append(node)
            node = parents[node]
        known = -1 if node < 0 else depth[node]
        for offset, member in enumerate(reversed(path)):
            depth[member] = known + 1 + offset
    return [[n for n in range(len(parents)) if depth[n] == d] for d in range(max(depth, default=-1) + 1)]


class TreeCRF(nn.Module):
    """The tree CRF over potentials (B, N, K) with one (K, K) ``pairwise``
    [parent state, child state], for the tree ``parents`` given at construction."""

    bounds: List[int]   # where each depth starts in ``order``, and where the last one ends

    def __init__(self, num_tags: int, parents: List[int]):
        super().__init__()
        self.num_tags = num_tags
        self.pairwise = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.register_buffer("parents", torch.tensor(parents, dtype=torch.long))
        levels = _tree_levels(list(parents))
        # nodes by depth (roots first) and the bounds of each depth in that order
        self.register_buffer("order", torch.tensor([n for level in levels for n in level], dtype=torch.long),
                             persistent=False)
        bounds = [0]
        for level in levels:
            bounds.append(bounds[-1] + len(level))
        self.bounds = bounds

    @classmethod
    def refusal(cls, field) -> str:
        """Why ``field`` has no twin, or "" (dagnet.fields.portable refuses to export it)."""
        return "" if field.parents is not None else ("only a tree CRF with a fixed tree (parents=...) has a "
                                                     "portable twin; this one takes its tree with every call")

    @classmethod
    def from_field(cls, field: nn.Module) -> "TreeCRF":
        if field.parents is None:
            raise ValueError(cls.refusal(field))
        twin = cls(field.num_tags, field.parents.tolist()).to(field.pairwise.device)
        twin.load_state_dict(field.state_dict(), assign=True)   # the field's dtype and device
        return twin

    def _level(self, depth: int) -> Tuple[Tensor, Tensor]:
        """(nodes, their parents) at one depth (depth >= 1)."""
        nodes = self.order[self.bounds[depth]:self.bounds[depth + 1]]
        return nodes, self.parents[nodes]

    def _inside(self, potentials: Tensor, pair: Tensor) -> Tuple[Tensor, Tensor]:
        """(in (B, N, K), up (B, N, K)): inside scores and each node's message to its parent."""
        incoming = torch.zeros_like(potentials)
        up = torch.zeros_like(potentials)
        for depth in range(len(self.bounds) - 2, 0, -1):
            nodes, parents = self._level(depth)
            inside = potentials.index_select(1, nodes) + incoming.index_select(1, nodes)
            message = torch.logsumexp(inside.unsqueeze(-2) + pair, -1)        # (B, n_d, K) over parent states
            incoming = incoming.index_add(1, parents, message)
            up = up.index_add(1, nodes, message)
        return potentials + incoming, up

    @torch.jit.export
    def log_partition(self, potentials: Tensor) -> Tensor:
        """log Z (B,): the product over the trees of the forest."""
        inside, _ = self._inside(potentials, self.pairwise.to(potentials.dtype))
        roots = self.order[:self.bounds[1]]
        return torch.logsumexp(inside.index_select(1, roots), -1).sum(-1)

    @torch.jit.export
    def marginals(self, potentials: Tensor) -> Tensor:
        """Node marginals (B, N, K) from the inside and outside passes."""
        pair = self.pairwise.to(potentials.dtype)
        inside, up = self._inside(potentials, pair)
        outside = torch.zeros_like(potentials)
        for depth in range(1, len(self.bounds) - 1):
            nodes, parents = self._level(depth)
            # the parent without this child's message; up = -inf only if the child's
            # subtree is impossible, and then so is the parent's inside score
            cavity = (inside.index_select(1, parents) + outside.index_select(1, parents)
                      - up.index_select(1, nodes).masked_fill(up.index_select(1, nodes) == float("-inf"), 0.0))
            message = torch.logsumexp(cavity.unsqueeze(-1) + pair, -2)       # (B, n_d, K) over child states
            outside = outside.index_copy(1, nodes, message)
        return (inside + outside).softmax(-1)

    @torch.jit.export
    def decode(self, potentials: Tensor) -> Tuple[Tensor, Tensor]:
        """(MAP states (B, N), their score (B,)): max-product inside, then back down the tree."""
        pair = self.pairwise.to(potentials.dtype)
        incoming = torch.zeros_like(potentials)
        best_child = torch.zeros(potentials.shape, dtype=torch.long, device=potentials.device)
        for depth in range(len(self.bounds) - 2, 0, -1):
            nodes, parents = self._level(depth)
            inside = potentials.index_select(1, nodes) + incoming.index_select(1, nodes)
            message, choice = (inside.unsqueeze(-2) + pair).max(-1)          # per parent state
            incoming = incoming.index_add(1, parents, message)
            best_child = best_child.index_copy(1, nodes, choice)
        inside = potentials + incoming
        labels = inside.argmax(-1)
        score = inside.amax(-1).index_select(1, self.order[:self.bounds[1]]).sum(-1)
        for depth in range(1, len(self.bounds) - 1):
            nodes, parents = self._level(depth)
            chosen = best_child.index_select(1, nodes).gather(2, labels.index_select(1, parents).unsqueeze(-1))
            labels = labels.index_copy(1, nodes, chosen.squeeze(-1))
        return labels, score
