"""Trained weights from any file ``--weights`` takes, read without unpickling code.

* a dagnet checkpoint (``best.pt``, ``last.pt``; dagnet-checkpoint/1, its sha256 checked),
* a ``.safetensors`` file: dagnet's own (``dagnet compile -o``, spec embedded) or any other,
* a state dict saved with ``torch.save`` (``{name: tensor}``, or one under ``state_dict``/``model``).

``torch.pt`` files are read with ``weights_only=True`` and safetensors hold only
tensors, so no file can run code. A file that does not fit the model is a
one-line :class:`CheckpointError` naming the file and the first key that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dagnet.export import metadata_json
from dagnet.train.checkpoint import FORMAT, CheckpointError, load_model_state, read_payload, verified
from dagnet.train.sharding import model_weights


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
    payload = read_payload(path, "cpu")
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if isinstance(meta, dict) and meta.get("format") == FORMAT:
        payload = verified(path, payload)
        return Weights(model_weights(payload, path), payload.get("data_stats") or {})
    return Weights(_state_dict(path, payload))


def _read_safetensors(path: Path) -> Weights:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a safetensors file ({str(error).splitlines()[0]})") from None
    return Weights(state, metadata_json(path, meta, "dagnet.standardize", {}))


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


def load_weights_file(model: torch.nn.Module, path: str | Path) -> Weights:
    """Read any weights file and load it into `model`; returns what was read (with the run's stats)."""
    weights = read_weights(path)
    load_model_state(model, weights.state, path)
    return weights
