"""Examples as dicts of tensors: an in-memory data set, batching with padding, seeded splits."""

from __future__ import annotations

import torch
from typing import NamedTuple

from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Subset


class DataError(ValueError):
    """A data set does not match what the config or the model expects."""


class Field(NamedTuple):
    """What a spec's input expects of one example, told to the loaders of user files so that
    they can meet it (name the columns, resize images, make a mask).

    shape: ints, symbolic sizes (``"T"``) or None for a size computed from another;
    dtype: ``"float"`` (any floating type) or a torch dtype's name (``"int64"``, ``"bool"``).
    """

    shape: tuple
    dtype: str


class ArrayDataset(Dataset):
    """Examples stored column by column.

    Each column is a tensor whose first dimension indexes examples, or a list of
    tensors when examples have different lengths (sequences). `inputs` names the
    columns a model reads (what `standardize: true` normalises); the rest are targets.
    """

    def __init__(self, columns: dict[str, Tensor | list[Tensor]], inputs: tuple[str, ...] = ()):
        sizes = {key: len(column) for key, column in columns.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"columns hold different numbers of examples: {sizes}")
        unknown = [name for name in inputs if name not in columns]
        if unknown:
            raise DataError(f"input {unknown[0]!r} is not a column (columns: {', '.join(columns)})")
        self.columns = columns
        self.inputs = tuple(inputs)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: column[index] for key, column in self.columns.items()}


def collate(examples: list[dict]) -> dict[str, Tensor]:
    """Stack a list of examples into one batch dict.

    Keys whose examples differ in their first dimension (sequence length) are
    right-padded with zeros (False for boolean masks), so a `mask` column marks
    the real positions.
    """
    return {key: _stack(key, [e[key] for e in examples]) for key in examples[0]}


def _stack(key: str, values: list) -> Tensor:
    # The common case, tensors of one shape, goes straight to torch.stack, which checks them itself;
    # a batch whose two ends differ is ragged for sure, and a stack that raises costs more than a check.
    if isinstance(values[0], Tensor) and values[0].shape == values[-1].shape:
        try:
            return torch.stack(values)
        except (TypeError, RuntimeError):       # ragged in between, or not all tensors
            pass
    values = [torch.as_tensor(v) for v in values]
    first = values[0].shape
    if all(v.shape == first for v in values):
        return torch.stack(values)
    if not first or any(v.shape[1:] != first[1:] or not v.dim() for v in values):
        shapes = sorted({tuple(v.shape) for v in values})
        raise DataError(
            f"cannot batch {key!r}: examples may differ only in their first dimension, found shapes {shapes}"
        )
    return pad_sequence(values, batch_first=True)


def split_dataset(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Split into (train, val) by a permutation seeded with `seed`; val is None for a zero fraction."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_split must be in [0, 1), got {val_fraction}")
    n = len(dataset)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n_val >= n:
        raise DataError(f"val_split {val_fraction} leaves no training examples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train = Subset(dataset, sorted(order[n_val:]))
    return train, (Subset(dataset, sorted(order[:n_val])) if n_val else None)


def input_names(dataset: Dataset) -> tuple[str, ...]:
    """The columns a data set declares as model inputs, looking through wrappers (Subset, Augmented, ...)."""
    return declared(dataset, "inputs", ())


def preprocessing_of(dataset: Dataset) -> dict:
    """What a loader derived from the training data (class names, vocabularies, columns, resize),
    looking through wrappers; a run saves it so that eval and predict read new data the same way."""
    return declared(dataset, "preprocessing", {})


def declared(dataset: Dataset, attribute: str, default):
    """An attribute of the data set under any wrappers (Subset, Standardized, Augmented, ...)."""
    while not hasattr(dataset, attribute) and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return getattr(dataset, attribute, default)
