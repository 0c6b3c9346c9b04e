"""dagnet.train.optim: parameter groups, learning-rate schedules, early stopping."""

import math

import pytest
import torch
from torch import nn

from dagnet.train import ConfigError, TrainConfig, build_optimizer, parameter_groups
from dagnet.train.config import EarlyStoppingConfig, ScheduleConfig
from dagnet.train.optim import EarlyStopping, Schedule


def _model():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("head", nn.Linear(4, 2))
    return model


def _decays(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}


def test_no_decay_on_biases_and_norms_by_default():
    model = _model()
    decays = _decays(model, parameter_groups(model, 0.1))
    assert decays == {
        "encoder.0.weight": 0.1, "encoder.0.bias": 0.0, "encoder.1.weight": 0.0, "encoder.1.bias": 0.0,
        "head.weight": 0.1, "head.bias": 0.0,
    }
    assert set(_decays(model, parameter_groups(model, 0.1, decay_norms_and_biases=True)).values()) == {0.1}


def test_decay_per_prefix_longest_match_wins():
    model = _model()
    decays = _decays(model, parameter_groups(model, {"default": 0.01, "encoder": 0.0, "encoder.0": 0.5}))
    assert decays["encoder.0.weight"] == 0.5 and decays["head.weight"] == 0.01
    with pytest.raises(ConfigError, match="weight_decay.haed: matches no parameter"):
        parameter_groups(model, {"haed": 0.1})


def test_optimizer_kinds():
    model = _model()
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True, lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adam")), torch.optim.Adam)
    assert type(build_optimizer(model, TrainConfig())) is torch.optim.AdamW


def test_warmup_then_cosine_to_min_lr():
    schedule = Schedule(ScheduleConfig("cosine", warmup_epochs=1, min_lr=0.01), lr=1.0, epochs=5, steps_per_epoch=4)
    warm = [schedule(0, s) for s in range(4)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule(1, 0) == pytest.approx(1.0)
    assert schedule(3, 0) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(4, 3) == pytest.approx(0.01, abs=0.01)


def test_step_schedule():
    schedule = Schedule(ScheduleConfig("step", step_size=2, gamma=0.5), lr=0.8, epochs=6, steps_per_epoch=3)
    assert [schedule(e, 1) for e in range(6)] == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.2])


def test_plateau_decays_after_patience_and_resumes_from_state():
    schedule = Schedule(ScheduleConfig("plateau", patience=1, gamma=0.1), lr=1.0, epochs=10, steps_per_epoch=1)
    for improved in (True, False, False):
        schedule.end_epoch(improved)
    assert schedule(3, 0) == pytest.approx(0.1)
    copy = Schedule(ScheduleConfig("plateau", patience=1, gamma=0.1), lr=1.0, epochs=10, steps_per_epoch=1)
    copy.load_state_dict(schedule.state_dict())
    assert copy(3, 0) == pytest.approx(0.1)


def test_early_stopping_modes_and_patience():
    stopper = EarlyStopping(EarlyStoppingConfig(metric="val_accuracy", patience=2))
    results = [stopper.update({"epoch": e, "val_accuracy": a}) for e, a in enumerate([0.5, 0.7, 0.6, 0.7], 1)]
    assert results == [True, True, False, False] and stopper.should_stop and stopper.best_epoch == 2
    by_loss = EarlyStopping(EarlyStoppingConfig(min_delta=0.1))
    assert [by_loss.update({"epoch": 1, "val_loss": v}) for v in (1.0, 0.95, 0.8)] == [True, False, True]
    assert not by_loss.should_stop  # patience null: never stops


def test_missing_metric_lists_the_choices():
    stopper = EarlyStopping(EarlyStoppingConfig(metric="val_acc"))
    with pytest.raises(ConfigError, match="no metric 'val_acc'.*val_accuracy"):
        stopper.update({"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5})
