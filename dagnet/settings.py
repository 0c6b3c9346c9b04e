"""What a spec may say about training, as plain data checked without torch.

The settings of `train:` (one validated dataclass, :class:`TrainConfig`, with its
sections) and the losses a spec may declare (:data:`LOSSES`). They live apart
from :mod:`dagnet.train`, whose modules import torch, so that ``dagnet check``
can validate a spec's training sections in a fraction of a second;
:mod:`dagnet.train.config` merges settings from a spec, a file and flags.

Every setting has a default; an unknown key, a wrong type or an out-of-range
value raises ConfigError naming the key (`schedule.warmup_epochs`), with a
did-you-mean for misspellings.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from dagnet.errors import closest

# loss op -> (required keys, optional keys with defaults); every loss also takes `weight` and `name`.
LOSSES: dict[str, tuple[tuple[str, ...], dict]] = {
    "cross_entropy": (("output", "target"), {"ignore_index": -100, "mask": None, "label_smoothing": 0.0}),
    "mse": (("output", "target"), {}),
    "bce_with_logits": (("output", "target"), {}),
    "crf_nll": (("node", "potentials", "target"), {"mask": None}),
}
# what each key of a loss holds: a node, output or batch-key name, or a number
LOSS_KEY_KINDS = {"output": "name", "target": "name", "node": "name", "potentials": "name", "mask": "name",
                  "name": "name", "ignore_index": "integer", "weight": "finite number",
                  "label_smoothing": "number from 0 to 1"}


# what `device:` (and eval / predict --device) may name, besides cuda:N
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A training setting is unknown or invalid; `key` is its dotted path.

    ``problem`` is the message without the key. For an unknown key, ``known``
    lists the settings of its section and ``suggestion`` is the one a misspelt
    key most likely meant.
    """

    def __init__(self, key: str, message: str, suggestion: str | None = None, known: tuple = ()):
        self.key, self.problem, self.suggestion, self.known = key, message, suggestion, tuple(known)
        super().__init__(f"{key}: {message}" if key else message)


def _choices(*options: str) -> dict:
    return {"choices": options}


@dataclass
class AugmentConfig:
    """Random geometric changes to training images; masks and a `box` key move with them.

    flip: mirror left-right with probability 1/2. crop: zoom into a random window
    whose side is at least this fraction of the image (1 = off). translate: shift by
    up to this fraction of the side, in whole pixels. scale: zoom factor drawn from
    [low, high] (below 1 shrinks the content and pads). mask_fill: the label given to
    mask pixels shifted in from outside the image.
    """

    flip: bool = False
    crop: float = 1.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    mask_fill: int = 0

    def __post_init__(self):
        self.scale = tuple(float(s) for s in self.scale)
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be in (0, 1], got {self.crop}")
        if not 0 <= self.translate < 1:
            raise ValueError(f"translate must be in [0, 1), got {self.translate}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(self.scale)}")

    @property
    def active(self) -> bool:
        return self.flip or self.crop < 1 or self.translate > 0 or self.scale != (1.0, 1.0)


