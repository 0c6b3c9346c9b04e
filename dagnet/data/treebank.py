"""`turkish_pos` and `turkish_deps`: real treebanks that ship inside a PyPI wheel (no download at run time).

The `turkish-treebanks` package (Google Research, Apache 2.0) installs the
Turkish Web Treebank (forums, blogs: `web.conllu`) and a Wikipedia treebank
(`wiki.conllu`): 4,851 hand-annotated sentences, 81,370 tokens, 14 universal
part-of-speech tags (UD v1 names: NOUN, VERB, ..., CONJ, PRT). Tokens are the
treebank's rows: words, or the inflectional groups that Turkish words split
into (`Açık` `la` `nma` `yan`), each with its own tag. `turkish_deps` reads the same rows as a dependency
treebank (heads and 44 relation names); `load_conllu` reads a user's own
CoNLL-U file the same way.

Heads follow the dependency field's convention (dagnet.fields.dependency): the
0-based index of the head word, and a word that hangs from the root is its own
head (CoNLL-U HEAD 0). Multiword token lines (`3-4`) and empty nodes (`3.1`) are
not words of the basic tree and are skipped.
"""

from __future__ import annotations

import re
from importlib import metadata

import torch

from dagnet.data.base import DataError
from dagnet.data.sequences import SequenceDataset

PARTS = ("web", "wiki")


def turkish_pos(part: str = "all", *, inputs=None, preprocessing: dict | None = None, min_count: int = 1,
                bucket: bool = False) -> SequenceDataset:
    """The treebank as a tagging data set: "tokens" (T,) ids, "labels" (T,) UPOS tag ids, "mask".

    part: "web", "wiki" or "all" (web then wiki).
    """
    if part not in (*PARTS, "all"):
        raise DataError(f"turkish_pos: part must be one of {', '.join(PARTS)}, all; got {part!r}")
    examples, lines, files = [], [], []
    for name in PARTS if part == "all" else (part,):
        path = _treebank_file(name)
        for start, sentence in _conllu_sentences(path):
            examples.append({"tokens": [row[1] for row in sentence], "labels": [row[3] for row in sentence]})
            lines.append(start)
            files.append(path)
    return SequenceDataset(f"turkish_pos ({part})", examples, lines, targets=("labels",), inputs=inputs,
                           preprocessing=preprocessing, min_count=min_count, bucket=bucket,
                           strings={"tokens", "labels"}, files=files)


def _treebank_file(name: str, data: str = "turkish_pos"):
    """The installed `data/<name>.conllu` of the turkish-treebanks wheel (it installs them at the top of
    site-packages, so they are found through the package's file list, not an import)."""
    try:
        files = metadata.files("turkish-treebanks") or []
    except metadata.PackageNotFoundError:
        raise DataError(f"data set '{data}' needs the turkish-treebanks package: "
                        "pip install 'dagnet[corpora]'") from None
    found = [f for f in files if f.name == f"{name}.conllu"]
    if not found:
        raise DataError(f"turkish-treebanks is installed without {name}.conllu; reinstall it")
    return found[0].locate()


def _conllu_sentences(path, numbered: bool = False):
    """(first line number, rows) per sentence of a CoNLL-U file; comments, multiword ranges (`3-4`) and
    empty nodes (`3.1`) are skipped, as they carry no tag of their own and are not in the basic tree.
    numbered: each row gets its own line number appended (an 11th entry), for errors."""
    sentence, start = [], 0
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                if sentence:
                    yield start, sentence
                sentence = []
            elif not line.startswith("#"):
                row = line.rstrip("\n").split("\t")
                if len(row) != 10:
                    raise DataError(f"{path}:{number}: expected 10 tab-separated CoNLL-U columns, found {len(row)}")
                if row[0].isdigit():
                    start = start if sentence else number
                    sentence.append([*row, number] if numbered else row)
                elif not _MULTIWORD_OR_EMPTY.fullmatch(row[0]):
                    raise DataError(f"{path}:{number}: ID {row[0]!r} is not a word number (3), a multiword "
                                    "range (3-4) or an empty node (3.1)")
    if sentence:
        yield start, sentence


_MULTIWORD_OR_EMPTY = re.compile(r"\d+-\d+|\d+\.\d+")


