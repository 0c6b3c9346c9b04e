"""The run directory (spec, config, metrics log, plots, summary) and progress output.

    run_dir/
      spec.yaml       the spec as trained (or spec.dag)
      spec.json       its file name, sha256, source path and --set parameters
      config.yaml     resolved training settings
      metrics.jsonl   one JSON object per epoch
      metrics.csv     the same, one row per epoch (epoch, step, each loss and metric)
      events.out.tfevents.*  TensorBoard's event files (when the tensorboard package is installed)
      last.pt         checkpoint after the latest epoch (or at an interruption)
      best.pt         checkpoint at the best value of the early-stopping metric
      epoch=NNN-<metric>=<value>.pt   the keep_best best epochs' checkpoints
      loss.png        train / val loss per epoch
      metrics.png     validation metrics per epoch
      summary.json    how the run ended, best epoch, final evaluation

A run is never lost: nothing is written until every check has passed, every file
but metrics.jsonl (append-only) is replaced atomically, and a directory that holds
a run refuses a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import yaml

from dagnet.loader import parse
from dagnet.spec.frontends import spec_format
from dagnet.spec.source import SPEC_SUFFIXES
from dagnet.train.checkpoint import CheckpointError, load_checkpoint, write_atomic


class RunDirError(RuntimeError):
    """A run directory cannot be used as asked: another spec, other parameters, an edited spec.json."""


def next_version(parent: Path) -> Path:
    """parent/version_N with N one more than the highest there (0 in a new or empty parent), as Lightning
    numbers its runs: a new run in a directory that holds others, without choosing a name."""
    taken = [int(p.name[8:]) for p in parent.glob("version_*") if p.name[8:].isdigit()]
    return parent / f"version_{max(taken, default=-1) + 1}"


class RunDir:
    """Paths and writers of one run; on ranks other than 0 (`writer=False`) every write is skipped."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path, self.writer = Path(path), writer
        self.config = self.path / "config.yaml"
        self.metrics, self.metrics_csv = self.path / "metrics.jsonl", self.path / "metrics.csv"
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.summary = self.path / "summary.json"

    def holds_run(self) -> bool:
        """True once an epoch (or an interrupted part of one) has been saved."""
        return self.last.exists() or self.best.exists()

    def check_start(self, resume: bool) -> None:
        """Refuse a new run over a saved one, or a resume with nothing saved; reads and writes nothing else."""
        if not resume and self.holds_run():
            raise FileExistsError(f"{self.path} already holds a run (last.pt): resume it with --resume "
                                  f"{self.path}, choose another run_dir (--out NEW_DIR), or add --new-version "
                                  f"to train into {self.path}/version_N")
        if resume and not self.holds_run():
            raise FileNotFoundError(f"nothing to resume: {self.last} does not exist (a run saves its first "
                                    "checkpoint at the end of epoch 1): train it again as a new run")

    def start(self, config: dict, resume: bool, files: dict[str, bytes] | None = None) -> None:
        """Create the directory and write `files` (the spec) and config.yaml, once nothing can refuse the run.

        A new run drops a metrics log left by an attempt that never saved a checkpoint,
        so that no epoch is logged twice.
        """
        self.check_start(resume)
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            for name, data in (files or {}).items():
                write_atomic(self.path / name, data)
            write_atomic(self.config, yaml.safe_dump(config, sort_keys=False).encode())
            if not resume:
                self.metrics.unlink(missing_ok=True)
                self.metrics_csv.unlink(missing_ok=True)

    def load_state(self, prefer: str = "last") -> tuple[Path, dict]:
        """A checkpoint and its state: last.pt (to resume) or best.pt (to evaluate) as preferred, or
        the other one, with a warning, when that cannot be read (truncated, corrupt, missing)."""
        first, other = (self.last, self.best) if prefer == "last" else (self.best, self.last)
        candidates = [path for path in (first, other) if path.exists()]
        if len(candidates) == 2 and first.samefile(other):       # best.pt is a hard link to last.pt
            candidates = candidates[:1]
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.path} (neither last.pt nor best.pt)")
        failures = [] if first.exists() else [f"{first} does not exist"]     # why each one cannot be used
        for path in candidates:
            try:
                state = load_checkpoint(path)
            except CheckpointError as error:
                failures.append(str(error))
                continue
            if failures:
                epoch = state.get("progress", {}).get("epoch", "?")
                warnings.warn(f"{failures[0]}; using {path} (epoch {epoch}) instead", stacklevel=2)
            return path, state
        raise CheckpointError("; ".join(failures) + f": no good checkpoint left in {self.path}"
                              + (", start a new run with --out NEW_DIR" if prefer == "last" else ""))

    def history(self, epochs_done: int) -> list[dict]:
        """Epoch records up to the checkpoint being resumed, one per epoch, the latest kept.

        Later lines (written before a crash), repeats, and a line cut short by a crash
        or a full disk are dropped, and the file is rewritten without them.
        """
        if not self.metrics.exists():
            return []
        lines = self.metrics.read_text(errors="replace").splitlines()
        by_epoch = {}
        for record in map(_record, lines):
            if record is not None and 1 <= record["epoch"] <= epochs_done:
                by_epoch[record["epoch"]] = record
        kept = [by_epoch[epoch] for epoch in sorted(by_epoch)]
        if self.writer and len(kept) != len(lines):
            write_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return kept

    def log_epoch(self, record: dict) -> None:
        if self.writer:
            with self.metrics.open("a") as f:
                f.write(json.dumps(_finite(record)) + "\n")

    def write_failure(self, error: OSError) -> str:
        """One line for a failed write: what failed, and what stays safe (checkpoints are replaced atomically)."""
        kept = (f"{self.last} is intact: resume with --resume {self.path} once that is fixed" if self.last.exists()
                else "no checkpoint was saved")
        return f"{error.filename or self.path}: {error.strerror or error}; training stopped, and {kept}"

    def write_summary(self, summary: dict) -> None:
        if self.writer:
            write_atomic(self.summary, (json.dumps(_finite(summary), indent=2) + "\n").encode())

    def plot(self, history: list[dict]) -> None:
        """loss.png and, when there are validation metrics, metrics.png (matplotlib's Agg canvas)."""
        if not (self.writer and history):
            return
        try:
            from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
        except ImportError:                     # the run itself is saved: plots are a convenience
            warnings.warn("matplotlib is not installed, so no loss.png or metrics.png: pip install 'dagnet[train]'",
                          stacklevel=2)
            return

        epochs = [r["epoch"] for r in history]
        losses = [k for k in ("train_loss", "val_loss") if k in history[-1]]
        metrics = [k for k, v in history[-1].items() if k.startswith("val_") and k != "val_loss" and _scalar(v)]
        for name, keys in (("loss", losses), ("metrics", metrics)):
            if not keys:
                continue
            fig = Figure(figsize=(6, 4), dpi=100)
            fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.96)
            ax = fig.add_subplot()
            for key in keys:
                values = [r[key] if _scalar(r.get(key)) else math.nan for r in history]
                ax.plot(epochs, values, marker=".", label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
            try:
                fig.savefig(self.path / f"{name}.png")
            except OSError as error:            # a full disk: the run is saved, only the picture is missing
                warnings.warn(f"{self.path / f'{name}.png'}: {error.strerror or error}; plot not written",
                              stacklevel=2)


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _record(line: str) -> dict | None:
    """One metrics.jsonl line as a record, or None for a line cut short or edited into something else."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(record, dict) and isinstance(record.get("epoch"), int)
    return record if ok else None


# -- the spec a run was trained with ---------------------------------------------

SPEC_META = "spec.json"


def spec_snapshot(spec: Path) -> bytes:
    """The spec as a run keeps it: its own bytes, or, when it imports block libraries, one
    self-contained file with the imported blocks written in.

    A run directory holds one spec file, and imports resolve against the file's folder:
    a copy that still imported `blocks/resnet.yaml` could never be evaluated or resumed.
    """
    parsed = parse(spec)
    if not parsed.imports:
        return spec.read_bytes()
    from dagnet.spec.printer import to_dsl
    from dagnet.spec.yaml_printer import to_yaml
    for block in parsed.blocks.values():        # every block now belongs to the one file
        block.loc = dataclasses.replace(block.loc, file=parsed.file)
    parsed.imports = []
    write = to_dsl if spec_format(spec) == "dag" else to_yaml
    return write(parsed, imports=[]).encode()


def spec_files(spec: Path, params: dict | None) -> dict[str, bytes]:
    """What a run keeps of its spec: a copy (spec.yaml or spec.dag; see :func:`spec_snapshot`) and
    spec.json with its sha256, source and --set parameters, so that it can be evaluated or
    resumed without the original."""
    text = spec_snapshot(spec)
    name = "spec" + (spec.suffix if spec.suffix in SPEC_SUFFIXES else ".yaml")
    meta = {"spec": name, "sha256": hashlib.sha256(text).hexdigest(), "source": str(spec), "params": params or {}}
    return {name: text, SPEC_META: (json.dumps(meta, indent=2) + "\n").encode()}


def stored_spec(run: Path) -> tuple[Path, dict]:
    """The spec file a run was trained with and its parameters, checked against spec.json."""
    meta_path = run / SPEC_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{run} is not a dagnet run directory (no {SPEC_META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise RunDirError(f"{meta_path} is not valid JSON: was it edited or cut short?") from None
    meta = meta if isinstance(meta, dict) else {}
    name, params = meta.get("spec"), meta.get("params", {})
    if name not in {"spec" + suffix for suffix in SPEC_SUFFIXES} or not isinstance(params, dict):
        raise RunDirError(f"{meta_path} was edited: `spec` must name spec.yaml, spec.yml or spec.dag in the "
                          "run directory, and `params` must be a mapping")
    spec = run / name
    if not spec.is_file():
        raise FileNotFoundError(f"{run} lost the spec it was trained with: {spec} does not exist")
    sha256 = meta.get("sha256")     # runs written before sha256 was stored are taken as they are
    if sha256 is not None and hashlib.sha256(spec.read_bytes()).hexdigest() != sha256:
        raise RunDirError(f"{spec} was edited after the run was trained (its sha256 differs from {meta_path}'s): "
                          "restore it, or train the edited spec as a new run with --out NEW_DIR")
    return spec, params


def resumed_spec(run: Path, spec=None, params: dict | None = None) -> tuple[Path, dict]:
    """The stored spec and parameters of a run to resume; a SPEC or --set given again must match them."""
    stored, stored_params = stored_spec(run)
    if spec is not None:
        if not Path(spec).is_file():
            raise FileNotFoundError(f"spec {spec} does not exist (to resume {run}, SPEC may be left out)")
        if spec_snapshot(Path(spec)) != stored.read_bytes():
            raise RunDirError(f"{spec} differs from the spec {run} was trained with ({stored}): resume "
                              f"without SPEC, or train {spec} as a new run with --out NEW_DIR")
    for key, value in (params or {}).items():
        if stored_params.get(key) != value:
            was = f"{key}={stored_params[key]}" if key in stored_params else f"no --set {key}"
            raise RunDirError(f"--set {key}={value} differs from the run's {was}: resume without --set, "
                              "or train with it as a new run with --out NEW_DIR")
    return stored, stored_params


class Progress:
    """A tqdm bar per epoch when stderr is a terminal; otherwise plain lines, one per epoch."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:                 # without tqdm (dagnet[train]): the plain lines alone
                return
            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{epochs}", leave=False)

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)


def format_record(record: dict, epochs: int) -> str:
    """One epoch as a log line: `epoch 3/10  train_loss 0.412  val_loss 0.398  val_accuracy 0.91  ...`."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key not in ("epoch", "step") and _scalar(value):
            parts.append(f"{key} {value:.4g}" if key != "time" else f"{value:.1f}s")
    return "  ".join(parts)
