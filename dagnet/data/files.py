"""User data on disk: `.npz` and `.pt` files of named arrays, and folders of images with PNG masks."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import ArrayDataset, DataError
from dagnet.torch_files import HoldsObjects, NotATorchFile, load_weights_only

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_arrays(path: str | Path, *, inputs: dict | None = None, targets: tuple[str, ...] = (),
                keys: dict | None = None, scale_uint8: bool = True) -> ArrayDataset:
    """A `.npz` or `.pt` file mapping names to arrays whose first dimension indexes examples.

    keys renames arrays for the model, ``{X: features, y: label}``; the others keep their
    names. Floating arrays become float32, integer arrays int64 (class labels), booleans
    stay boolean, except that uint8 arrays of 3 or more dims are images: scaled by 1/255
    to float32 in [0, 1] (a warning says so; ``scale_uint8: false`` keeps the integers),
    and moved from channels-last to the (C, H, W) the spec's input asks for. In a `.pt`
    file a list of tensors of different lengths is a column of sequences, padded per batch;
    the spec must then have a boolean (T,) mask input, which is made from the lengths
    unless the file holds it. Every floating column counts as an input for `standardize: true`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix not in (".npz", ".pt"):
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .npz, .pt or an image folder)")
    arrays = _read_npz(path) if path.suffix == ".npz" else _read_pt(path)
    if not arrays:
        raise DataError(f"{path}: holds no arrays")
    for name in keys or {}:
        if name not in arrays:
            raise DataError(f"{path}: keys names array {name!r}, which is not in the file (arrays: {', '.join(arrays)})")
    inputs = inputs or {}
    columns = {}
    for name, value in arrays.items():
        key = (keys or {}).get(name, name)
        columns[key] = _column(path, key, value, inputs.get(key), scale_uint8)
        field = inputs.get(key)
        if field is not None and field.dtype == "float" and isinstance(columns[key], Tensor) \
                and not columns[key].is_floating_point():
            images = str(getattr(value, "dtype", "")) in ("uint8", "torch.uint8") and columns[key].dim() >= 3
            raise DataError(f"{path}: {name!r} holds integers, but the spec's input {key!r} is float; "
                            + ("set scale_uint8: true to divide these uint8 images by 255" if images
                               else "save it as floats"))
    sizes = {key: len(column) for key, column in columns.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{path}: arrays hold different numbers of examples (first dimension): {sizes}")
    if not next(iter(sizes.values())):
        raise DataError(f"{path}: holds no examples (its arrays have length 0)")
    if inputs:
        _add_mask(path, columns, inputs)
    for name in (*inputs, *targets):
        if name not in columns:
            raise DataError(f"{path}: no array for the spec's {'input' if name in inputs else 'target'} {name!r} "
                            f"(arrays: {', '.join(arrays)}); name one with keys: {{ARRAY: {name}}}")
    floating = tuple(k for k, v in columns.items() if isinstance(v, Tensor) and v.is_floating_point())
    return ArrayDataset(columns, inputs=floating)


def _add_mask(path: Path, columns: dict, inputs: dict) -> None:
    """Sequences of different lengths need a mask input marking the real positions: make it from the
    lengths when the spec has one (a boolean (T,) input) and the file does not hold it."""
    ragged = [key for key, column in columns.items() if isinstance(column, list)]
    if not ragged:
        return
    masks = [name for name, field in inputs.items() if field.dtype == "bool" and len(field.shape) == 1]
    if not masks:
        lengths = [len(value) for value in columns[ragged[0]]]
        raise DataError(f"{path}: {ragged[0]!r} holds sequences of different lengths ({min(lengths)} to "
                        f"{max(lengths)}) and the spec has no boolean mask input (T,) to mark the padding; "
                        "add one (e.g. `mask: {shape: [T], dtype: bool}`) or save sequences of one length")
    for name in masks:
        if name not in columns:
            columns[name] = [torch.ones(len(value), dtype=torch.bool) for value in columns[ragged[0]]]


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
        raise DataError(f"{path}: expected a dict of named arrays (torch.save({{'frames': [...], 'labels': "
                        f"[...]}})), found a {type(arrays).__name__}")
    return arrays


def _column(path: Path, key, values, field, scale_uint8: bool) -> Tensor | list[Tensor]:
    """One named array as a column: numbers or booleans, with a first dimension that indexes examples,
    or (a list of tensors of different lengths) a column of sequences."""
    if isinstance(values, (list, tuple)) and values and not isinstance(values[0], (int, float, bool)):
        return _sequences(path, key, values)
    try:
        values = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{path}: {key!r} is not an array of numbers (found {type(values).__name__})") from None
    if values.dim() == 0:
        raise DataError(f"{path}: {key!r} is a single value; its first dimension must index the examples")
    if values.is_complex():
        raise DataError(f"{path}: {key!r} holds complex numbers; expected real numbers or booleans")
    if values.dtype == torch.uint8 and values.dim() >= 3 and scale_uint8:
        warnings.warn(f"{path}: {key!r} holds uint8 images; scaled by 1/255 to [0, 1] "
                      "(set scale_uint8: false to keep the integers)", stacklevel=3)
        values = _channels_first(values, field).float() / 255
    return _canonical(values)


def _channels_first(images: Tensor, field) -> Tensor:
    """(N, H, W, C) -> (N, C, H, W), and (N, H, W) -> (N, 1, H, W), where that is the spec's input shape."""
    if field is None or len(field.shape) != 3:
        return images
    def fits(shape):
        return all(not isinstance(d, int) or d == s for d, s in zip(field.shape, shape))
    if images.dim() == 3 and fits((1, *images.shape[1:])):
        return images.unsqueeze(1)
    if images.dim() == 4 and not fits(images.shape[1:]) and fits(images.permute(0, 3, 1, 2).shape[1:]):
        return images.permute(0, 3, 1, 2).contiguous()
    return images


def _sequences(path: Path, key, values) -> Tensor | list[Tensor]:
    """A list of per-example arrays that may differ in their first dimension (sequence length);
    stacked into one tensor when they do not."""
    column = []
    for index, value in enumerate(values):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"{path}: {key!r}[{index}] is not an array of numbers "
                            f"(found {type(value).__name__})") from None
        if value.dim() == 0 or value.shape[1:] != torch.as_tensor(values[0]).shape[1:]:
            raise DataError(f"{path}: {key!r}[{index}] has shape {tuple(value.shape)}; the sequences of a "
                            "list must differ only in their first dimension (length)")
        column.append(_canonical(value))
    return torch.stack(column) if all(v.shape == column[0].shape for v in column) else column


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
