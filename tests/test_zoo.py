"""The model zoo (docs/models.md): every zoo spec checks, compiles, has a DSL twin, and takes a training step."""

import pytest
import torch

import dagnet
from dagnet.data import collate, load_dataset
from dagnet.train.config import resolve_config
from dagnet.train.evaluate import forward, model_inputs
from dagnet.train.from_spec import build_model, check_data, task_of
from dagnet.train.loop import seed_everything
from tests.conftest import ROOT, SPECS
from tests.test_dsl_roundtrip import signature

# The zoo's specs, in the order of docs/models.md (bench/zoo.py keeps the same list).
ZOO = [
    "mlp_mse", "mlp_regularised", "resnet_digits", "densenet_digits",
    "softmax_gestures", "cnf_gestures", "hcrf_gestures", "ldcrf_gestures", "ldcnf_gestures",
    "bert_crf_tagger", "conll_softmax_tagger", "conll_tagger",
    "fcn32s_shapes", "fcn16s_shapes", "fcn8s_shapes", "deconvnet_shapes", "deeplab_shapes",
    "segmenter_full", "segmenter_points", "localise_shapes", "colorise_photos",
]
SMALL = {"shapes": {"num": 4}, "gestures": {"num": 4}}    # a few examples are enough for one step


@pytest.mark.parametrize("name", ZOO)
def test_zoo_spec_trains_one_step(name):
    ir = dagnet.load(SPECS / f"{name}.yaml")
    seed_everything(0)
    model, objective, losses = build_model(ir)
    config = resolve_config(ir.train, None, [])
    source = dict(config.data) | SMALL.get(config.data.get("name"), {})
    dataset = load_dataset(**source)
    check_data(dataset, ir, losses, limit=4)
    batch = collate([dataset[i] for i in range(4)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    loss, parts = objective(forward(model, batch, model_inputs(model)), batch)
    loss.backward()
    assert torch.isfinite(loss)
    trained = [p for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained, "no parameter received a gradient"
    optimizer.step()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_spec_has_dsl_twin_figure_and_row(name):
    assert signature(dagnet.load(SPECS / f"{name}.dag")) == signature(dagnet.load(SPECS / f"{name}.yaml"))
    assert (ROOT / "docs" / "gallery" / f"{name}.svg").exists()
    assert f"specs/{name}.yaml" in (ROOT / "docs" / "models.md").read_text()


def test_zero_weighted_loss_scores_but_does_not_train():
    """mlp_mse and segmenter_points score a target they never train on."""
    for name, scored, trained in [("mlp_mse", "label", "onehot"), ("segmenter_points", "mask", "points")]:
        ir = dagnet.load(SPECS / f"{name}.yaml")
        _, _, losses = build_model(ir)
        assert task_of(ir, losses).target == scored
        assert [loss["weight"] for loss in losses if loss["target"] == scored] == [0]
        assert any(loss["target"] == trained and loss.get("weight", 1) == 1 for loss in losses)


def test_zoo_list_matches_the_benchmark_script():
    from bench.zoo import ENTRIES
    assert [entry.spec for entry in ENTRIES if entry.spec in ZOO] == ZOO


def test_shapes_points_label_one_pixel_per_object_and_one_background_pixel():
    from dagnet.data import shapes
    from dagnet.data.synthetic import POINT_IGNORE
    plain, sparse = shapes(num=12, size=24, seed=5), shapes(num=12, size=24, seed=5, points=True)
    for i in range(12):
        assert torch.equal(plain[i]["image"], sparse[i]["image"])      # the same images and masks
        assert torch.equal(plain[i]["mask"], sparse[i]["mask"])
        points, mask = sparse[i]["points"], sparse[i]["mask"]
        labelled = points != POINT_IGNORE
        assert torch.equal(points[labelled], mask[labelled])           # each point carries its true class
        assert (points[labelled] == 0).sum() == 1                      # one background pixel
        # one point per drawn object with a visible part: never more points than objects + 1
        assert 2 <= labelled.sum() <= 1 + 3


def test_digits_onehot_matches_label():
    from dagnet.data import digits
    data = digits(onehot=True)
    example = data[7]
    assert example["onehot"].shape == (10,) and example["onehot"].dtype == torch.float32
    assert example["onehot"].argmax().item() == example["label"].item() and example["onehot"].sum() == 1
    assert "onehot" not in digits()[0]
