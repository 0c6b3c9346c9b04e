"""Where a run's numbers go besides metrics.jsonl: metrics.csv always, TensorBoard, and any tracker plugged in.

A logger is anything with the three methods of :class:`Logger`; `fit` calls
them on rank 0 only. The ``loggers:`` setting names the ones a run uses:
``tensorboard`` is built in, and others come in through the same doors as
custom ops (dagnet/plugins.py), never from a spec alone: a ``--plugin MODULE``
that calls :func:`register_logger`, or an installed package's entry point in
the ``dagnet.loggers`` group, whose name is the logger's. A registered factory
is called with the run directory and the step training resumes from (0 for a
new run). ``loggers: null`` (the default) means TensorBoard when the
``tensorboard`` package is installed; ``loggers: []`` means none.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

from dagnet.train.checkpoint import write_atomic
from dagnet.train.config import ConfigError

ENTRY_POINT_GROUP = "dagnet.loggers"


@runtime_checkable
class Logger(Protocol):
    def log_params(self, params: dict) -> None:
        """The run's resolved settings, once, when it starts."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One epoch's numbers (train_loss, val_accuracy, lr, ...) at the global optimizer step."""

    def close(self) -> None:
        """Flush and release; called when the run ends, however it ends."""


LoggerFactory = Callable[[Path, int], Logger]
_REGISTRY: dict[str, LoggerFactory] = {}


def register_logger(name: str, factory: LoggerFactory) -> None:
    """Make ``loggers: [name]`` build ``factory(run_dir, resume_step)``; call it from a plugin module."""
    _REGISTRY[name] = factory


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def logger_factories(names: list[str] | None) -> dict[str, LoggerFactory]:
    """The factory of each named logger, checked before anything is written; `None` is the default."""
    if names is None:
        names = ["tensorboard"] if tensorboard_available() else []
    factories = {}
    for name in names:
        if name in _REGISTRY:
            factories[name] = _REGISTRY[name]
            continue
        points = [p for p in metadata.entry_points(group=ENTRY_POINT_GROUP) if p.name == name]
        if not points:
            known = ", ".join(sorted({*_REGISTRY, *(p.name for p in metadata.entry_points(group=ENTRY_POINT_GROUP))}))
            raise ConfigError("loggers", f"no logger {name!r} (known: {known}); a plugin adds one with "
                                         "dagnet.train.loggers.register_logger (see docs/training.md)")
        factories[name] = points[0].load()
    if "tensorboard" in factories and not tensorboard_available():
        raise ConfigError("loggers", "tensorboard needs the tensorboard package: pip install 'dagnet[tensorboard]', "
                                     "or turn it off with loggers: []")
    return factories


class CsvLogger:
    """metrics.csv: one row per epoch (epoch, step, then every loss and metric), columns in order of
    first appearance. The file is rewritten whole (atomically) after each epoch, from the rows of the
    epochs kept, so a resumed run holds each epoch once, like metrics.jsonl."""

    def __init__(self, path: Path, history: list[dict] = ()):
        self.path, self.rows = path, [dict(record) for record in history]

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append({"epoch": metrics.get("epoch"), "step": step, **metrics})
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, text.getvalue().encode())

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Event files in the run directory, read by ``tensorboard --logdir runs``: scalars under
    ``train/`` and ``val/`` (train_loss as train/loss), the settings as text.

    A resumed run purges the events at and after its resume step, which an earlier attempt
    wrote past its last checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step or None)

    def log_params(self, params: dict) -> None:
        import yaml
        self.writer.add_text("config", "```\n" + yaml.safe_dump(params, sort_keys=False) + "```")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "val") and name else key
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


register_logger("tensorboard", TensorBoardLogger)
