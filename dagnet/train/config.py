"""Training settings merged from a spec's `train:` section, a YAML file and CLI flags.

The settings themselves (TrainConfig and its sections, ConfigError) are defined
in :mod:`dagnet.settings`, which imports no torch so that ``dagnet check`` can
validate them; they are re-exported here, where training code looks for them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dagnet.settings import (  # noqa: F401  (re-exported)
    AugmentConfig,
    ConfigError,
    EarlyStoppingConfig,
    ScheduleConfig,
    TrainConfig,
    _expand_shorthands,
)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two settings dicts (after shorthand expansion); override wins."""
    merged = _expand_shorthands(base)
    for key, value in _expand_shorthands(override).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(flags: list[str]) -> dict:
    """CLI flags `key=value` (dotted keys for sections, YAML values) as a nested dict."""
    result: dict = {}
    for flag in flags:
        key, sep, text = flag.partition("=")
        if not sep or not key:
            raise ConfigError(flag, "expected key=value, e.g. lr=0.01 or schedule.name=cosine")
        *parents, leaf = key.strip().split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(key, f"`{text}` is not a YAML value (quote it, or close its brackets)") from None
    return result


def read_settings(path: Path):
    """A --config file, read as a spec is: UTF-8, size-capped, aliases bounded, errors located."""
    from dagnet.errors import ErrorLog
    from dagnet.spec.source import read_source
    from dagnet.spec.yaml_loader import _plain
    from dagnet.spec.yaml_parse import parse_yaml
    text, file = read_source(path)
    return _plain(parse_yaml(text, file, ErrorLog())) or {}


def resolve_config(
    spec_section: dict | None = None, file: str | Path | None = None, overrides: dict | list[str] = ()
) -> TrainConfig:
    """The spec's `train:` section, overridden by a YAML file, overridden by CLI flags."""
    values = dict(spec_section or {})
    if file is not None:
        loaded = read_settings(Path(file))
        if not isinstance(loaded, dict):
            raise ConfigError("", f"{file}: expected a mapping of training settings")
        values = merge(values, loaded.get("train", loaded))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return TrainConfig.from_dict(merge(values, overrides))
