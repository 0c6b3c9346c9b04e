"""Folders of images, in the layouts people keep them in.

- ``root/<class>/*.png|jpg|...``: one folder per class, as torchvision's ImageFolder and
  Keras' image_dataset_from_directory read them; classes numbered in sorted name order;
- ``root/train/<class>/...`` and ``root/val/<class>/...``: the same, with the validation
  examples chosen by the folder instead of by ``val_split``;
- ``root/images/`` with ``root/masks/``: segmentation (dagnet.data.files.ImageFolder);
- ``root/*.png``: loose images without labels, to predict for.

Images are read lazily, converted to the spec's channel count (grey, RGB or RGBA),
resized and centre-cropped to its input size, and scaled to float in [0, 1], (C, H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import DataError
from dagnet.data.files import IMAGE_SUFFIXES, ImageFolder

MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def load_image_folder(path: str | Path, *, inputs: dict | None = None, targets: tuple[str, ...] = (),
                      preprocessing: dict | None = None, resize: int | list[int] | None = None,
                      crop: int | list[int] | None = None, channels: int | None = None) -> Dataset:
    """An image folder in any of the layouts above.

    resize: N scales the shorter side to N (keeping the aspect ratio), [H, W] scales to
    exactly that; crop: N or [H, W] cuts the centre. Without either, images are scaled to
    the spec's input size when it is fixed. channels: 1, 3 or 4; by default the spec's.
    The image is keyed by the spec's input (when it has one), the label by the loss
    target (when there is one) or ``label``. A run's preprocessing (class names, resize,
    crop, channels) takes precedence over the options.
    """
    root = Path(path)
    image_key = next(iter(inputs)) if inputs and len(inputs) == 1 else "image"
    field = (inputs or {}).get(image_key)
    if channels is None:
        channels = field.shape[0] if field is not None and len(field.shape) == 3 and field.shape[0] in MODES else 3
    if (root / "images").is_dir():
        return ImageFolder(root, channels)
    saved = preprocessing or {}
    if channels not in MODES:
        raise DataError(f"{root}: channels must be 1, 3 or 4, got {channels}")
    if resize is None and crop is None and field is not None and all(isinstance(d, int) for d in field.shape[1:]):
        resize = list(field.shape[1:])
    transform = ImageTransform(*(saved.get(key, default) for key, default in
                                 (("channels", channels), ("resize", resize), ("crop", crop))))
    label_key = next(iter(saved.get("class_names", {})), targets[0] if len(targets) == 1 else "label")
    files, labels, val, names = _layout(root, saved.get("class_names", {}).get(label_key))
    dataset = ImageFiles(files, labels, transform, image_key, label_key)
    dataset.val_indices = val
    dataset.preprocessing = transform.state() | ({"class_names": {label_key: names}} if names else {})
    return dataset


def _layout(root: Path, known: list[str] | None):
    """(files, class ids or None, indices of the validation files or None, class names)."""
    loose = _images(root)
    splits = [root / "train", root / "val"]
    if not loose and all(s.is_dir() for s in splits):
        train_files, train_labels, names = _classes(splits[0], known)
        val_files, val_labels, _ = _classes(splits[1], names)
        return train_files + val_files, train_labels + val_labels, range(len(train_files), len(train_files) + len(val_files)), names
    if loose:
        return loose, None, None, known
    files, labels, names = _classes(root, known)
    return files, labels, None, names


def _classes(root: Path, known: list[str] | None):
    """The images of each class folder under root; classes numbered in sorted order, or as in `known`."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no images and no class folders; expected {root}/<class>/*.png|jpg "
                        "(or images/ and masks/ for segmentation)")
    names = known or [p.name for p in folders]
    index = {name: i for i, name in enumerate(names)}
    files, labels = [], []
    for folder in folders:
        if folder.name not in index:
            raise DataError(f"{folder}: class {folder.name!r} was not in the training data (classes: {', '.join(names)})")
        images = _images(folder)
        if not images:
            raise DataError(f"{folder}: a class folder with no images ({', '.join(IMAGE_SUFFIXES)})")
        files += images
        labels += [index[folder.name]] * len(images)
    return files, labels, names


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageTransform:
    """Read an image file as float (C, H, W) in [0, 1]: convert the mode, resize, centre-crop."""

    def __init__(self, channels: int, resize: int | list[int] | None, crop: int | list[int] | None):
        self.channels, self.resize, self.crop = channels, resize, crop

    def state(self) -> dict:
        return {"channels": self.channels, "resize": self.resize, "crop": self.crop}

    def __call__(self, path: Path) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert(MODES[self.channels])
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise DataError(f"{path}: not a readable image (truncated, or not {path.suffix.lstrip('.')} data)") from None
        if self.resize is not None:
            image = _resize(image, self.resize)
        if self.crop is not None:
            image = _centre_crop(path, image, self.crop)
        pixels = np.asarray(image, dtype=np.float32)
        return torch.from_numpy(pixels / 255).reshape(*pixels.shape[:2], -1).permute(2, 0, 1)


def _resize(image, size):
    from PIL import Image

    if isinstance(size, int):           # the shorter side to `size`, as torchvision's Resize(int)
        w, h = image.size
        size = [size, round(w * size / h)] if h <= w else [round(h * size / w), size]
    height, width = size
    return image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)


def _centre_crop(path: Path, image, size):
    height, width = (size, size) if isinstance(size, int) else size
    w, h = image.size
    if width > w or height > h:
        raise DataError(f"{path}: crop {height}x{width} is larger than the image ({h}x{w}); set resize too")
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


class ImageFiles(Dataset):
    """Image files with optional class ids, read lazily through an ImageTransform."""

    def __init__(self, files: list[Path], labels: list[int] | None, transform: ImageTransform,
                 image_key: str = "image", label_key: str = "label"):
        self.files, self.labels, self.transform = files, labels, transform
        self.image_key, self.label_key = image_key, label_key
        self.inputs = (image_key,)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        example = {self.image_key: self.transform(self.files[index])}
        if self.labels is not None:
            example[self.label_key] = torch.tensor(self.labels[index])
        return example
