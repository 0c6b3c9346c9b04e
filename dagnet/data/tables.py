"""Tables as data: `.csv`, `.tsv` and `.parquet` files (read with pandas) mapped onto a spec's inputs and targets.

A row is an example. Which columns feed which input or target is a `columns` map,
``{features: [a, b, c], label: species}``, or follows from the names: a column named
like an input or a loss target is that input or target, and a single vector input
(shape (D,)) left over takes the remaining numeric columns in file order. Text in a
target column names classes, numbered in sorted order. The map and the class names are
the loader's preprocessing, saved with a run, so that a new table is read the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dagnet.data.base import ArrayDataset, DataError

SEPARATORS = {".csv": ",", ".tsv": "\t"}


def load_table(path: str | Path, *, inputs: dict | None = None, targets: tuple[str, ...] = (),
               preprocessing: dict | None = None, columns: dict | None = None) -> ArrayDataset:
    """A table whose rows are examples; columns: {key: column, or a list of columns stacked into a vector}.

    Without a spec (inputs None) and without `columns`, every column is a key of its own.
    A run's preprocessing (its column map and class names) takes precedence, so that
    eval and predict number the classes as training did; target columns may then be
    absent (predict).
    """
    path = Path(path)
    frame = _read(path)
    saved = preprocessing or {}
    if columns is not None and not isinstance(columns, dict):
        raise DataError(f"{path}: columns must map keys to a column or a list of columns, found {columns!r}")
    mapping = saved.get("columns") or _default_columns(path, frame, inputs, targets, columns or {})
    inputs = inputs or {}
    class_names = dict(saved.get("class_names", {}))
    data = {}
    for key, chosen in mapping.items():
        missing = [c for c in ([chosen] if isinstance(chosen, str) else chosen) if c not in frame.columns]
        if missing and key not in inputs and key not in targets and preprocessing is not None:
            continue                    # a target of the run, absent from data to predict for
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} for {key!r} (columns: {', '.join(map(str, frame.columns))})")
        if isinstance(chosen, str):
            data[key] = _column(path, frame, chosen, key, inputs.get(key), class_names)
        else:
            data[key] = torch.from_numpy(np.stack([_numbers(path, frame, c) for c in chosen], axis=1))
    for key in (*inputs, *targets):
        if key not in data:
            raise DataError(f"{path}: no column for the spec's {'input' if key in inputs else 'target'} {key!r} "
                            f"(columns: {', '.join(map(str, frame.columns))}); map one with columns: {{{key}: COLUMN}}")
    dataset = ArrayDataset(data, inputs=tuple(k for k in data if data[k].is_floating_point() and
                                              (k in inputs or not inputs)))
    dataset.preprocessing = {"columns": mapping} | ({"class_names": class_names} if class_names else {})
    return dataset


def _read(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=SEPARATORS[path.suffix.lower()], skipinitialspace=True)
    except ImportError:
        raise DataError(f"{path}: reading .parquet needs pyarrow: pip install 'dagnet[data]'") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header row and one row per example") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable table: {str(error).strip().splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"{path}: holds no rows; expected one row per example")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _default_columns(path: Path, frame, inputs: dict | None, targets: tuple[str, ...], given: dict) -> dict:
    """The `columns` given, completed: columns named like an input or a target are that; one vector
    input left over takes the numeric columns not used."""
    if not inputs:
        return given or {c: c for c in frame.columns}
    mapping = dict(given)
    used = {c for chosen in given.values() for c in ([chosen] if isinstance(chosen, str) else chosen)}
    mapping |= {key: key for key in (*inputs, *targets) if key not in mapping and key in frame.columns
                and key not in used}
    open_inputs = [key for key in inputs if key not in mapping]
    if len(open_inputs) == 1 and len(inputs[open_inputs[0]].shape) == 1:
        key, size = open_inputs[0], inputs[open_inputs[0]].shape[0]
        used |= {c for c in mapping.values() if isinstance(c, str)}
        rest = [c for c in frame.columns if c not in used and _looks_numeric(frame[c])]
        if isinstance(size, int) and len(rest) != size:
            raise DataError(f"{path}: the spec's input {key!r} takes {size} values per row, but the table has "
                            f"{len(rest)} numeric columns besides the targets ({', '.join(rest)}); choose them "
                            f"with columns: {{{key}: [COLUMN, ...]}}")
        mapping[key] = rest
    return mapping


def _looks_numeric(series) -> bool:
    """A column of numbers, maybe with a bad cell further down (reported later, naming it), rather than
    a column of text: its first value is a number."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series):
        return True
    present = series.dropna()
    return bool(len(present)) and pd.notna(pd.to_numeric(present.iloc[:1], errors="coerce").iloc[0])


def _column(path: Path, frame, column: str, key: str, field, class_names: dict) -> torch.Tensor:
    """One column as one value per example: numbers, or class ids for text (numbered in sorted order)."""
    import pandas as pd

    series = frame[column]
    if key in class_names or (field is None and not _looks_numeric(series)):
        return _classes(path, series, column, class_names.setdefault(key, _sorted_names(path, series, column)))
    values = _numbers(path, frame, column)
    if field is not None and field.dtype != "float":
        return torch.from_numpy(values).to(getattr(torch, field.dtype))
    if field is None and pd.api.types.is_integer_dtype(series):
        return torch.from_numpy(series.to_numpy(np.int64))         # class ids, or counts
    return torch.from_numpy(values)


def _numbers(path: Path, frame, column: str) -> np.ndarray:
    """A column as float32; a missing or non-numeric cell is an error naming its row (header = row 1)."""
    import pandas as pd

    series = frame[column]
    values = series if pd.api.types.is_numeric_dtype(series) else pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        cell = series.iloc[row]
        found = "a missing value" if pd.isna(cell) else f"{str(cell)!r}"
        raise DataError(f"{path}: row {_row(path, row)}, column {column!r}: {found}, expected a number")
    return values.to_numpy(np.float32)


def _sorted_names(path: Path, series, column: str) -> list[str]:
    _check_present(path, series, column)
    return sorted(series.astype(str).unique().tolist())


def _classes(path: Path, series, column: str, names: list[str]) -> torch.Tensor:
    _check_present(path, series, column)
    index = {name: i for i, name in enumerate(names)}
    text = series.astype(str)
    unknown = ~text.isin(index)
    if unknown.any():
        row = int(np.argmax(unknown.to_numpy()))
        raise DataError(f"{path}: row {_row(path, row)}, column {column!r}: class {text.iloc[row]!r} was not "
                        f"in the training data (classes: {', '.join(names)})")
    return torch.tensor(text.map(index).to_numpy(np.int64))


def _check_present(path: Path, series, column: str) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(f"{path}: row {_row(path, int(np.argmax(missing)))}, column {column!r}: a missing value, "
                        "expected a class name")


def _row(path: Path, index: int) -> int:
    """A row as a spreadsheet numbers it: in a CSV or TSV the header is row 1."""
    return index + (2 if path.suffix.lower() in SEPARATORS else 1)
