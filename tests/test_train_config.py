"""dagnet.train.config: validation, shorthands, did-you-mean, and the spec < file < CLI merge order."""

import pytest
import yaml

from dagnet.train import ConfigError, TrainConfig, parse_overrides, resolve_config


def test_defaults_and_round_trip():
    config = TrainConfig()
    assert config.optimizer == "adamw" and config.schedule.name == "none" and config.early_stopping.patience is None
    again = TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config


def test_shorthands_and_loose_yaml_numbers():
    config = TrainConfig.from_dict({"lr": "1e-3", "schedule": "cosine", "data": "digits", "betas": [0.8, 0.99]})
    assert config.lr == 0.001 and config.schedule.name == "cosine"
    assert config.data == {"name": "digits"} and config.betas == (0.8, 0.99)
    assert TrainConfig.from_dict({"early_stopping": None}).early_stopping.metric == "val_loss"


@pytest.mark.parametrize(
    "values, key, message",
    [
        ({"learning_rate": 0.1}, "learning_rate", "did you mean 'lr'"),
        ({"epoch": 3}, "epoch", "did you mean 'epochs'"),
        ({"schedule": {"warmpu_epochs": 1}}, "schedule.warmpu_epochs", "did you mean 'schedule.warmup_epochs'"),
        ({"augment": {"flips": True}}, "augment.flips", "did you mean 'augment.flip'"),
        ({"optimizer": "adamm"}, "optimizer", "must be one of sgd, adam, adamw"),
        ({"precision": "fp8"}, "precision", "must be one of fp32, bf16, fp16"),
        ({"lr": -1}, "lr", "must be > 0"),
        ({"epochs": 2.5}, "epochs", "expected int"),
        ({"nesterov": True, "optimizer": "adam"}, "nesterov", "only to optimizer: sgd"),
        ({"grad_clip": "big"}, "grad_clip", "expected float or null"),
        ({"augment": {"crop": 1.5}}, "augment", "crop must be in"),
        ({"data": {"name": "shapes", "nosie": 0.1}}, "data", "did you mean 'noise'"),
        ({"data": "digitz"}, "data", "did you mean 'digits'"),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience", ">= 1"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda"),
        ({"weight_decay": {"default": -1}}, "weight_decay", ">= 0"),
    ],
)
def test_errors_name_the_key(values, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig.from_dict(values)
    assert caught.value.key == key


def test_merge_order_spec_then_file_then_cli(tmp_path):
    file = tmp_path / "train.yaml"
    file.write_text("train:\n  lr: 0.01\n  epochs: 5\n  schedule: {warmup_epochs: 1}\n")
    spec = {"lr": 0.1, "batch_size": 8, "schedule": "cosine"}
    config = resolve_config(spec, file, ["epochs=7", "schedule.gamma=0.5", "augment.scale=[0.9, 1.1]"])
    assert (config.lr, config.batch_size, config.epochs) == (0.01, 8, 7)
    assert (config.schedule.name, config.schedule.warmup_epochs, config.schedule.gamma) == ("cosine", 1.0, 0.5)
    assert config.augment.scale == (0.9, 1.1)


def test_overrides_need_key_equals_value():
    assert parse_overrides(["a.b=3", "c=[1, 2]"]) == {"a": {"b": 3}, "c": [1, 2]}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr"])
