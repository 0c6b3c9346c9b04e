"""Pairwise CRF on a 2-D 4-connected grid: mean-field, loopy BP and Gibbs sampling.

A labelling x of the H x W pixels scores

    score(x) = sum_i logits_i(x_i) + sum_{i~j} psi(x_i, x_j),     p(x) ∝ exp(score(x)),

over horizontal edges (i left of j) and vertical edges (i above j), with one
compatibility psi (L, L): Potts, psi = w I (Ising for two labels), or a full
learnable matrix.  Nothing here is exact on a loopy grid, so every query names
its approximation:

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dagnet.fields._logspace import reduce_loss

# Log-potential that makes a label impossible while keeping arithmetic finite
# (a true -inf would turn 0 * log 0 into NaN in entropies and gradients).
IMPOSSIBLE = -1e4


class GridCRF(nn.Module):
    """Potts or full-compatibility CRF over (B, L, H, W) unary logits.

    ``inference`` ("bp" or "mean_field") answers ``forward``/``marginals``,
    ``log_partition`` and ``nll``; ``decode`` uses max-product BP.
    """

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

    def forward(self, logits: Tensor) -> Tensor:
        """Approximate log-marginals (B, L, H, W)."""
        psi = self.psi(logits.dtype)
        if self.inference == "mean_field":
            return mean_field(logits, psi, self.iterations, self.schedule)
        return beliefs(logits, loopy_bp(logits, psi, self.iterations, self.damping))

    def marginals(self, logits: Tensor) -> Tensor:
        """Approximate marginals (B, L, H, W)."""
        return self.forward(logits).exp()

    def log_partition(self, logits: Tensor) -> Tensor:
        """Estimate of log Z (B,): Bethe (BP) or the mean-field lower bound."""
        psi = self.psi(logits.dtype)
        if self.inference == "mean_field":
            return mean_field_elbo(logits, psi, mean_field(logits, psi, self.iterations, self.schedule))
        return bethe_log_partition(logits, psi, loopy_bp(logits, psi, self.iterations, self.damping))

    def nll(self, logits: Tensor, labels: Tensor, mask: Tensor | None = None, reduction: str = "none") -> Tensor:
        """-log p(observed labels), labels (B, H, W) with -1 for unobserved.

        Computed as log Z - log Z(observed pixels clamped), both with the chosen
        approximation: the pixels marked -1 (or outside ``mask``) are summed out.
        Exact on trees with BP; with every pixel observed the second term is
        score(labels). ``reduction``: "none" (B,), "sum" or "mean", as the other fields.
        """
        if mask is not None:
            labels = labels.masked_fill(~mask.bool(), -1)
        return reduce_loss(self._nll(logits, labels), reduction)

    def _nll(self, logits: Tensor, labels: Tensor) -> Tensor:
        observed = labels >= 0
        allowed = F.one_hot(labels.clamp(min=0), self.num_labels).permute(0, 3, 1, 2).bool()
        allowed |= ~observed.unsqueeze(1)
        return self.log_partition(logits) - self.log_partition(logits.masked_fill(~allowed, IMPOSSIBLE))

    def decode(self, logits: Tensor, method: str = "max_product") -> Tensor:
        """Labels (B, H, W): argmax of max-product max-marginals; ``"icm"`` then
        refines them by iterated conditional modes (checkerboard sweeps until
        no pixel changes), which never lowers the score."""
        if method not in ("max_product", "icm"):
            raise ValueError(f"decode method must be 'max_product' or 'icm', got {method!r}")
        psi = self.psi(logits.dtype)
        with torch.no_grad():
            labels = beliefs(logits, loopy_bp(logits, psi, self.iterations, self.damping, max_product=True)).argmax(1)
            return icm(logits, psi, labels) if method == "icm" else labels

    def score(self, logits: Tensor, labels: Tensor) -> Tensor:
        """score(labels) (B,) for labels (B, H, W)."""
        psi = self.psi(logits.dtype)
        unary = logits.gather(1, labels.unsqueeze(1)).sum((1, 2, 3))
        horizontal = psi[labels[:, :, :-1], labels[:, :, 1:]].sum((1, 2))
        vertical = psi[labels[:, :-1, :], labels[:, 1:, :]].sum((1, 2))
        return unary + horizontal + vertical

    def sample(self, logits: Tensor, n: int, burn_in: int = 50, seed: int = 0) -> Tensor:
        """``n`` Gibbs samples (n, B, H, W), one per checkerboard sweep after ``burn_in`` sweeps."""
        generator = torch.Generator(device=logits.device).manual_seed(seed)
        with torch.no_grad():
            return gibbs(logits, self.psi(logits.dtype), n, burn_in, generator)


# --------------------------------------------------------------------------- grid helpers


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """out[..., h, w] = x[..., h - dy, w - dx], zero where that is off the grid."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    return padded[..., max(-dy, 0):max(-dy, 0) + height, max(-dx, 0):max(-dx, 0) + width]


