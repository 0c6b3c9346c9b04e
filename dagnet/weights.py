"""Trained weights from any file ``--weights`` takes, read without unpickling code.

* a dagnet checkpoint (``best.pt``, ``last.pt``; dagnet-checkpoint/1, its sha256 checked),
* a ``.safetensors`` file: dagnet's own (``dagnet compile -o``, spec embedded) or any other,
* a state dict saved with ``torch.save`` (``{name: tensor}``, or one under ``state_dict``/``model``).

``torch.pt`` files are read with ``weights_only=True`` and safetensors hold only
tensors, so no file can run code. A file that does not fit the model is a
one-line :class:`CheckpointError` naming the file and the first key that differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dagnet.train.checkpoint import FORMAT, CheckpointError, _read, verified

# top-level module names of torchvision's classification models, none of which a spec node is usually called
TORCHVISION = re.compile(r"^(conv1|bn1|layer[1-4]|fc|features|classifier|avgpool|conv_proj|encoder\.layers|heads)\.")


@dataclass
class Weights:
    """A state dict, and the input standardisation a run trained with ({input: {mean, std}}), if any."""
    state: dict[str, torch.Tensor]
    stats: dict = field(default_factory=dict)


def read_weights(path: str | Path) -> Weights:
    """The weights in a checkpoint, safetensors file or saved state dict (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    payload = _read(path, "cpu")
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if isinstance(meta, dict) and meta.get("format") == FORMAT:
        payload = verified(path, payload)
        return Weights(payload["model"], payload.get("data_stats") or {})
    return Weights(_state_dict(path, payload))


def _read_safetensors(path: Path) -> Weights:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a safetensors file ({str(error).splitlines()[0]})") from None
    return Weights(state, json.loads(meta.get("dagnet.standardize", "{}")))


def _state_dict(path: Path, payload) -> dict[str, torch.Tensor]:
    """A saved state dict: the payload itself, or the dict under its `state_dict` or `model` key."""
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} holds no state dict: expected a dagnet checkpoint, a .safetensors file, "
                              "or a {name: tensor} dict saved with torch.save")
    return dict(payload)


def load_into(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)`` once every name and shape fits, else a one-line CheckpointError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: {_names_differ(missing, unexpected)}; "
                              f"{_hint(list(expected), list(state), unexpected)}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path} does not fit the model: `{key}` has shape {tuple(state[key].shape)} "
                                  f"in the file but {tuple(value.shape)} in the model; were the weights trained "
                                  "with other spec parameters (--set, e.g. classes)?")
    model.load_state_dict(state)


def load_weights_file(model: torch.nn.Module, path: str | Path) -> Weights:
    """Read any weights file and load it into `model`; returns what was read (with the run's stats)."""
    weights = read_weights(path)
    load_into(model, weights.state, path)
    return weights


def _names_differ(missing: list[str], unexpected: list[str]) -> str:
    if missing and unexpected:
        return f"the model's `{missing[0]}` is missing from it, and its `{unexpected[0]}` is not in the model"
    if missing:
        return f"the model's `{missing[0]}` is missing from it ({len(missing)} keys in all)"
    return f"it holds `{unexpected[0]}`, which the model does not have ({len(unexpected)} keys in all)"


def _hint(model_keys: list[str], file_keys: list[str], unexpected: list[str]) -> str:
    if file_keys and all(k.startswith("module.") for k in file_keys):
        return "its keys carry DistributedDataParallel's `module.` prefix: save `model.module.state_dict()`"
    if any(TORCHVISION.match(k) for k in unexpected):
        return ("the names differ: this looks like a torchvision state dict; rename its keys to the spec's "
                f"(e.g. `{file_keys[0]}` -> `{model_keys[0]}`) and save it again (see docs/backend.md)")
    if set(file_keys) & set(model_keys):
        return "are they the weights of this spec, with the same parameters (--set)?"
    return (f"the names differ (the file's begin `{file_keys[0] if file_keys else '-'}`, the model's "
            f"`{model_keys[0] if model_keys else '-'}`): were they saved from another model?")
