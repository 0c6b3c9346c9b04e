"""Latent-variable chain models: the hidden CRF and the latent-dynamic CRF.

Both put a chain of *hidden* states under the observed labels and sum the
hidden chain out with the chain CRF's one primitive, log Z over allowed paths.

Hidden CRF (Quattoni et al., 2007): one label y per sequence. Given y, a
chain over H hidden part states scores

    s(y, h) = bias[y] + start[y, h_0] + sum_t (emit[t, h_t] + hidden[y, h_t])
              + sum_t trans[y, h_{t-1}, h_t] + end[y, h_{L-1}],

with emissions (B, T, H) shared by all labels (the network's observation
features) and label-specific dynamics: start, end, transitions and the
label/part compatibility ``hidden`` are per label. Then
p(y | x) = sum_h exp s(y, h) / sum_{y', h} exp s(y', h): one chain log Z per
label, computed as a batch of B * Y chains with per-chain potentials.

Latent-dynamic CRF (Morency et al., CVPR 2007): one label per position; each
label owns a disjoint block of ``hidden_per_label`` hidden states (state s
belongs to label s // hidden_per_label), and a single chain CRF runs over all
L * hidden_per_label states. Training sums over the hidden paths that stay in
each position's block: nll = log Z(all) - log Z(allowed = blocks of the labels),
so label -1 (unlabelled) simply allows every block. Prediction: per-position
label marginals (the hidden marginals summed over each block), or Viterbi over
hidden states mapped to labels. With one hidden state per label it is exactly
a chain CRF over the labels.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from . import chain
from ._logspace import reduce_loss
from .chain import ChainCRF


class HiddenCRF(nn.Module):
    """Sequence classifier with a latent chain of ``num_hidden`` part states.

    Emissions are (B, T, H) hidden-state scores; ``mask`` (B, T) as in chain.py.
    Parameters (Y labels, H hidden states): ``bias`` (Y), ``start``, ``end`` and
    ``hidden`` (Y, H), ``transitions`` (Y, H, H) [label, from, to].
    """

    def __init__(self, num_labels: int, num_hidden: int, method: str = "auto"):
        super().__init__()
        self.num_labels, self.num_hidden, self.method = num_labels, num_hidden, method
        Y, H = num_labels, num_hidden
        self.bias = nn.Parameter(torch.zeros(Y))
        self.start = nn.Parameter(torch.empty(Y, H))
        self.end = nn.Parameter(torch.empty(Y, H))
        self.hidden = nn.Parameter(torch.empty(Y, H))
        self.transitions = nn.Parameter(torch.empty(Y, H, H))
        for p in (self.start, self.end, self.hidden, self.transitions):
            nn.init.uniform_(p, -0.1, 0.1)  # small and unequal: breaks the part symmetry

    def _per_label(self, emissions: Tensor, mask: Optional[Tensor]) -> tuple:
        """The B * Y chains (label-major): emissions and potentials, one per (label, example)."""
        B, T, H = emissions.shape
        Y = self.num_labels
        emit = (emissions.unsqueeze(0) + self.hidden[:, None, None, :]).reshape(Y * B, T, H)
        per_chain = [p.repeat_interleave(B, 0) for p in (self.start, self.end, self.transitions)]
        return emit, per_chain, None if mask is None else mask.repeat(Y, 1)

    def label_scores(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """bias[y] + log sum_h exp s(y, h) (B, Y): unnormalised log p(y | x)."""
        emit, potentials, mask = self._per_label(emissions, mask)
        logz = chain.log_partition(emit, *potentials, mask, method=self.method)
        return logz.view(self.num_labels, -1).t() + self.bias

    def log_prob(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log p(y | x) (B, Y), the hidden chain summed out."""
        return torch.log_softmax(self.label_scores(emissions, mask), -1)

    def log_partition(self, emissions, mask=None) -> Tensor:
        return torch.logsumexp(self.label_scores(emissions, mask), -1)

    def marginals(self, emissions, mask=None) -> Tensor:
        """p(y | x) (B, Y)."""
        return self.log_prob(emissions, mask).exp()

    def nll(self, emissions, labels, mask=None, reduction="mean") -> Tensor:
        losses = -self.log_prob(emissions, mask).gather(1, labels.unsqueeze(1)).squeeze(1)
        return reduce_loss(losses, reduction)

    forward = nll

    def decode(self, emissions, mask=None) -> Tensor:
        """The most probable label per sequence (B,)."""
        return self.label_scores(emissions, mask).argmax(-1)

    @torch.no_grad()
    def sample(self, emissions, n: int = 1, mask=None, generator=None) -> tuple:
        """n exact joint samples: labels (n, B) from p(y | x), then hidden paths
        (n, B, T) from p(h | y, x) (drawn for every label, the sampled one kept)."""
        B = emissions.shape[0]
        scores = self.label_scores(emissions, mask)
        noise = scores.new_empty((n,) + scores.shape).exponential_(generator=generator)
        noise = noise.log().neg()
        labels = (scores + noise).argmax(-1)  # Gumbel-max
        emit, potentials, chain_mask = self._per_label(emissions, mask)
        paths = chain.sample(emit, *potentials, n, chain_mask, generator)
        paths = paths.view(n, self.num_labels, B, -1)
        pick = labels.view(n, 1, B, 1).expand(-1, 1, -1, paths.shape[-1])
        return labels, paths.gather(1, pick).squeeze(1)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, num_hidden={self.num_hidden}"