def _neighbour_field(q: Tensor, psi: Tensor) -> Tensor:
    """sum over the 4 neighbours j of sum_l' psi(., l') q_j(l'), oriented by edge.

    A left/top neighbour j contributes sum_l' q_j(l') psi(l', l); a right/bottom
    neighbour contributes sum_l' psi(l, l') q_j(l').  ``q`` may be one-hot.
    """
    as_first = torch.einsum("bkhw,kl->blhw", q, psi)       # j is the left/top end
    as_second = torch.einsum("bkhw,lk->blhw", q, psi)      # j is the right/bottom end
    return (_shift(as_first, 0, 1) + _shift(as_first, 1, 0)
            + _shift(as_second, 0, -1) + _shift(as_second, -1, 0))


def _checkerboard(height: int, width: int, device) -> Tensor:
    """(H, W) bool, True on black pixels (h + w even)."""
    rows = torch.arange(height, device=device).unsqueeze(1)
    return (rows + torch.arange(width, device=device)) % 2 == 0


def _degrees(height: int, width: int, device) -> Tensor:
    """(H, W) number of grid neighbours of every pixel."""
    rows = torch.arange(height, device=device).unsqueeze(1)
    cols = torch.arange(width, device=device)
    return (rows > 0).long() + (rows < height - 1).long() + (cols > 0).long() + (cols < width - 1).long()


def _entropy(log_p: Tensor, dims) -> Tensor:
    """-sum p log p over ``dims`` from normalised log-probabilities (finite)."""
    return -(log_p.exp() * log_p).sum(dims)


# --------------------------------------------------------------------------- mean field


def mean_field(logits: Tensor, psi: Tensor, iterations: int, schedule: str = "checkerboard") -> Tensor:
    """Naive mean-field log-marginals after ``iterations`` full sweeps.

    Q_i(l) ∝ exp(logits_i(l) + neighbour field); checkerboard: black pixels
    then white pixels per sweep, or every pixel at once with "parallel".
    """
    log_q = logits.log_softmax(1)
    black = _checkerboard(*logits.shape[-2:], logits.device)
    phases = [black, ~black] if schedule == "checkerboard" else [torch.ones_like(black)]
    for _ in range(iterations):
        for phase in phases:
            update = (logits + _neighbour_field(log_q.exp(), psi)).log_softmax(1)
            log_q = torch.where(phase, update, log_q)
    return log_q


def mean_field_elbo(logits: Tensor, psi: Tensor, log_q: Tensor) -> Tensor:
    """-F(Q) = E_Q[score] + H(Q) <= log Z, per image (B,); KL(Q || p) = log Z - ELBO."""
    q = log_q.exp()
    unary = (q * logits).sum((1, 2, 3))
    horizontal = torch.einsum("bkhw,kl,blhw->b", q[..., :-1], psi, q[..., 1:])
    vertical = torch.einsum("bkhw,kl,blhw->b", q[..., :-1, :], psi, q[..., 1:, :])
    return unary + horizontal + vertical + _entropy(log_q, (1, 2, 3))


# --------------------------------------------------------------------------- loopy BP


