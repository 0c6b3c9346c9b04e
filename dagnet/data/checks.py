"""Check a data set against the shapes, dtypes and label ranges a model expects, before training starts."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from dagnet.data.base import ArrayDataset, DataError
from dagnet.data.transforms import Augmented, Standardized

Dim = int | str | None


def check_example_shapes(
    dataset: Dataset,
    expected: dict[str, tuple[Dim, ...]],
    *,
    dtypes: dict[str, torch.dtype | str] | None = None,
    ranges: dict[str, tuple[int, int]] | None = None,
    ignore_index: int | None = None,
    limit: int | None = None,
) -> None:
    """Raise DataError at the first example that does not fit, naming its index and key.

    expected maps a key to a shape whose dims are ints, None (any size), or names: a
    named dim must take one size across the keys of an example, e.g. frames ("T", 8)
    and labels ("T",). dtypes maps a key to a torch dtype or "float" (any floating
    type). ranges maps an integer key to inclusive (low, high) bounds; ignore_index
    is always allowed. limit checks only the first `limit` examples.
    """
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        example = dataset[index]
        sizes: dict[str, tuple[str, int]] = {}
        for key, shape in expected.items():
            value = _get(example, key, index)
            _check_shape(value, tuple(shape), sizes, key, index)
        for key, dtype in (dtypes or {}).items():
            _check_dtype(_get(example, key, index), dtype, key, index)
        for key, bounds in (ranges or {}).items():
            _check_range(_get(example, key, index), bounds, ignore_index, key, index)


def _get(example: dict, key: str, index: int) -> Tensor:
    if not isinstance(example, dict):
        raise DataError(f"sample {index}: expected a dict of tensors, found {type(example).__name__}")
    if key not in example:
        raise DataError(f"sample {index}: no key {key!r} (keys: {', '.join(example)})")
    return torch.as_tensor(example[key])


def _check_shape(value: Tensor, shape: tuple[Dim, ...], sizes: dict, key: str, index: int) -> None:
    found = tuple(value.shape)
    wanted = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
    if len(found) != len(shape):
        raise DataError(f"sample {index}: {key!r} has shape {found}, expected {wanted}")
    for axis, (size, dim) in enumerate(zip(found, shape)):
        if isinstance(dim, int) and size != dim:
            raise DataError(f"sample {index}: {key!r} has shape {found}, expected {wanted} (dim {axis})")
        if isinstance(dim, str):
            first_key, first_size = sizes.setdefault(dim, (key, size))
            if size != first_size:
                raise DataError(
                    f"sample {index}: {key!r} has shape {found}, expected {wanted} with {dim} = {first_size} "
                    f"as in {first_key!r}"
                )


def _check_dtype(value: Tensor, dtype: torch.dtype | str, key: str, index: int) -> None:
    ok = value.is_floating_point() if dtype == "float" else value.dtype == dtype
    if not ok:
        raise DataError(f"sample {index}: {key!r} has dtype {value.dtype}, expected {dtype}")


def _check_range(value: Tensor, bounds: tuple[int, int], ignore_index: int | None, key: str, index: int,
                 others: int = 0) -> None:
    low, high = bounds
    labels = value[value != ignore_index] if ignore_index is not None else value.flatten()
    if labels.numel() and (labels.min() < low or labels.max() > high):
        bad = labels[(labels < low) | (labels > high)].unique()[:5].tolist()
        allowed = f"{low}..{high}" + (f" or {ignore_index}" if ignore_index is not None else "")
        more = f" (and {others} more sample{'s' if others > 1 else ''})" if others else ""
        raise DataError(f"sample {index}: {key!r} holds labels {bad} outside {allowed}{more}")


def check_labels(dataset: Dataset, key: str, bounds: tuple[int, int], ignore_index: int | None = None) -> None:
    """Raise DataError if any example's `key` holds a label outside inclusive `bounds` (ignore_index allowed).

    Every example is checked: in one vectorised pass over the stored column when the
    data set keeps one (an ArrayDataset, also inside Subset, Standardized or Augmented),
    else example by example. The error names the first offending sample, by its row in
    the data as loaded, and how many more there are.
    """
    stored = _stored_column(dataset, key)
    if stored is None:
        for index in range(len(dataset)):
            _check_range(_get(dataset[index], key, index), bounds, ignore_index, key, index)
        return
    column, rows = stored
    bad_rows = rows[_rows_outside(column, bounds, ignore_index)[rows]]
    if len(bad_rows):
        first = bad_rows[0].item()
        _check_range(torch.as_tensor(column[first]), bounds, ignore_index, key, first, others=len(bad_rows) - 1)


def _stored_column(dataset: Dataset, key: str) -> tuple[Tensor | list[Tensor], Tensor] | None:
    """The column `key` of the ArrayDataset under `dataset`, and the rows of it `dataset` uses, in order.

    None when there is no such column, or a wrapper changes its values (standardisation);
    augmentation moves labels about, and brings in only its `mask_fill`.
    """
    if isinstance(dataset, Subset):
        inner = _stored_column(dataset.dataset, key)
        return None if inner is None else (inner[0], inner[1][torch.as_tensor(dataset.indices, dtype=torch.long)])
    if isinstance(dataset, (Standardized, Augmented)) and key not in getattr(dataset, "stats", {}):
        return _stored_column(dataset.dataset, key)
    column = dataset.columns.get(key) if isinstance(dataset, ArrayDataset) else None
    stacked = isinstance(column, Tensor) and column.dim() >= 1
    ragged = isinstance(column, list) and bool(column) and all(isinstance(value, Tensor) for value in column)
    return (column, torch.arange(len(column))) if stacked or ragged else None


def _rows_outside(column: Tensor | list[Tensor], bounds: tuple[int, int], ignore_index: int | None) -> Tensor:
    """Per row of a column: does it hold a label outside bounds (other than ignore_index)?"""
    def outside(values: Tensor) -> Tensor:
        flags = (values < bounds[0]) | (values > bounds[1])
        return flags & (values != ignore_index) if ignore_index is not None else flags

    if isinstance(column, Tensor):
        return outside(column.reshape(len(column), -1)).any(dim=1)
    return torch.tensor([bool(outside(value).any()) for value in column], dtype=torch.bool)
