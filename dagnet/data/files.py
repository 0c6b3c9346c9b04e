"""User data on disk: `.npz` and `.pt` files of named arrays, and folders of images with PNG masks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import ArrayDataset, DataError
from dagnet.torch_files import HoldsObjects, NotATorchFile, load_weights_only

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_arrays(path: str | Path) -> ArrayDataset:
    """A `.npz` or `.pt` file mapping names to arrays whose first dimension indexes examples.

    Floating arrays become float32, integer arrays int64 (class labels), booleans
    stay boolean. Every floating column counts as a model input for `standardize: true`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix not in (".npz", ".pt"):
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .npz, .pt or an image folder)")
    arrays = _read_npz(path) if path.suffix == ".npz" else _read_pt(path)
    if not arrays:
        raise DataError(f"{path}: holds no arrays")
    columns = {key: _column(path, key, value) for key, value in arrays.items()}
    sizes = {key: len(column) for key, column in columns.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{path}: arrays hold different numbers of examples (first dimension): {sizes}")
    if not next(iter(sizes.values())):
        raise DataError(f"{path}: holds no examples (its arrays have length 0)")
    return ArrayDataset(columns, inputs=tuple(k for k, v in columns.items() if v.is_floating_point()))


def _read_npz(path: Path) -> dict:
    """The arrays of an .npz file, never unpickling an object array; anything unreadable is a DataError."""
    if not zipfile.is_zipfile(path):    # np.load would try to unpickle it (and refuse)
        raise DataError(f"{path}: not an .npz archive of named arrays (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError:                  # "Object arrays cannot be loaded when allow_pickle=False"
        raise DataError(f"{path}: holds arrays of Python objects, which are not loaded: save arrays of "
                        "numbers") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError):
        raise DataError(f"{path}: a damaged .npz archive (truncated?)") from None


def _read_pt(path: Path) -> dict:
    """A dict of tensors saved by torch.save, loaded with weights_only=True; anything else is a DataError."""
    try:
        arrays = load_weights_only(path)
    except HoldsObjects:
        raise DataError(f"{path}: holds Python objects, not only tensors (refused by weights_only=True; "
                        "nothing in it was run)") from None
    except NotATorchFile:
        raise DataError(f"{path}: truncated, or not a file torch.save wrote") from None
    if not isinstance(arrays, dict):
        raise DataError(f"{path}: expected a dict of tensors, found {type(arrays).__name__}")
    return arrays


def _column(path: Path, key, values) -> Tensor:
    """One named array as a column: numbers or booleans, with a first dimension that indexes examples."""
    try:
        values = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{path}: {key!r} is not an array of numbers (found {type(values).__name__})") from None
    if values.dim() == 0:
        raise DataError(f"{path}: {key!r} is a single value; its first dimension must index the examples")
    if values.is_complex():
        raise DataError(f"{path}: {key!r} holds complex numbers; expected real numbers or booleans")
    return _canonical(values)


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
        pixels = _read_image(self.images[index], "RGB" if self.channels == 3 else "L", np.float32) / 255
        image = torch.from_numpy(pixels).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()
        example = {"image": image}
        if self.masks is not None:
            example["mask"] = torch.from_numpy(_read_image(self.masks[index], None, np.int64))
        return example


def _read_image(path: Path, mode: str | None, dtype) -> np.ndarray:
    """An image file's pixels, converted to `mode` if given; an unreadable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im, dtype=dtype)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DataError(f"{path}: not a readable image (truncated, or not {path.suffix.lstrip('.')} data)") from None
