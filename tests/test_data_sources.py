"""User data from the command line: tables, image folders and arrays train, evaluate and predict,
and bad data gets one line naming the file, the row or sample, and what was expected."""

import csv
import json

import numpy as np
import pytest
import torch

from dagnet.cli import main
from dagnet.data import DataError, Field, collate, load_dataset, prepare_data

WINE_CLASSES = ["barbera", "barolo", "grignolino"]      # sorted: class ids follow this order

TABLE_SPEC = """
dagnet: 1
inputs:
  features: {shape: [13]}
nodes:
  head: {in: features, seq: linear(16) -> relu -> linear(3)}
outputs: [head]
loss: {op: cross_entropy, output: head, target: species}
train: {epochs: 4, batch_size: 16, lr: 0.01, standardize: true, val_split: 0.2}
"""

IMAGE_SPEC = """
dagnet: 1
inputs:
  image: {shape: [3, 24, 24]}
nodes:
  features:
    in: image
    seq: conv2d(8, 3, padding=1) -> relu -> max_pool2d(4)
  head: {in: features, seq: flatten -> linear(2)}
outputs: [head]
loss: {op: cross_entropy, output: head, target: label}
train: {epochs: 2, batch_size: 16, lr: 0.01}
"""

DIGITS_SPEC = """
dagnet: 1
inputs:
  image: {shape: [1, 8, 8]}
nodes:
  head: {in: image, seq: flatten -> linear(10)}
outputs: [head]
loss: {op: cross_entropy, output: head, target: label}
train: {epochs: 3, batch_size: 64, lr: 0.02}
"""


def write(path, text):
    path.write_text(text)
    return str(path)


def wine_frame(rows=None):
    """scikit-learn's wine table (178 rows, 13 measurements) with the cultivar as a name."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame["species"] = [["barolo", "grignolino", "barbera"][t] for t in bunch.target]
    return frame if rows is None else frame.iloc[:rows]


def save_table(frame, path):
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return str(path)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_a_table_trains_evaluates_and_predicts_with_class_names(tmp_path, capsys, suffix):
    table = save_table(wine_frame(), tmp_path / f"wine{suffix}")
    spec, run = write(tmp_path / "wine.yaml", TABLE_SPEC), tmp_path / "run"
    assert run_cli(capsys, "train", spec, "--data", table, "--out", run)[0] == 0
    assert json.loads((run / "data.json").read_text())["class_names"] == {"species": WINE_CLASSES}

    code, out, _ = run_cli(capsys, "eval", run, "--data", table)
    assert code == 0 and float(out.split("accuracy: ")[1].split()[0]) > 0.8

    unlabelled = save_table(wine_frame(5).drop(columns="species"), tmp_path / f"new{suffix}")
    assert run_cli(capsys, "predict", run, "--data", unlabelled, "--out", tmp_path / "pred")[0] == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert len(rows) == 5 and all(row["class"] == WINE_CLASSES[int(row["label"])] for row in rows)
    assert [row["class"] for row in rows] == ["barolo"] * 5           # the first rows are cultivar 0


def test_a_columns_map_names_features_and_label(tmp_path, capsys):
    frame = wine_frame().rename(columns={"species": "cultivar"})
    frame["note"] = "tasted"                        # text, neither feature nor label
    table = save_table(frame, tmp_path / "wine.csv")
    spec = write(tmp_path / "wine.yaml", TABLE_SPEC)
    columns = "{features: [" + ", ".join(frame.columns[:13]) + "], species: cultivar}"
    code, _, err = run_cli(capsys, "train", spec, "--data", table, "--data-option", f"columns={columns}",
                           "--out", tmp_path / "run")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", spec, "--data", table, "--data-option", "columns={species: cultivar}",
                           "--out", tmp_path / "run2")         # features: the other numeric columns
    assert code == 0, err
    dataset = load_dataset(path=table, columns={"x": ["alcohol", "ash"], "y": "cultivar"})
    assert dataset[0]["x"].shape == (2,) and dataset.preprocessing["class_names"] == {"y": WINE_CLASSES}


@pytest.mark.parametrize("column, value, message", [
    ("ash", None, "wine.csv: row 5, column 'ash': a missing value, expected a number"),
    ("ash", "n/a", "wine.csv: row 5, column 'ash': a missing value, expected a number"),
    ("ash", "2,4x", "wine.csv: row 5, column 'ash': '2,4x', expected a number"),
    ("species", None, "wine.csv: row 5, column 'species': a missing value, expected a class name"),
    ("ash", "drop", "input 'features' takes 13 values per row, but the table has 12 numeric columns"),
    ("species", "drop", "wine.csv: no column for the spec's target 'species'"),
])
def test_bad_tables_get_one_line_naming_row_and_column(tmp_path, capsys, column, value, message):
    frame = wine_frame(40).astype({column: object})
    if value == "drop":
        frame = frame.drop(columns=column)
    else:
        frame.loc[3, column] = value            # the 4th data row: row 5 in a spreadsheet
    table = save_table(frame, tmp_path / "wine.csv")
    code, _, err = run_cli(capsys, "train", write(tmp_path / "s.yaml", TABLE_SPEC), "--data", table,
                           "--out", tmp_path / "run")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_predict_names_a_class_unseen_in_training(tmp_path, capsys):
    spec, run = write(tmp_path / "s.yaml", TABLE_SPEC), tmp_path / "run"
    assert run_cli(capsys, "train", spec, "--data", save_table(wine_frame(), tmp_path / "w.csv"), "--out", run)[0] == 0
    frame = wine_frame(3)
    frame.loc[1, "species"] = "merlot"
    code, _, err = run_cli(capsys, "eval", run, "--data", save_table(frame, tmp_path / "new.csv"))
    assert code == 1 and "new.csv: row 3, column 'species': class 'merlot' was not in the training data" in err


def photo_patches(root, size=32, per_class=24):
    """Two class folders cut from scikit-learn's sample photos (a temple, a flower): PNG and JPG,
    with a grey and an RGBA image among them to be converted to RGB."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    for name, photo in zip(["china", "flower"], load_sample_images().images):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            y, x = divmod(i * 37 % 96, 12)
            image = Image.fromarray(photo[y * size: (y + 1) * size + 8, x * size: (x + 1) * size + 8])
            if i == 0:
                image = image.convert("L")
            elif i == 1:
                image = image.convert("RGBA")
            image.save(folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}")     # the RGBA one (i = 1) a PNG


