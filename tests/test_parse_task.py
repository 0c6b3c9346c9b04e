"""Dependency parsing end to end: CoNLL-U readers (the turkish_deps treebank, a user's .conllu) give heads
in the dependency field's convention, the parse task scores attachment (UAS, LAS), and the biaffine
parser trains, evaluates and predicts from the CLI."""

import json
import random
import re

import pytest
import torch

from dagnet.cli import main
from dagnet.data import DataError, load_dataset
from dagnet.train.metrics import AttachmentScores
from tests.conftest import SPECS

# A toy grammar: DET -> NOUN (det), NOUN -> VERB (nsubj), VERB the root, ADV -> VERB (advmod).
WORDS = {"DET": ["the", "a"], "NOUN": ["cat", "dog", "bird"], "VERB": ["runs", "sleeps"], "ADV": ["fast"]}


def toy_sentences(count: int, seed: int = 0) -> list[list[tuple]]:
    """(form, CoNLL-U head, relation) rows; an adverb before or after the verb."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS["DET"]), rng.choice(WORDS["NOUN"]), rng.choice(WORDS["VERB"])]
        rows = [(words[0], 2, "det"), (words[1], 3, "nsubj"), (words[2], 0, "root")]
        if rng.random() < 0.5:
            rows.append(("fast", 3, "advmod"))
        out.append(rows)
    return out


def write_conllu(path, data):
    blocks = ["\n".join(f"{i}\t{form}\t_\t_\t_\t_\t{head}\t{rel}\t_\t_" for i, (form, head, rel) in enumerate(s, 1))
              for s in data]
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def test_attachment_scores_on_a_hand_made_example():
    scores = AttachmentScores()
    # gold: heads (field convention, a root is its own head) and relations; position 3 is padding
    gold = torch.tensor([[[1, 0], [1, 1], [1, 2], [0, 0]],
                         [[0, 1], [0, 2], [-1, 0], [0, 0]]])        # a -1 head is unknown: not counted
    guess = torch.tensor([[[1, 0], [1, 2], [0, 2], [2, 2]],          # 2 heads right, 1 of them labelled right
                          [[0, 1], [0, 1], [1, 0], [1, 1]]])        # 2 heads right, 1 labelled right
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    scores.update(guess, gold, mask)
    assert scores.counts.tolist() == [5, 4, 2]
    assert scores.summary() == {"uas": 4 / 5, "las": 2 / 5}
    unlabelled = AttachmentScores()
    unlabelled.update(guess[..., 0], gold[..., 0], mask)
    assert unlabelled.summary() == {"uas": 4 / 5}


def test_conllu_reader_skips_multiword_and_empty_nodes(tmp_path):
    path = tmp_path / "s.conllu"
    path.write_text("# sent_id = 1\n"
                    "1\tBurda\t_\t_\t_\t_\t3\tnpadvmod\t_\t_\n"
                    "2-3\tdaöyle\t_\t_\t_\t_\t_\t_\t_\t_\n"
                    "2\tda\t_\t_\t_\t_\t1\tprt\t_\t_\n"
                    "3\töyle\t_\t_\t_\t_\t0\troot\t_\t_\n"
                    "3.1\tgizli\t_\t_\t_\t_\t_\t_\t2:dep\t_\n"
                    "4\t?\t_\t_\t_\t_\t3\tp\t_\t_\n\n"
                    "1\tkilo\t_\t_\t_\t_\t0\troot\t_\t_\n")
    data = load_dataset(path=str(path))
    data.learn()
    first = data[0]
    assert first["heads"].tolist() == [2, 0, 2, 2]          # 1-based HEAD - 1; the root (HEAD 0) heads itself
    relations = data.preprocessing["tags"]["relations"]
    assert [relations[r] for r in first["relations"].tolist()] == ["npadvmod", "prt", "root", "p"]
    assert first["arcs"].tolist() == [[2, relations.index("npadvmod")], [0, relations.index("prt")],
                                      [2, relations.index("root")], [2, relations.index("p")]]
    assert data[1]["heads"].tolist() == [0] and len(data.preprocessing["vocab"]["tokens"]) == 2 + 5


@pytest.mark.parametrize("row, line, message", [
    ("2\tda\t_\t_\t_\t_\t9\tprt\t_\t_", 3, "HEAD '9' is not 0 (the root) or a word ID 1..2"),
    ("2\tda\t_\t_\t_\t_\t_\tprt\t_\t_", 3, "HEAD '_' is not 0"),
    ("3\tda\t_\t_\t_\t_\t1\tprt\t_\t_", 3, "word ID '3', expected 2"),
    ("x\tda\t_\t_\t_\t_\t1\tprt\t_\t_", 3, "ID 'x' is not a word number"),
    ("2\tda\t1\tprt", 3, "expected 10 tab-separated CoNLL-U columns, found 4"),
])
def test_bad_conllu_rows_are_one_located_error(tmp_path, row, line, message):
    path = tmp_path / "bad.conllu"
    path.write_text(f"# a comment\n1\tkilo\t_\t_\t_\t_\t0\troot\t_\t_\n{row}\n")
    with pytest.raises(DataError, match="^" + re.escape(f"{path}:{line}: {message}")):
        load_dataset(path=str(path))


def test_turkish_deps_heads_match_the_treebank_file():
    from dagnet.data.treebank import _treebank_file
    try:
        data = load_dataset("turkish_deps", part="web", max_sentences=20)
    except DataError as error:
        pytest.skip(str(error))
    data.learn()
    assert len(data) == 20
    sentences, rows = [], []            # read the file by hand: word rows only
    for line in _treebank_file("web").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if rows:
                sentences.append(rows)
            rows = []
            if len(sentences) == 20:
                break
        elif not line.startswith("#") and line.split("\t")[0].isdigit():
            rows.append(line.split("\t"))
    relations = data.preprocessing["tags"]["relations"]
    for n, sentence in enumerate(sentences):
        heads = [int(row[6]) for row in sentence]
        assert data[n]["heads"].tolist() == [i if h == 0 else h - 1 for i, h in enumerate(heads)]
        assert [relations[r] for r in data[n]["relations"].tolist()] == [row[7] for row in sentence]
    assert relations == sorted({row[7] for sentence in sentences for row in sentence})   # all read, not split


PARSER = ["--set", "vocab=16", "--set", "embed=16", "--set", "hidden=16", "--set", "arc=16", "--set", "relations=4",
          "-o", "batch_size=8", "-o", "lr=0.05", "-o", "val_split=0.25"]


def test_parser_trains_evaluates_and_predicts_from_the_cli(tmp_path, capsys):
    data = write_conllu(tmp_path / "train.conllu", toy_sentences(48))
    run = tmp_path / "run"
    assert main(["train", str(SPECS / "biaffine_parser.yaml"), "--data", str(data), "--out", str(run),
                 "--epochs", "6", *PARSER]) == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_uas"] > 0.8 and 0 <= last["val_las"] <= last["val_uas"]
    summary = json.loads((run / "summary.json").read_text())
    assert "val_las" in summary["best"]                      # the best epoch is chosen by LAS
    assert main(["eval", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "uas:" in out and "las:" in out and "accuracy" not in out
    new = write_conllu(tmp_path / "new.conllu", [[("a", 2, "det"), ("zebra", 3, "nsubj"), ("sleeps", 0, "root")]])
    assert main(["predict", str(run), "--data", str(new), "--out", str(tmp_path / "pred")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and len(rows[0]["heads"]) == 3 and rows[0]["heads"].count(0) == 1   # one root
    assert all(0 <= h <= 3 for h in rows[0]["heads"])                                           # CoNLL-U numbering
    assert set(rows[0]["relations"]) <= {"advmod", "det", "nsubj", "root"}


def test_more_relations_in_the_data_than_the_parser_scores_is_one_error(tmp_path, capsys):
    data = write_conllu(tmp_path / "train.conllu", toy_sentences(8))
    args = ["train", str(SPECS / "biaffine_parser.yaml"), "--data", str(data), "--out", str(tmp_path / "run"),
            "--epochs", "1", *(a.replace("relations=4", "relations=2") for a in PARSER)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'relations' holds labels" in err[0] and "`parser` scores 2 relations" in err[0]
