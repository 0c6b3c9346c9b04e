"""The permutohedral lattice (Adams, Baek & Davis 2010) in pure, vectorised PyTorch.

A Gaussian filter in a d-dimensional feature space,
``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j``, costs O(N^2) done directly. The
lattice makes it O(N d): every point is *splatted* onto the d+1 vertices of the
lattice simplex that encloses it (barycentric weights), the lattice values are
*blurred* with a [1/2, 1, 1/2] stencil along each of the d+1 lattice directions,
and every point *slices* its value back from the same vertices.

The lattice is built once, fully vectorised (no per-point loop, no hash
table: every vertex key becomes one int64 code, one sort deduplicates them
and binary search finds the blur neighbours), and then filters (N, C) value
matrices, all labels and a whole batch at once: a batch of images shares one
lattice whose keys carry the image index.

The construction follows Krähenbühl's densecrf (the code behind pydensecrf)
step for step, so both find the same simplices, weights and neighbours, and
the filter agrees with it to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The lift onto the lattice plane is the exported lattice's own (a torch-only file), so the two
# round ties between simplices alike by construction, not by keeping two copies in step.
from dagnet.fields.portable.dense import _dense_elevate as _elevate


@dataclass(frozen=True)
class Lattice:
    """A built lattice: the symmetric-normalised Gaussian filter D^-1/2 K D^-1/2.

    Splat, blur and slice are each a sparse matrix times the values, i.e. a
    weighted sum of a few rows per output row, and run as
    ``F.embedding_bag(mode="sum")``, whose FBGEMM kernels do exactly that and
    beat torch's CSR matmul about threefold on CPU.  The lattice holds its M
    vertices plus a zero row at index M that stands for absent neighbours.

    - splat: vertex v sums the points ``splat_index[splat_offsets[v]:splat_offsets[v+1]]``
      with ``splat_weights`` (bag M is empty: the zero row);
    - blur: along direction j, vertex v sums rows ``blur_index[j, v]`` (itself
      and its two neighbours) with weights 1, 1/2, 1/2;
    - slice: point p sums the vertices ``slice_index[p]`` with ``slice_weights[p]``.

    Splat and slice weights are norm_p * barycentric_pk, with ``norm`` (N,) =
    D^-1/2, D = K 1 the unnormalised row sums: splat = S D^-1/2, slice = D^-1/2 S^T.
    """

    splat_index: Tensor
    splat_offsets: Tensor
    splat_weights: Tensor
    blur_index: Tensor
    slice_index: Tensor
    slice_weights: Tensor
    norm: Tensor

    @property
    def num_vertices(self) -> int:
        return self.blur_index.shape[1] - 1

    def splat(self, values: Tensor) -> Tensor:
        """(N, C) point values -> (M + 1, C) vertex values."""
        return F.embedding_bag(self.splat_index, values, self.splat_offsets, mode="sum",
                               per_sample_weights=self.splat_weights)

    def blur(self, values: Tensor, reverse: bool = False) -> Tensor:
        """v + (v[n1] + v[n2]) / 2 along each lattice direction in turn, (M + 1, C).

        Each direction's blur is a symmetric operator, so the transposed
        filter is the same blurs in reverse order (densecrf's ``reverse``).
        The blur's overall scale cancels in the symmetric normalisation, so
        densecrf's 1/(1 + 2^-d) factor is not needed.
        """
        return _blur(values, self.blur_index, reverse)

    def slice(self, values: Tensor) -> Tensor:
        """(M + 1, C) vertex values -> (N, C) point values."""
        return F.embedding_bag(self.slice_index, values, mode="sum", per_sample_weights=self.slice_weights)

    def apply(self, values: Tensor, transpose: bool = False) -> Tensor:
        """D^-1/2 K D^-1/2 @ values for values (N, C), or its transpose (no autograd)."""
        return self.slice(self.blur(self.splat(values), reverse=transpose))


def build_lattice(features: Tensor, groups: Tensor | None = None) -> Lattice:
    """Build the lattice over N points with ``features`` (N, d).

    Features are positions already divided by their bandwidths, so that the
    filter approximates ``exp(-|f_i - f_j|^2 / 2)``.  ``groups`` (N,), e.g. the
    image index of each pixel in a batch, keeps points of different groups
    apart: one lattice then serves the whole batch.
    """
    n, d = features.shape
    with torch.no_grad():
        if groups is None:
            groups = torch.zeros(n, dtype=torch.long, device=features.device)
        elevated = _elevate(features)
        rem0, rank = _enclosing_simplex(elevated)
        slot = d - rank                          # place of each coordinate in increasing order
        bary = _barycentric(elevated, rem0, slot).t().contiguous()       # (N, d+1)
        codes, strides = _vertex_codes(rem0, slot, groups)
        order, vertex, unique, starts = _deduplicate(codes)
        blur_index = _blur_neighbours(unique, strides, d)
        vertex = vertex.reshape(n, d + 1)
        norm = _normaliser(bary, vertex, blur_index)
        weights = bary * norm.unsqueeze(1)
        return Lattice(order // (d + 1), starts, weights.reshape(-1)[order], blur_index, vertex, weights, norm)


def lattice_filter(values: Tensor, lattice: Lattice, mix: Tensor | None = None,
                   features: Tensor | None = None) -> Tensor:
    """Differentiable D^-1/2 K D^-1/2 @ values @ mix, for values (N, C).

    ``mix`` (L, L) multiplies every block of L columns (e.g. a compatibility
    matrix over labels); it is applied on the lattice, where there are fewer
    rows than points.  The backward pass runs the lattice transposed instead
    of taping every gather.  Pass the ``features`` the lattice was built from
    to get their gradient too (learnable bandwidths): it is the gradient of
    the exact Gaussian filter, evaluated with the lattice.
    """
    return _LatticeFilter.apply(values, mix, features, lattice)


class _LatticeFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, mix, features, lattice):
        blurred = lattice.blur(lattice.splat(values))
        out = lattice.slice(_mix(blurred, mix))
        ctx.lattice = lattice
        learn_features = ctx.needs_input_grad[2]
        ctx.save_for_backward(mix, blurred if ctx.needs_input_grad[1] else None,
                              *((values, features, out) if learn_features else (None, None, None)))
        return out

    @staticmethod
    def backward(ctx, grad):
        mix, blurred, values, features, out = ctx.saved_tensors
        lattice = ctx.lattice
        pulled = lattice.splat(grad)                          # slice^T grad, on the lattice
        grad_values = grad_mix = grad_features = None
        if ctx.needs_input_grad[0]:
            transposed_mix = None if mix is None else mix.t()
            grad_values = lattice.slice(lattice.blur(_mix(pulled, transposed_mix), reverse=True))
        if ctx.needs_input_grad[1]:
            grad_mix = blurred.reshape(-1, mix.shape[0]).t() @ pulled.reshape(-1, mix.shape[0])
        if ctx.needs_input_grad[2]:
            grad_features = _feature_gradient(lattice, _mix(values, mix), features, out, grad)
        return grad_values, grad_mix, grad_features, None


def _mix(x: Tensor, mix: Tensor | None) -> Tensor:
    """x (R, C) times ``mix`` (L, L) on every block of L columns."""
    return x if mix is None else (x.reshape(-1, mix.shape[0]) @ mix).reshape(x.shape)


def _feature_gradient(lattice: Lattice, v: Tensor, f: Tensor, out: Tensor, g: Tensor) -> Tensor:
    """dL/df for out = n * K(n * v), K_ij = exp(-|f_i - f_j|^2 / 2), n = (K 1)^-1/2.

    With u = n v, a = n g and c_i = dL/dD_i = -n_i^3 (<g_i, (Ku)_i> +
    <v_i, (Ka)_i>) / 2, the gradient with respect to the kernel matrix is the
    rank-(C+1) matrix a' b'^T, a' = [a, c], b' = [u, 1].  Since
    dK_ij/df_i = -K_ij (f_i - f_j) and K is symmetric,
      dL/df_i = <a'_i, K(b' f)_i> + <b'_i, K(a' f)_i>
                - f_i (<a'_i, (K b')_i> + <b'_i, (K a')_i>),
    so one lattice pass over 2(C+1)(d+1) columns gives all of it.
    """
    n = lattice.norm.unsqueeze(1)
    u, a = n * v, n * g
    ka = lattice.apply(g, transpose=True) / n
    c = -0.5 * n.pow(3) * ((g * out / n).sum(1, keepdim=True) + (v * ka).sum(1, keepdim=True))
    a_ext, b_ext = torch.cat([a, c], 1), torch.cat([u, torch.ones_like(c)], 1)
    cols = a_ext.shape[1]
    stacked = torch.cat([b_ext, a_ext, (b_ext.unsqueeze(2) * f.unsqueeze(1)).flatten(1),
                         (a_ext.unsqueeze(2) * f.unsqueeze(1)).flatten(1)], 1)
    filtered = lattice.apply(stacked / n) / n                       # K = n^-1 Kn n^-1
    k_b, k_a = filtered[:, :cols], filtered[:, cols:2 * cols]
    k_bf = filtered[:, 2 * cols:2 * cols + cols * f.shape[1]].unflatten(1, (cols, -1))
    k_af = filtered[:, 2 * cols + cols * f.shape[1]:].unflatten(1, (cols, -1))
    pull = (a_ext.unsqueeze(2) * k_bf).sum(1) + (b_ext.unsqueeze(2) * k_af).sum(1)
    return pull - f * ((a_ext * k_b).sum(1, keepdim=True) + (b_ext * k_a).sum(1, keepdim=True))


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest remainder-0 lattice point ``rem0`` and the rank permutation.

    Works coordinate-major, (d+1, N), so every step is a pass over contiguous
    rows.  ``rem0`` rounds each coordinate to a multiple of d+1 (ties go down,
    as in densecrf); ``rank[i]`` is the position of coordinate i when the
    residuals are sorted in decreasing order, ties broken by index.  When the
    rounded point is off the plane (coordinates not summing to 0) the ranks
    shift by that sum and wrap, moving rem0 by d+1 where they wrap.
    """
    d1 = elevated.shape[0]
    v = elevated / d1
    up, down = torch.ceil(v) * d1, torch.floor(v) * d1
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    residual = elevated - rem0
    # densecrf's tournament: for every pair i < j the coordinate with the
    # smaller residual goes one rank down.  int16 rows keep the 30 passes cheap.
    rank = torch.zeros(residual.shape, dtype=torch.int16, device=elevated.device)
    for i in range(d1):
        for j in range(i + 1, d1):
            smaller = residual[i] < residual[j]
            rank[i] += smaller
            rank[j] += ~smaller
    rank += torch.round(rem0.sum(0) / d1).to(torch.int16)
    wrap = (rank < 0).to(torch.int16) - (rank > d1 - 1).to(torch.int16)
    rank += d1 * wrap
    return rem0.add_(wrap, alpha=d1), rank.long()