def test_an_image_folder_trains_evaluates_and_predicts(tmp_path, capsys):
    photo_patches(tmp_path / "photos")
    spec, run = write(tmp_path / "s.yaml", IMAGE_SPEC), tmp_path / "run"
    code, _, err = run_cli(capsys, "train", spec, "--data", tmp_path / "photos", "--out", run)
    assert code == 0, err
    saved = json.loads((run / "data.json").read_text())
    assert saved == {"channels": 3, "resize": [24, 24], "crop": None, "class_names": {"label": ["china", "flower"]}}
    assert run_cli(capsys, "eval", run, "--data", tmp_path / "photos")[0] == 0

    loose = tmp_path / "new"
    loose.mkdir()
    for source in sorted((tmp_path / "photos" / "flower").iterdir())[:3]:
        (loose / source.name).write_bytes(source.read_bytes())
    assert run_cli(capsys, "predict", run, "--data", loose, "--out", tmp_path / "pred")[0] == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert len(rows) == 3 and {row["class"] for row in rows} <= {"china", "flower"}


def test_an_image_folder_with_train_and_val_and_resize_crop(tmp_path):
    photo_patches(tmp_path / "d" / "train", per_class=6)
    photo_patches(tmp_path / "d" / "val", per_class=2)
    spec = {"image": Field((1, 20, 20), "float")}
    split = prepare_data({"path": str(tmp_path / "d"), "resize": 22, "crop": 20}, inputs=spec, targets=("label",))
    assert len(split.train) == 12 and len(split.val) == 4
    example = split.val[3]
    assert example["image"].shape == (1, 20, 20) and 0 <= example["image"].min() <= example["image"].max() <= 1
    assert example["label"].item() == 1


def test_an_unreadable_image_is_one_line_naming_it(tmp_path, capsys):
    photo_patches(tmp_path / "photos", per_class=3)
    (tmp_path / "photos" / "china" / "broken.png").write_bytes(b"\x89PNG not really")
    code, _, err = run_cli(capsys, "train", write(tmp_path / "s.yaml", IMAGE_SPEC), "--data", tmp_path / "photos",
                           "--out", tmp_path / "run")
    assert code == 1 and "broken.png: not a readable image" in err and len(err.strip().splitlines()) == 1


