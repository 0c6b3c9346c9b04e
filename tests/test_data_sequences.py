"""Sequence data: JSON Lines and CoNLL files train, evaluate and predict from the CLI; vocabularies
come from the training split and are reused later; bad lines are one located error."""

import json
import random

import pytest
import torch

from dagnet.cli import main
from dagnet.data import DataError, collate, load_dataset, prepare_data, split_dataset
from dagnet.data.sequences import PAD, UNKNOWN, bucket_lengths, bucketed
from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.loop import ResumableSampler
from tests.conftest import SPECS

# A toy grammar: determiner, noun, verb (and an optional adverb), so a tagger learns it in an epoch or two.
WORDS = {"DET": ["the", "a"], "NOUN": ["cat", "dog", "bird"], "VERB": ["runs", "sleeps"], "ADV": ["fast"]}


def sentences(count: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    tags = [["DET", "NOUN", "VERB"] + (["ADV"] if rng.random() < 0.5 else []) for _ in range(count)]
    return [[(rng.choice(WORDS[t]), t) for t in sentence] for sentence in tags]


def write_conll(path, data, docstart: bool = True):
    blocks = ["\n".join(f"{word}\t{tag}" for word, tag in sentence) for sentence in data]
    path.write_text(("-DOCSTART- -X- O O\n\n" if docstart else "") + "\n\n".join(blocks) + "\n")
    return path


def write_jsonl(path, data):
    lines = [json.dumps({"tokens": [w for w, _ in s], "labels": [t for _, t in s]}) for s in data]
    path.write_text("\n".join(lines) + "\n")
    return path


TAGGER = ["--set", "vocab=16", "--set", "tags=4", "--set", "embed=8", "--set", "hidden=8",
          "-o", "batch_size=8", "-o", "lr=0.05", "-o", "val_split=0.25"]


@pytest.mark.parametrize("spec", ["conll_tagger", "conll_softmax_tagger"])
@pytest.mark.parametrize("write", [write_conll, write_jsonl], ids=["conll", "jsonl"])
def test_token_files_train_eval_and_predict_from_the_cli(tmp_path, capsys, spec, write):
    data = write(tmp_path / ("train.conll" if write is write_conll else "train.jsonl"), sentences(40))
    run = tmp_path / "run"
    args = ["train", str(SPECS / f"{spec}.yaml"), "--data", str(data), "--out", str(run), "--epochs", "2"]
    assert main([*args, *TAGGER]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_accuracy"] > 0.6
    assert main(["eval", str(run), "--data", str(data)]) == 0
    assert "accuracy:" in capsys.readouterr().out
    new = write_conll(tmp_path / "new.conll", [[("the", "DET"), ("zebra", "NOUN"), ("sleeps", "VERB")]])
    assert main(["predict", str(run), "--data", str(new), "--out", str(tmp_path / "pred")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert [len(row["labels"]) for row in rows] == [3]
    tags = ["ADV", "DET", "NOUN", "VERB"]               # the training file's tag set, sorted
    assert rows[0]["classes"] == [tags[i] for i in rows[0]["labels"]]


def test_the_vocabulary_is_learnt_on_the_training_split_and_reused_at_predict(tmp_path):
    data = sentences(30)
    held_out = split_dataset(data, 0.2, seed=0)[1].indices[0]      # the split prepare_data will make
    data[held_out] = [("the", "DET"), ("unicorn", "NOUN"), ("runs", "VERB")]
    path = write_conll(tmp_path / "train.conll", data)
    split = prepare_data({"path": str(path)}, val_split=0.2, seed=0)
    vocab = split.preprocessing["vocab"]["tokens"]
    assert vocab[:2] == [PAD, UNKNOWN] and split.preprocessing["tags"]["labels"] == ["ADV", "DET", "NOUN", "VERB"]
    assert set(vocab[2:]) == {w for i in split.train.indices for w, _ in data[i]}
    assert "unicorn" not in vocab
    assert split.val[split.val.indices.index(held_out)]["tokens"][1] == vocab.index(UNKNOWN)

    run = tmp_path / "run"
    assert main(["train", str(SPECS / "conll_tagger.yaml"), "--data", str(path), "--out", str(run),
                 "--epochs", "1", *TAGGER]) == 0
    saved = load_checkpoint(run / "best.pt")["data_state"]
    new = load_dataset(path=str(write_conll(tmp_path / "new.conll", [[("a", "DET"), ("yeti", "NOUN")]])),
                       preprocessing=saved)
    assert new[0]["tokens"].tolist() == [saved["vocab"]["tokens"].index("a"), 1]     # unseen -> <unk>


def test_conll_columns_docstart_and_whitespace(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n")
    dataset = load_dataset(path=str(path), tags="ner")
    assert len(dataset) == 2 and dataset.preprocessing is None
    first = dataset[0]
    assert set(first) == {"tokens", "ner", "mask"} and first["mask"].tolist() == [True, True]
    assert dataset.preprocessing["tags"]["ner"] == ["B-ORG", "B-PER", "O"]
    assert first["ner"].tolist() == [0, 2] and first["tokens"].dtype == torch.int64


def test_jsonl_numbers_become_tensors_and_batches_get_a_padded_mask(tmp_path):
    path = tmp_path / "frames.jsonl"
    path.write_text('{"frames": [[0.5, 1], [2, 3]], "labels": [0, 1], "speaker": 3}\n'
                    '{"frames": [[1, 1]], "labels": [2], "speaker": 1}\n')
    batch = collate([*load_dataset(path=str(path))])
    assert batch["frames"].dtype == torch.float32 and batch["frames"].shape == (2, 2, 2)
    assert batch["labels"].dtype == torch.int64 and batch["speaker"].tolist() == [3, 1]
    assert batch["mask"].tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("name, text, expected", [
    ("a.conll", "the\tDET\ncat\n", "a.conll:2: expected 'token<TAB>tag' (token first, tag last), found 'cat'"),
    ("b.conll", "the\tDET\ncat\t\n", "b.conll:2: expected 'token<TAB>tag'"),
    ("c.jsonl", '{"tokens": ["a"], "labels": ["X"]}\n{"tokens": ["a"]\n', "c.jsonl:2: not valid JSON"),
    ("d.jsonl", '{"tokens": ["a"], "labels": ["X"]}\n{"tokens": ["a"], "tags": ["X"]}\n',
     "d.jsonl:2: fields ['tags', 'tokens'] differ from the first example's ['labels', 'tokens']"),
    ("e.jsonl", '{"tokens": ["a", "b"], "labels": ["X"]}\n', "e.jsonl:1: sequences of different lengths"),
    ("f.jsonl", '[1, 2]\n', "f.jsonl:1: expected a JSON object"),
    ("g.conll", "\n\n", "g.conll: no sentences"),
])
def test_bad_lines_are_one_error_naming_file_and_line(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match="^" + str(tmp_path).replace("\\", "\\\\")):
        load_dataset(path=str(path))[0]
    assert main(["train", str(SPECS / "conll_tagger.yaml"), "--data", str(path), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_tag_unseen_in_training_names_its_line(tmp_path):
    train = write_conll(tmp_path / "train.conll", sentences(5))
    saved = load_dataset(path=str(train)).learn()
    other = tmp_path / "test.conll"
    other.write_text("the\tDET\ncat\tNOUN\n\nParis\tPROPN\n")
    with pytest.raises(DataError, match=r"test.conll:4: labels 'PROPN' was not in the training data"):
        load_dataset(path=str(other), preprocessing=saved)


def test_buckets_group_similar_lengths_and_keep_every_example():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(1000)]
    order = list(range(1000))
    rng.shuffle(order)
    grouped = bucketed(order, lengths, batch_size=32, seed=1)
    assert sorted(grouped) == sorted(order) and grouped == bucketed(order, lengths, 32, seed=1)

    def padding(order):
        batches = [[lengths[i] for i in order[s:s + 32]] for s in range(0, len(order), 32)]
        return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)

    assert padding(order) > 0.3 and padding(grouped) < 0.1


def test_bucket_true_reaches_the_training_order(tmp_path):
    data = sentences(60)
    path = write_conll(tmp_path / "train.conll", data)
    run = tmp_path / "run"
    source = ["-o", "data.name=null", "-o", f"data.path={path}", "-o", "data.min_count=1"]    # the spec's
    assert main(["train", str(SPECS / "conll_tagger.yaml"), "--out", str(run), "--epochs", "1", *TAGGER,
                 *source, "-o", "batch_size=4"]) == 0                               # data has bucket: true

    train = prepare_data({"path": str(path), "bucket": True}, val_split=0.25).train
    sampler = ResumableSampler(train, num_replicas=1, rank=0, seed=0)
    sampler.lengths, sampler.batch_size = bucket_lengths(train), 4
    lengths = [len(data[train.indices[i]]) for i in sampler.epoch_order()]
    batches = [lengths[s:s + 4] for s in range(0, len(lengths) - len(lengths) % 4, 4)]
    assert sum(len(set(b)) > 1 for b in batches) <= 1         # 3 or 4 words: one batch may straddle


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes("the\tDET\ncafé\tNOUN\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.conll:2: not UTF-8 text"):
        load_dataset(path=str(path))


def test_jsonl_string_fields_the_spec_does_not_read_are_tag_sets(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"tokens": ["good", "film"], "label": "pos"}\n{"tokens": ["bad"], "label": "neg"}\n')
    dataset = load_dataset(path=str(path), inputs={"tokens": torch.int64, "mask": torch.bool})
    assert [dataset[0]["label"].item(), dataset[1]["label"].item()] == [1, 0]     # neg, pos: no <pad>, <unk>
    assert dataset.preprocessing["tags"] == {"label": ["neg", "pos"]}
    again = load_dataset(path=str(path), preprocessing=dataset.preprocessing)     # the spec unknown: as saved
    assert again[0]["label"].item() == 1 and again[0]["tokens"].tolist() == dataset[0]["tokens"].tolist()


def test_turkish_pos_is_the_treebank_shipped_in_the_wheel():
    dataset = load_dataset(name="turkish_pos", min_count=2)
    assert len(dataset) == 4851 and sum(dataset.lengths) == 81370
    assert len(dataset[0]["tokens"]) == len(dataset[0]["labels"]) == dataset.lengths[0]
    assert len(dataset.preprocessing["tags"]["labels"]) == 14
    web = load_dataset(name="turkish_pos", part="web")
    saved = web.learn()
    saved["tags"]["labels"].remove("ONOM")
    with pytest.raises(DataError, match=r"wiki.conllu:\d+: labels 'ONOM' was not in the training data"):
        load_dataset(name="turkish_pos", part="wiki", preprocessing=saved)
