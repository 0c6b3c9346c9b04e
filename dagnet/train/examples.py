"""What `fit` takes as data: map-style datasets or DataLoaders whose examples are dicts or tuples.

dagnet's own data sets yield dicts keyed by the spec's input and target names.
A tuple example, as a torch ``TensorDataset`` or a torchvision data set yields,
is named by position: first the model's inputs in the order its ``forward``
takes them, then the batch keys the losses read (each loss's target, then its
mask), in the order the losses are listed. ``(image, label)`` for a model
``forward(image)`` with a loss ``{target: label}`` is ``{"image": ..., "label": ...}``.
"""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset, default_collate

from dagnet.data import DataError


def field_names(inputs: tuple[str, ...] | None, batch_keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """The names of a tuple example's fields, by position (see the module docstring); None for a
    model whose forward takes **kwargs, which names no inputs."""
    if inputs is None:
        return None
    return (*inputs, *(key for key in batch_keys if key not in inputs))


class NamedFields(Dataset):
    """A dataset of tuple examples seen as one of dicts, with the fields named by position."""

    def __init__(self, dataset: Dataset, names: tuple[str, ...]):
        self.dataset, self.names = dataset, names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return as_dict(self.dataset[index], self.names, f"example {index}")

    def __getattr__(self, name: str):         # set_epoch and the like, of the dataset wrapped
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def as_dict(example, names: tuple[str, ...], where: str) -> dict:
    if isinstance(example, dict):
        return example
    if not isinstance(example, (tuple, list)):
        raise DataError(f"{where} is a {type(example).__name__}; expected a dict of tensors or a tuple")
    if len(example) != len(names):
        raise DataError(f"{where} has {len(example)} fields, but the model and losses read {len(names)}: "
                        f"{', '.join(names)} (inputs in forward's order, then loss targets)")
    return dict(zip(names, example))


def as_fit_data(data: Dataset | DataLoader | None, names: tuple[str, ...] | None) -> tuple[Dataset | None, dict]:
    """The dataset `fit` draws from (examples as dicts) and what a DataLoader decides: its batch size,
    workers and a collate function of its own; its order is replaced by fit's seeded one, which
    makes resuming exact. A custom collate function receives the examples as the dataset yields
    them, so it is taken only for dict examples."""
    if data is None:
        return None, {}
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(dataset[0], dict):
        if names is None:
            raise DataError("the model's forward takes **kwargs, so the fields of a tuple example have no "
                            "names: give examples as dicts")
        dataset = NamedFields(dataset, names)
    if not isinstance(data, DataLoader):
        return dataset, {}
    settings = {"batch_size": data.batch_size, "num_workers": data.num_workers}
    if data.batch_size is None:
        raise DataError("fit batches the examples itself: give a DataLoader with batch_size, not a batch_sampler")
    if data.collate_fn is not default_collate:
        if isinstance(dataset, NamedFields):
            raise DataError("fit names tuple examples before collating, so the DataLoader's own collate_fn "
                            "cannot take them: yield dicts, or leave collate_fn to dagnet's")
        settings["collate_fn"] = data.collate_fn
    return dataset, settings
