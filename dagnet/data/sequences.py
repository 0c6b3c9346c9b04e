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
import re
from collections import Counter
from itertools import chain
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from dagnet.data.base import DataError

PAD, UNKNOWN = "<pad>", "<unk>"
TARGETS = ("tags", "labels")


class SequenceDataset(Dataset):
    """Examples read from a file as plain lists, encoded to tensors once the vocabularies are known.

    A string field named in `targets` is a closed set of tags: index i is the i-th tag
    in sorted order, and a tag not seen in training is an error. Without `targets`, the
    string fields that are not spec `inputs` are tags (or, the spec unknown, those named
    `tags` or `labels`). Any other string field is an open vocabulary: 0 is padding, 1
    the unknown token, then the training split's tokens seen at least `min_count` times,
    most frequent first. Numbers become float32 tensors if a field holds any non-integer
    (or the spec declares that input float), else int64.

    `lines` holds each example's first line in `path` (or in `files[n]`, when the examples
    come from several files), for errors; with `token_lines` the file has one token a
    line (CoNLL), so an error can name the token's own line.
    """

    def __init__(self, path, examples: list[dict], lines: list[int], *, targets=None, inputs=None,
                 preprocessing: dict | None = None, min_count: int = 1, bucket: bool = False,
                 strings: set[str] | None = None, token_lines: bool = False, files: list | None = None):
        if min_count < 1:
            raise DataError(f"{path}: min_count must be at least 1, got {min_count}")
        inputs = {key: getattr(want, "dtype", want) for key, want in (inputs or {}).items()}  # name -> dtype
        self.path, self.examples, self.lines, self.token_lines = path, examples, lines, token_lines
        self.files = files
        if strings is None:     # not fixed by the format (JSON Lines): found from the values
            strings = {key for key in examples[0] if _is_text(path, examples, key)}
        self.strings = strings
        if targets is None:     # a spec reads token ids as inputs and scores tags
            targets = [key for key in self.strings if key not in inputs] if inputs else TARGETS
        self.targets = {key for key in self.strings if key in targets}
        self.floats = {key for key in examples[0] if key not in self.strings
                       and (_has_float(examples, key) or inputs.get(key) == "float")}
        self.inputs = tuple(sorted(self.floats - set(targets)))    # what `standardize: true` scales
        self.lengths = [_length(example) for example in examples]
        self.min_count, self.bucket = min_count, bucket
        self.preprocessing, self.columns = None, {}
        if preprocessing is not None:
            self._encode(preprocessing)

    def learn(self, indices=None) -> dict:
        """Build the vocabularies from the examples at `indices` (all by default) and encode every example."""
        chosen = range(len(self.examples)) if indices is None else indices
        vocab, tags = {}, {}
        for key in sorted(self.strings):
            seen = chain.from_iterable(_items(self.examples[i][key]) for i in chosen)
            if key in self.targets:
                tags[key] = sorted(set(seen))
            else:
                counts = Counter(seen)
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
        self.targets = self.strings & set(preprocessing.get("tags", {}))     # as in training, whatever the spec
        self.columns = {key: self._column(key, tables.get(key), preprocessing["unknown"]) for key in self.examples[0]}
        if "mask" not in self.columns and self.lengths[0] is not None:
            self.columns["mask"] = list(torch.ones(sum(self.lengths), dtype=torch.bool).split(self.lengths))
        self.preprocessing = preprocessing

    def _column(self, key: str, table: list[str] | None, unknown: str) -> list[torch.Tensor]:
        """One field of every example as tensors. Strings are encoded a field at a time into one flat
        tensor, split into per-example views (read-only: they share one storage): one `torch.tensor`
        call for the file instead of one per example, which was a fifth of the loading time."""
        values = [example[key] for example in self.examples]
        if key not in self.strings:
            dtype = torch.float32 if key in self.floats else torch.int64
            return [torch.tensor(value, dtype=dtype) for value in values]
        index = {token: i for i, token in enumerate(table)}
        if key in self.targets:
            ids = [self._tag_ids(index, key, _items(value), n) for n, value in enumerate(values)]
        else:
            fallback = index[unknown]
            ids = [[index.get(token, fallback) for token in _items(value)] for value in values]
        if not isinstance(values[0], list):     # one value an example (a list in every example or in none)
            return list(torch.tensor([row[0] for row in ids]))
        return list(torch.tensor([i for row in ids for i in row]).split([len(row) for row in ids]))

    def _tag_ids(self, table: dict, key: str, tags: list, n: int) -> list[int]:
        try:
            return [table[tag] for tag in tags]
        except KeyError as error:
            tag = error.args[0]
            file = self.files[n] if self.files else self.path
            raise DataError(f"{file}:{self._line_of(n, key, tag)}: {key} {tag!r} was not in the training "
                            f"data (known: {', '.join(table)})") from None

    def _line_of(self, n: int, key: str, tag: str) -> int:
        """The file line of an example; for a CoNLL file (one token a line) the line of that tag."""
        value = self.examples[n][key]
        per_token = self.token_lines and isinstance(value, list)
        return self.lines[n] + (value.index(tag) if per_token else 0)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        if self.preprocessing is None:      # used on its own, not through prepare_data: learn from everything
            self.learn()
        return {key: column[index] for key, column in self.columns.items()}


