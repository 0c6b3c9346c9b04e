"""Check a data set against the shapes, dtypes and label ranges a model expects, before training starts."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dagnet.data.base import DataError

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


def _check_range(value: Tensor, bounds: tuple[int, int], ignore_index: int | None, key: str, index: int) -> None:
    low, high = bounds
    labels = value[value != ignore_index] if ignore_index is not None else value.flatten()
    if labels.numel() and (labels.min() < low or labels.max() > high):
        bad = labels[(labels < low) | (labels > high)].unique()[:5].tolist()
        allowed = f"{low}..{high}" + (f" or {ignore_index}" if ignore_index is not None else "")
        raise DataError(f"sample {index}: {key!r} holds labels {bad} outside {allowed}")
