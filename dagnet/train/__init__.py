"""Training, evaluation and prediction for compiled dagnet models, or any module (outputs as a dict, or one tensor).

    objective = build_objective(spec_losses, model)
    config = resolve_config(spec_train_section, "train.yaml", ["lr=0.01"])
    data = prepare_data(config.data, val_split=config.val_split, seed=config.seed,
                        standardize=config.standardize, augment=config.augment)
    fit(model, objective, data.train, data.val, config, "runs/exp1",
        metrics=infer_task(spec_losses), data_stats=data.stats)
"""

from dagnet.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from dagnet.train.config import ConfigError, TrainConfig, parse_overrides, resolve_config
from dagnet.train.distributed import launch
from dagnet.train.evaluate import evaluate, predict
from dagnet.train.loop import TrainingDiverged, fit, seed_everything
from dagnet.train.metrics import ConfusionMatrix, Task, infer_task
from dagnet.train.objective import Objective, ObjectiveError, build_objective
from dagnet.train.optim import build_optimizer, parameter_groups

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConfusionMatrix",
    "Objective",
    "ObjectiveError",
    "Task",
    "TrainConfig",
    "TrainingDiverged",
    "build_objective",
    "build_optimizer",
    "evaluate",
    "fit",
    "infer_task",
    "launch",
    "load_checkpoint",
    "load_weights",
    "parameter_groups",
    "parse_overrides",
    "predict",
    "resolve_config",
    "save_checkpoint",
    "seed_everything",
]
