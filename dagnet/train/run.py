"""The run directory (config, metrics log, plots, summary) and progress output.

    run_dir/
      config.yaml     resolved training settings
      metrics.jsonl   one JSON object per epoch
      last.pt         checkpoint after the latest epoch (or at an interruption)
      best.pt         checkpoint at the best value of the early-stopping metric
      loss.png        train / val loss per epoch
      metrics.png     validation metrics per epoch
      summary.json    how the run ended, best epoch, final evaluation
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import yaml


class RunDir:
    """Paths and writers of one run; on ranks other than 0 (`writer=False`) every write is skipped."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path, self.writer = Path(path), writer
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.summary = self.path / "summary.json"

    def start(self, config: dict, resume: bool) -> None:
        if not resume and self.last.exists():
            raise FileExistsError(f"{self.path} already holds a run (last.pt): resume it, or choose another run_dir")
        if resume and not self.last.exists():
            raise FileNotFoundError(f"nothing to resume: {self.last} does not exist")
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def history(self, epochs_done: int) -> list[dict]:
        """Epoch records up to the checkpoint being resumed; later lines (written before a crash) are dropped."""
        if not self.metrics.exists():
            return []
        records = [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]
        kept = [r for r in records if r["epoch"] <= epochs_done]
        if self.writer and len(kept) != len(records):
            self.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def log_epoch(self, record: dict) -> None:
        if self.writer:
            with self.metrics.open("a") as f:
                f.write(json.dumps(_finite(record)) + "\n")

    def write_summary(self, summary: dict) -> None:
        if self.writer:
            self.summary.write_text(json.dumps(_finite(summary), indent=2) + "\n")

    def plot(self, history: list[dict]) -> None:
        """loss.png and, when there are validation metrics, metrics.png (matplotlib's Agg canvas)."""
        if not (self.writer and history):
            return
        from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

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
            fig.savefig(self.path / f"{name}.png")


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


class Progress:
    """A tqdm bar per epoch when stderr is a terminal; otherwise plain lines, one per epoch."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

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
        if key != "epoch" and _scalar(value):
            parts.append(f"{key} {value:.4g}" if key != "time" else f"{value:.1f}s")
    return "  ".join(parts)