def load_jsonl(path, *, inputs=None, preprocessing: dict | None = None, targets: tuple[str, ...] = (),
               min_count: int = 1, bucket: bool = False) -> SequenceDataset:
    """One JSON object per line, e.g. {"tokens": ["the", "cat"], "tags": ["DET", "NOUN"]} or
    {"frames": [[0.1, 0.2], [0.3, 0.4]], "labels": [0, 2]}.

    Every line has the same keys; lists are sequences over the same positions (the
    first list gives the length T of the `mask`), numbers are per-example values.
    """
    path = Path(path)
    examples, lines = [], []
    for number, line in enumerate(_text(path).split("\n"), 1):
        if line.strip():
            examples.append(_json_example(path, number, line, examples[0] if examples else None))
            lines.append(number)
    if not examples:
        raise DataError(f"{path}: no examples (expected one JSON object per line)")
    return SequenceDataset(path, examples, lines, targets=targets or None, inputs=inputs,
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
    for key, value in (example.items() if first is not None else ()):
        if isinstance(value, list) != isinstance(first[key], list):
            raise DataError(f"{where}: {key!r} is {'a' if isinstance(value, list) else 'not a'} list here but "
                            f"{'is' if isinstance(first[key], list) else 'not'} in the first example")
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
    """A CoNLL-style file: `token<TAB>tag` a line (whitespace-separated columns if the file has no
    tab; the token first, the tag last), a blank line between sentences, `-DOCSTART-` lines ignored.

    Examples: `tokens` (T,) int64 ids, `labels` (T,) int64 tag ids and `mask` (T,); the
    two names are options, so the tags can meet any loss target (`tags: ner`).
    """
    path = Path(path)
    examples, lines = [], []
    for start, words, labels in _conll_sentences(path, _text(path)):
        examples.append({tokens: words, tags: labels})
        lines.append(start)
    if not examples:
        raise DataError(f"{path}: no sentences (expected 'token<TAB>tag' lines, a blank line between sentences)")
    return SequenceDataset(path, examples, lines, targets=(tags,), inputs=inputs, preprocessing=preprocessing,
                           min_count=min_count, bucket=bucket, strings={tokens, tags}, token_lines=True)


_RUN_OF_LINES = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")     # lines that are not blank


def _conll_sentences(path: Path, text: str):
    """(first line number, tokens, tags) per sentence. Sentences are found a block of lines at a
    time by a regular expression, and each block is split by list comprehensions: a loop over lines in
    Python would cost twice the time of everything else in loading."""
    separator = "\t" if "\t" in text else None
    line, end = 1, 0
    for block in _RUN_OF_LINES.finditer(text):
        line += text.count("\n", end, block.start())
        end = block.start()
        rows = [row.split(separator) for row in block.group().split("\n")]
        pieces = _split_at_docstart(line, rows) if "-DOCSTART-" in block.group() else [(line, rows)]
        for start, sentence in pieces:
            words, tags = [row[0] for row in sentence], [row[-1] for row in sentence]
            if min(map(len, sentence)) < 2 or not all(words) or not all(tags):
                bad = next(i for i, row in enumerate(sentence) if len(row) < 2 or not row[0] or not row[-1])
                found = (separator or " ").join(sentence[bad])[:60]
                raise DataError(f"{path}:{start + bad}: expected 'token<TAB>tag' (token first, tag last), "
                                f"found {found!r}")
            yield start, words, tags


def _split_at_docstart(line: int, rows: list[list[str]]) -> list[tuple[int, list]]:
    """The sentences of a block holding `-DOCSTART-` lines, which are dropped and end a sentence."""
    pieces, start = [], 0
    for i, row in enumerate([*rows, ["-DOCSTART-"]]):
        if row[0].startswith("-DOCSTART-"):
            if i > start:
                pieces.append((line + start, rows[start:i]))
            start = i + 1
    return pieces


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


def _text(path: Path) -> str:
    """The file's text with "\\n" line ends; `str.splitlines` is not used on it, as a JSON string may hold
    other line separators."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None
    return text.replace("\r\n", "\n")


def _is_text(path, examples: list[dict], key: str) -> bool:
    """Whether a field holds strings; each example's values are of one kind (`_well_typed`), so its
    first value tells."""
    kinds = {isinstance(_items(example[key])[0], str) for example in examples if _items(example[key])}
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


def _well_typed(value) -> bool:
    """A number, a string, or a list of numbers, of strings, or of lists of numbers (one kind a list)."""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(value, list):
        return number(value) or isinstance(value, str)
    return all(number(x) for x in value) or all(isinstance(x, str) for x in value) or \
        all(isinstance(x, list) and all(number(y) for y in x) for x in value)


def _length(example: dict) -> int | None:
    return next((len(value) for value in example.values() if isinstance(value, list)), None)
