"""Grid CRF, portable: loopy BP and mean field on the 4-connected grid, in plain torch.

Unary logits (B, L, H, W) and one pairwise log-potential psi (L, L) (Potts:
``weight`` times the identity; or a full ``compatibility``). Inference runs a
fixed number of iterations, and every step is a whole-grid tensor operation:
neighbours come from shifting the grid by one pixel (zero padding off the
grid), and a checkerboard half sweep is a ``torch.where`` on the pixel
colour. So nothing depends on the data or on H and W, and one exported
graph serves every batch and image size.

- mean field: Q_i(l) ∝ exp(logits_i(l) + sum_j sum_l' psi Q_j(l')), black
  pixels (h + w even) then white ones per sweep, or all at once ("parallel");
- loopy BP: synchronous, log-domain messages, normalised and damped; the
  beliefs give marginals (sum-product) or max-marginals for decoding.

Absent pixels (``mask``) have no unary and no edges: marginal 0, label -1.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _grid_shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """out[..., h, w] = x[..., h - dy, w - dx], zero where that is off the grid."""
    height, width = x.shape[-2], x.shape[-1]
    padded = F.pad(x, [max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)])
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + height, left:left + width]


def _grid_neighbour_field(q: Tensor, psi: Tensor) -> Tensor:
    """sum over the 4 neighbours j of sum_l' psi(., l') q_j(l'), psi oriented
    [left or top end, right or bottom end]; q is 0 at absent pixels."""
    as_first = torch.einsum("bkhw,kl->blhw", q, psi)      # j is the left/top end
    as_second = torch.einsum("bkhw,lk->blhw", q, psi)     # j is the right/bottom end
    return (_grid_shift(as_first, 0, 1) + _grid_shift(as_first, 1, 0)
            + _grid_shift(as_second, 0, -1) + _grid_shift(as_second, -1, 0))


def _grid_mean_field(logits: Tensor, psi: Tensor, present: Tensor, iterations: int, checkerboard: bool) -> Tensor:
    """Mean-field log-marginals (B, L, H, W) after ``iterations`` sweeps."""
    height, width = logits.shape[-2], logits.shape[-1]
    rows = torch.arange(height, device=logits.device).unsqueeze(1)
    black = (rows + torch.arange(width, device=logits.device)) % 2 == 0
    phases = [black, ~black] if checkerboard else [torch.ones_like(black)]
    log_q = logits.log_softmax(1)
    for _ in range(iterations):
        for phase in phases:
            update = (logits + _grid_neighbour_field(log_q.exp() * present, psi)).log_softmax(1)
            log_q = torch.where(phase, update, log_q)
    return log_q


def _grid_reduce(x: Tensor, dim: int, max_product: bool) -> Tensor:
    return x.amax(dim) if max_product else torch.logsumexp(x, dim)


def _grid_bp_beliefs(logits: Tensor, psi: Tensor, present: Tensor, iterations: int, damping: float,
                     max_product: bool) -> Tensor:
    """Normalised log-beliefs (B, L, H, W) after ``iterations`` rounds of synchronous loopy BP.

    Each message is named by the side of the receiving pixel it comes from; the
    message from i to j reduces (sum or max) over x_i the cavity logits_i +
    (messages into i except j's) + psi, is normalised, shifted onto j and damped.
    A message is 0 wherever either end is absent or off the grid.
    """
    linked_left = present * _grid_shift(present, 0, 1) > 0
    linked_right = present * _grid_shift(present, 0, -1) > 0
    linked_up = present * _grid_shift(present, 1, 0) > 0
    linked_down = present * _grid_shift(present, -1, 0) > 0
    from_left, from_right = torch.zeros_like(logits), torch.zeros_like(logits)
    from_up, from_down = torch.zeros_like(logits), torch.zeros_like(logits)
    forward_pair = psi[None, :, :, None, None]        # [sender, receiver] for messages going right/down
    backward_pair = psi.t()[None, :, :, None, None]
    for _ in range(iterations):
        belief = logits + from_left + from_right + from_up + from_down
        updated = []
        for cavity, pair, dy, dx, old, linked in [
                (belief - from_right, forward_pair, 0, 1, from_left, linked_left),
                (belief - from_left, backward_pair, 0, -1, from_right, linked_right),
                (belief - from_down, forward_pair, 1, 0, from_up, linked_up),
                (belief - from_up, backward_pair, -1, 0, from_down, linked_down)]:
            outgoing = _grid_reduce(cavity.unsqueeze(2) + pair, 1, max_product)
            outgoing = outgoing - _grid_reduce(outgoing, 1, max_product).unsqueeze(1)
            message = (1 - damping) * _grid_shift(outgoing, dy, dx) + damping * old
            updated.append(torch.where(linked, message, torch.zeros_like(message)))
        from_left, from_right, from_up, from_down = updated[0], updated[1], updated[2], updated[3]
    return (logits + from_left + from_right + from_up + from_down).log_softmax(1)


class GridCRF(nn.Module):
    """The grid CRF's forward (log-marginals), marginals and max-product decoding."""

    def __init__(self, num_labels: int, pairwise: str = "potts", weight: float = 1.0, inference: str = "bp",
                 iterations: int = 30, damping: float = 0.5, schedule: str = "checkerboard"):
        super().__init__()
        self.num_labels, self.inference, self.iterations = num_labels, inference, iterations
        self.damping, self.checkerboard = damping, schedule == "checkerboard"
        if pairwise == "potts":
            self.weight = nn.Parameter(torch.tensor(float(weight)))
        else:
            self.compatibility = nn.Parameter(torch.zeros(num_labels, num_labels))

    @classmethod
    def from_field(cls, field: nn.Module) -> "GridCRF":
        twin = cls(field.num_labels, field.pairwise, inference=field.inference, iterations=field.iterations,
                   damping=field.damping, schedule=field.schedule)
        twin.load_state_dict(field.state_dict(), assign=True)   # the field's dtype and device
        return twin

    def psi(self, dtype: torch.dtype) -> Tensor:
        """The (L, L) pairwise log-potential psi(x_left_or_top, x_right_or_bottom)."""
        if hasattr(self, "weight"):
            return (self.weight * torch.eye(self.num_labels, device=self.weight.device)).to(dtype)
        return self.compatibility.to(dtype)

    def _existing(self, potentials: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(logits with 0 at absent pixels, presence (B, 1, H, W) in the logits' dtype)."""
        if mask is None:
            return potentials, torch.ones_like(potentials[:, :1])
        present = mask.unsqueeze(1).to(potentials.dtype)
        return torch.where(present > 0, potentials, torch.zeros_like(potentials)), present

    def forward(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Approximate log-marginals (B, L, H, W), -inf at absent pixels."""
        logits, present = self._existing(potentials, mask)
        psi = self.psi(logits.dtype)
        if self.inference == "mean_field":
            log_q = _grid_mean_field(logits, psi, present, self.iterations, self.checkerboard)
        else:
            log_q = _grid_bp_beliefs(logits, psi, present, self.iterations, self.damping, False)
        return log_q.masked_fill(present == 0, float("-inf"))

    @torch.jit.export
    def marginals(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Approximate marginals (B, L, H, W), 0 at absent pixels."""
        return self.forward(potentials, mask).exp()

    @torch.jit.export
    def decode(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(labels (B, H, W), -1 at absent pixels; their score (B,)): the argmax of the
        max-product BP max-marginals."""
        logits, present = self._existing(potentials, mask)
        psi = self.psi(logits.dtype)
        labels = _grid_bp_beliefs(logits, psi, present, self.iterations, self.damping, True).argmax(1)
        exists = present[:, 0] > 0
        unary = logits.gather(1, labels.unsqueeze(1)).sum([1, 2, 3])      # absent pixels: logits 0
        pairs = psi.flatten()
        horizontal = pairs[labels[:, :, :-1] * self.num_labels + labels[:, :, 1:]] * (exists[:, :, :-1] & exists[:, :, 1:])
        vertical = pairs[labels[:, :-1, :] * self.num_labels + labels[:, 1:, :]] * (exists[:, :-1, :] & exists[:, 1:, :])
        score = unary + horizontal.sum([1, 2]) + vertical.sum([1, 2])
        return labels.masked_fill(~exists, -1), score
