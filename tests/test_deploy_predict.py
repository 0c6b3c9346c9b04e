"""An exported run predicts what `dagnet predict` writes: a trained tagger's decoded tags and a
trained classifier's labels, from raw inputs, in onnxruntime and in a .pt2 program."""

import csv
import json

import numpy as np
import pytest
import torch

from dagnet.cli import main
from dagnet.data import collate, load_dataset
from dagnet.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import SPECS

TAGGER = ["train", str(SPECS / "cnf_tagger.yaml"), "--epochs", "3", "-o", "data.num=96", "--set", "hidden=16",
          "--lr", "0.05"]
CLASSIFIER = ["train", str(SPECS / "digits_cnn.yaml"), "--epochs", "1", "--set", "width=8", "-o", "batch_size=128",
              "-o", "schedule.name=none", "-o", "standardize=true"]
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def trained(tmp_path_factory, command: list[str], data: str, name: str):
    """A run trained by `command` and its `dagnet predict` output on `data`."""
    folder = tmp_path_factory.mktemp(name)
    assert main([*command, "--out", str(folder / "run")]) == 0
    assert main(["predict", str(folder / "run"), "--data", data, "--out", str(folder / "predicted")]) == 0
    return folder


def exported(folder, suffix: str):
    """`dagnet export` of the run as a function of raw named inputs to {output name: array}."""
    path = folder / f"m{suffix}"
    assert main(["export", str(folder / "run"), "-o", str(path)]) == 0
    if suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path))
        names = [o.name for o in session.get_outputs()]
        return lambda **inputs: dict(zip(names, session.run(None, {k: v.numpy() for k, v in inputs.items()})))
    program = torch.export.load(str(path)).module()
    return lambda **inputs: {k: v.detach().numpy() for k, v in program(**inputs).items()}


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return trained(tmp_path_factory, TAGGER, "gestures", "tagger")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = trained(tmp_path_factory, CLASSIFIER, "digits", "classifier")
    # a data layer that knows its classes keeps their names in the checkpoint: they go into the export
    state = load_checkpoint(folder / "run" / "best.pt")
    state.pop("meta")
    save_checkpoint(folder / "run" / "best.pt", state | {"data_state": {"class_names": {"label": CLASS_NAMES}}})
    return folder


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_exported_tagger_decodes_the_tags_predict_writes(tagger, suffix, capsys):
    pytest.importorskip("onnxscript")
    model = exported(tagger, suffix)
    assert "outputs `labels` as `dagnet predict` does (from crf)" in capsys.readouterr().out
    expected = [json.loads(line)["labels"] for line in (tagger / "predicted" / "predictions.jsonl").open()]
    assert len({tag for tags in expected for tag in tags}) > 1        # a trained tagger, not a constant
    data = load_dataset("gestures", num=96)      # predict reads new data with the run's options (data.num)
    got = []
    for start in range(0, len(data), 64):             # the batches of `dagnet predict`, raw inputs
        batch = collate([data[i] for i in range(start, min(start + 64, len(data)))])
        outputs = model(frames=batch["frames"], mask=batch["mask"])
        got += [tags[:length].tolist() for tags, length in zip(outputs["labels"], batch["mask"].sum(1).tolist())]
    assert got == expected


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_exported_classifier_labels_are_predict_labels(classifier, suffix):
    pytest.importorskip("onnxscript")
    model = exported(classifier, suffix)
    with (classifier / "predicted" / "predictions.csv").open() as f:
        expected = [int(row["label"]) for row in csv.DictReader(f)]
    data = load_dataset("digits")
    images = torch.stack([data[i]["image"] for i in range(len(data))])      # raw: the export standardises
    got = model(image=images)
    np.testing.assert_array_equal(got["labels"], np.asarray(expected))
    np.testing.assert_array_equal(got["labels"], got["head"].argmax(1))


def test_class_names_go_into_the_metadata(classifier, capsys):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    from safetensors import safe_open
    for suffix in (".onnx", ".pt2", ".pt", ".safetensors"):
        assert main(["export", str(classifier / "run"), "-o", str(classifier / f"names{suffix}")]) == 0
        assert "class names zero, one, two" in capsys.readouterr().out
    found = {".onnx": {p.key: p.value for p in onnx.load(str(classifier / "names.onnx")).metadata_props}}
    found[".pt2"], found[".pt"] = {"dagnet.class_names": ""}, {"dagnet.class_names": ""}
    torch.export.load(str(classifier / "names.pt2"), extra_files=found[".pt2"])
    torch.jit.load(str(classifier / "names.pt"), _extra_files=found[".pt"])
    with safe_open(str(classifier / "names.safetensors"), framework="pt") as f:
        found[".safetensors"] = f.metadata()
    for suffix, metadata in found.items():
        assert json.loads(metadata["dagnet.class_names"]) == CLASS_NAMES, suffix
