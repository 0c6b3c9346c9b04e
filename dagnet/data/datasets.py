"""Built-in data sets (no download) and `prepare_data`: load, split, standardise, augment."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dagnet.data.base import ArrayDataset, DataError, declared, input_names, preprocessing_of, split_dataset
from dagnet.data.files import load_arrays
from dagnet.data.images import load_image_folder
from dagnet.data.sequences import load_conll, load_jsonl
from dagnet.data.synthetic import gestures, shapes
from dagnet.data.tables import load_table
from dagnet.data.transforms import AugmentConfig, Augmented, Standardized, channel_stats
from dagnet.data.treebank import load_conllu, turkish_deps, turkish_pos


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


BUILTIN = {"digits": digits, "shapes": shapes, "gestures": gestures, "photos": photos, "turkish_pos": turkish_pos,
           "turkish_deps": turkish_deps}

# User data: the loader for a file suffix, or "folder" for a directory. A loader is called as
# loader(path, *, inputs=..., targets=..., preprocessing=..., **options): `inputs` maps the
# spec's input names to Fields (shape, dtype), `targets` names the losses' targets and masks,
# `preprocessing` is what the loader put in `dataset.preprocessing` when the run was trained
# (None when training), each passed only if the loader's signature names it. Its other
# keyword parameters are the options a user may set.
SOURCES = {
    ".csv": load_table,
    ".tsv": load_table,
    ".parquet": load_table,
    ".npz": load_arrays,
    ".pt": load_arrays,
    ".jsonl": load_jsonl,
    ".conll": load_conll,
    ".bio": load_conll,
    ".iob": load_conll,
    ".conllu": load_conllu,     # dependency trees: heads, relations (and arcs, both)
    "folder": load_image_folder,
}
CONTEXT = ("inputs", "targets", "preprocessing")     # what dagnet passes; not user options


def load_dataset(name: str | None = None, path: str | None = None, *, inputs: dict | None = None,
                 targets: tuple[str, ...] = (), preprocessing: dict | None = None, **options) -> Dataset:
    """A built-in data set by name, or user data by path (a file whose suffix is in SOURCES, or a folder).

    inputs, targets: what the spec reads and its losses score, so that user files map onto them;
    preprocessing: a run's saved ``dataset.preprocessing``, so that new data is read the same way.
    """
    loader, kwargs = _resolve({"name": name, "path": path, **options})
    context = {"inputs": inputs, "targets": tuple(targets), "preprocessing": preprocessing}
    accepted = inspect.signature(loader).parameters
    return loader(**kwargs, **{key: value for key, value in context.items() if key in accepted})


def check_source(source: dict) -> None:
    """Raise DataError if `source` names no data set or passes it an option it does not take."""
    _resolve(source)


def data_source(data: str | None, options: dict | None = None, base: dict | None = None) -> dict | None:
    """The source to load: `data` (a built-in name or a path; None keeps `base`, the run's or the
    spec's source) with `options` on top.

    base's options carry over to `data` when both are the same kind of source (the same
    built-in, or files read by the same loader): a run trained on ``shapes`` with size 64
    predicts on ``shapes`` at size 64, and one trained on a CSV with a column map reads a
    new CSV with it.
    """
    if data is None:
        source = dict(base or {})
    else:
        source = {"path": str(data)} if Path(str(data)).exists() else {"name": str(data)}
        if base and _kind(base) == _kind(source):
            source = {key: value for key, value in base.items() if key not in ("name", "path")} | source
    if options:
        if not source:
            raise DataError("data options given, but no data: give --data NAME|PATH")
        source.update(options)
    return source or None


def _kind(source: dict):
    if source.get("path") is None:
        return source.get("name")
    loader = _source_loader(Path(source["path"]))
    return loader if loader is None else loader.__qualname__


def _source_loader(path: Path):
    return SOURCES.get("folder" if path.is_dir() else path.suffix.lower())


def _resolve(source: dict):
    """The loader function for a source and its keyword arguments, with every option checked."""
    options = dict(source)
    name, path = options.pop("name", None), options.pop("path", None)
    if (name is None) == (path is None):
        raise DataError(f"give either a data set name ({', '.join(BUILTIN)}) or a path")
    if path is not None:
        if not Path(path).exists():
            raise DataError(f"data path {str(path)!r} does not exist")
        loader, what = _source_loader(Path(path)), f"data file {path}"
        if loader is None:
            files = ", ".join(key for key in SOURCES if key != "folder")
            raise DataError(f"{path}: unsupported data file type {Path(path).suffix!r} (use {files} or a folder)")
        options = {"path": path, **options}
    elif name in BUILTIN:
        loader, what = BUILTIN[name], f"data set {name!r}"
    else:
        raise DataError(f"unknown data set {name!r}{_did_you_mean(name, BUILTIN)}; built-in: {', '.join(BUILTIN)}")
    allowed = [option for option in inspect.signature(loader).parameters if option not in CONTEXT]
    for option in options:
        if option not in allowed:
            raise DataError(
                f"unknown option {option!r} for {what}{_did_you_mean(option, allowed)}; "
                f"options: {', '.join(o for o in allowed if o != 'path') or 'none'}"
            )
    return loader, options


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class DataSplit:
    """Training and validation sets, and what to apply to any new data: the standardisation
    stats and the loader's preprocessing (class names, vocabularies, ...; see load_dataset)."""

    train: Dataset
    val: Dataset | None
    stats: dict[str, dict[str, list[float]]]
    preprocessing: dict


def prepare_data(
    source: dict,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    standardize: bool | list[str] = False,
    augment: AugmentConfig | dict | None = None,
    inputs: dict | None = None,
    targets: tuple[str, ...] = (),
    preprocessing: dict | None = None,
) -> DataSplit:
    """Load `source` ({"name" or "path", **options}), split off a seeded validation set,
    standardise with statistics of the training part only, and augment the training part.

    standardize: True for the data set's declared inputs, or a list of keys. A data set
    that names its own validation examples (``val_indices``: a folder with train/ and
    val/) is split there instead of by val_split. inputs, targets, preprocessing: as
    for load_dataset.
    """
    dataset = load_dataset(**source, inputs=inputs, targets=targets, preprocessing=preprocessing)
    val_indices = declared(dataset, "val_indices", None)
    if val_indices is None:
        train, val = split_dataset(dataset, val_split, seed)
    else:
        chosen = set(val_indices)
        train = Subset(dataset, [i for i in range(len(dataset)) if i not in chosen])
        val = Subset(dataset, sorted(chosen)) if chosen else None
    if preprocessing is None and hasattr(dataset, "learn"):    # vocabularies: from the training part only
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
    return DataSplit(train, val, stats, preprocessing_of(dataset))
