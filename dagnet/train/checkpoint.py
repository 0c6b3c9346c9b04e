"""Checkpoints that survive crashes and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors, plain containers and numbers only (RNG states
included, as tensors), written to a temporary file in the same directory, flushed
and fsynced, then renamed over the old one: a crash leaves the old or the new
file, never half of one (after a power cut the rename itself may be undone,
leaving the previous checkpoint). meta.sha256 is a digest of everything else,
checked on load.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from dagnet.torch_files import HoldsObjects, NotATorchFile, load_weights_only

FORMAT = "dagnet-checkpoint/1"

# top-level module names of torchvision's classification models (a hint when a file's names differ)
TORCHVISION = re.compile(r"^(conv1|bn1|layer[1-4]|fc|features|classifier|avgpool|conv_proj|encoder\.layers|heads)\.")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, of another format, or corrupt."""


def save_checkpoint(path: str | Path, payload: dict) -> str:
    """Write payload plus meta {format, sha256, time, torch version} atomically; return the digest."""
    data, sha256 = _serialize(payload)
    write_atomic(Path(path), data)
    return sha256


class CheckpointWriter:
    """Saves checkpoints from a background thread.

    The caller pays only for copying the tensors (a snapshot, so training may go
    on changing them); hashing, serialising, writing and the fsync overlap the
    next epoch. `wait` blocks until the last save is on disk and re-raises its error.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: str | Path, payload: dict, links: tuple = (), remove: tuple = ()) -> None:
        """Save to `path`, then point every path in `links` at the same file (hard link, or copy),
        then delete the files in `remove`."""
        snapshot = _snapshot(payload)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(Path(path), snapshot, links, remove))
        self._thread.start()

    def _write(self, path: Path, payload: dict, links: tuple, remove: tuple) -> None:
        try:
            save_checkpoint(path, payload)
            for link in links:
                _link_atomic(path, Path(link))
            for old in remove:
                Path(old).unlink(missing_ok=True)
        except BaseException as error:  # handed to the training thread by wait()
            self._error = error

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _snapshot(obj):
    """A copy of every tensor in a nested structure; plain values are immutable or not reused."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {key: _snapshot(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(value) for value in obj)
    return obj


def _serialize(payload: dict) -> tuple[bytes, str]:
    sha256 = digest(payload)
    meta = {"format": FORMAT, "sha256": sha256, "time": time.time(), "torch": str(torch.__version__)}
    buffer = io.BytesIO()
    torch.save({**payload, "meta": meta}, buffer)
    return buffer.getvalue(), sha256


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file in the same directory, flush and fsync, rename over `path`.

    A failure (a full disk, a read-only directory) leaves `path` as it was, and its
    OSError names `path` rather than the temporary file.
    """
    path, tmp = Path(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def _link_atomic(source: Path, target: Path) -> None:
    """Make `target` name the file `source` names. Checkpoints are only ever replaced, never
    rewritten in place, so the link keeps these contents when `source` is next replaced."""
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        write_atomic(target, source.read_bytes())
        return
    os.replace(tmp, target)


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True) -> dict:
    """Load with weights_only=True and check the format and, if verify, the sha256 of the payload."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return verified(path, read_payload(path, map_location), verify)


def verified(path: Path, payload, verify: bool = True) -> dict:
    """A payload read from `path`, checked to be of this format and, if verify, against its sha256."""
    meta = payload.pop("meta", None) if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if verify and digest(payload) != meta.get("sha256"):
        raise CheckpointError(f"{path} is corrupt: its contents do not match the sha256 in its metadata")
    payload["meta"] = meta
    return payload


def read_payload(path: Path, map_location="cpu"):
    """torch.load with weights_only=True; every way a file can fail to be one is a CheckpointError."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (a save that never finished?)")
    try:
        return load_weights_only(path, map_location)
    except HoldsObjects:
        raise CheckpointError(f"{path} is not a checkpoint: it holds Python objects or is no file torch.save "
                              "wrote (refused by weights_only=True; nothing in it was run)") from None
    except NotATorchFile:
        raise CheckpointError(f"{path} is truncated or not a checkpoint (torch.load cannot read it)") from None


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load a checkpoint's model weights into `model` (verified); return the checkpoint's metadata."""
    state = load_checkpoint(path)
    load_model_state(model, state["model"], path, strict)
    return state["meta"]


def load_model_state(model: torch.nn.Module, weights: dict, path: str | Path, strict: bool = True) -> None:
    """``model.load_state_dict(weights)`` once the names (if strict) and shapes fit; weights of another
    model are a one-line CheckpointError naming `path`, the first key that differs, and a hint."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path} does not fit the model: {_names_differ(missing, unexpected)}; "
                              f"{_hint(list(expected), list(weights), unexpected)}")
    for key, value in expected.items():
        if key in weights and tuple(weights[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path} does not fit the model: `{key}` has shape {tuple(weights[key].shape)} "
                                  f"in the file but {tuple(value.shape)} in the model; were the weights trained "
                                  "with other spec parameters (--set, e.g. classes)?")
    model.load_state_dict(weights, strict=strict)


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
    return (f"the names differ (the file's begin with `{file_keys[0] if file_keys else '-'}`, the model's with "
            f"`{model_keys[0] if model_keys else '-'}`): were they saved from another model?")


def digest(obj) -> str:
    """sha256 over a nested structure of tensors and plain values, independent of device and pickling."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)};".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r}:".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)};".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"{obj!r};".encode())


def rng_state() -> dict:
    """The torch, CUDA, numpy and python generator states, as tensors and numbers."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached": cached},
        "python": {"version": version, "state": torch.tensor(python_state), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
