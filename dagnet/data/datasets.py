"""Built-in data sets (no download) and `prepare_data`: load, split, standardise, augment."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dagnet.data.base import ArrayDataset, DataError, input_names, split_dataset
from dagnet.data.files import ImageFolder, load_arrays
from dagnet.data.sequences import load_conll, load_jsonl
from dagnet.data.synthetic import gestures, shapes
from dagnet.data.transforms import AugmentConfig, Augmented, Standardized, channel_stats
from dagnet.data.treebank import turkish_pos


def digits(onehot: bool = False) -> ArrayDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 real scans): "image" (1, 8, 8) in [0, 1], "label".

    onehot: also give "onehot" (10,) float, the label as a one-hot vector: a target
    for networks trained with squared error.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    columns = {"image": images, "label": torch.tensor(bunch.target)}
    if onehot:
        columns["onehot"] = torch.nn.functional.one_hot(columns["label"], 10).float()
    return ArrayDataset(columns, inputs=("image",))


def photos(patch: int = 32, stride: int | None = None, segments: int = 4, seed: int = 0) -> ArrayDataset:
    """scikit-learn's two sample photographs (427x640) cut into patch x patch tiles.

    Each example holds "gray" (1, patch, patch) luminance and "color" (3, patch, patch)
    in [0, 1], for colourisation; with segments > 0 also a "mask" (patch, patch) of
    colour clusters (k-means over both photos, classes ordered dark to light), a
    target for segmentation demos.
    """
    from sklearn.datasets import load_sample_images

    pictures = np.stack(load_sample_images().images).astype(np.float32) / 255  # (2, 427, 640, 3)
    color = torch.from_numpy(pictures).permute(0, 3, 1, 2)
    stride = stride or patch
    tiles = color.unfold(2, patch, stride).unfold(3, patch, stride)  # (2, 3, rows, cols, patch, patch)
    color = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, patch, patch).contiguous()
    luminance = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    columns = {"gray": (color * luminance).sum(1, keepdim=True), "color": color}
    if segments:
        columns["mask"] = _colour_clusters(color, segments, seed)
    return ArrayDataset(columns, inputs=("gray",))


def _colour_clusters(color: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Label each pixel with its k-means colour cluster, fitted on a subsample; ids sorted by brightness."""
    from sklearn.cluster import KMeans

    pixels = color.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    sample = np.random.default_rng(seed).choice(len(pixels), min(20000, len(pixels)), replace=False)
    kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(pixels[sample])
    rank = np.argsort(np.argsort(kmeans.cluster_centers_.sum(1)))
    labels = rank[kmeans.predict(pixels)]
    return torch.from_numpy(labels.astype(np.int64)).view(color.shape[0], *color.shape[2:])


BUILTIN = {"digits": digits, "shapes": shapes, "gestures": gestures, "photos": photos, "turkish_pos": turkish_pos}

# File loaders by suffix; any other file is read as arrays (.npz, .pt), a folder as images.
SOURCES = {".jsonl": load_jsonl, ".conll": load_conll, ".bio": load_conll, ".iob": load_conll}

# What the run gives a loader besides the user's options: the spec's inputs (name -> "float" or a
# torch dtype) and the preprocessing a trained run saved (vocabularies), for loaders that take them.
RUN_ARGUMENTS = ("inputs", "preprocessing")


def load_dataset(name: str | None = None, path: str | None = None, *, inputs: dict | None = None,
                 preprocessing: dict | None = None, **options) -> Dataset:
    """A built-in data set by name, or user data by path (.npz, .pt, .jsonl, .conll, or a folder with
    images/ and masks/)."""
    loader, kwargs = _resolve({"name": name, "path": path, **options})
    given = {"inputs": inputs, "preprocessing": preprocessing}
    accepted = inspect.signature(loader).parameters
    return loader(**kwargs, **{k: v for k, v in given.items() if v is not None and k in accepted})


def check_source(source: dict) -> None:
    """Raise DataError if `source` names no data set or passes it an option it does not take."""
    _resolve(source)


def _resolve(source: dict):
    """The loader function for a source and its keyword arguments, with every option checked."""
    options = dict(source)
    name, path = options.pop("name", None), options.pop("path", None)
    if (name is None) == (path is None):
        raise DataError(f"give either a data set name ({', '.join(BUILTIN)}) or a path")
    if path is not None:
        if not Path(path).exists():
            raise DataError(f"data path {str(path)!r} does not exist")
        loader = ImageFolder if Path(path).is_dir() else SOURCES.get(Path(path).suffix.lower(), load_arrays)
        what = f"data file {path}"
        options = {"root" if loader is ImageFolder else "path": path, **options}
    elif name in BUILTIN:
        loader, what = BUILTIN[name], f"data set {name!r}"
    else:
        raise DataError(f"unknown data set {name!r}{_did_you_mean(name, BUILTIN)}; built-in: {', '.join(BUILTIN)}")
    allowed = [p for p in inspect.signature(loader).parameters if p not in RUN_ARGUMENTS]
    for option in options:
        if option not in allowed:
            raise DataError(
                f"unknown option {option!r} for {what}{_did_you_mean(option, allowed)}; "
                f"options: {', '.join(allowed)}"
            )
    return loader, options


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class DataSplit:
    """Training and validation sets, and what to apply to any new data: the standardisation stats
    and the data set's learnt preprocessing (vocabularies), saved by the run as `data_state`."""

    train: Dataset
    val: Dataset | None
    stats: dict[str, dict[str, list[float]]]
    preprocessing: dict = field(default_factory=dict)


def prepare_data(
    source: dict,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    standardize: bool | list[str] = False,
    augment: AugmentConfig | dict | None = None,
    inputs: dict | None = None,
    preprocessing: dict | None = None,
) -> DataSplit:
    """Load `source` ({"name" or "path", **options}), split off a seeded validation set,
    standardise with statistics of the training part only, and augment the training part.

    standardize: True for the data set's declared inputs, or a list of keys.
    inputs: the spec's inputs (name -> dtype), for loaders that read types from it.
    preprocessing: a trained run's `data_state`; without it a data set that learns its
    preprocessing (vocabularies: `learn`) learns it from the training part only.
    """
    dataset = load_dataset(**source, inputs=inputs, preprocessing=preprocessing)
    train, val = split_dataset(dataset, val_split, seed)
    if preprocessing is None and hasattr(dataset, "learn"):
        dataset.learn(train.indices)
    keys = input_names(dataset) if standardize is True else tuple(standardize or ())
    if standardize is True and not keys:
        raise DataError("standardize: true, but the data set declares no inputs; list the keys instead")
    stats = channel_stats(train, keys) if keys else {}
    if stats:
        train, val = Standardized(train, stats), (Standardized(val, stats) if val is not None else None)
    augment = AugmentConfig(**augment) if isinstance(augment, dict) else augment
    if augment is not None and augment.active:
        train = Augmented(train, augment, seed)
    return DataSplit(train, val, stats, getattr(dataset, "preprocessing", None) or {})
