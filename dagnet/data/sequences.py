"""Sequence data from files: JSON Lines and CoNLL-style token files, for taggers.

Strings become indices through vocabularies learnt on the training split only
(`SequenceDataset.learn`, which `prepare_data` calls with the training indices),
so validation scores see unknown words as new data would. The vocabularies are
the data set's `preprocessing`, a JSON-able dict that the run saves and hands
back at eval and predict time, so a word maps to the same index there. Each
example also gets a `mask` (T,) of True; `collate` pads it with False.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from dagnet.data.base import DataError

PAD, UNKNOWN = "<pad>", "<unk>"
TARGETS = ("tags", "labels")


class SequenceDataset(Dataset):
    """Examples read from a file as plain lists, encoded to tensors once the vocabularies are known.

    A string field named in `targets` is a closed set of tags: index i is the i-th tag
    in sorted order, and a tag not seen in training is an error. Any other string field
    is an open vocabulary: 0 is padding, 1 the unknown token, then the training split's
    tokens seen at least `min_count` times, most frequent first. Numbers become float32
    tensors if a field holds any non-integer (or the spec declares that input float),
    else int64.
    """

    def __init__(self, path, examples: list[dict], lines: list[int], *, targets=TARGETS, inputs=None,
                 preprocessing: dict | None = None, min_count: int = 1, bucket: bool = False,
                 token_lines: bool = False):
        if min_count < 1:
            raise DataError(f"{path}: min_count must be at least 1, got {min_count}")
        self.path, self.examples, self.lines, self.token_lines = path, examples, lines, token_lines
        self.strings = {key for key in examples[0] if _is_text(path, examples, key)}
        self.targets = {key for key in self.strings if key in targets}
        self.floats = {key for key in examples[0] if key not in self.strings
                       and (_has_float(examples, key) or (inputs or {}).get(key) == "float")}
        self.inputs = tuple(sorted(self.floats - set(targets)))    # what `standardize: true` scales
        self.lengths = [_length(example) for example in examples]
        self.min_count, self.bucket = min_count, bucket
        self.preprocessing, self.encoded = None, None
        if preprocessing is not None:
            self._encode(preprocessing)

    def learn(self, indices=None) -> dict:
        """Build the vocabularies from the examples at `indices` (all by default) and encode every example."""
        chosen = range(len(self.examples)) if indices is None else indices
        vocab, tags = {}, {}
        for key in sorted(self.strings):
            counts = Counter(token for i in chosen for token in _items(self.examples[i][key]))
            if key in self.targets:
                tags[key] = sorted(counts)
            else:
                kept = sorted((t for t, n in counts.items() if n >= self.min_count), key=lambda t: (-counts[t], t))
                vocab[key] = [PAD, UNKNOWN, *kept]
        self._encode({"vocab": vocab, "tags": tags, "padding": PAD, "unknown": UNKNOWN})
        return self.preprocessing

    def _encode(self, preprocessing: dict) -> None:
        tables = {**preprocessing.get("vocab", {}), **preprocessing.get("tags", {})}
        missing = sorted(self.strings - set(tables))
        if missing:
            raise DataError(f"{self.path}: the run has no vocabulary for {missing[0]!r} (it has: "
                            f"{', '.join(tables) or 'none'}); was it trained on other data?")
        index = {key: {token: i for i, token in enumerate(tables[key])} for key in self.strings}
        unknown = {key: index[key][preprocessing["unknown"]] for key in self.strings - self.targets}
        self.encoded = [self._tensors(n, example, index, unknown) for n, example in enumerate(self.examples)]
        self.preprocessing = preprocessing

    def _tensors(self, n: int, example: dict, index: dict, unknown: dict) -> dict:
        out = {}
        for key, value in example.items():
            if key in unknown:
                out[key] = torch.tensor(_map(value, lambda t, table=index[key], u=unknown[key]: table.get(t, u)))
            elif key in self.strings:
                out[key] = torch.tensor(_map(value, lambda t, k=key: self._tag_index(index[k], k, t, n)))
            else:
                out[key] = torch.tensor(value, dtype=torch.float32 if key in self.floats else torch.int64)
        if "mask" not in out and self.lengths[n] is not None:
            out["mask"] = torch.ones(self.lengths[n], dtype=torch.bool)
        return out

    def _tag_index(self, table: dict, key: str, tag: str, n: int) -> int:
        if tag not in table:
            raise DataError(f"{self.path}:{self._line_of(n, key, tag)}: {key} {tag!r} was not in the training "
                            f"data (known: {', '.join(table)})")
        return table[tag]

    def _line_of(self, n: int, key: str, tag: str) -> int:
        """The file line of an example; for a CoNLL file (one token a line) the line of that tag."""
        value = self.examples[n][key]
        per_token = self.token_lines and isinstance(value, list)
        return self.lines[n] + (value.index(tag) if per_token else 0)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        if self.encoded is None:        # used on its own, not through prepare_data: learn from everything
            self.learn()
        return self.encoded[index]


def load_jsonl(path, *, inputs=None, preprocessing: dict | None = None, targets: list[str] = TARGETS,
               min_count: int = 1, bucket: bool = False) -> SequenceDataset:
    """One JSON object per line, e.g. {"tokens": ["the", "cat"], "tags": ["DET", "NOUN"]} or
    {"frames": [[0.1, 0.2], [0.3, 0.4]], "labels": [0, 2]}.

    Every line has the same keys; lists are sequences over the same positions (the
    first list gives the length T of the `mask`), numbers are per-example values.
    """
    path = Path(path)
    examples, lines = [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                examples.append(_json_example(path, number, line, examples[0] if examples else None))
                lines.append(number)
    if not examples:
        raise DataError(f"{path}: no examples (expected one JSON object per line)")
    return SequenceDataset(path, examples, lines, targets=tuple(targets), inputs=inputs,
                           preprocessing=preprocessing, min_count=min_count, bucket=bucket)


def _json_example(path: Path, number: int, line: str, first: dict | None) -> dict:
    where = f"{path}:{number}"
    try:
        example = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg}); expected one object per line, "
                        'e.g. {"tokens": ["a", "b"], "tags": ["X", "Y"]}') from None
    if not isinstance(example, dict) or not example:
        raise DataError(f"{where}: expected a JSON object of named fields, found {type(example).__name__}")
    if first is not None and example.keys() != first.keys():
        raise DataError(f"{where}: fields {sorted(example)} differ from the first example's {sorted(first)}")
    lengths = {key: len(value) for key, value in example.items() if isinstance(value, list)}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{where}: sequences of different lengths {lengths}; every list is one value a position")
    for key, value in example.items():
        if not _well_typed(value):
            raise DataError(f"{where}: {key!r} must be a number, a string, or a list of them (or of lists of "
                            f"numbers), found {json.dumps(value)[:60]}")
    return example


def load_conll(path, *, inputs=None, preprocessing: dict | None = None, tokens: str = "tokens",
               tags: str = "labels", min_count: int = 1, bucket: bool = False) -> SequenceDataset:
    """A CoNLL-style file: `token<TAB>tag` a line (or whitespace-separated columns: the token
    first, the tag last), a blank line between sentences, `-DOCSTART-` lines ignored.

    Examples: `tokens` (T,) int64 ids, `labels` (T,) int64 tag ids and `mask` (T,); the
    two names are options, so the tags can meet any loss target (`tags: ner`).
    """
    path = Path(path)
    examples, lines, sentence, start = [], [], ([], []), 0
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if sentence[0]:
                    examples.append({tokens: sentence[0], tags: sentence[1]})
                    lines.append(start)
                sentence = ([], [])
                continue
            columns = line.split("\t") if "\t" in line else line.split()
            if len(columns) < 2 or not columns[0] or not columns[-1]:
                raise DataError(f"{path}:{number}: expected 'token<TAB>tag' (token first, tag last), "
                                f"found {line[:60]!r}")
            start = start if sentence[0] else number
            sentence[0].append(columns[0])
            sentence[1].append(columns[-1])
    if sentence[0]:
        examples.append({tokens: sentence[0], tags: sentence[1]})
        lines.append(start)
    if not examples:
        raise DataError(f"{path}: no sentences (expected 'token<TAB>tag' lines, a blank line between sentences)")
    return SequenceDataset(path, examples, lines, targets=(tags,), inputs=inputs, preprocessing=preprocessing,
                           min_count=min_count, bucket=bucket, token_lines=True)


def bucket_lengths(dataset: Dataset) -> list[int] | None:
    """Each example's length if the data asked for length buckets (`bucket: true`), seen through
    Subset and other wrappers; None otherwise."""
    indices = None
    while not hasattr(dataset, "bucket") and hasattr(dataset, "dataset"):
        if isinstance(dataset, Subset):
            indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    if not getattr(dataset, "bucket", False):
        return None
    lengths = dataset.lengths
    return [lengths[i] for i in indices] if indices is not None else list(lengths)


def bucketed(order: list[int], lengths: list[int], batch_size: int, seed: int, pool: int = 50) -> list[int]:
    """`order` rearranged so that each run of `batch_size` indices holds sequences of similar length.

    Pools of `pool` batches are taken from the (already shuffled) order and sorted by
    length, cut into batches, and the full batches are shuffled; a last, partial batch
    stays last so the batches keep their boundaries. Padding falls, the randomness of
    the order mostly stays, and the result depends only on its arguments (exact resume).
    """
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    partial = batches.pop() if batches and len(batches[-1]) < batch_size else []
    random.Random(seed).shuffle(batches)
    return [i for batch in batches for i in batch] + partial


def _is_text(path, examples: list[dict], key: str) -> bool:
    kinds = {isinstance(item, str) for example in examples for item in _items(example[key])}
    if len(kinds) > 1:
        raise DataError(f"{path}: {key!r} mixes strings and numbers across the examples; use one or the other")
    return kinds == {True}


def _has_float(examples: list[dict], key: str) -> bool:
    return any(isinstance(x, float) for example in examples for x in _flat(example[key]))


def _items(value):
    return value if isinstance(value, list) else [value]


def _flat(value):
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


def _map(value, fn):
    return [fn(item) for item in value] if isinstance(value, list) else fn(value)


def _well_typed(value) -> bool:
    if isinstance(value, list):
        return all(isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in value) or \
            all(isinstance(x, list) and all(isinstance(y, (int, float)) and not isinstance(y, bool) for y in x)
                for x in value)
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _length(example: dict) -> int | None:
    return next((len(value) for value in example.values() if isinstance(value, list)), None)