class DependencyDataset(SequenceDataset):
    """A parsing data set: "tokens" (T,) word ids, "heads" (T,) int64 (the head's index, a root's own
    index), "relations" (T,) relation ids, "mask" (T,), and "arcs" (T, 2) = heads and relations
    together: the target of a labelled dependency CRF (an unlabelled one takes "heads")."""

    def learn(self, indices=None) -> dict:
        """As SequenceDataset.learn (the word vocabulary from the training split), but the relation set
        is every relation in the file(s): it is the annotation scheme's inventory, not something
        learnt, and a rare relation (`dislocated`) that only the validation split holds is no error."""
        self._learning = True
        try:
            return super().learn(indices)
        finally:
            self._learning = False

    def _encode(self, preprocessing: dict) -> None:
        if getattr(self, "_learning", False):
            relations = sorted({r for example in self.examples for r in example["relations"]})
            preprocessing = {**preprocessing, "tags": {**preprocessing["tags"], "relations": relations}}
        super()._encode(preprocessing)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if "relations" in item and "heads" in item:
            item["arcs"] = torch.stack([item["heads"], item["relations"]], -1)
        return item


def turkish_deps(part: str = "all", *, inputs=None, preprocessing: dict | None = None, min_count: int = 1,
                 bucket: bool = False, max_sentences: int | None = None) -> DependencyDataset:
    """The treebank for parsing (see DependencyDataset); part: "web", "wiki" or "all" (web then wiki);
    max_sentences: only the first ones (a quick run)."""
    if part not in (*PARTS, "all"):
        raise DataError(f"turkish_deps: part must be one of {', '.join(PARTS)}, all; got {part!r}")
    paths = [_treebank_file(name, "turkish_deps") for name in (PARTS if part == "all" else (part,))]
    return _dependency_dataset(f"turkish_deps ({part})", paths, inputs, preprocessing, min_count, bucket,
                               max_sentences)


def load_conllu(path, *, inputs=None, preprocessing: dict | None = None, min_count: int = 1,
                bucket: bool = False) -> DependencyDataset:
    """A CoNLL-U file (`*.conllu`) as a parsing data set: FORM as tokens, HEAD and DEPREL as targets."""
    return _dependency_dataset(str(path), [path], inputs, preprocessing, min_count, bucket, None)


def _dependency_dataset(name, paths, inputs, preprocessing, min_count, bucket, max_sentences) -> DependencyDataset:
    examples, lines, files = [], [], []
    for path in paths:
        for start, sentence in _conllu_sentences(path, numbered=True):
            examples.append(dependency_example(path, start, sentence))
            lines.append(start)
            files.append(path)
    if max_sentences is not None:
        if max_sentences < 1:
            raise DataError(f"{name}: max_sentences must be at least 1, got {max_sentences}")
        examples, lines, files = examples[:max_sentences], lines[:max_sentences], files[:max_sentences]
    if not examples:
        raise DataError(f"{paths[0]}: no sentences (expected CoNLL-U: 10 tab-separated columns a word, "
                        "a blank line between sentences)")
    return DependencyDataset(name, examples, lines, targets=("relations",), inputs=inputs,
                             preprocessing=preprocessing, min_count=min_count, bucket=bucket,
                             strings={"tokens", "relations"}, files=files, token_lines=True)


def dependency_example(path, start: int, sentence: list[list]) -> dict:
    """Tokens, heads (the field's convention) and relation names of one sentence's word rows; a row
    whose ID is out of order or whose HEAD is not a word of the sentence is an error at its line."""
    n, heads = len(sentence), []
    for i, row in enumerate(sentence):
        where = f"{path}:{row[10] if len(row) > 10 else start + i}"
        if row[0] != str(i + 1):
            raise DataError(f"{where}: word ID {row[0]!r}, expected {i + 1} (IDs count 1, 2, ... in each sentence)")
        if not row[6].isdigit() or int(row[6]) > n:
            raise DataError(f"{where}: HEAD {row[6]!r} is not 0 (the root) or a word ID 1..{n} of the sentence")
        head = int(row[6])
        heads.append(i if head == 0 else head - 1)
    return {"tokens": [row[1] for row in sentence], "heads": heads, "relations": [row[7] for row in sentence]}