def loopy_bp(logits: Tensor, psi: Tensor, iterations: int, damping: float = 0.5,
             max_product: bool = False) -> dict[str, Tensor]:
    """Synchronous loopy BP; returns the incoming log-messages of every pixel.

    ``messages[d][..., h, w]`` is the message into pixel (h, w) from its
    neighbour on side d ("left", "right", "up", "down"); off-grid ones are 0.
    The message from i to j sums (or maxes) over x_i the cavity
    logits_i + (messages into i except j's) + psi, then is normalised.
    """
    reduce = (lambda t, dim: t.amax(dim)) if max_product else torch.logsumexp
    messages = {side: torch.zeros_like(logits) for side in ("left", "right", "up", "down")}
    # (source side at the receiver, side the sender excludes, psi orientation, shift)
    routes = [("left", "right", psi, (0, 1)), ("right", "left", psi.t(), (0, -1)),
              ("up", "down", psi, (1, 0)), ("down", "up", psi.t(), (-1, 0))]
    for _ in range(iterations):
        belief = logits + sum(messages.values())
        updated = {}
        for side, excluded, pair, (dy, dx) in routes:
            cavity = belief - messages[excluded]
            outgoing = reduce(cavity.unsqueeze(2) + pair[None, :, :, None, None], 1)
            outgoing = outgoing - reduce(outgoing, 1).unsqueeze(1)
            updated[side] = (1 - damping) * _shift(outgoing, dy, dx) + damping * messages[side]
        messages = updated
    return messages


def beliefs(logits: Tensor, messages: dict[str, Tensor]) -> Tensor:
    """Normalised log-beliefs (B, L, H, W): marginals or max-marginals."""
    return (logits + sum(messages.values())).log_softmax(1)


def bethe_log_partition(logits: Tensor, psi: Tensor, messages: dict[str, Tensor]) -> Tensor:
    """The Bethe estimate of log Z (B,), exact on trees at convergence:

    sum_i E_bi[logits_i] + sum_ij E_bij[psi] + sum_ij H(b_ij) - sum_i (deg_i - 1) H(b_i).
    """
    belief = logits + sum(messages.values())
    log_b = belief.log_softmax(1)
    total = (log_b.exp() * logits).sum((1, 2, 3))
    degrees = _degrees(*logits.shape[-2:], logits.device)
    total = total - ((degrees - 1) * _entropy(log_b, 1)).sum((1, 2))
    # edge beliefs: cavity of each end (without the other's message) plus psi
    for first, second in [((belief - messages["right"])[..., :-1], (belief - messages["left"])[..., 1:]),
                          ((belief - messages["down"])[..., :-1, :], (belief - messages["up"])[..., 1:, :])]:
        joint = first.unsqueeze(2) + second.unsqueeze(1) + psi[None, :, :, None, None]
        log_pair = joint - torch.logsumexp(joint, (1, 2), keepdim=True)
        total = total + (log_pair.exp() * psi[None, :, :, None, None]).sum((1, 2, 3, 4))
        total = total + _entropy(log_pair, (1, 2, 3, 4))
    return total


# --------------------------------------------------------------------------- MAP and sampling


def icm(logits: Tensor, psi: Tensor, labels: Tensor, max_sweeps: int = 100) -> Tensor:
    """Iterated conditional modes from ``labels``: checkerboard argmax updates until stable."""
    black = _checkerboard(*logits.shape[-2:], logits.device)
    for _ in range(max_sweeps):
        previous = labels
        for phase in (black, ~black):
            onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
            best = (logits + _neighbour_field(onehot, psi)).argmax(1)
            labels = torch.where(phase, best, labels)
        if torch.equal(labels, previous):
            break
    return labels


def gibbs(logits: Tensor, psi: Tensor, n: int, burn_in: int, generator: torch.Generator) -> Tensor:
    """Checkerboard Gibbs sampler; samples (n, B, H, W), one per sweep after burn-in.

    Each colour is drawn exactly from its conditional given the other colour,
    by the Gumbel-max trick on logits + neighbour field.
    """
    black = _checkerboard(*logits.shape[-2:], logits.device)
    labels = _gumbel_argmax(logits, generator)
    samples = []
    for sweep in range(burn_in + n):
        for phase in (black, ~black):
            onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
            drawn = _gumbel_argmax(logits + _neighbour_field(onehot, psi), generator)
            labels = torch.where(phase, drawn, labels)
        if sweep >= burn_in:
            samples.append(labels)
    return torch.stack(samples)


def _gumbel_argmax(scores: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per pixel from softmax(scores) over dim 1."""
    uniform = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=scores.dtype)
    return (scores - torch.log(-torch.log(uniform.clamp_min(1e-12)))).argmax(1)