class LatentDynamicCRF(nn.Module):
    """Sequence labeller whose labels each own ``hidden_per_label`` hidden states.

    Emissions are (B, T, L * hidden_per_label) hidden-state scores; labels
    (B, T) with -1 for unlabelled positions. ``chain`` is the ChainCRF over the
    hidden states and holds the parameters.
    """

    def __init__(self, num_labels: int, hidden_per_label: int, method: str = "auto"):
        super().__init__()
        self.num_labels, self.hidden_per_label = num_labels, hidden_per_label
        self.chain = ChainCRF(num_labels * hidden_per_label, method=method)
        owner = torch.arange(num_labels * hidden_per_label) // hidden_per_label
        self.register_buffer("owner", owner, persistent=False)  # label of each hidden state

    def allowed(self, labels: Tensor) -> Tensor:
        """(B, T, L h): the hidden states of each position's label; all where unlabelled."""
        return (self.owner == labels.unsqueeze(-1)) | (labels < 0).unsqueeze(-1)

    def log_partition(self, emissions, mask=None) -> Tensor:
        return self.chain.log_partition(emissions, mask)

    def nll(self, emissions, labels, mask=None, reduction="mean") -> Tensor:
        """-log p(labels | x) = log Z - log Z(hidden paths inside the labels' blocks)."""
        losses = (self.chain.log_partition(emissions, mask)
                  - self.chain.log_partition(emissions, mask, self.allowed(labels)))
        return reduce_loss(losses, reduction)

    forward = nll

    def marginals(self, emissions, mask=None) -> Tensor:
        """Label marginals (B, T, L): hidden marginals summed over each label's block."""
        hidden = self.chain.marginals(emissions, mask)
        return hidden.unflatten(-1, (self.num_labels, self.hidden_per_label)).sum(-1)

    def decode(self, emissions, mask=None, method: str = "marginal") -> Tensor:
        """Labels (B, T), -1 off the chain: the most probable label per position
        ("marginal", as in the paper) or the label of the Viterbi hidden path ("viterbi")."""
        if method == "viterbi":
            hidden, _ = self.chain.decode(emissions, mask)
            return torch.where(hidden >= 0, hidden // self.hidden_per_label, hidden)
        if method != "marginal":
            raise ValueError(f"unknown decode method {method!r}; expected 'marginal' or 'viterbi'")
        labels = self.marginals(emissions, mask).argmax(-1)
        return labels if mask is None else labels.masked_fill(~mask.bool(), -1)

    def sample(self, emissions, n: int = 1, mask=None, generator=None) -> Tensor:
        """n exact samples of label sequences (n, B, T): hidden paths, mapped to labels."""
        hidden = self.chain.sample(emissions, n, mask, generator)
        return torch.where(hidden >= 0, hidden // self.hidden_per_label, hidden)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, hidden_per_label={self.hidden_per_label}"
