"""Fully connected CRF (Krähenbühl & Koltun 2011) as a trainable, batched layer.

A labelling x of the P pixels of an image scores

    score(x) = sum_i logits_i(x_i) - 1/2 sum_{i != j} mu(x_i, x_j) K_ij,    K = sum_m w_m Kn_m,

p(x) ∝ exp(score(x)), with two Gaussian kernels: a spatial one over positions
(bandwidth sxy) and a bilateral one over positions and colours (sxy, srgb),
each with pydensecrf's default symmetric normalisation Kn = D^-1/2 K D^-1/2
(D = K 1, j = i included in D). The sum runs over ordered pairs, so each
unordered pair counts once with mu's symmetric part. Mean-field inference
(CRF-as-RNN, Zheng et al. 2015) iterates, for all pixels at once,

    log Q_i(l) = logits_i(l) - sum_j K_ij sum_l' mu(l, l') Q_j(l') + const.

For symmetric mu (Potts, the default) and j != i this is the coordinate-ascent
update of the mean-field ELBO; as in pydensecrf the sum includes j = i, which
the score does not (a pixel does not interact with itself), so the layer's
fixed point is a stationary point of the ELBO up to that self term
K_ii (mu Q_i)(l), with K_ii = sum_m w_m / D_m,i (small: D_i sums a whole
Gaussian window). The queries of the :class:`Field` protocol are answered
from Q (see :class:`DenseCRF`). The kernel products Kn Q are the whole cost:
``method="lattice"`` computes them with a permutohedral lattice built once
per call, ``method="exact"`` with explicit P x P kernel matrices (small
images, and the test oracle).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dagnet.fields.permutohedral import build_lattice, lattice_filter
from dagnet.fields.protocol import Field, UnsupportedQuery, reduce_loss
from dagnet.fields.semiring import NEG_INF, gumbel_argmax

METHODS = ("lattice", "exact")


@dataclass(frozen=True)
class _KernelFilter:
    """Q -> (Kn Q) mix in Q's layout (..., L), and Kn's diagonal in that layout (..., 1)."""

    apply: Callable[[Tensor, Tensor], Tensor]
    diagonal: Tensor

    def __call__(self, q: Tensor, mix: Tensor) -> Tensor:
        return self.apply(q, mix)


@dataclass(frozen=True)
class _Pairwise:
    """The kernels of a group of images, in the layout they filter: (B, P, L) for the
    exact method, pixel-major (P, B, L) for the lattice (``batch_dim`` says which)."""

    filters: list
    batch_dim: int
    to_layout: Callable[[Tensor], Tensor]      # (B, L, H, W) -> layout
    from_layout: Callable[[Tensor], Tensor]    # layout -> (B, L, H, W)

    def image_sum(self, x: Tensor) -> Tensor:
        """(B,): the sum over pixels and labels of a tensor in the layout."""
        return x.sum((1 - self.batch_dim, 2))

class DenseCRF(Field):
    """Mean-field dense CRF: ``crf(logits, image)`` -> refined log-marginals.

    ``logits`` (B, L, H, W) are unary scores (higher = more likely), ``image``
    (B, 3, H, W) is in 0-255.  Returns log Q (B, L, H, W).  Defaults are
    DeepLab's.  Learnable: the compatibility matrix mu (initialised to Potts,
    mu = 1 - I, which is pydensecrf's ``compat`` up to a per-pixel constant)
    and the kernel weights; the bandwidths too with ``learn_bandwidths``.

    Every query needs the image: ``crf.marginals(logits, image=image)``. All
    come from the mean-field Q after ``iterations`` updates: ``marginals`` (Q),
    ``entropy`` (H(Q)), ``log_partition`` (the ELBO E_Q[score] + H(Q), a lower
    bound on log Z), ``decode`` (argmax Q and its score), ``sample``
    (independent draws from Q) and ``nll`` (-log Q(labels), see :meth:`nll`);
    ``score`` is exact for the kernels used (the lattice approximates them).
    There is no ``mask``: every pixel exists (a mask with absent pixels is refused).
    """

    structure = "grid"
    exact = frozenset({"score"})
    approximate = frozenset({"log_partition", "marginals", "decode", "sample", "entropy", "nll"})

    def __init__(self, num_labels: int, iterations: int = 5, spatial_sxy: float = 3.0,
                 spatial_weight: float = 3.0, bilateral_sxy: float = 80.0,
                 bilateral_srgb: float = 13.0, bilateral_weight: float = 10.0,
                 compatibility="potts", method: str = "lattice", learn_bandwidths: bool = False):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.num_labels, self.iterations, self.method = num_labels, iterations, method
        self.compatibility = nn.Parameter(_initial_compatibility(compatibility, num_labels))
        self.kernel_weights = nn.Parameter(torch.tensor([float(spatial_weight), float(bilateral_weight)]))
        # log-parametrised so that learning keeps them positive
        log_bandwidths = torch.tensor([spatial_sxy, bilateral_sxy, bilateral_srgb]).log()
        if learn_bandwidths:
            self.log_bandwidths = nn.Parameter(log_bandwidths)
        else:
            self.register_buffer("log_bandwidths", log_bandwidths)
        self._spatial_cache = None

    def extra_repr(self) -> str:
        sxy, bxy, brgb = self.log_bandwidths.exp().tolist()
        ws, wb = self.kernel_weights.tolist()
        return (f"num_labels={self.num_labels}, iterations={self.iterations}, method={self.method!r}, "
                f"spatial(sxy={sxy:g}, w={ws:g}), bilateral(sxy={bxy:g}, srgb={brgb:g}, w={wb:g})")

    # On CPU, a lattice over more pixels than this outgrows the caches and costs
    # more per pixel (measured: 4 images of 256 x 256 ran ~25% slower per image
    # than one), so large batches are filtered in groups of images this size.
    cpu_chunk_pixels = 2 ** 16

    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """Refined log-marginals log Q (B, L, H, W)."""
        return self._grouped(logits, image, lambda pairwise, unary, group: (
            pairwise.from_layout(self._mean_field(unary, pairwise)),))[0]

    # -- the Field queries -------------------------------------------------------------------

    def marginals(self, potentials: Tensor, mask: Optional[Tensor] = None, *,
                  image: Optional[Tensor] = None) -> Tensor:
        """Q (B, L, H, W)."""
        return self.forward(potentials, self._image(image, mask)).exp()

    def log_partition(self, potentials: Tensor, mask: Optional[Tensor] = None, *,
                      image: Optional[Tensor] = None) -> Tensor:
        """The mean-field ELBO E_Q[score] + H(Q) (B,), a lower bound on log Z."""
        energy, entropy = self._variational(potentials, self._image(image, mask))
        return energy + entropy

    def entropy(self, potentials: Tensor, mask: Optional[Tensor] = None, *,
                image: Optional[Tensor] = None) -> Tensor:
        """H(Q) (B,), the entropy of the mean-field product distribution."""
        return self._variational(potentials, self._image(image, mask))[1]

    def score(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None, *,
              image: Optional[Tensor] = None) -> Tensor:
        """score(labels) (B,) for labels (B, H, W) (module doc)."""
        def run(pairwise, unary, group):
            onehot = F.one_hot(labels[group], self.num_labels).permute(0, 3, 1, 2).to(unary.dtype)
            unary_score = potentials[group].gather(1, labels[group].unsqueeze(1)).sum((1, 2, 3))
            return (unary_score + self._expected_pairwise(pairwise.to_layout(onehot), pairwise),)
        return self._grouped(potentials, self._image(image, mask), run)[0]

    def decode(self, potentials: Tensor, mask: Optional[Tensor] = None, *,
               image: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(labels (B, H, W), their score (B,)): the argmax of Q at every pixel."""
        image = self._image(image, mask)
        with torch.no_grad():
            labels = self.forward(potentials, image).argmax(1)
        return labels, self.score(potentials, labels, image=image)

    def sample(self, potentials: Tensor, n: int = 1, mask: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None, *, image: Optional[Tensor] = None) -> Tensor:
        """``n`` labellings (n, B, H, W) drawn independently from Q (each pixel on its own)."""
        with torch.no_grad():
            log_q = self.forward(potentials, self._image(image, mask)).movedim(1, -1)
            return gumbel_argmax(log_q.unsqueeze(0).repeat(n, 1, 1, 1, 1), generator)

    def nll(self, potentials: Tensor, labels: Tensor, mask: Optional[Tensor] = None,
            reduction: str = "mean", *, image: Optional[Tensor] = None) -> Tensor:
        """-log Q(labels) = -sum_i log Q_i(labels_i) per image, over the labelled
        pixels (label -1: unlabelled, summed out, which under Q drops the pixel).

        This is the exact nll of the mean-field distribution Q that the layer
        computes (the CRF-as-RNN loss), >= 0, and consistent with ``marginals``
        and ``sample``. The alternative, log Z_ELBO - log Z_ELBO(clamped), is
        ill-behaved here: with every pixel labelled the clamped ELBO is exactly
        score(labels), so it is ELBO - score <= log Z - score, a *lower* bound on
        the true nll that can be negative and that training lowers by loosening
        the bound; and Q after a few parallel updates is no ELBO optimum.
        """
        log_q = self.forward(potentials, self._image(image, mask))
        labelled = labels >= 0
        picked = log_q.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
        return reduce_loss(-torch.where(labelled, picked, 0.0).sum((1, 2)), reduction)

    def clamped_log_partition(self, potentials: Tensor, labels: Tensor,
                              mask: Optional[Tensor] = None) -> Tensor:
        """Not answered: ``nll`` is -log Q(labels), not log Z - log Z(clamped) (see :meth:`nll`)."""
        raise UnsupportedQuery("DenseCRF does not answer `clamped_log_partition`: its nll is -log Q(labels), "
                               "see DenseCRF.nll")

    # -- mean field --------------------------------------------------------------------------

    def _image(self, image: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
        """The image the queries need; a mask must leave every pixel in."""
        if image is None:
            raise ValueError("DenseCRF's queries need the image: pass image=(B, 3, H, W), in 0-255")
        if mask is not None and not bool(mask.all()):
            raise ValueError("DenseCRF does not support absent pixels: pass mask=None (or all True)")
        return image

    def _variational(self, logits: Tensor, image: Tensor) -> Tuple[Tensor, Tensor]:
        """(E_Q[score], H(Q)) (B,) for the mean-field Q: one more filtering of Q."""
        def run(pairwise, unary, group):
            log_q = self._mean_field(unary, pairwise)
            q = log_q.exp()
            finite_unary = unary.masked_fill(unary == NEG_INF, 0.0)
            energy = pairwise.image_sum(q * finite_unary) + self._expected_pairwise(q, pairwise)
            entropy = -pairwise.image_sum(q * log_q.masked_fill(q == 0, 0.0))
            return energy, entropy
        return self._grouped(logits, image, run)

    def _expected_pairwise(self, q: Tensor, pairwise: _Pairwise) -> Tensor:
        """E_Q[-1/2 sum_{i != j} mu(x_i, x_j) K_ij] (B,) for a product Q in the layout:
        1/2 sum_i Q_i . (pairwise field)_i, which includes j = i, minus that j = i part."""
        mu = self.compatibility.to(q.dtype)
        weights = self.kernel_weights.to(q.dtype)
        self_weight = sum(w * f.diagonal for w, f in zip(weights, pairwise.filters))   # K_ii
        with_self = pairwise.image_sum(q * self._field(q, pairwise.filters))
        self_part = pairwise.image_sum(self_weight * q * (q @ mu.t()))
        return 0.5 * (with_self + self_part)

    def _field(self, q: Tensor, filters) -> Tensor:
        """The pairwise field -sum_j K_ij sum_l' mu(l, l') Q_j(l'), j = i included.

        ``filters[m](Q, A)`` computes (Kn_m Q) A in Q's layout (..., L); with
        A = -w_m mu^T the two filters give the whole pairwise term, and the
        lattice applies A to its vertices rather than to every pixel.
        """
        mu_t = self.compatibility.to(q.dtype).t()
        weights = self.kernel_weights.to(q.dtype)
        return filters[0](q, -weights[0] * mu_t) + filters[1](q, -weights[1] * mu_t)

    def _mean_field(self, unary: Tensor, pairwise: _Pairwise) -> Tensor:
        """Parallel mean-field updates in the kernels' layout; log Q after the last one."""
        if self.iterations == 0:
            return unary.log_softmax(-1)
        q = unary.softmax(-1)
        for step in range(self.iterations):
            scores = unary + self._field(q, pairwise.filters)
            if step == self.iterations - 1:
                return scores.log_softmax(-1)
            q = scores.softmax(-1)

    # -- kernels -----------------------------------------------------------------------------

    def _grouped(self, logits: Tensor, image: Tensor, run) -> tuple:
        """``run(pairwise, unary, group)`` -> tensors with a batch axis, over the groups
        of images that are filtered together (one group but for large batches on CPU),
        concatenated; ``unary`` is ``logits[group]`` in the kernels' layout."""
        batch, labels, height, width = logits.shape
        if labels != self.num_labels or image.shape != (batch, 3, height, width):
            raise ValueError(f"expected logits (B, {self.num_labels}, H, W) and image (B, 3, H, W), "
                             f"got {tuple(logits.shape)} and {tuple(image.shape)}")
        image = image.to(logits.dtype)
        size = batch
        if self.method == "lattice" and logits.device.type == "cpu":
            size = max(1, self.cpu_chunk_pixels // (height * width))
        outputs = []
        for start in range(0, batch, size):
            group = slice(start, start + size)
            pairwise = self._pairwise(image[group], labels)
            outputs.append(run(pairwise, pairwise.to_layout(logits[group]), group))
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    def _pairwise(self, image: Tensor, num_labels: int) -> _Pairwise:
        """The kernels of a group of images: explicit matrices, or lattices pixel-major
        (P, B, L), where the spatial lattice (the same for every image) filters all
        B*L columns at once and the bilateral lattice P*B rows of L columns, without copies."""
        batch, _, height, width = image.shape
        pixels = height * width
        spatial, bilateral = self.kernel_features(image)
        if self.method == "exact":
            return _Pairwise([_exact_filter(spatial.expand(batch, -1, -1)), _exact_filter(bilateral)], 0,
                             lambda x: x.flatten(2).transpose(1, 2),
                             lambda x: x.transpose(1, 2).reshape(batch, -1, height, width))
        bilateral = bilateral.transpose(0, 1).reshape(-1, 5)
        image_index = torch.arange(batch, device=image.device).repeat(pixels)
        spatial_lattice = self._spatial_lattice(spatial[0], height, width)
        filters = [_lattice_filter(spatial_lattice, spatial[0], batch * num_labels, pixels),
                   _lattice_filter(build_lattice(bilateral, image_index), bilateral, num_labels, pixels)]
        return _Pairwise(filters, 1,
                         lambda x: x.permute(2, 3, 0, 1).reshape(pixels, batch, -1),
                         # contiguous: losses such as nll_loss refuse to backpropagate into strided views
                         lambda x: x.reshape(height, width, batch, -1).permute(2, 3, 0, 1).contiguous())

    def _spatial_lattice(self, position: Tensor, height: int, width: int):
        """The spatial lattice depends only on H, W and sxy: keep the last one."""
        key = (height, width, position.dtype, position.device, float(self.log_bandwidths[0].detach()))
        if self._spatial_cache is None or self._spatial_cache[0] != key:
            self._spatial_cache = (key, build_lattice(position.detach()))
        return self._spatial_cache[1]

    def kernel_features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Spatial (1, P, 2) and bilateral (B, P, 5) features, divided by bandwidths.

        Coordinates are (x, y, r, g, b) with x the column, as in pydensecrf
        (the order matters for which lattice simplices are found).
        """
        batch, _, height, width = image.shape
        ys, xs = torch.meshgrid(torch.arange(height, dtype=image.dtype, device=image.device),
                                torch.arange(width, dtype=image.dtype, device=image.device),
                                indexing="ij")
        position = torch.stack([xs, ys], -1).reshape(1, height * width, 2)
        bandwidth = self.log_bandwidths.to(image.dtype).exp()
        colour = image.flatten(2).transpose(1, 2)
        bilateral = torch.cat([position.expand(batch, -1, -1) / bandwidth[1], colour / bandwidth[2]], 2)
        return position / bandwidth[0], bilateral


def _initial_compatibility(compatibility, num_labels: int) -> Tensor:
    """Potts (1 - I) or a user-given (L, L) matrix, as float32."""
    if isinstance(compatibility, str):
        if compatibility != "potts":
            raise ValueError(f"compatibility must be 'potts' or an (L, L) matrix, got {compatibility!r}")
        return 1.0 - torch.eye(num_labels)
    matrix = torch.as_tensor(compatibility, dtype=torch.float32)
    if matrix.shape != (num_labels, num_labels):
        raise ValueError(f"compatibility matrix must be ({num_labels}, {num_labels}), got {tuple(matrix.shape)}")
    return matrix.clone()


def _exact_filter(features: Tensor) -> _KernelFilter:
    """Kn @ Q @ mix with explicit (B, P, P) Gaussian kernels; Q laid out (B, P, L)."""
    sq = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist").square()
    kernel = torch.exp(-0.5 * sq)
    norm = kernel.sum(2, keepdim=True).rsqrt()
    normalised = norm * kernel * norm.transpose(1, 2)
    return _KernelFilter(lambda q, mix: normalised @ q @ mix, norm.square())   # Kn_ii = 1 / D_i


def _lattice_filter(lattice, features: Tensor, columns: int, pixels: int) -> _KernelFilter:
    """(Kn Q) A through ``lattice``, for Q laid out (P, B, L) and filtered as
    a (-1, ``columns``) matrix: (P, B*L) for the spatial lattice, shared by the
    batch, and (P*B, L) for the bilateral one, whose rows are (pixel, image).
    The diagonal is the Gaussian's, Kn_ii = 1 / D_i with the lattice's D, capped
    at 1 (a Gaussian's D_i >= k_ii = 1; the lattice underestimates D for isolated points).
    """
    learn = features if features.requires_grad else None
    return _KernelFilter(lambda q, mix: lattice_filter(q.reshape(-1, columns), lattice, mix, learn).reshape(q.shape),
                         lattice.norm.square().clamp(max=1.0).reshape(pixels, -1, 1))
