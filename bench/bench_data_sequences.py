"""Loading a CoNLL file: dagnet's loader against a hand-written torch Dataset, and what length buckets save.

Writes a CoNLL file of N generated sentences (Zipf-distributed words over a
5,000-word vocabulary, 5 to 40 tokens, 12 tags) and times, in alternating
rounds, one full epoch of loading: read and parse the file, build the
vocabularies, encode, and iterate a DataLoader of padded batches with masks
(batch 32). Reports the medians, the throughput ratio (dagnet / hand-written,
>= 0.9 is the target), the time of a later epoch (batches only: the first
epoch's extra is the parse and the encoding), and the padding fraction of an epoch's batches with and
without `bucket: true`, on the generated file and on `turkish_pos` if installed.

    OMP_NUM_THREADS=1 python bench/bench_data_sequences.py [--sentences 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn.utils.rnn import pad_sequence  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from dagnet.data import DataError, collate, load_dataset, prepare_data  # noqa: E402
from dagnet.data.sequences import bucket_lengths, bucketed  # noqa: E402

BATCH = 32


def write_corpus(path: Path, sentences: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines = []
    for _ in range(sentences):
        length = rng.randint(5, 40)
        for word in rng.choices(words, weights, k=length):
            lines.append(f"{word}\tT{int(word[1:]) % 12}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


class HandWritten(Dataset):
    """What one writes by hand for the same file: parse, vocabularies, tensors; the mask made in collate."""

    def __init__(self, path: Path):
        sentences, current = [], []
        for line in path.read_text().splitlines():
            if line.strip():
                token, tag = line.split("\t")
                current.append((token, tag))
            elif current:
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
        counts = Counter(t for s in sentences for t, _ in s)
        words = {t: i + 2 for i, (t, _) in enumerate(counts.most_common())}
        tags = {t: i for i, t in enumerate(sorted({g for s in sentences for _, g in s}))}
        self.items = [(torch.tensor([words.get(t, 1) for t, _ in s]), torch.tensor([tags[g] for _, g in s]))
                      for s in sentences]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def pad_batch(batch):
    tokens, tags = zip(*batch)
    lengths = torch.tensor([len(t) for t in tokens])
    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    return {"tokens": pad_sequence(tokens, batch_first=True), "labels": pad_sequence(tags, batch_first=True),
            "mask": mask}


def load_dagnet(path: Path) -> Dataset:
    dataset = load_dataset(path=str(path))
    dataset.learn()
    return dataset


def iterate(dataset: Dataset, collate_fn) -> int:
    return sum(len(b["tokens"]) for b in DataLoader(dataset, batch_size=BATCH, shuffle=True, collate_fn=collate_fn))


def epoch_dagnet(path: Path) -> int:
    return iterate(load_dagnet(path), collate)


def epoch_handwritten(path: Path) -> int:
    return iterate(HandWritten(path), pad_batch)


def padding(order: list[int], lengths: list[int]) -> float:
    """Padded positions / all positions over an epoch's batches of BATCH."""
    batches = [[lengths[i] for i in order[s:s + BATCH]] for s in range(0, len(order), BATCH)]
    return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)


def padding_report(source: dict, label: str) -> str:
    train = prepare_data({**source, "bucket": True}, val_split=0.1, seed=0).train
    lengths = bucket_lengths(train)
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    plain, grouped = padding(order, lengths), padding(bucketed(order, lengths, BATCH, seed=0), lengths)
    return f"{label}: padding {100 * plain:.1f}% of positions shuffled, {100 * grouped:.1f}% with bucket: true"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.conll"
        write_corpus(path, args.sentences)
        times = {"dagnet": [], "hand-written": []}
        for _ in range(args.rounds):                # alternating, so drift on a shared machine hits both
            for name, epoch in (("dagnet", epoch_dagnet), ("hand-written", epoch_handwritten)):
                start = time.perf_counter()
                assert epoch(path) == args.sentences
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"CoNLL, {args.sentences} sentences, batch {BATCH}, medians of {args.rounds} alternating rounds:")
        for name, value in median.items():
            print(f"  {name:13s} {value * 1000:7.0f} ms  ({args.sentences / value:,.0f} sentences/s)")
        print(f"  throughput ratio dagnet / hand-written: {median['hand-written'] / median['dagnet']:.2f}")
        later = {"dagnet": (load_dagnet(path), collate), "hand-written": (HandWritten(path), pad_batch)}
        times = {name: [] for name in later}
        for _ in range(args.rounds):            # later epochs: the file is parsed and encoded once
            for name, (dataset, collate_fn) in later.items():
                start = time.perf_counter()
                iterate(dataset, collate_fn)
                times[name].append(time.perf_counter() - start)
        print("  later epochs (batches only): " + ", ".join(
            f"{name} {statistics.median(values) * 1000:.0f} ms" for name, values in times.items()))
        print(padding_report({"path": str(path)}, f"generated ({args.sentences} sentences)"))
    try:
        print(padding_report({"name": "turkish_pos"}, "turkish_pos (4,851 sentences)"))
    except DataError as error:
        print(f"turkish_pos skipped: {error}")


if __name__ == "__main__":
    main()
