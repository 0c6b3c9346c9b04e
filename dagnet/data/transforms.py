"""Per-channel standardisation and seeded geometric augmentation, applied alike to images, masks and boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import DataError
from dagnet.settings import AugmentConfig  # noqa: F401  (a setting: defined without torch, re-exported)


class Augmented(Dataset):
    """Applies a random affine change to every example, drawn from a generator seeded by (seed, epoch, index).

    Seeding per example rather than from a global stream makes the augmentation of
    an example independent of worker count, process count and resumption: call
    `set_epoch` before each epoch, as with DistributedSampler.
    """

    def __init__(self, dataset: Dataset, config: AugmentConfig, seed: int = 0):
        self.dataset, self.config, self.seed, self.epoch = dataset, config, seed, 0
        example = dataset[0]
        if not any(_is_image(v) for v in example.values()):
            kinds = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in example.items())
            raise DataError(f"augment needs float images (C, H, W); the examples hold {kinds}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        example = dict(self.dataset[index])
        size = next(tuple(v.shape[-2:]) for v in example.values() if _is_image(v))
        seed = (self.seed * 1_000_003 + self.epoch) * 1_000_003 + index
        theta = sample_affine(torch.Generator().manual_seed(seed % 2**63), self.config, size)
        for key, value in example.items():
            if _is_image(value):
                example[key] = warp(value, theta, size)
            elif _is_mask(value):
                example[key] = warp_mask(value, theta, size, self.config.mask_fill)
            elif key == "box":
                example[key] = warp_box(value, theta)
        return example


def _is_image(value: Tensor) -> bool:
    return value.is_floating_point() and value.dim() == 3


def _is_mask(value: Tensor) -> bool:
    return not value.is_floating_point() and value.dim() == 2


def sample_affine(g: torch.Generator, config: AugmentConfig, size: tuple[int, int]) -> Tensor:
    """A (2, 3) matrix mapping output to input coordinates in [-1, 1], as `F.affine_grid` takes it."""
    u = torch.rand(7, generator=g, dtype=torch.float64).tolist()
    flip = -1.0 if config.flip and u[0] < 0.5 else 1.0
    window = config.crop + (1 - config.crop) * u[1]
    zoom = (config.scale[0] + (config.scale[1] - config.scale[0]) * u[2]) / window
    offset = [
        (1 - window) * (2 * u_crop - 1) + round(config.translate * side * (2 * u_shift - 1)) * 2 / side
        for side, u_crop, u_shift in zip((size[1], size[0]), u[3:5], u[5:7])
    ]  # x then y; the shift is in whole pixels so that it alone needs no interpolation
    return torch.tensor([[flip / zoom, 0.0, offset[0]], [0.0, 1 / zoom, offset[1]]])


def warp(image: Tensor, theta: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resample a (C, H, W) tensor under theta; outside the image reads as zero."""
    grid = F.affine_grid(theta[None].to(image.dtype), [1, image.shape[0], *size], align_corners=False)
    return F.grid_sample(image[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


def warp_mask(mask: Tensor, theta: Tensor, size: tuple[int, int], fill: int) -> Tensor:
    """Resample an (H, W) label map with nearest neighbours; pixels from outside get `fill`."""
    if tuple(mask.shape) != size:
        raise DataError(f"mask of shape {tuple(mask.shape)} does not match image size {size}")
    stacked = torch.stack([mask.double(), torch.ones_like(mask, dtype=torch.float64)])
    labels, inside = warp(stacked, theta, size, mode="nearest")
    return torch.where(inside > 0.5, labels, float(fill)).to(mask.dtype)


def warp_box(box: Tensor, theta: Tensor) -> Tensor:
    """Move (x0, y0, x1, y1), given as fractions of the image, with the image; clipped to the image."""
    scale = theta[[0, 1], [0, 1]].to(box.dtype)
    offset = theta[:, 2].to(box.dtype)
    corners = (box.view(2, 2) * 2 - 1 - offset) / scale  # invert input = scale * output + offset
    lo, hi = corners.min(dim=0).values, corners.max(dim=0).values  # a flip swaps x0 and x1
    return ((torch.stack([lo, hi]).clamp(-1, 1) + 1) / 2).reshape(4)


def channel_dim(rank: int) -> int:
    """The channel dim of one example of this rank: channels lead images (C, H, W) and trail
    sequences (T, D) and feature vectors (D,)."""
    return 0 if rank >= 3 else rank - 1


def channel_axis(value: Tensor) -> int:
    return channel_dim(value.dim())


def channel_stats(dataset: Dataset, keys: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """Per-channel mean and standard deviation of each key over a data set, accumulated in float64."""
    sums: dict[str, list[Tensor]] = {}
    for i in range(len(dataset)):
        example = dataset[i]
        for key in keys:
            value = example[key]
            if not value.is_floating_point() or value.dim() == 0:
                raise DataError(
                    f"standardize: {key!r} must hold float arrays with a channel axis, "
                    f"found {value.dtype} of shape {tuple(value.shape)}"
                )
            axis = channel_axis(value)
            flat = value.double().movedim(axis, 0).reshape(value.shape[axis], -1)
            step = [flat.sum(1), (flat**2).sum(1), torch.tensor(flat.shape[1], dtype=torch.float64)]
            sums[key] = [a + b for a, b in zip(sums[key], step)] if key in sums else step
    stats = {}
    for key, (total, squares, count) in sums.items():
        mean = total / count
        std = (squares / count - mean**2).clamp_min(0).sqrt()
        stats[key] = {"mean": mean.tolist(), "std": torch.where(std > 1e-8, std, 1.0).tolist()}
    return stats


class Standardized(Dataset):
    """Subtracts a per-channel mean and divides by a standard deviation (stats from `channel_stats`)."""

    def __init__(self, dataset: Dataset, stats: dict[str, dict[str, list[float]]]):
        self.dataset, self.stats = dataset, stats

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        example = dict(self.dataset[index])
        for key, moments in self.stats.items():
            value = example[key]
            axis = channel_axis(value)
            shape = [-1 if d == axis else 1 for d in range(value.dim())]
            mean = torch.tensor(moments["mean"], dtype=value.dtype).view(shape)
            std = torch.tensor(moments["std"], dtype=value.dtype).view(shape)
            example[key] = (value - mean) / std
        return example