def _barycentric(elevated: Tensor, rem0: Tensor, slot: Tensor) -> Tensor:
    """Barycentric weights (d+1, N) of each point on its simplex (Adams et al. p.10).

    With r = (elevated - rem0) / (d+1) and b[slot_i] = r_i (slot = d - rank),
    vertex k gets b[k] - b[k-1]; vertex 0 additionally wraps around: 1 - b[d].
    """
    d1 = elevated.shape[0]
    scaled = (elevated - rem0) / d1
    b = torch.zeros_like(scaled).scatter_(0, slot, scaled)
    bary = b.clone()
    bary[1:] -= b[:-1]
    bary[0] += 1.0 - b[-1]
    return bary


def _vertex_codes(rem0: Tensor, slot: Tensor, groups: Tensor) -> tuple[Tensor, list[int]]:
    """One integer code per (point, vertex), (N, d+1): a mixed-radix key encoding.

    Vertex k of a simplex has key_i = rem0_i + k - (d+1)[slot_i < k] for the
    first d coordinates (the last one is implied by the zero sum).  Every
    coordinate of a remainder-k vertex is k mod (d+1), so the key is the pair
    (k, q) with key = (d+1) q + k, and encoding q instead of the key saves
    log2(d+1) bits per coordinate.  Digits, lowest first: k (radix d+1),
    q_0 .. q_{d-1}, then the group (image) index.  Each q range is padded by
    one on both sides so that blur neighbours (q moves by at most 1) stay
    inside their digit.  Codes are int32 when they fit (a cheaper sort).
    Returns the codes and the digit strides, the last one bounding all codes.
    """
    d1, n = slot.shape
    d = d1 - 1
    base = torch.round(rem0[:d] / d1).long()                          # q of vertex 0
    low = base.amin(1, keepdim=True) - 2                              # q >= base - 1
    radix = [d1] + (base.amax(1) + 2 - low.squeeze(1)).tolist() + [int(groups.max()) + 1]
    strides = [1]
    for r in radix:
        strides.append(strides[-1] * r)
    if strides[-1] >= 2**62:
        raise ValueError("permutohedral lattice keys overflow int64: the features span "
                         "too many bandwidths; use larger bandwidths or fewer points")
    dtype = torch.int32 if strides[-1] < 2**31 else torch.int64
    q_strides = torch.tensor(strides[1:d1], dtype=dtype, device=slot.device).unsqueeze(1)
    code0 = ((base - low).to(dtype) * q_strides).sum(0, dtype=dtype) + groups.to(dtype) * strides[d1]
    # Vertex k lowers q_i by one for the k coordinates with slot_i < k:
    # an exclusive running sum of their strides, ordered by slot.
    by_slot = torch.zeros(d1, n, dtype=dtype, device=slot.device)
    by_slot.scatter_(0, slot[:d], q_strides.expand(d, n))
    drops = torch.zeros_like(by_slot)
    torch.cumsum(by_slot[:d], 0, out=drops[1:])
    k = torch.arange(d1, dtype=dtype, device=slot.device).unsqueeze(1)
    return (code0 + k - drops).t().contiguous(), strides