@dataclass
class ScheduleConfig:
    """Learning rate over training: `name` is none, step, cosine or plateau, after linear warmup.

    step multiplies by gamma every step_size epochs; cosine anneals to min_lr by the
    last epoch; plateau multiplies by gamma after `patience` epochs in which the
    early-stopping metric did not improve.
    """

    name: str = field(default="none", metadata=_choices("none", "step", "cosine", "plateau"))
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    patience: int = 3

    def __post_init__(self):
        _require(self.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
        _require(self.step_size >= 1, "schedule.step_size", "must be >= 1")
        _require(0 < self.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
        _require(self.min_lr >= 0, "schedule.min_lr", "must be >= 0")
        _require(self.patience >= 0, "schedule.patience", "must be >= 0")


@dataclass
class EarlyStoppingConfig:
    """The metric that picks best.pt, and when to stop: after `patience` epochs without improvement.

    metric is a key of metrics.jsonl (val_loss, val_accuracy, val_miou, val_macro_f1,
    train_loss, ...); mode auto means min for losses and max otherwise; patience
    null never stops early.
    """

    metric: str = "val_loss"
    patience: int | None = None
    mode: str = field(default="auto", metadata=_choices("auto", "min", "max"))
    min_delta: float = 0.0

    def __post_init__(self):
        _require(self.patience is None or self.patience >= 1, "early_stopping.patience", "must be >= 1 or null")
        _require(self.min_delta >= 0, "early_stopping.min_delta", "must be >= 0")


@dataclass
class TrainConfig:
    """Everything `fit` needs besides the model, the objective and the data."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = field(default="adamw", metadata=_choices("sgd", "adam", "adamw"))
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float | dict[str, float] = 0.0
    decay_norms_and_biases: bool = False
    l1: float = 0.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = None
    accumulate: int = 1
    on_nonfinite: str = field(default="stop", metadata=_choices("stop", "skip"))
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    keep_best: int = 0
    precision: str = field(default="fp32", metadata=_choices("fp32", "bf16", "fp16"))
    checkpoint: str = field(default="none", metadata=_choices("none", "blocks"))
    strategy: str = field(default="ddp", metadata=_choices("ddp", "fsdp"))
    compile: bool | str = False
    device: str = "auto"
    threads: int | str = "auto"
    seed: int = 0
    deterministic: bool = False
    val_split: float = 0.1
    num_workers: int = 0
    data: dict | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    standardize: bool | list[str] = False
    loggers: list[str] | None = None

    def __post_init__(self):
        _require(self.epochs >= 1, "epochs", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.lr > 0, "lr", "must be > 0")
        _require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        _require(not self.nesterov or self.optimizer == "sgd", "nesterov", "applies only to optimizer: sgd")
        _require(all(0 <= b < 1 for b in self.betas), "betas", "must be in [0, 1)")
        decays = self.weight_decay.values() if isinstance(self.weight_decay, dict) else [self.weight_decay]
        _require(all(d >= 0 for d in decays), "weight_decay", "must be >= 0")
        _require(self.l1 >= 0, "l1", "must be >= 0")
        _require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or null")
        _require(self.accumulate >= 1, "accumulate", "must be >= 1")
        _require(self.keep_best >= 0, "keep_best", "must be >= 0")
        _require(self.device in DEVICES or self.device.startswith("cuda:"), "device",
                 f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        _require(self.threads == "auto" or isinstance(self.threads, int) and self.threads >= 1, "threads",
                 f"must be auto or a number of threads >= 1, got {self.threads!r}")
        _require(0 <= self.val_split < 1, "val_split", "must be in [0, 1)")
        _require(self.num_workers >= 0, "num_workers", "must be >= 0")
        if self.data is not None:
            _check_data(self.data)

    @classmethod
    def from_dict(cls, values: dict | None) -> TrainConfig:
        return _build(cls, _expand_shorthands(values or {}), "")

    def to_dict(self) -> dict:
        """Plain values (tuples as lists), as written to config.yaml."""
        return _plain(dataclasses.asdict(self))


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _check_data(data: dict) -> None:
    """Fail on a misspelt data set or option now rather than after the model is built.

    The data loaders import torch, so this is the one check ``dagnet check`` leaves
    to ``dagnet train`` (see dagnet.check_train).
    """
    from dagnet.data import DataError, check_source
    try:
        check_source(data)
    except DataError as error:
        raise ConfigError("data", str(error)) from None


# Names other trainers use, so that the did-you-mean can point across vocabularies.
ALIASES = {
    "learning_rate": "lr",
    "scheduler": "schedule",
    "lr_schedule": "schedule",
    "max_epochs": "epochs",
    "clip_grad_norm": "grad_clip",
    "gradient_clip_val": "grad_clip",
    "amp": "precision",
    "mixed_precision": "precision",
    "workers": "num_workers",
    "validation_split": "val_split",
    "patience": "early_stopping.patience",
    "accumulate_grad_batches": "accumulate",
    "gradient_accumulation_steps": "accumulate",
    "save_top_k": "keep_best",
    "num_threads": "threads",
    "logger": "loggers",
}


def _build(cls, values: dict, path: str):
    if not isinstance(values, dict):
        raise ConfigError(path, f"expected a mapping, found {type(values).__name__} {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in known:
            close = closest(key, known)
            suggestion = _join(path, close) if close else None if path else ALIASES.get(key)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise ConfigError(where, f"unknown setting{hint}; known: {', '.join(known)}", suggestion, known)
        kwargs[key] = _coerce(value, hints[key], where)
        choices = known[key].metadata.get("choices")
        if choices and kwargs[key] not in choices:
            raise ConfigError(where, f"must be one of {', '.join(choices)}, got {value!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as error:  # checks in dataclasses outside this module (AugmentConfig)
        raise ConfigError(path, str(error)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(value, kind, where: str):
    """Check `value` against a type annotation, converting where YAML is loose (1e-3 read as a string)."""
    if dataclasses.is_dataclass(kind):
        return kind() if value is None else _build(kind, value, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(where, f"expected {names}, got {value!r}")
    if kind is type(None):
        if value is None:
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind in (int, float):
        number = _number(value)         # inf and nan are no setting's value (and int() of them raises)
        if number is not None and math.isfinite(number) and (kind is float or number == int(number)):
            return kind(number)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif origin is list and isinstance(value, (list, tuple)):
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif kind is dict or origin is dict:
        if isinstance(value, dict):
            return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(where, f"expected {name}, got {value!r}")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _expand_shorthands(values: dict) -> dict:
    """`schedule: cosine` means {name: cosine}; `data: digits` names a built-in, `data: x.npz` a path."""
    values = dict(values)
    if isinstance(values.get("schedule"), str):
        values["schedule"] = {"name": values["schedule"]}
    source = values.get("data")
    if isinstance(source, str):
        looks_like_path = "/" in source or "." in source or Path(source).exists()
        values["data"] = {"path": source} if looks_like_path else {"name": source}
    return values


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
