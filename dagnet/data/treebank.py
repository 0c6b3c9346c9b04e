"""`turkish_pos`: a real part-of-speech corpus that ships inside a PyPI wheel (no download at run time).

The `turkish-treebanks` package (Google Research, Apache 2.0) installs the
Turkish Web Treebank (forums, blogs: `web.conllu`) and a Wikipedia treebank
(`wiki.conllu`): 4,851 hand-annotated sentences, 81,370 tokens, 14 universal
part-of-speech tags (UD v1 names: NOUN, VERB, ..., CONJ, PRT). Tokens are the
treebank's rows: words, or the inflectional groups that Turkish words split
into (`Açık` `la` `nma` `yan`), each with its own tag.
"""

from __future__ import annotations

from importlib import metadata

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


def _treebank_file(name: str):
    """The installed `data/<name>.conllu` of the turkish-treebanks wheel (it installs them at the top of
    site-packages, so they are found through the package's file list, not an import)."""
    try:
        files = metadata.files("turkish-treebanks") or []
    except metadata.PackageNotFoundError:
        raise DataError("data set 'turkish_pos' needs the turkish-treebanks package: "
                        "pip install 'dagnet[corpora]'") from None
    found = [f for f in files if f.name == f"{name}.conllu"]
    if not found:
        raise DataError(f"turkish-treebanks is installed without {name}.conllu; reinstall it")
    return found[0].locate()


def _conllu_sentences(path):
    """(first line number, rows) per sentence of a CoNLL-U file; comments, multiword ranges and empty
    nodes are skipped, as they carry no tag of their own."""
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
                    sentence.append(row)
    if sentence:
        yield start, sentence
