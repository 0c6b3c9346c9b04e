"""dagnet.data: built-in data sets, user files, batching, splits, checks, standardisation, augmentation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dagnet.data import (
    ArrayDataset,
    AugmentConfig,
    Augmented,
    DataError,
    Standardized,
    channel_stats,
    check_example_shapes,
    collate,
    digits,
    gestures,
    load_dataset,
    photos,
    prepare_data,
    shapes,
    split_dataset,
)
from dagnet.data.transforms import sample_affine, warp, warp_box, warp_mask


def test_digits_are_the_real_scans():
    data = digits()
    assert len(data) == 1797
    example = data[0]
    assert example["image"].shape == (1, 8, 8) and example["image"].dtype == torch.float32
    assert example["label"].dtype == torch.long and example["label"].item() == 0
    assert 0 <= example["image"].min() and example["image"].max() <= 1


def test_shapes_segmentation_masks_match_the_drawn_shapes():
    check_example_shapes(shapes(num=16, size=24), {"image": (3, 24, 24), "mask": (24, 24)}, ranges={"mask": (0, 3)})
    # Without noise and with one shape per image, the shape's pixels are exactly its one colour.
    data = shapes(num=16, size=24, max_shapes=1, noise=0.0, seed=3)
    for i in range(len(data)):
        image, mask = data[i]["image"], data[i]["mask"]
        assert len(mask.unique()) == 2
        assert image[:, mask > 0].std(dim=1).max() < 1e-6
        assert image[:, mask == 0].std(dim=1).max() > 1e-3  # textured background


def test_shapes_are_seeded():
    a, b, c = shapes(num=4, seed=1), shapes(num=4, seed=1), shapes(num=4, seed=2)
    assert torch.equal(a[3]["image"], b[3]["image"])
    assert not torch.equal(a[3]["image"], c[3]["image"])


def test_shapes_localise_box_encloses_the_single_object():
    data = shapes(num=20, size=32, task="localise", seed=0)
    for i in range(len(data)):
        example = data[i]
        ys, xs = torch.nonzero(example["mask"], as_tuple=True)
        x0, y0, x1, y1 = (example["box"] * 32).tolist()
        assert x0 <= xs.min() + 0.5 and xs.max() + 0.5 <= x1 and y0 <= ys.min() + 0.5 and ys.max() + 0.5 <= y1
        assert example["label"].item() == example["mask"].max().item() - 1


def test_gestures_sequences_and_padding():
    data = gestures(num=12, num_gestures=3, parts=3, dim=5, seed=0)
    lengths = [len(data[i]["frames"]) for i in range(len(data))]
    assert len(set(lengths)) > 1
    for i in range(len(data)):
        example = data[i]
        gesture_frames = example["labels"][example["labels"] > 0]
        assert (gesture_frames == example["gesture"] + 1).all() and len(gesture_frames) >= 3
        assert example["labels"][0] == 0 and example["labels"][-1] == 0  # background around gestures
    batch = collate([data[i] for i in range(4)])
    longest = max(lengths[:4])
    assert batch["frames"].shape == (4, longest, 5) and batch["mask"].dtype == torch.bool
    assert batch["mask"].sum(1).tolist() == lengths[:4]
    assert (batch["frames"][~batch["mask"]] == 0).all()


def test_photos_patches_are_consistent():
    data = photos(patch=64, segments=3)
    assert len(data) == 2 * (427 // 64) * (640 // 64)
    example = data[5]
    assert example["gray"].shape == (1, 64, 64) and example["color"].shape == (3, 64, 64)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    assert torch.allclose((example["color"] * weights).sum(0, keepdim=True), example["gray"])
    assert set(data.columns["mask"].unique().tolist()) == {0, 1, 2}


def test_collate_rejects_shapes_that_differ_beyond_the_first_dim():
    with pytest.raises(DataError, match="'x'.*first dimension"):
        collate([{"x": torch.zeros(2, 3)}, {"x": torch.zeros(2, 4)}])


def test_split_is_seeded_and_disjoint():
    data = ArrayDataset({"x": torch.arange(100)})
    train, val = split_dataset(data, 0.2, seed=7)
    again, _ = split_dataset(data, 0.2, seed=7)
    other, _ = split_dataset(data, 0.2, seed=8)
    train_ids = {train[i]["x"].item() for i in range(len(train))}
    val_ids = {val[i]["x"].item() for i in range(len(val))}
    assert len(val) == 20 and train_ids.isdisjoint(val_ids) and len(train_ids | val_ids) == 100
    assert train.indices == again.indices and train.indices != other.indices
    assert split_dataset(data, 0.0, seed=0)[1] is None


def test_check_example_shapes_names_sample_key_and_shapes():
    data = ArrayDataset({"image": torch.zeros(5, 1, 8, 8), "label": torch.tensor([0, 1, 2, 12, 3])})
    with pytest.raises(DataError, match=r"sample 0: 'image' has shape \(1, 8, 8\), expected \(3, \*, \*\)"):
        check_example_shapes(data, {"image": (3, None, None)})
    with pytest.raises(DataError, match=r"sample 3: 'label' holds labels \[12\] outside 0..9"):
        check_example_shapes(data, {"image": (1, 8, 8), "label": ()}, ranges={"label": (0, 9)})
    with pytest.raises(DataError, match="sample 0: 'label' has dtype torch.int64, expected float"):
        check_example_shapes(data, {}, dtypes={"label": "float"})
    with pytest.raises(DataError, match="sample 0: no key 'mask'"):
        check_example_shapes(data, {"mask": (8, 8)})


def test_check_example_shapes_named_dims_must_agree():
    good = {"frames": torch.zeros(7, 4), "labels": torch.zeros(7, dtype=torch.long)}
    bad = {"frames": torch.zeros(7, 4), "labels": torch.zeros(6, dtype=torch.long)}
    expected = {"frames": ("T", 4), "labels": ("T",)}
    check_example_shapes([good], expected)
    with pytest.raises(DataError, match=r"sample 1: 'labels' has shape \(6,\).*T = 7 as in 'frames'"):
        check_example_shapes([good, bad], expected)


def test_check_example_shapes_allows_ignore_index():
    data = [{"mask": torch.tensor([[0, -1], [2, 1]])}]
    check_example_shapes(data, {"mask": (2, 2)}, ranges={"mask": (0, 2)}, ignore_index=-1)


def test_standardize_uses_training_statistics_per_channel():
    x = torch.randn(50, 2, 4, 4) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    data = ArrayDataset({"x": x}, inputs=("x",))
    stats = channel_stats(data, ("x",))
    normalised = torch.stack([Standardized(data, stats)[i]["x"] for i in range(50)])
    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(normalised.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)


def test_standardize_sequences_per_feature():
    frames = [torch.randn(n, 3) * 4 + 2 for n in (5, 9, 2)]
    stats = channel_stats(ArrayDataset({"frames": frames}), ("frames",))
    everything = torch.cat(frames)
    assert np.allclose(stats["frames"]["mean"], everything.mean(0).numpy(), atol=1e-5)


def _striped(size=16):
    """An image whose first channel equals its mask, so any misalignment between them shows."""
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[3:9, 2:12] = 1
    mask[10:15, 5:8] = 2
    return {"image": mask.float().expand(3, -1, -1).clone(), "mask": mask}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), epoch=st.integers(0, 5))
def test_flip_and_translate_move_image_and_mask_identically(seed, epoch):
    data = Augmented([_striped()], AugmentConfig(flip=True, translate=0.25), seed=seed)
    data.set_epoch(epoch)
    example = data[0]
    assert torch.allclose(example["image"][0], example["mask"].float(), atol=1e-5)


def test_crop_and_scale_keep_image_and_mask_aligned():
    data = Augmented([_striped(32)], AugmentConfig(crop=0.7, scale=(0.8, 1.3), translate=0.1, flip=True), seed=1)
    for epoch in range(10):
        data.set_epoch(epoch)
        example = data[0]
        agree = (example["image"][0].round() == example["mask"].float()).float().mean()
        assert agree > 0.93  # only interpolated boundary pixels may differ


def test_augmentation_depends_on_seed_epoch_and_index_only():
    base = [_striped(), _striped()]
    config = AugmentConfig(flip=True, translate=0.3)
    a, b = Augmented(base, config, seed=5), Augmented(base, config, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert torch.equal(a[1]["image"], b[1]["image"])
    outcomes = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        outcomes.add(a[1]["image"].sum(1).numpy().tobytes())
    assert len(outcomes) > 1


def test_box_moves_with_the_object():
    example = shapes(num=1, size=32, task="localise", noise=0.0, seed=4)[0]
    theta = sample_affine(torch.Generator().manual_seed(0), AugmentConfig(flip=True, translate=0.2), (32, 32))
    theta[0, 0] = -1.0  # force the flip
    mask = warp_mask(example["mask"], theta, (32, 32), fill=0)
    box = warp_box(example["box"], theta) * 32
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1


def test_mask_fill_marks_pixels_from_outside():
    mask = torch.ones(8, 8, dtype=torch.long)
    theta = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # shift by 2 pixels
    warped = warp_mask(mask, theta, (8, 8), fill=-1)
    assert (warped[:, -2:] == -1).all() and (warped[:, :-2] == 1).all()
    assert warp(mask[None].float(), theta, (8, 8))[0, :, -2:].abs().max() == 0


def test_augment_needs_images():
    with pytest.raises(DataError, match="augment needs float images"):
        Augmented(gestures(num=2), AugmentConfig(flip=True))


def test_npz_and_pt_files(tmp_path):
    x, y = np.random.rand(6, 3).astype(np.float64), np.arange(6, dtype=np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.tensor(x), "y": torch.tensor(y)}, tmp_path / "d.pt")
    for name in ("d.npz", "d.pt"):
        data = load_dataset(path=str(tmp_path / name))
        assert len(data) == 6 and data.inputs == ("x",)
        assert data[2]["x"].dtype == torch.float32 and data[2]["y"].dtype == torch.long and data[2]["y"] == 2


def test_image_folder_pairs_images_with_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((5, 7, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        Image.fromarray(np.full((5, 7), i, np.uint8)).save(tmp_path / "masks" / f"im{i}.png")
    data = load_dataset(path=str(tmp_path))
    assert len(data) == 3
    assert data[2]["image"].shape == (3, 5, 7) and torch.allclose(data[2]["image"], torch.tensor(80 / 255))
    assert data[2]["mask"].dtype == torch.long and (data[2]["mask"] == 2).all()
    (tmp_path / "masks" / "im1.png").unlink()
    with pytest.raises(DataError, match="1 image.*no mask.*im1.png"):
        load_dataset(path=str(tmp_path))


def test_unknown_names_and_options_get_a_did_you_mean():
    with pytest.raises(DataError, match="unknown data set 'digit' \\(did you mean 'digits'\\?\\)"):
        load_dataset("digit")
    with pytest.raises(DataError, match="unknown option 'nosie'.*did you mean 'noise'"):
        load_dataset("shapes", nosie=0.3)


def test_prepare_data_standardises_with_train_stats_and_augments_train_only():
    split = prepare_data({"name": "shapes", "num": 40, "size": 16}, val_split=0.25, seed=0, standardize=True,
                         augment={"flip": True})
    assert len(split.train) == 30 and len(split.val) == 10
    assert set(split.stats) == {"image"} and len(split.stats["image"]["mean"]) == 3
    assert isinstance(split.train, Augmented) and not isinstance(split.val, Augmented)
    train_images = torch.stack([split.train.dataset[i]["image"] for i in range(30)])
    assert torch.allclose(train_images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
