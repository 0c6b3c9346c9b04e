"""The one interface every structured node implements.

A ``Field`` is an ``nn.Module`` that owns its pairwise parameters and takes
*potentials* from a network: per-position scores, laid out as the node's
first input. Every query has the same name, arguments and return types on
every field:

==================================  ================================================
``log_partition(x, mask)``          log Z (B,)
``marginals(x, mask)``              probabilities, laid out like ``x`` (0 where absent)
``decode(x, mask)``                 ``(labels, score)``: the MAP labelling and its score (B,)
``kbest(x, k, mask)``               ``(labels, scores)``: (B, k, ...) and (B, k), best first
``sample(x, n, mask, generator=)``  labels (n, B, ...)
``entropy(x, mask)``                H(p(y | x)) (B,), in nats
``score(x, labels, mask)``          the unnormalised log-probability of ``labels`` (B,)
``nll(x, labels, mask, reduction)`` -log p(labels | x); ``reduction`` "mean" (default), "sum", "none"
==================================  ================================================

One meaning everywhere:

* ``mask`` (B, *label shape*) bool selects the positions that *exist*; absent
  positions take no part in any sum, get marginal 0 and label -1. ``None``:
  every position exists.
* label ``-1`` in ``nll`` means *unlabelled*: the position exists and is summed
  out, so ``nll = log Z - log Z(labellings that agree with the given labels)``.
* a score of ``-inf`` means impossible (a disallowed tag or transition, a
  k-best slot with no path behind it, whose labels are -1).
* a labelling's *score* is its log-probability up to log Z:
  ``log p(labels | x) = score - log Z``.

A field states which queries it answers exactly and which approximately
(``exact``, ``approximate``); any other raises :class:`UnsupportedQuery`. The
exact fields run one dynamic program per structure over a semiring
(:mod:`dagnet.fields.semiring`); the loopy ones (grid, dense) answer with
their approximate inference and say which.
"""
from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import torch
from torch import Tensor, nn

QUERIES = ("log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll")
REDUCTIONS = ("mean", "sum", "none")


class UnsupportedQuery(NotImplementedError):
    """A field was asked a query it does not answer (see ``Field.supports``)."""


class Field(nn.Module):
    """Base class of every structured node (module doc). Subclasses set
    ``num_labels``, declare ``exact`` and ``approximate`` and implement those
    queries; ``nll`` and ``forward`` come for free from ``log_partition`` and
    ``clamped_log_partition`` (log Z over the labellings that agree with partial labels)."""

    #: queries answered exactly, and with the field's stated approximation
    exact: ClassVar[frozenset] = frozenset()
    approximate: ClassVar[frozenset] = frozenset()
    #: what one example's labels are: "sequence", "tree", "grid" or "class"
    structure: ClassVar[str] = ""
    num_labels: int

    @classmethod
    def supports(cls, query: str) -> bool:
        return query in cls.exact or query in cls.approximate

    def _unsupported(self, query: str):
        answered = sorted(self.exact | self.approximate, key=QUERIES.index)
        return UnsupportedQuery(f"{type(self).__name__} does not answer `{query}`; it answers: "
                                f"{', '.join(answered)} (see docs/fields.md)")

    def log_partition(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        raise self._unsupported("log_partition")

    def marginals(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        raise self._unsupported("marginals")

    def decode(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        raise self._unsupported("decode")

    def kbest(self, potentials: Tensor, k: int, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        raise self._unsupported("kbest")

    def sample(self, potentials: Tensor, n: int = 1, mask: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        raise self._unsupported("sample")

    def entropy(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        raise self._unsupported("entropy")

    def score(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        raise self._unsupported("score")

    def clamped_log_partition(self, potentials: Tensor, labels: Tensor,
                              mask: Optional[Tensor] = None) -> Tensor:
        """log Z over the labellings that agree with ``labels`` where they are not -1."""
        raise self._unsupported("nll")

    def nll(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None,
            reduction: str = "mean") -> Tensor:
        """-log p(labels | x) per example, reduced; -1 labels are summed out."""
        check_reduction(reduction)
        losses = self.log_partition(potentials, mask) - self.clamped_log_partition(potentials, labels, mask)
        return reduce_loss(losses, reduction)

    def forward(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None,
                reduction: str = "mean") -> Tensor:
        return self.nll(potentials, labels, mask, reduction)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}")


def reduce_loss(losses: Tensor, reduction: str) -> Tensor:
    check_reduction(reduction)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k
