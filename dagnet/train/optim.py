"""Optimizers with per-prefix weight decay, the learning-rate schedule, and early stopping.

The schedule is a plain function of training progress (nanoGPT's get_lr),
applied before every step, so its whole state is three numbers and a resumed
run sets exactly the learning rates the uninterrupted one would have.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dagnet.train.config import ConfigError, EarlyStoppingConfig, ScheduleConfig, TrainConfig


def parameter_groups(
    model: nn.Module, weight_decay: float | dict[str, float], decay_norms_and_biases: bool = False
) -> list[dict]:
    """One optimizer group per distinct weight decay.

    weight_decay is a number, or a mapping from parameter-name prefixes (node names)
    to decays, the longest matching prefix winning and "default" covering the rest.
    Biases and norm scales (parameters with fewer than 2 dims) get no decay unless
    decay_norms_and_biases: shrinking them towards zero only hurts.
    """
    rules = dict(weight_decay) if isinstance(weight_decay, dict) else {"default": weight_decay}
    default = rules.pop("default", 0.0)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    for prefix in rules:
        if not any(_under(name, prefix) for name, _ in named):
            raise ConfigError(f"weight_decay.{prefix}", "matches no parameter name")
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in named:
        matches = [prefix for prefix in rules if _under(name, prefix)]
        decay = rules[max(matches, key=len)] if matches else default
        if p.dim() < 2 and not decay_norms_and_biases:
            decay = 0.0
        groups.setdefault(decay, []).append(p)
    return [{"params": params, "weight_decay": decay} for decay, params in groups.items()]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay, config.decay_norms_and_biases)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    optimizer = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer(groups, lr=config.lr, betas=config.betas)


class Schedule:
    """Learning rate at (epoch, step): linear warmup, then none / step / cosine / plateau decay."""

    def __init__(self, config: ScheduleConfig, lr: float, epochs: int, steps_per_epoch: int):
        self.config, self.lr, self.epochs, self.steps_per_epoch = config, lr, epochs, steps_per_epoch
        self.plateau_scale, self.bad_epochs = 1.0, 0

    def __call__(self, epoch: int, step: int) -> float:
        c = self.config
        done = epoch * self.steps_per_epoch + step  # steps taken before this one
        warmup_steps = c.warmup_epochs * self.steps_per_epoch
        warm = min(1.0, (done + 1) / warmup_steps) if warmup_steps else 1.0
        if c.name == "step":
            return warm * self.lr * c.gamma ** (epoch // c.step_size)
        if c.name == "plateau":
            return warm * self.lr * self.plateau_scale
        if c.name == "cosine":
            total = max(1.0, self.epochs * self.steps_per_epoch - warmup_steps)
            progress = min(1.0, max(0.0, done - warmup_steps) / total)
            return warm * (c.min_lr + (self.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))
        return warm * self.lr

    def end_epoch(self, improved: bool) -> None:
        """Plateau bookkeeping: decay after more than `patience` epochs without improvement."""
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.config.name == "plateau" and self.bad_epochs > self.config.patience:
            self.plateau_scale *= self.config.gamma
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale, self.bad_epochs = state["plateau_scale"], state["bad_epochs"]


class EarlyStopping:
    """Tracks the best value of the monitored metric (it picks best.pt) and when to stop."""

    def __init__(self, config: EarlyStoppingConfig):
        self.config = config
        minimise = config.mode == "min" or (config.mode == "auto" and config.metric.endswith("loss"))
        self.sign = 1.0 if minimise else -1.0
        self.best: float | None = None
        self.best_epoch, self.bad_epochs = 0, 0

    def update(self, record: dict) -> bool:
        """Take an epoch's record; True if the metric improved on the best so far."""
        metric = self.config.metric
        if metric not in record:
            options = ", ".join(k for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch")
            raise ConfigError("early_stopping.metric", f"no metric {metric!r} this run; choose from {options}")
        value = record[metric]
        if value is None:  # a metric with nothing to measure yet, e.g. mIoU without any labelled pixel
            improved = False
        else:
            improved = self.best is None or self.sign * (self.best - value) > self.config.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.config.patience is not None and self.bad_epochs >= self.config.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
