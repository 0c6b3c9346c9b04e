"""Loading user data: dagnet's sources against a hand-written torch Dataset for the same files.

Each source is one function that writes its files into a temporary folder and returns
a Case: how dagnet loads them (``load_dataset`` with the spec's inputs, as ``dagnet
train`` does) and how a person would by hand (a small Dataset class, torch's default
collate). One epoch is a pass of a DataLoader (no workers) over every example; the two
loaders alternate in one process, and the medians are compared: the ratio is dagnet's
throughput over the hand-written one's (target >= 0.9). Setup is the time to build the
data set (read the table, list the folder), paid once before the first epoch.

    python bench/bench_data.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dagnet.data import Field, collate, load_dataset  # noqa: E402


@dataclass
class Case:
    name: str
    dagnet: Callable[[], Dataset]
    hand: Callable[[], Dataset]
    batch_size: int


class HandTable(Dataset):
    """What one writes for a CSV of numbers and a text label: pandas, then tensors."""

    def __init__(self, path: Path):
        import pandas as pd

        frame = pd.read_csv(path)
        classes = {name: i for i, name in enumerate(sorted(frame["species"].unique()))}
        self.x = torch.tensor(frame.drop(columns="species").to_numpy(np.float32))
        self.y = torch.tensor(frame["species"].map(classes).to_numpy(np.int64))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "species": self.y[i]}


def table(folder: Path, rows: int = 100_000, columns: int = 16) -> Case:
    """A CSV of 100,000 rows: 16 numeric columns and a text class label."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, columns)).astype(np.float32), columns=[f"x{i}" for i in range(columns)])
    frame["species"] = rng.choice(["ash", "birch", "oak"], rows)
    path = folder / "table.csv"
    frame.to_csv(path, index=False)
    inputs = {"features": Field((columns,), "float")}
    return Case(f"CSV, {rows:,} rows x {columns} columns", lambda: load_dataset(path=str(path), inputs=inputs,
                targets=("species",)), lambda: HandTable(path), batch_size=256)


class HandImages(Dataset):
    """torchvision's ImageFolder written out: (file, class) pairs, PIL, float (C, H, W) in [0, 1]."""

    def __init__(self, root: Path):
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).glob("*.png"))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        return {"image": torch.from_numpy(pixels / 255).permute(2, 0, 1), "label": torch.tensor(label)}


def image_folder(folder: Path, count: int = 2000, size: int = 64) -> Case:
    """2,000 PNGs of 64x64 in 4 class folders (smooth random colour fields, which compress as photos do)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = folder / "images"
    for i in range(count):
        (root / f"class{i % 4}").mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(root / f"class{i % 4}" / f"{i:05d}.png")
    inputs = {"image": Field((3, size, size), "float")}
    return Case(f"image folder, {count:,} PNGs of {size}x{size}",
                lambda: load_dataset(path=str(root), inputs=inputs, targets=("label",)),
                lambda: HandImages(root), batch_size=64)


CASES = [table, image_folder]


def epoch(dataset: Dataset, batch_size: int, collate_fn) -> float:
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn):
        pass
    return time.perf_counter() - start


def timed(build: Callable[[], Dataset]) -> tuple[Dataset, float]:
    start = time.perf_counter()
    dataset = build()
    return dataset, time.perf_counter() - start


def measure(case: Case, repeats: int) -> dict:
    """Setup and first epoch once each, then `repeats` alternating epochs of the two loaders."""
    from torch.utils.data import default_collate

    ours, setup_ours = timed(case.dagnet)
    hand, setup_hand = timed(case.hand)
    assert len(ours) == len(hand)
    first_ours, first_hand = epoch(ours, case.batch_size, collate), epoch(hand, case.batch_size, default_collate)
    times_ours, times_hand = [], []
    for _ in range(repeats):
        times_ours.append(epoch(ours, case.batch_size, collate))
        times_hand.append(epoch(hand, case.batch_size, default_collate))
    ours_s, hand_s = statistics.median(times_ours), statistics.median(times_hand)
    return {"name": case.name, "n": len(ours), "setup": (setup_ours, setup_hand), "first": (first_ours, first_hand),
            "epoch": (ours_s, hand_s), "ratio": hand_s / ours_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"Machine: torch {torch.__version__}, one thread, DataLoader without workers; median of "
          f"{args.repeats} alternating epochs after a first one. Produced by `python bench/bench_data.py`.\n")
    print("| source | setup s (dagnet / hand) | first epoch s (dagnet / hand) | epoch s (dagnet / hand) "
          "| examples/s dagnet | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for make in CASES:
            folder = Path(tmp) / make.__name__
            folder.mkdir()
            r = measure(make(folder), args.repeats)
            print(f"| {r['name']} | {r['setup'][0]:.2f} / {r['setup'][1]:.2f} | {r['first'][0]:.2f} / "
                  f"{r['first'][1]:.2f} | {r['epoch'][0]:.2f} / {r['epoch'][1]:.2f} | "
                  f"{r['n'] / r['epoch'][0]:,.0f} | {r['ratio']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
