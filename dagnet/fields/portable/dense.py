"""Dense CRF, portable: mean field with a static-shape permutohedral lattice, in plain torch.

The fully connected CRF (Krähenbühl & Koltun 2011) refines unary logits
(B, L, H, W) with a spatial and a bilateral Gaussian kernel over the image
(B, 3, H, W); each mean-field update is log Q = logits - sum_m w_m (Kn_m Q) mu^T
(Kn the symmetric-normalised kernel), a fixed number of times.

The kernel products go through a permutohedral lattice (Adams et al. 2010).
A lattice's number of vertices depends on the data; an exported graph cannot
have such a shape, so this lattice is built with the upper bound instead: N
points on d+1 vertices each give at most N(d+1) vertices, and the table has a
row for every one of them.

- every (point, vertex) pair gets one int64 key (a mixed-radix code of the
  vertex's coordinates and the image index), and the N(d+1) keys are sorted;
- a vertex is numbered by the first place its key takes in the sorted keys
  (rows of repeated keys stay empty), and so are its blur neighbours, whose
  keys are found by one sort of keys and queries together (an exported
  ``searchsorted``): the number of keys below each query is its place;
- splat, blur and slice are a scatter-add and gathers of fixed size, with
  one extra zero row standing for absent neighbours.

The keys, simplices, weights and neighbours are those of
``dagnet.fields.permutohedral`` (densecrf's construction), so the result equals
``DenseCRF(method="lattice")`` to float rounding. ``method="exact"`` uses
explicit P x P kernels (small images only: memory grows as P^2).
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn


def _dense_elevate(features: Tensor) -> Tensor:
    """Points (N, d) lifted onto the plane x . 1 = 0 of R^{d+1}, (d+1, N), scaled so
    that the lattice's blur has unit standard deviation in feature space.

    A running sum, as densecrf and the eager lattice compute it: elementwise
    operations in a fixed order round alike in torch and in ONNX Runtime (a
    matrix product does not), and a point near a simplex boundary must fall
    on the same side in both.
    """
    d = features.shape[1]
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    total = torch.zeros_like(features[:, 0])
    rows = [total for _ in range(d + 1)]
    for j in range(d, 0, -1):
        scaled = features[:, j - 1] * (inv_std / math.sqrt(float(j * (j + 1))))
        rows[j] = total - j * scaled
        total = total + scaled
    rows[0] = total
    return torch.stack(rows)


def _dense_simplex(elevated: Tensor) -> Tuple[Tensor, Tensor]:
    """(rem0, rank) (d+1, N): the nearest remainder-0 lattice point and the rank of
    each coordinate's residual (decreasing, ties by index), as densecrf finds them."""
    d1 = elevated.shape[0]
    v = elevated / d1
    up, down = torch.ceil(v) * d1, torch.floor(v) * d1
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    residual = elevated - rem0
    ranks = [torch.zeros_like(residual[0], dtype=torch.long) for _ in range(d1)]
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = (residual[i] < residual[j]).long()
            ranks[i] = ranks[i] + smaller
            ranks[j] = ranks[j] + 1 - smaller
    rank = torch.stack(ranks) + torch.round(rem0.sum(0) / d1).long()
    wrap = (rank < 0).long() - (rank > d1 - 1).long()        # the rounded point was off the plane
    return rem0 + d1 * wrap.to(rem0.dtype), rank + d1 * wrap


def _dense_barycentric(elevated: Tensor, rem0: Tensor, slot: Tensor) -> Tensor:
    """Barycentric weights (d+1, N): with b[slot_i] = (elevated_i - rem0_i) / (d+1),
    vertex k gets b[k] - b[k-1], and vertex 0 also 1 - b[d]."""
    d1 = elevated.shape[0]
    b = torch.zeros_like(elevated).scatter(0, slot, (elevated - rem0) / d1)
    zero = torch.zeros_like(b[:1])
    return b - torch.cat([zero, b[:-1]]) + torch.cat([1.0 - b[-1:], torch.zeros_like(b[1:])])


