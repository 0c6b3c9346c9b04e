"""Pairwise CRF on a 2-D 4-connected grid: mean-field, loopy BP and Gibbs sampling.

A labelling x of the existing pixels of an H x W grid scores

    score(x) = sum_i logits_i(x_i) + sum_{i~j} psi(x_i, x_j),     p(x) ∝ exp(score(x)),

over horizontal edges (i left of j) and vertical edges (i above j) whose two
ends exist, with one compatibility psi (L, L): Potts, psi = w I (Ising for two
labels), or a full learnable matrix. A ``mask`` (B, H, W) selects the pixels
that exist: absent ones have no unary and no edges (their neighbour fields
and BP messages are zero), marginal 0 and label -1, so a sub-rectangle mask
is the cropped grid. A logit of -inf makes a label impossible. Nothing here is
exact on a loopy grid, so every query names its approximation:

- mean field: checkerboard sweeps (all "black" pixels, h + w even, at once,
  then all white ones).  Pixels of one colour are independent given the
  other colour, so a half sweep is exact coordinate descent and the
  variational free energy never increases.  ``schedule="parallel"`` updates
  every pixel at once (faster to mix on GPUs, but may oscillate).
- loopy belief propagation: synchronous (flooding) schedule, messages in the
  log domain, normalised and damped, ``m <- (1 - damping) m_new + damping m``.
  Sum-product gives marginals and the Bethe estimate of log Z; max-product
  gives max-marginals for decoding.  On a tree (a 1 x N grid) both are exact
  once ``iterations`` exceeds the diameter.
- Gibbs sampling: checkerboard sweeps, each colour sampled exactly given the other.

Both variational estimates are ``log Z ≈ E_b[score] + H(b)``: b the mean-field
product with its exact entropy (the ELBO, a lower bound), or the BP beliefs with
the Bethe entropy.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dagnet.fields.protocol import Field
from dagnet.fields.semiring import NEG_INF, gumbel_argmax

# side of the receiving pixel a message comes from -> (dy, dx) with which
# _shift moves the sender's value onto the receiver
SIDES = {"left": (0, 1), "right": (0, -1), "up": (1, 0), "down": (-1, 0)}


class GridCRF(Field):
    """Potts or full-compatibility CRF over (B, L, H, W) unary logits (labels on axis 1).

    ``inference`` ("bp" or "mean_field") answers ``forward``/``marginals``,
    ``log_partition``, ``entropy`` and ``nll``; ``decode`` uses max-product BP
    and ``sample`` Gibbs sampling. Only ``score`` is exact; ``kbest`` is not answered.
    """

    structure = "grid"
    exact = frozenset({"score"})
    approximate = frozenset({"log_partition", "marginals", "decode", "sample", "entropy", "nll"})

    def __init__(self, num_labels: int, pairwise: str = "potts", weight: float = 1.0,
                 inference: str = "bp", iterations: int = 30, damping: float = 0.5,
                 schedule: str = "checkerboard"):
        super().__init__()
        if pairwise not in ("potts", "full"):
            raise ValueError(f"pairwise must be 'potts' or 'full', got {pairwise!r}")
        if inference not in ("bp", "mean_field") or schedule not in ("checkerboard", "parallel"):
            raise ValueError(f"unknown inference {inference!r} or schedule {schedule!r}")
        self.num_labels, self.pairwise = num_labels, pairwise
        self.inference, self.iterations, self.damping, self.schedule = inference, iterations, damping, schedule
        if pairwise == "potts":
            self.weight = nn.Parameter(torch.tensor(float(weight)))
        else:
            self.compatibility = nn.Parameter(weight * torch.eye(num_labels))

    def psi(self, dtype=None) -> Tensor:
        """The (L, L) pairwise log-potential psi(x_left_or_top, x_right_or_bottom)."""
        if self.pairwise == "potts":
            psi = self.weight * torch.eye(self.num_labels, device=self.weight.device)
        else:
            psi = self.compatibility
        return psi if dtype is None else psi.to(dtype)

    def _existing(self, potentials: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(logits with 0 at absent pixels, mask (B, H, W) bool)."""
        batch, labels, height, width = potentials.shape
        if labels != self.num_labels:
            raise ValueError(f"expected potentials (B, {self.num_labels}, H, W), got {tuple(potentials.shape)}")
        if mask is None:
            return potentials, potentials.new_ones((batch, height, width), dtype=torch.bool)
        if mask.shape != (batch, height, width):
            raise ValueError(f"mask must be (B, H, W) = {(batch, height, width)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        return potentials.masked_fill(~mask.unsqueeze(1), 0.0), mask

    def _variational(self, logits: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(log-marginals, E_b[score], H(b)) of the chosen approximation b."""
        psi = self.psi(logits.dtype)
        if self.inference == "mean_field":
            log_q = mean_field(logits, psi, self.iterations, self.schedule, mask)
            return (log_q, *mean_field_terms(logits, psi, log_q))
        links = _links(mask)
        messages = loopy_bp(logits, psi, self.iterations, self.damping, links=links)
        log_b = beliefs(logits, messages).masked_fill(~mask.unsqueeze(1), NEG_INF)
        return (log_b, *bethe_terms(logits, psi, messages, links, mask))

    def forward(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Approximate log-marginals (B, L, H, W), -inf at absent pixels."""
        logits, mask = self._existing(potentials, mask)
        return self._variational(logits, mask)[0]

    def marginals(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Approximate marginals (B, L, H, W), 0 at absent pixels."""
        return self.forward(potentials, mask).exp()

    def log_partition(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Estimate of log Z (B,): Bethe (BP) or the mean-field lower bound (ELBO)."""
        _, energy, entropy = self._variational(*self._existing(potentials, mask))
        return energy + entropy

    def entropy(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Estimate of H(p) (B,): the Bethe entropy (BP) or the sum of the per-pixel
        mean-field entropies, so that log_partition = E_b[score] + entropy."""
        return self._variational(*self._existing(potentials, mask))[2]

    def clamped_log_partition(self, potentials: Tensor, labels: Tensor,
                              mask: Optional[Tensor] = None) -> Tensor:
        """The same estimate of log Z with every labelled pixel clamped (other labels -inf)."""
        allowed = F.one_hot(labels.clamp(min=0), self.num_labels).permute(0, 3, 1, 2).bool()
        allowed |= (labels < 0).unsqueeze(1)
        return self.log_partition(potentials.masked_fill(~allowed, NEG_INF), mask)

    def decode(self, potentials: Tensor, mask: Optional[Tensor] = None,
               method: str = "max_product") -> Tuple[Tensor, Tensor]:
        """(labels (B, H, W), -1 at absent pixels; their score (B,)): argmax of the
        max-product max-marginals; ``"icm"`` then refines them by iterated
        conditional modes (checkerboard sweeps until no pixel changes), which
        never lowers the score."""
        if method not in ("max_product", "icm"):
            raise ValueError(f"decode method must be 'max_product' or 'icm', got {method!r}")
        logits, mask = self._existing(potentials, mask)
        psi = self.psi(logits.dtype)
        with torch.no_grad():
            messages = loopy_bp(logits, psi, self.iterations, self.damping, max_product=True, links=_links(mask))
            labels = beliefs(logits, messages).argmax(1)
            if method == "icm":
                labels = icm(logits, psi, labels, mask)
        labels = labels.masked_fill(~mask, -1)
        return labels, self.score(potentials, labels, mask)

    def score(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """score(labels) (B,) for labels (B, H, W); the labels of absent pixels are ignored."""
        logits, mask = self._existing(potentials, mask)
        psi = self.psi(logits.dtype)
        labels = labels.clamp(min=0)
        unary = logits.gather(1, labels.unsqueeze(1)).sum((1, 2, 3))   # absent pixels: logits 0
        horizontal = psi[labels[:, :, :-1], labels[:, :, 1:]] * (mask[:, :, :-1] & mask[:, :, 1:])
        vertical = psi[labels[:, :-1, :], labels[:, 1:, :]] * (mask[:, :-1, :] & mask[:, 1:, :])
        return unary + horizontal.sum((1, 2)) + vertical.sum((1, 2))

    def sample(self, potentials: Tensor, n: int = 1, mask: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None, burn_in: int = 50) -> Tensor:
        """``n`` Gibbs samples (n, B, H, W), -1 at absent pixels, one per
        checkerboard sweep after ``burn_in`` sweeps (consecutive samples are correlated)."""
        logits, mask = self._existing(potentials, mask)
        with torch.no_grad():
            samples = gibbs(logits, self.psi(logits.dtype), n, burn_in, mask, generator)
        return samples.masked_fill(~mask, -1)


# --------------------------------------------------------------------------- grid helpers


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """out[..., h, w] = x[..., h - dy, w - dx], zero where that is off the grid."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    return padded[..., max(-dy, 0):max(-dy, 0) + height, max(-dx, 0):max(-dx, 0) + width]


def _links(mask: Tensor) -> dict[str, Tensor]:
    """side -> (B, 1, H, W) bool: the pixel and its neighbour on that side both exist."""
    present = mask.unsqueeze(1).float()
    return {side: (present * _shift(present, dy, dx)) > 0 for side, (dy, dx) in SIDES.items()}


def _neighbour_field(q: Tensor, psi: Tensor) -> Tensor:
    """sum over the 4 neighbours j of sum_l' psi(., l') q_j(l'), oriented by edge.

    A left/top neighbour j contributes sum_l' q_j(l') psi(l', l); a right/bottom
    neighbour contributes sum_l' psi(l, l') q_j(l').  ``q`` may be one-hot; it
    is 0 at absent pixels, which so contribute nothing.
    """
    as_first = torch.einsum("bkhw,kl->blhw", q, psi)       # j is the left/top end
    as_second = torch.einsum("bkhw,lk->blhw", q, psi)      # j is the right/bottom end
    return (_shift(as_first, 0, 1) + _shift(as_first, 1, 0)
            + _shift(as_second, 0, -1) + _shift(as_second, -1, 0))


def _one_hot(labels: Tensor, num_labels: int, mask: Tensor, dtype) -> Tensor:
    """(B, L, H, W) indicators of labels (B, H, W), 0 at absent pixels."""
    onehot = F.one_hot(labels.clamp(min=0), num_labels).permute(0, 3, 1, 2).to(dtype)
    return onehot * mask.unsqueeze(1)


def _checkerboard(height: int, width: int, device) -> Tensor:
    """(H, W) bool, True on black pixels (h + w even)."""
    rows = torch.arange(height, device=device).unsqueeze(1)
    return (rows + torch.arange(width, device=device)) % 2 == 0


def _finite(x: Tensor) -> Tensor:
    """x with -inf replaced by 0: for sums weighted by probabilities that are 0 there."""
    return x.masked_fill(x == NEG_INF, 0.0)


def _entropy(log_p: Tensor, dims) -> Tensor:
    """-sum p log p over ``dims`` from normalised log-probabilities, 0 log 0 := 0
    (NaN-free in value and gradient where log_p is -inf)."""
    p = log_p.exp()
    return -(p * log_p.masked_fill(p == 0, 0.0)).sum(dims)


# --------------------------------------------------------------------------- mean field


def mean_field(logits: Tensor, psi: Tensor, iterations: int, schedule: str = "checkerboard",
               mask: Optional[Tensor] = None) -> Tensor:
    """Naive mean-field log-marginals after ``iterations`` full sweeps, -inf at absent pixels.

    Q_i(l) ∝ exp(logits_i(l) + neighbour field); checkerboard: black pixels
    then white pixels per sweep, or every pixel at once with "parallel".
    """
    present = torch.ones_like(logits[:, :1], dtype=torch.bool) if mask is None else mask.unsqueeze(1)
    log_q = logits.log_softmax(1)
    black = _checkerboard(*logits.shape[-2:], logits.device)
    phases = [black, ~black] if schedule == "checkerboard" else [torch.ones_like(black)]
    for _ in range(iterations):
        for phase in phases:
            update = (logits + _neighbour_field(log_q.exp() * present, psi)).log_softmax(1)
            log_q = torch.where(phase, update, log_q)
    return log_q.masked_fill(~present, NEG_INF)


def mean_field_terms(logits: Tensor, psi: Tensor, log_q: Tensor) -> Tuple[Tensor, Tensor]:
    """(E_Q[score], H(Q)) per image (B,) for the product Q of the pixels' exp(log_q);
    absent pixels have Q = 0 and so drop out of both sums."""
    q = log_q.exp()
    unary = (q * _finite(logits)).sum((1, 2, 3))
    horizontal = torch.einsum("bkhw,kl,blhw->b", q[..., :-1], psi, q[..., 1:])
    vertical = torch.einsum("bkhw,kl,blhw->b", q[..., :-1, :], psi, q[..., 1:, :])
    return unary + horizontal + vertical, _entropy(log_q, (1, 2, 3))


def mean_field_elbo(logits: Tensor, psi: Tensor, log_q: Tensor) -> Tensor:
    """-F(Q) = E_Q[score] + H(Q) <= log Z, per image (B,); KL(Q || p) = log Z - ELBO."""
    energy, entropy = mean_field_terms(logits, psi, log_q)
    return energy + entropy


# --------------------------------------------------------------------------- loopy BP


def loopy_bp(logits: Tensor, psi: Tensor, iterations: int, damping: float = 0.5,
             max_product: bool = False, links: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
    """Synchronous loopy BP; returns the incoming log-messages of every pixel.

    ``messages[d][..., h, w]`` is the message into pixel (h, w) from its
    neighbour on side d ("left", "right", "up", "down"); it is 0 off the grid
    and, given ``links`` (from :func:`_links`), wherever either end is absent.
    The message from i to j sums (or maxes) over x_i the cavity
    logits_i + (messages into i except j's) + psi, then is normalised.
    """
    reduce = (lambda t, dim: t.amax(dim)) if max_product else torch.logsumexp
    messages = {side: torch.zeros_like(logits) for side in SIDES}
    # (side at the receiver, side the sender excludes, psi oriented [sender, receiver])
    routes = [("left", "right", psi), ("right", "left", psi.t()), ("up", "down", psi), ("down", "up", psi.t())]
    for _ in range(iterations):
        belief = logits + sum(messages.values())
        updated = {}
        for side, excluded, pair in routes:
            cavity = belief - messages[excluded]
            outgoing = reduce(cavity.unsqueeze(2) + pair[None, :, :, None, None], 1)
            outgoing = outgoing - reduce(outgoing, 1).unsqueeze(1)
            message = (1 - damping) * _shift(outgoing, *SIDES[side]) + damping * messages[side]
            updated[side] = message if links is None else torch.where(links[side], message, 0.0)
        messages = updated
    return messages


def beliefs(logits: Tensor, messages: dict[str, Tensor]) -> Tensor:
    """Normalised log-beliefs (B, L, H, W): marginals or max-marginals."""
    return (logits + sum(messages.values())).log_softmax(1)


def bethe_terms(logits: Tensor, psi: Tensor, messages: dict[str, Tensor],
                links: dict[str, Tensor], mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(E_b[score], Bethe entropy) per image (B,) from converged messages, over the
    existing pixels and edges; their sum is the Bethe estimate of log Z, exact on trees:

    E_b[score] = sum_i E_bi[logits_i] + sum_ij E_bij[psi],
    H_Bethe    = sum_ij H(b_ij) - sum_i (deg_i - 1) H(b_i).
    """
    belief = logits + sum(messages.values())
    log_b = belief.log_softmax(1)
    degrees = sum(link.to(logits.dtype) for link in links.values())[:, 0]
    energy = (log_b.exp() * _finite(logits)).sum((1, 2, 3))
    entropy = -torch.where(mask, (degrees - 1) * _entropy(log_b, 1), 0.0).sum((1, 2))
    # edge beliefs: cavity of each end (without the other's message) plus psi
    for first, second, exists in [
            ((belief - messages["right"])[..., :-1], (belief - messages["left"])[..., 1:], links["right"][..., :-1]),
            ((belief - messages["down"])[..., :-1, :], (belief - messages["up"])[..., 1:, :], links["down"][..., :-1, :])]:
        joint = first.unsqueeze(2) + second.unsqueeze(1) + psi[None, :, :, None, None]
        log_pair = joint - torch.logsumexp(joint, (1, 2), keepdim=True)
        weight = exists.to(logits.dtype)
        energy = energy + ((log_pair.exp() * psi[None, :, :, None, None]).sum((1, 2)) * weight[:, 0]).sum((1, 2))
        entropy = entropy + (_entropy(log_pair, (1, 2)) * weight[:, 0]).sum((1, 2))
    return energy, entropy


# --------------------------------------------------------------------------- MAP and sampling


def icm(logits: Tensor, psi: Tensor, labels: Tensor, mask: Tensor, max_sweeps: int = 100) -> Tensor:
    """Iterated conditional modes from ``labels``: checkerboard argmax updates until stable."""
    black = _checkerboard(*logits.shape[-2:], logits.device)
    for _ in range(max_sweeps):
        previous = labels
        for phase in (black, ~black):
            field = _neighbour_field(_one_hot(labels, logits.shape[1], mask, logits.dtype), psi)
            labels = torch.where(phase, (logits + field).argmax(1), labels)
        if torch.equal(labels, previous):
            break
    return labels


def gibbs(logits: Tensor, psi: Tensor, n: int, burn_in: int, mask: Tensor,
          generator: Optional[torch.Generator] = None) -> Tensor:
    """Checkerboard Gibbs sampler; samples (n, B, H, W), one per sweep after burn-in.

    Each colour is drawn exactly from its conditional given the other colour,
    by the Gumbel-max trick on logits + neighbour field (absent pixels: arbitrary).
    """
    black = _checkerboard(*logits.shape[-2:], logits.device)
    labels = gumbel_argmax(logits.movedim(1, -1), generator)
    samples = []
    for sweep in range(burn_in + n):
        for phase in (black, ~black):
            field = _neighbour_field(_one_hot(labels, logits.shape[1], mask, logits.dtype), psi)
            drawn = gumbel_argmax((logits + field).movedim(1, -1), generator)
            labels = torch.where(phase, drawn, labels)
        if sweep >= burn_in:
            samples.append(labels)
    return torch.stack(samples)
