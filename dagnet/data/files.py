"""User data on disk: `.npz` and `.pt` files of named arrays, and folders of images with PNG masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import ArrayDataset, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_arrays(path: str | Path) -> ArrayDataset:
    """A `.npz` or `.pt` file mapping names to arrays whose first dimension indexes examples.

    Floating arrays become float32, integer arrays int64 (class labels), booleans
    stay boolean. Every floating column counts as a model input for `standardize: true`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: torch.from_numpy(archive[key]) for key in archive.files}
    elif path.suffix == ".pt":
        arrays = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(arrays, dict):
            raise DataError(f"{path}: expected a dict of tensors, found {type(arrays).__name__}")
        arrays = {key: torch.as_tensor(value) for key, value in arrays.items()}
    else:
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .npz, .pt or an image folder)")
    columns = {key: _canonical(value) for key, value in arrays.items()}
    return ArrayDataset(columns, inputs=tuple(k for k, v in columns.items() if v.is_floating_point()))


def _canonical(values: Tensor) -> Tensor:
    if values.dtype == torch.bool:
        return values
    return values.float() if values.is_floating_point() else values.long()


class ImageFolder(Dataset):
    """`root/images/*.png|jpg` with optional `root/masks/<same stem>.png`, read lazily.

    Images become float (C, H, W) in [0, 1] (C = 3, or 1 with channels=1); masks
    become long (H, W) holding the PNG's values (palette indices or grey levels) as
    class ids.
    """

    def __init__(self, root: str | Path, channels: int = 3):
        root = Path(root)
        images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{root}: no images found in {root / 'images'}")
        if channels not in (1, 3):
            raise DataError(f"{root}: channels must be 1 or 3, got {channels}")
        self.images, self.channels = images, channels
        self.masks = None
        if (root / "masks").is_dir():
            self.masks = [root / "masks" / (p.stem + ".png") for p in images]
            missing = [str(m) for m in self.masks if not m.is_file()]
            if missing:
                raise DataError(f"{root}: {len(missing)} image(s) have no mask, e.g. {missing[0]}")
        self.inputs = ("image",)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        from PIL import Image

        with Image.open(self.images[index]) as im:
            pixels = np.asarray(im.convert("RGB" if self.channels == 3 else "L"), dtype=np.float32) / 255
        image = torch.from_numpy(pixels).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()
        example = {"image": image}
        if self.masks is not None:
            with Image.open(self.masks[index]) as im:
                example["mask"] = torch.from_numpy(np.asarray(im, dtype=np.int64))
        return example