def _deduplicate(codes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Number the distinct codes with one stable sort.

    Sorting the N(d+1) codes groups the entries of each lattice vertex: the
    splat operator's layout.  Returns the sorting permutation, the vertex of
    every entry (point-major), the sorted unique codes (int64) and where each
    vertex's run starts in the sort (M + 1 offsets, the last one N(d+1)).
    """
    sorted_codes, order = torch.sort(codes.reshape(-1), stable=True)
    is_start = torch.ones_like(sorted_codes, dtype=torch.bool)
    torch.ne(sorted_codes[1:], sorted_codes[:-1], out=is_start[1:])
    starts = torch.nonzero(is_start).squeeze(1)
    unique = sorted_codes[starts].long()
    is_start[0] = False                      # so that the running count numbers vertices from 0
    vertex = torch.empty_like(order).scatter_(0, order, torch.cumsum(is_start, 0))
    return order, vertex, unique, torch.cat([starts, starts.new_full((1,), order.shape[0])])


def _normaliser(bary: Tensor, vertex: Tensor, blur_index: Tensor) -> Tensor:
    """norm = D^-1/2 with D = K 1: splat the constant 1 (a scatter-add), blur, slice."""
    splatted = bary.new_zeros(blur_index.shape[1], 1).index_add_(0, vertex.reshape(-1), bary.reshape(-1, 1))
    blurred = _blur(splatted, blur_index, reverse=False)
    row_sums = F.embedding_bag(vertex, blurred, mode="sum", per_sample_weights=bary).squeeze(1)
    return (row_sums + 1e-20).rsqrt()


def _blur(values: Tensor, blur_index: Tensor, reverse: bool) -> Tensor:
    """One [1/2, 1, 1/2] pass per direction, as weighted bags of 3 rows each."""
    weights = values.new_tensor([1.0, 0.5, 0.5]).expand(blur_index.shape[1], 3).contiguous()
    directions = range(blur_index.shape[0])
    for j in (reversed(directions) if reverse else directions):
        values = F.embedding_bag(blur_index[j], values, mode="sum", per_sample_weights=weights)
    return values


def _blur_neighbours(unique: Tensor, strides: list[int], d: int) -> Tensor:
    """Blur bags (d+1, M+1, 3): every vertex, then its two neighbours (M if absent).

    Along direction j the neighbours are key - 1 + (d+1) e_j and its mirror
    key + 1 - (d+1) e_j.  In code space the first is a constant shift per
    remainder class: for k >= 1 the remainder drops to k-1 and q_j grows by
    one; for k = 0 the remainder wraps to d and every other q_i drops by one.
    One binary search in the sorted unique codes finds them for all
    directions; the mirror neighbour is the inverse map, so it needs none.
    """
    m, d1 = unique.shape[0], d + 1
    q_strides = strides[1:d1] + [0]                       # direction d moves no stored q
    shift_k = torch.tensor([q_strides[j] - 1 for j in range(d1)], device=unique.device)
    shift_0 = torch.tensor([d - sum(q_strides) + q_strides[j] for j in range(d1)], device=unique.device)
    in_class_0 = (unique % d1 == 0).unsqueeze(0)
    target = unique + torch.where(in_class_0, shift_0.unsqueeze(1), shift_k.unsqueeze(1))   # (d+1, M)
    found_at = torch.searchsorted(unique, target).clamp_(max=m - 1)
    first = torch.where(unique[found_at] == target, found_at, m)
    # second[j, first[j, v]] = v wherever first was found, M elsewhere
    second = torch.full((d1, m + 1), m, dtype=torch.long, device=unique.device)
    second.scatter_(1, first, torch.arange(m, device=unique.device).expand(d1, m))
    itself = torch.arange(m + 1, device=unique.device).expand(d1, m + 1)
    first = torch.cat([first, first.new_full((d1, 1), m)], 1)       # the zero row blurs to zero
    second[:, m] = m
    return torch.stack([itself, first, second], 2)