def digits_npz(path, n=400):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    np.savez(path, X=(bunch.images[:n] * 255 / 16).astype(np.uint8), y=bunch.target[:n])
    return str(path)


def test_an_npz_with_a_keys_map_and_uint8_images(tmp_path, capsys):
    data, spec, run = digits_npz(tmp_path / "d.npz"), write(tmp_path / "s.yaml", DIGITS_SPEC), tmp_path / "run"
    code, _, err = run_cli(capsys, "train", spec, "--data", data, "--data-option", "keys={X: image, y: label}",
                           "--out", run)
    assert code == 0 and "'image' holds uint8 images; scaled by 1/255" in err
    code, out, _ = run_cli(capsys, "eval", run, "--data", data)        # the run's keys map is reused
    assert code == 0 and float(out.split("accuracy: ")[1].split()[0]) > 0.7
    assert run_cli(capsys, "predict", run, "--data", data, "--out", tmp_path / "pred")[0] == 0
    assert len((tmp_path / "pred" / "predictions.csv").read_text().splitlines()) == 401

    code, _, err = run_cli(capsys, "train", spec, "--data", data, "--out", tmp_path / "other")
    assert code == 1 and "d.npz: no array for the spec's input 'image' (arrays: X, y); name one with keys:" in err
    code, _, err = run_cli(capsys, "train", spec, "--data", data, "--data-option", "keys={X: image, y: label}",
                           "--data-option", "scale_uint8=false", "--out", tmp_path / "other")
    assert code == 1 and "d.npz: 'X' holds integers, but the spec's input 'image' is float; set scale_uint8: true" in err


def test_ragged_sequences_in_a_pt_list_are_padded_with_a_mask_or_refused(tmp_path):
    path = tmp_path / "seq.pt"
    torch.save({"frames": [torch.randn(n, 4) for n in (3, 5, 2)], "labels": [torch.zeros(n, dtype=torch.long)
                                                                          for n in (3, 5, 2)]}, path)
    inputs = {"frames": Field(("T", 4), "float"), "mask": Field(("T",), "bool")}
    dataset = load_dataset(path=str(path), inputs=inputs, targets=("labels",))
    batch = collate([dataset[i] for i in range(3)])
    assert batch["frames"].shape == (3, 5, 4) and batch["mask"].sum(1).tolist() == [3, 5, 2]
    with pytest.raises(DataError, match=r"seq.pt: 'frames' holds sequences of different lengths \(2 to 5\) and "
                                        "the spec has no boolean mask input"):
        load_dataset(path=str(path), inputs={"frames": inputs["frames"]})


def test_shapes_predicts_with_the_options_it_was_trained_with(tmp_path, capsys):
    spec = tmp_path / "seg.yaml"
    spec.write_text("""
dagnet: 1
inputs:
  image: {shape: [3, 48, 48]}
nodes:
  scores: {in: image, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
outputs: [scores]
loss: {op: cross_entropy, output: scores, target: mask}
train: {epochs: 1, batch_size: 16, data: {name: shapes, num: 32}}
""")
    run = tmp_path / "run"
    assert run_cli(capsys, "train", spec, "--data-option", "size=48", "--out", run)[0] == 0
    assert run_cli(capsys, "predict", run, "--data", "shapes", "--out", tmp_path / "pred")[0] == 0
    assert len(list((tmp_path / "pred" / "masks").iterdir())) == 32
    code, _, err = run_cli(capsys, "predict", run, "--data", "shapes", "--data-option", "size=32",
                           "--out", tmp_path / "p2")
    assert code == 1 and "expected (3, 48, 48)" in err


def test_unknown_data_options_and_types_are_named(tmp_path, capsys):
    table = save_table(wine_frame(20), tmp_path / "w.csv")
    spec = write(tmp_path / "s.yaml", TABLE_SPEC)
    code, _, err = run_cli(capsys, "train", spec, "--data", table, "--data-option", "colums={}", "--out", tmp_path / "r")
    assert code == 1 and "unknown option 'colums' for data file" in err and "did you mean 'columns'" in err
    code, _, err = run_cli(capsys, "train", spec, "--data", write(tmp_path / "w.txt", "1,2"), "--out", tmp_path / "r")
    assert code == 1 and "w.txt: unsupported data file type '.txt' (use .csv, .tsv, .parquet, .npz, .pt" in err