def _dense_keys(rem0: Tensor, slot: Tensor, groups: Tensor) -> Tuple[Tensor, Tensor]:
    """(keys (N, d+1), q_strides (d,)): one int64 per (point, vertex).

    Vertex k's coordinates are (d+1) q_i + k; the key's digits, lowest first, are
    k (radix d+1), q_0 .. q_{d-1} (each range padded by 2 so that blur neighbours
    stay in their digit) and the group. The radices come from the data, as
    tensors, so the digits are the eager lattice's.
    """
    d1 = slot.shape[0]
    d = d1 - 1
    base = torch.round(rem0[:d] / d1).long()                  # q of vertex 0
    low = base.amin(1, keepdim=True) - 2
    radix = base.amax(1) + 2 - low.squeeze(1)
    stride = torch.full_like(radix[0], d1)
    strides = []
    for i in range(d):
        strides.append(stride)
        stride = stride * radix[i]
    q_strides = torch.stack(strides)
    start = ((base - low) * q_strides.unsqueeze(1)).sum(0) + groups * stride
    # vertex k lowers q_i by one for the k coordinates with slot_i < k
    by_slot = torch.zeros_like(base[:1]).expand(d1, -1).scatter(0, slot[:d], q_strides.unsqueeze(1).expand_as(base))
    drops = torch.cat([torch.zeros_like(by_slot[:1]), torch.cumsum(by_slot[:d], 0)])
    k = torch.arange(d1, device=slot.device).unsqueeze(1)
    return (start + k - drops).t(), q_strides


def _dense_lookup(sorted_keys: Tensor, queries: Tensor) -> Tensor:
    """The first place of each query in ``sorted_keys``, or len(sorted_keys) if absent.

    Keys (tagged odd) and queries (tagged even) are sorted together, so that a query
    comes after every smaller key and before an equal one: the number of keys
    before it is its place.
    """
    n = sorted_keys.shape[0]
    flat = queries.reshape(-1)
    tagged = torch.cat([sorted_keys * 2 + 1, flat * 2])
    is_key = torch.cat([torch.ones_like(sorted_keys), torch.zeros_like(flat)])
    order = torch.sort(tagged)[1]
    keys_before = torch.cumsum(is_key[order], 0) - is_key[order]
    place = torch.zeros_like(keys_before).scatter(0, order, keys_before)[n:]
    found = sorted_keys[place.clamp(max=n - 1)] == flat
    return torch.where(found, place, torch.full_like(place, n)).reshape(queries.shape)


def _dense_lattice(features: Tensor, groups: Tensor) -> List[Tensor]:
    """The lattice of points ``features`` (N, d) kept apart by ``groups`` (N,), as
    [vertex (N, d+1), weight (N, d+1), neighbours (d+1, 2, V), diagonal (N,)].

    V = N(d+1) + 1 rows; row V - 1 is the zero row. ``weight`` is barycentric x
    D^-1/2 (D = K 1): splat and slice then give D^-1/2 K D^-1/2. ``diagonal`` is
    that operator's K_ii = 1 / D_i, capped at 1 as the eager lattice does.
    """
    n, d = features.shape
    elevated = _dense_elevate(features)
    rem0, rank = _dense_simplex(elevated)
    bary = _dense_barycentric(elevated, rem0, d - rank).t()
    keys, q_strides = _dense_keys(rem0, d - rank, groups)
    sorted_keys = torch.sort(keys.reshape(-1))[0]
    vertex = _dense_lookup(sorted_keys, keys)
    # along direction j the neighbours are key - 1 + (d+1) e_j and its mirror; in key
    # space a shift that depends on the remainder k = key mod (d+1) (0 wraps to d)
    strides = torch.cat([q_strides, torch.zeros_like(q_strides[:1])])
    shift = (strides - 1).unsqueeze(1)
    shift_wrap = (d - q_strides.sum() + strides).unsqueeze(1)
    remainder = (sorted_keys % (d + 1)).unsqueeze(0)
    up = sorted_keys + torch.where(remainder == 0, shift_wrap, shift)
    down = sorted_keys - torch.where(remainder == d, shift_wrap, shift)
    neighbours = _dense_lookup(sorted_keys, torch.stack([up, down], 1))       # (d+1, 2, N(d+1))
    neighbours = torch.cat([neighbours, torch.full_like(neighbours[..., :1], n * (d + 1))], 2)
    row_sums = _dense_slice(_dense_blur(_dense_splat(torch.ones_like(bary[:, :1]), vertex, bary),
                                        neighbours), vertex, bary)
    norm = (row_sums.squeeze(1) + 1e-20).rsqrt()
    return [vertex, bary * norm.unsqueeze(1), neighbours, norm.square().clamp(max=1.0)]


