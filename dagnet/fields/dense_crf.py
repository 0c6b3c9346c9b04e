"""Fully connected CRF (Krähenbühl & Koltun 2011) as a trainable, batched layer.

The energy of a labelling x of the pixels of an image is

    E(x) = -sum_i logits_i(x_i) + sum_{i,j} mu(x_i, x_j) sum_m w_m k_m(f_i, f_j),

with two Gaussian kernels: a spatial one over positions (bandwidth sxy) and a
bilateral one over positions and colours (sxy, srgb).  Mean-field inference
(CRF-as-RNN, Zheng et al. 2015) iterates

    log Q_i(l) = logits_i(l) - sum_l' mu(l, l') sum_m w_m (Kn_m Q)_i(l') + const,

where Kn = D^-1/2 K D^-1/2 is the kernel with pydensecrf's default symmetric
normalisation (D = K 1).  As in pydensecrf the sum includes j = i.  The
kernel products Kn Q are the whole cost: ``method="lattice"`` computes them
with a permutohedral lattice built once per forward, ``method="exact"`` with
explicit P x P kernel matrices (small images, and the test oracle).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dagnet.fields.permutohedral import build_lattice, lattice_filter

METHODS = ("lattice", "exact")


class DenseCRF(nn.Module):
    """Mean-field dense CRF: ``crf(logits, image)`` -> refined log-marginals.

    ``logits`` (B, L, H, W) are unary scores (higher = more likely), ``image``
    (B, 3, H, W) is in 0-255.  Returns log Q (B, L, H, W).  Defaults are
    DeepLab's.  Learnable: the compatibility matrix mu (initialised to Potts,
    mu = 1 - I, which is pydensecrf's ``compat`` up to a per-pixel constant)
    and the kernel weights; the bandwidths too with ``learn_bandwidths``.
    """

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
        batch, labels, height, width = logits.shape
        if labels != self.num_labels or image.shape != (batch, 3, height, width):
            raise ValueError(f"expected logits (B, {self.num_labels}, H, W) and image (B, 3, H, W), "
                             f"got {tuple(logits.shape)} and {tuple(image.shape)}")
        image = image.to(logits.dtype)
        if self.method == "exact":
            return self._exact_forward(logits, image)
        group = max(1, self.cpu_chunk_pixels // (height * width)) if logits.device.type == "cpu" else batch
        if group >= batch:
            return self._lattice_forward(logits, image)
        return torch.cat([self._lattice_forward(logits[i:i + group], image[i:i + group])
                          for i in range(0, batch, group)])

    def _exact_forward(self, logits: Tensor, image: Tensor) -> Tensor:
        spatial, bilateral = self.kernel_features(image)
        unary = logits.flatten(2).transpose(1, 2)                           # (B, P, L)
        filters = [_exact_filter(spatial.expand(logits.shape[0], -1, -1)), _exact_filter(bilateral)]
        return self._mean_field(unary, filters).transpose(1, 2).reshape_as(logits)

    def _lattice_forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """Mean field with one bilateral lattice for the batch, pixel-major (P, B, L).

        In that layout the spatial lattice (the same for every image) filters
        all B*L columns at once and the bilateral lattice P*B rows of L
        columns, without copies.
        """
        batch, labels, height, width = logits.shape
        spatial, bilateral = self.kernel_features(image)
        unary = logits.permute(2, 3, 0, 1).reshape(height * width, batch, labels).contiguous()
        bilateral = bilateral.transpose(0, 1).reshape(-1, 5)
        image_index = torch.arange(batch, device=logits.device).repeat(height * width)
        filters = [_lattice_filter(self._spatial_lattice(spatial[0], height, width), spatial[0], batch * labels),
                   _lattice_filter(build_lattice(bilateral, image_index), bilateral, labels)]
        log_q = self._mean_field(unary, filters)
        # contiguous: losses such as nll_loss refuse to backpropagate into strided views
        return log_q.reshape(height, width, batch, labels).permute(2, 3, 0, 1).contiguous()

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

    def _mean_field(self, unary: Tensor, filters) -> Tensor:
        """Parallel mean-field updates; returns log Q after the last one.

        ``filters[m](Q, A)`` computes (Kn_m Q) A in Q's layout (..., L); with
        A = -w_m mu^T the two filters give the whole pairwise term, and the
        lattice applies A to its vertices rather than to every pixel.
        """
        if self.iterations == 0:
            return unary.log_softmax(-1)
        mu_t = self.compatibility.to(unary.dtype).t()
        mixes = [-weight * mu_t for weight in self.kernel_weights.to(unary.dtype)]
        q = unary.softmax(-1)
        for step in range(self.iterations):
            scores = (unary + filters[0](q, mixes[0])).add_(filters[1](q, mixes[1]))
            if step == self.iterations - 1:
                return scores.log_softmax(-1)
            q = scores.softmax(-1)


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


def _exact_filter(features: Tensor):
    """Kn @ Q with explicit (B, P, P) Gaussian kernels; Q laid out (B, P, L)."""
    sq = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist").square()
    kernel = torch.exp(-0.5 * sq)
    norm = kernel.sum(2, keepdim=True).rsqrt()
    normalised = norm * kernel * norm.transpose(1, 2)
    return lambda q, mix: normalised @ q @ mix


def _lattice_filter(lattice, features: Tensor, columns: int):
    """(Kn Q) A through ``lattice``, for Q laid out (P, B, L) and filtered as
    a (-1, ``columns``) matrix: (P, B*L) for the spatial lattice, shared by the
    batch, and (P*B, L) for the bilateral one, whose rows are (pixel, image).
    """
    learn = features if features.requires_grad else None
    return lambda q, mix: lattice_filter(q.reshape(-1, columns), lattice, mix, learn).reshape(q.shape)
