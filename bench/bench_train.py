"""Throughput of `dagnet.train.fit` against a hand-written PyTorch loop.

Both train the same small CNN on the digits data (same split, batch size,
optimizer, epochs, one validation pass per epoch) in this process, in
alternating runs so that drift of the machine's load hits both alike. fit's
numbers include everything it does besides: checkpoints (fsynced), the metrics
log, plots and the summary. Reports samples/s (training examples per second of
wall time) and the ratio fit / hand-written per round; the goal is >= 0.95.

    python bench/bench_train.py [--epochs 10] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dagnet.data import digits, split_dataset
from dagnet.train import build_objective, fit, infer_task

LOSSES = [{"op": "cross_entropy", "output": "logits", "target": "label"}]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, image):
        return {"logits": self.classifier(self.features(image))}


def hand_written(model, train, val, epochs: int, batch_size: int, lr: float) -> None:
    """The loop one would write by hand: DataLoader over tensors, AdamW, val loss and accuracy each epoch."""
    x, y = (torch.stack([train[i][k] for i in range(len(train))]) for k in ("image", "label"))
    val_x, val_y = (torch.stack([val[i][k] for i in range(len(val))]) for k in ("image", "label"))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(val_x, val_y), batch_size=batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb)["logits"], yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        model.eval()
        correct, val_total = 0, 0.0
        with torch.no_grad():
            for xb, yb in val_loader:
                logits = model(xb)["logits"]
                val_total += F.cross_entropy(logits, yb).item() * len(xb)
                correct += (logits.argmax(1) == yb).sum().item()


def with_fit(model, train, val, epochs: int, batch_size: int, lr: float) -> None:
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "adamw", "device": "cpu"}
    with tempfile.TemporaryDirectory() as run_dir:
        fit(model, build_objective(LOSSES, model), train, val, config, run_dir, infer_task(LOSSES), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids spin-waits on busy hosts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val = split_dataset(digits(), 0.1, seed=0)
    runs = {"hand-written": hand_written, "dagnet fit": with_fit}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for run in (with_fit, hand_written):  # warm-up: first-call costs (imports, allocator) count for neither
        run(SmallCNN(), train, val, 1, args.batch_size, 1e-3)
    for round_ in range(args.rounds):
        order = list(runs.items()) if round_ % 2 == 0 else list(reversed(runs.items()))
        for name, run in order:
            torch.manual_seed(round_)
            model = SmallCNN()
            started = time.perf_counter()
            run(model, train, val, args.epochs, args.batch_size, 1e-3)
            seconds[name].append(time.perf_counter() - started)
    samples = args.epochs * len(train)
    print(f"digits: {len(train)} train / {len(val)} val, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.rounds} rounds, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    for name, values in seconds.items():
        rates = [samples / s for s in values]
        print(f"  {name:13s} best {max(rates):6.0f}  median {statistics.median(rates):6.0f} samples/s   runs: "
              + ", ".join(f"{r:.0f}" for r in rates))
    # Other work on the machine only ever adds time, so the best runs are the cleanest comparison;
    # the per-round ratios (paired, alternating order) show the spread.
    best = min(seconds["hand-written"]) / min(seconds["dagnet fit"])
    ratios = [hand / ours for hand, ours in zip(seconds["hand-written"], seconds["dagnet fit"])]
    print(f"  ratio fit / hand-written: best-of-{args.rounds} {best:.3f}, per round median "
          f"{statistics.median(ratios):.3f} ({', '.join(f'{r:.2f}' for r in ratios)}); goal >= 0.95")

if __name__ == "__main__":
    main()