def _dense_splat(values: Tensor, vertex: Tensor, weight: Tensor) -> Tensor:
    """(N, C) point values -> (V, C) vertex values: a weighted scatter-add."""
    n, d1 = vertex.shape
    contributions = (weight.unsqueeze(2) * values.unsqueeze(1)).reshape(n * d1, -1)
    table = torch.zeros(n * d1 + 1, values.shape[1], dtype=values.dtype, device=values.device)
    return table.scatter_add(0, vertex.reshape(-1, 1).expand_as(contributions), contributions)


def _dense_blur(table: Tensor, neighbours: Tensor) -> Tensor:
    """v + (v[up] + v[down]) / 2 along each lattice direction in turn."""
    for j in range(neighbours.shape[0]):
        table = table + 0.5 * (table.index_select(0, neighbours[j, 0]) + table.index_select(0, neighbours[j, 1]))
    return table


def _dense_slice(table: Tensor, vertex: Tensor, weight: Tensor) -> Tensor:
    """(V, C) vertex values -> (N, C) point values."""
    n, d1 = vertex.shape
    return (table.index_select(0, vertex.reshape(-1)).reshape(n, d1, -1) * weight.unsqueeze(2)).sum(1)


def _dense_lattice_filter(values: Tensor, lattice: List[Tensor], mix: Tensor) -> Tensor:
    """D^-1/2 K D^-1/2 values (N, C) on the lattice, times ``mix`` (L, L) on every
    block of L columns (applied on the vertices, before slicing)."""
    vertex, weight, neighbours = lattice[0], lattice[1], lattice[2]
    table = _dense_blur(_dense_splat(values, vertex, weight), neighbours)
    mixed = (table.reshape(-1, mix.shape[0]) @ mix).reshape(table.shape)
    return _dense_slice(mixed, vertex, weight)


def _dense_exact_kernel(features: Tensor) -> List[Tensor]:
    """[D^-1/2 K D^-1/2 (B, P, P), diagonal 1 / D (B, P, 1)] of explicit Gaussian kernels."""
    sq = (features.unsqueeze(2) - features.unsqueeze(1)).square().sum(-1)
    kernel = torch.exp(-0.5 * sq)
    norm = kernel.sum(2, keepdim=True).rsqrt()
    return [norm * kernel * norm.transpose(1, 2), norm.square()]


