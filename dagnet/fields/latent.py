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
from . import semiring as sr
from .chain import ChainCRF
from .protocol import Field, check_k


class HiddenCRF(Field):
    """Sequence classifier with a latent chain of ``num_hidden`` part states.

    Emissions are (B, T, H) hidden-state scores; ``mask`` (B, T) as in chain.py.
    Parameters (Y labels, H hidden states): ``bias`` (Y), ``start``, ``end`` and
    ``hidden`` (Y, H), ``transitions`` (Y, H, H) [label, from, to]. Its
    labelling is one label per sequence, so every query is exact and small:
    over the Y label scores, each a chain log Z over the hidden paths.
    """

    exact = frozenset({"log_partition", "marginals", "decode", "kbest", "sample", "entropy", "score", "nll"})
    structure = "class"

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
        per_chain = [p.unsqueeze(1).expand(Y, B, *p.shape[1:]).reshape(Y * B, *p.shape[1:])
                     for p in (self.start, self.end, self.transitions)]  # repeat_interleave(B, 0)
        return emit, per_chain, None if mask is None else mask.repeat(Y, 1)

    def label_scores(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """bias[y] + log sum_h exp s(y, h) (B, Y): unnormalised log p(y | x)."""
        emit, per_chain, mask = self._per_label(potentials, mask)
        logz = chain.log_partition(emit, *per_chain, mask, method=self.method)
        return logz.view(self.num_labels, -1).t() + self.bias

    def log_prob(self, potentials: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log p(y | x) (B, Y), the hidden chain summed out: the op's value."""
        return torch.log_softmax(self.label_scores(potentials, mask), -1)

    def log_partition(self, potentials, mask=None) -> Tensor:
        return torch.logsumexp(self.label_scores(potentials, mask), -1)

    def marginals(self, potentials, mask=None) -> Tensor:
        """p(y | x) (B, Y)."""
        return self.log_prob(potentials, mask).exp()

    def score(self, potentials, labels, mask=None) -> Tensor:
        """label_scores[labels] (B,); label -1 (unlabelled) sums over every label."""
        return self.clamped_log_partition(potentials, labels, mask)

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        scores = self.label_scores(potentials, mask)
        chosen = scores.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)
        return torch.where(labels >= 0, chosen, torch.logsumexp(scores, -1))

    def decode(self, potentials, mask=None) -> tuple:
        """The most probable label per sequence (B,) and its score (B,)."""
        scores, labels = self.label_scores(potentials, mask).max(-1)
        return labels, scores

    def kbest(self, potentials, k: int, mask=None) -> tuple:
        """The k most probable labels (B, k) and their scores (B, k); past Y, -1 and -inf."""
        scores = self.label_scores(potentials, mask)
        extra = max(0, check_k(k) - self.num_labels)
        top, labels = scores.topk(min(k, self.num_labels), -1)
        top = torch.cat([top, top.new_full((len(top), extra), sr.NEG_INF)], -1)
        return torch.cat([labels, labels.new_full((len(labels), extra), -1)], -1), top

    @torch.no_grad()
    def sample(self, potentials, n: int = 1, mask=None, generator=None) -> Tensor:
        """n exact samples of the label (n, B) from p(y | x)."""
        scores = self.label_scores(potentials, mask)
        return sr.gumbel_argmax(scores.expand(n, -1, -1), generator)

    @torch.no_grad()
    def sample_parts(self, potentials, n: int = 1, mask=None, generator=None) -> tuple:
        """n exact joint samples: labels (n, B) from p(y | x), then hidden paths
        (n, B, T) from p(h | y, x) (drawn for every label, the sampled one kept)."""
        B = potentials.shape[0]
        labels = self.sample(potentials, n, mask, generator)
        emit, per_chain, chain_mask = self._per_label(potentials, mask)
        paths = chain.sample(emit, *per_chain, n, chain_mask, generator)
        paths = paths.view(n, self.num_labels, B, -1)
        pick = labels.view(n, 1, B, 1).expand(-1, 1, -1, paths.shape[-1])
        return labels, paths.gather(1, pick).squeeze(1)

    def entropy(self, potentials, mask=None) -> Tensor:
        """H(y | x) (B,) of the label, the hidden chain summed out."""
        log_p = self.log_prob(potentials, mask)
        return -(log_p.exp() * log_p.masked_fill(log_p == sr.NEG_INF, 0.0)).sum(-1)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, num_hidden={self.num_hidden}"


class LatentDynamicCRF(Field):
    """Sequence labeller whose labels each own ``hidden_per_label`` hidden states.

    Emissions are (B, T, L * hidden_per_label) hidden-state scores; labels
    (B, T) with -1 for unlabelled positions. ``chain`` is the ChainCRF over the
    hidden states and holds the parameters.

    A labelling's probability sums over the hidden paths inside its blocks, so
    log Z, marginals, scores, nll and sampling are exact, but the most probable
    labelling, the k best and the label entropy are NP-hard in general (the
    labels are a function of a Markov chain). ``decode`` is the paper's
    per-position marginal decoding (or the Viterbi hidden path's labels),
    ``kbest`` ranks the distinct labellings among the k * hidden_per_label best
    hidden paths by their exact scores, and ``entropy`` is the entropy of the
    hidden path, an upper bound on the label entropy. With one hidden state per
    label all three are exact: the model is a chain CRF over the labels.
    """

    exact = frozenset({"log_partition", "marginals", "sample", "score", "nll"})
    approximate = frozenset({"decode", "kbest", "entropy"})
    structure = "sequence"

    def __init__(self, num_labels: int, hidden_per_label: int, method: str = "auto"):
        super().__init__()
        self.num_labels, self.hidden_per_label = num_labels, hidden_per_label
        self.chain = ChainCRF(num_labels * hidden_per_label, method=method)
        owner = torch.arange(num_labels * hidden_per_label) // hidden_per_label
        self.register_buffer("owner", owner, persistent=False)  # label of each hidden state

    def allowed(self, labels: Tensor) -> Tensor:
        """(B, T, L h): the hidden states of each position's label; all where unlabelled."""
        return (self.owner == labels.unsqueeze(-1)) | (labels < 0).unsqueeze(-1)

    def _labels(self, hidden: Tensor) -> Tensor:
        return torch.where(hidden >= 0, hidden // self.hidden_per_label, hidden)

    def log_partition(self, potentials, mask=None) -> Tensor:
        return self.chain.log_partition(potentials, mask)

    def clamped_log_partition(self, potentials, labels, mask=None) -> Tensor:
        """log Z over the hidden paths inside the labels' blocks."""
        return self.chain.log_partition(potentials, mask, self.allowed(labels))

    score = clamped_log_partition

    def marginals(self, potentials, mask=None) -> Tensor:
        """Label marginals (B, T, L): hidden marginals summed over each label's block."""
        hidden = self.chain.marginals(potentials, mask)
        return hidden.unflatten(-1, (self.num_labels, self.hidden_per_label)).sum(-1)

    def decode(self, potentials, mask=None, method: str = "marginal") -> tuple:
        """Labels (B, T), -1 off the chain, and their scores (B,): the most probable
        label per position ("marginal", as in the paper) or the label of the Viterbi
        hidden path ("viterbi")."""
        if method == "viterbi":
            labels = self._labels(self.chain.decode(potentials, mask)[0])
        elif method == "marginal":
            labels = self.marginals(potentials, mask).argmax(-1)
            labels = labels if mask is None else labels.masked_fill(~mask.bool(), -1)
        else:
            raise ValueError(f"unknown decode method {method!r}; expected 'marginal' or 'viterbi'")
        return labels, self.score(potentials, labels, mask)

    @torch.no_grad()
    def kbest(self, potentials, k: int, mask=None) -> tuple:
        """Up to k distinct labellings (B, k, T) among the k * hidden_per_label best hidden
        paths, ranked by their exact scores (B, k); empty slots are -1 and -inf."""
        hidden, path_scores = self.chain.kbest(potentials, check_k(k) * self.hidden_per_label, mask)
        candidates = self._labels(hidden)  # (B, M, T)
        B, M, T = candidates.shape
        flat = candidates.flatten(0, 1)
        repeated_mask = None if mask is None else mask.repeat_interleave(M, 0)
        scores = self.score(potentials.repeat_interleave(M, 0), flat, repeated_mask).view(B, M)
        scores = scores.masked_fill(path_scores == sr.NEG_INF, sr.NEG_INF)
        same = (candidates.unsqueeze(1) == candidates.unsqueeze(2)).all(-1)  # (B, M, M)
        earlier = torch.ones(M, M, dtype=torch.bool, device=same.device).tril(-1)
        scores = scores.masked_fill((same & earlier).any(-1), sr.NEG_INF)  # keep first of each
        top, index = scores.topk(min(k, M), -1)
        labels = candidates.gather(1, index.unsqueeze(-1).expand(-1, -1, T))
        return labels.masked_fill((top == sr.NEG_INF).unsqueeze(-1), -1), top

    def sample(self, potentials, n: int = 1, mask=None, generator=None) -> Tensor:
        """n exact samples of label sequences (n, B, T): hidden paths, mapped to labels."""
        return self._labels(self.chain.sample(potentials, n, mask, generator))

    def entropy(self, potentials, mask=None) -> Tensor:
        """The hidden path's entropy (B,): >= the label entropy, equal with one state per label."""
        return self.chain.entropy(potentials, mask)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, hidden_per_label={self.hidden_per_label}"