class DenseCRF(nn.Module):
    """Mean-field dense CRF: ``crf(logits, image)`` -> refined log-marginals (B, L, H, W)."""

    def __init__(self, num_labels: int, iterations: int = 5, spatial_sxy: float = 3.0, spatial_weight: float = 3.0,
                 bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0, bilateral_weight: float = 10.0,
                 compatibility: str = "potts", method: str = "lattice", learn_bandwidths: bool = False):
        super().__init__()      # the field's arguments and initial values: Potts compatibility 1 - I
        self.num_labels, self.iterations, self.method = num_labels, iterations, method
        self.compatibility = nn.Parameter(1.0 - torch.eye(num_labels))
        self.kernel_weights = nn.Parameter(torch.tensor([float(spatial_weight), float(bilateral_weight)]))
        log_bandwidths = torch.tensor([spatial_sxy, bilateral_sxy, bilateral_srgb]).log()
        if learn_bandwidths:
            self.log_bandwidths = nn.Parameter(log_bandwidths)
        else:
            self.register_buffer("log_bandwidths", log_bandwidths)

    @classmethod
    def from_field(cls, field: nn.Module) -> "DenseCRF":
        twin = cls(field.num_labels, field.iterations, method=field.method,
                   learn_bandwidths=isinstance(field.log_bandwidths, nn.Parameter))
        twin.load_state_dict(field.state_dict(), assign=True)   # the field's dtype and device
        return twin

    def _image(self, image: Tensor, logits: Tensor) -> Tensor:
        """The image in the logits' dtype, its sizes stated as the logits' ones: an
        exported graph then knows that both have the same B, H and W."""
        return image.to(logits.dtype).expand(logits.shape[0], 3, logits.shape[2], logits.shape[3])

    def _kernels(self, image: Tensor) -> List[Tensor]:
        """The spatial then the bilateral kernel of the images: for the lattice two
        lattices (pixel-major rows: the spatial one over the P pixels, shared by the
        batch; the bilateral one over (pixel, image) rows), else explicit matrices.
        Features are (x, y) and (x, y, r, g, b) over their bandwidths, as in pydensecrf."""
        batch, height, width = image.shape[0], image.shape[2], image.shape[3]
        ys, xs = torch.meshgrid(torch.arange(height, dtype=image.dtype, device=image.device),
                                torch.arange(width, dtype=image.dtype, device=image.device), indexing="ij")
        position = torch.stack([xs, ys], -1).reshape(-1, 2)
        bandwidth = self.log_bandwidths.to(image.dtype).exp()
        colour = image.flatten(2).transpose(1, 2)
        bilateral = torch.cat([position.expand(batch, -1, -1) / bandwidth[1], colour / bandwidth[2]], 2)
        spatial = position / bandwidth[0]
        if self.method == "exact":
            return _dense_exact_kernel(spatial.expand(batch, -1, -1)) + _dense_exact_kernel(bilateral)
        pixels = position.shape[0]
        images = torch.arange(batch, device=image.device).repeat(pixels)
        return (_dense_lattice(spatial, torch.zeros_like(spatial[:, 0], dtype=torch.long))
                + _dense_lattice(bilateral.transpose(0, 1).reshape(-1, 5), images))

    def _filter(self, q: Tensor, mix: Tensor, kernels: List[Tensor], which: int) -> Tensor:
        """(Kn Q) mix for kernel ``which`` (0 spatial, 1 bilateral), Q in the method's
        layout: (B, P, L) exact, (P, B, L) lattice."""
        if self.method == "exact":
            return kernels[2 * which] @ q @ mix
        # sizes spelt out, not -1: the lattices' sizes come from the image, Q's from the
        # logits, and an exported graph would otherwise divide one by the other
        if which == 0:
            values = q.reshape(q.shape[0], q.shape[1] * q.shape[2])       # (P, B L)
        else:
            values = q.reshape(q.shape[0] * q.shape[1], q.shape[2])       # (P B, L)
        return _dense_lattice_filter(values, kernels[4 * which:4 * which + 4], mix).reshape(q.shape)

    def _field(self, q: Tensor, kernels: List[Tensor]) -> Tensor:
        """The pairwise field -sum_m w_m (Kn_m Q) mu^T, j = i included."""
        mu_t = self.compatibility.to(q.dtype).t()
        weights = self.kernel_weights.to(q.dtype)
        return (self._filter(q, -weights[0] * mu_t, kernels, 0)
                + self._filter(q, -weights[1] * mu_t, kernels, 1))

    def _layout(self, x: Tensor) -> Tensor:
        """(B, L, H, W) -> the method's layout."""
        if self.method == "exact":
            return x.flatten(2).transpose(1, 2)
        return x.permute(2, 3, 0, 1).reshape(x.shape[2] * x.shape[3], x.shape[0], x.shape[1])

    def _unlayout(self, x: Tensor, height: int, width: int) -> Tensor:
        """The method's layout -> (B, L, H, W)."""
        if self.method == "exact":
            return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
        return x.reshape(height, width, x.shape[1], x.shape[2]).permute(2, 3, 0, 1).contiguous()

    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """Refined log-marginals log Q (B, L, H, W) after ``iterations`` parallel updates."""
        kernels = self._kernels(self._image(image, logits))
        unary = self._layout(logits)
        scores, q = unary, unary.softmax(-1)
        for _ in range(self.iterations):
            scores = unary + self._field(q, kernels)
            q = scores.softmax(-1)
        return self._unlayout(scores.log_softmax(-1), logits.shape[2], logits.shape[3])

    @torch.jit.export
    def decode(self, logits: Tensor, image: Tensor) -> Tuple[Tensor, Tensor]:
        """(labels (B, H, W), their score (B,)): the argmax of Q, and
        score = sum_i logits_i(x_i) - 1/2 sum_{i != j} mu(x_i, x_j) K_ij."""
        labels = self.forward(logits, image).argmax(1)
        kernels = self._kernels(self._image(image, logits))
        onehot = torch.zeros_like(logits).scatter(1, labels.unsqueeze(1), 1.0)
        q = self._layout(onehot)
        mu = self.compatibility.to(q.dtype)
        weights = self.kernel_weights.to(q.dtype)
        if self.method == "exact":
            self_weight = weights[0] * kernels[1] + weights[1] * kernels[3]
            pixel_dim = 1
        else:
            self_weight = (weights[0] * kernels[3].unsqueeze(1)
                           + weights[1] * kernels[7].reshape(q.shape[0], q.shape[1])).unsqueeze(2)
            pixel_dim = 0
        with_self = (q * self._field(q, kernels)).sum([pixel_dim, 2])
        self_part = (self_weight * q * (q @ mu.t())).sum([pixel_dim, 2])
        unary = logits.gather(1, labels.unsqueeze(1)).sum([1, 2, 3])
        return labels, unary + 0.5 * (with_self + self_part)
