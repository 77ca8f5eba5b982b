"""Tests of examples/aotgan/data.py: the bundled-photo crops and the folder loader."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("skimage")

sys.path.insert(0, str(Path(__file__).parents[1]))

from PIL import Image  # noqa: E402

from examples.aotgan import data  # noqa: E402

# ---- PhotoCrops ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train() -> data.PhotoCrops:
    return data.PhotoCrops("train", size=32, length=64, seed=0)


@pytest.fixture(scope="module")
def heldout() -> data.PhotoCrops:
    return data.PhotoCrops("heldout", size=32, length=8, seed=0)


def test_no_source_photo_is_in_both_splits(train: data.PhotoCrops, heldout: data.PhotoCrops) -> None:
    assert set(train.photos).isdisjoint(heldout.photos)
    assert set(heldout.photos) <= set(data.HELDOUT_PHOTOS)
    assert heldout.photos, "the held-out split must not be empty"
    # Every item is drawn from a photo of its own split (the plan is what __getitem__ really uses).
    for dataset in (train, heldout):
        for i in range(len(dataset)):
            name, *_ = dataset.crop_plan(i)
            assert name in dataset.photos


def test_stereo_pair_stays_on_one_side(train: data.PhotoCrops, heldout: data.PhotoCrops) -> None:
    pair = {"motorcycle_left", "motorcycle_right"}
    assert pair.isdisjoint(heldout.photos)
    assert pair.isdisjoint(data.HELDOUT_PHOTOS)


def test_item_is_exactly_the_planned_crop(train: data.PhotoCrops) -> None:
    for i in range(16):
        name, y, x, flip = train.crop_plan(i)
        crop = train.photo(name)[y : y + 32, x : x + 32]
        if flip:
            crop = crop[:, ::-1]
        expected = torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        torch.testing.assert_close(train[i], expected, rtol=0, atol=0)


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("size", [32, 48])
def test_items_are_3xSxS_float32_in_minus_one_one(split: str, size: int) -> None:
    dataset = data.PhotoCrops(split, size=size, length=6, seed=1)  # type: ignore[arg-type]
    for i in range(len(dataset)):
        x = dataset[i]
        assert x.shape == (3, size, size)
        assert x.dtype == torch.float32
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(torch.stack([dataset[i] for i in range(6)]).std()) > 0.05  # content, not a constant


def test_crops_are_deterministic_for_a_seed() -> None:
    a = data.PhotoCrops("train", size=32, length=16, seed=5)
    b = data.PhotoCrops("train", size=32, length=16, seed=5)
    c = data.PhotoCrops("train", size=32, length=16, seed=6)
    torch.manual_seed(0)
    first = torch.stack([a[i] for i in range(16)])
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(first, torch.stack([b[i] for i in range(16)]))
    assert torch.equal(first[3], a[3])  # repeated access gives the same crop
    assert not torch.equal(first, torch.stack([c[i] for i in range(16)]))


def test_train_crops_change_with_epoch_heldout_crops_do_not() -> None:
    train = data.PhotoCrops("train", size=32, length=8, seed=0)
    heldout = data.PhotoCrops("heldout", size=32, length=8, seed=0)
    train0 = torch.stack([train[i] for i in range(8)])
    held0 = torch.stack([heldout[i] for i in range(8)])
    train.set_epoch(1)
    heldout.set_epoch(1)
    assert not torch.equal(train0, torch.stack([train[i] for i in range(8)]))
    assert torch.equal(held0, torch.stack([heldout[i] for i in range(8)]))
    train.set_epoch(0)
    assert torch.equal(train0, torch.stack([train[i] for i in range(8)]))


def test_shuffled_dataloader_with_seeded_generator_is_reproducible() -> None:
    dataset = data.PhotoCrops("train", size=32, length=12, seed=0)

    def batches() -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(7)
        return list(torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, generator=gen))

    first, second = batches(), batches()
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_grayscale_textures_are_replicated_to_three_channels(train: data.PhotoCrops) -> None:
    if "brick" not in train.photos:
        pytest.skip("brick texture not available")
    photo = train.photo("brick")
    assert photo.shape[2] == 3
    assert np.array_equal(photo[..., 0], photo[..., 1]) and np.array_equal(photo[..., 0], photo[..., 2])


def test_photos_are_downscaled_by_the_factor() -> None:
    full = data.PhotoCrops("train", size=32, length=1, downscale=1.0)
    half = data.PhotoCrops("train", size=32, length=1, downscale=2.0)
    h, w = full.photo("astronaut").shape[:2]
    assert half.photo("astronaut").shape[:2] == (round(h / 2), round(w / 2))


def test_photocrops_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        data.PhotoCrops("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="downscale"):
        data.PhotoCrops(downscale=0.5)
    with pytest.raises(ValueError, match="heldout"):
        data.PhotoCrops(heldout=("no_such_photo",))
    with pytest.raises(TypeError, match="size"):
        data.PhotoCrops(size=32.0)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        data.PhotoCrops(length=4)[4]


# ---- ImageFolder -----------------------------------------------------------------------------------------------------


def _write_png(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    _write_png(tmp_path / "a.png", 40, 48, 0)
    _write_png(tmp_path / "b.PNG", 48, 40, 1)
    _write_png(tmp_path / "nested" / "deeper" / "c.png", 36, 36, 2)
    Image.fromarray(np.full((40, 40), 128, dtype=np.uint8)).save(tmp_path / "gray.bmp")
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_skips_a_corrupt_file_with_one_warning_and_counts_it(folder: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = data.ImageFolder(folder, size=32)
    about_garbage = [w for w in caught if "garbage.png" in str(w.message)]
    assert len(about_garbage) == 1
    assert len(caught) == 1
    assert dataset.skipped == [folder / "garbage.png"]
    assert len(dataset) == 4  # a.png, b.PNG, nested/deeper/c.png, gray.bmp; notes.txt ignored
    assert folder / "nested" / "deeper" / "c.png" in dataset.files
    for i in range(len(dataset)):
        x = dataset[i]
        assert x.shape == (3, 32, 32) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_file_failing_at_decode_is_warned_once_and_replaced(tmp_path: Path) -> None:
    _write_png(tmp_path / "good.png", 40, 40, 0)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "trunc.jpg", quality=90)
    raw = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(raw[: len(raw) // 2])  # header intact: verify() passes, decode fails
    dataset = data.ImageFolder(tmp_path, size=32, augment=False)
    index = dataset.files.index(tmp_path / "trunc.jpg")
    with pytest.warns(UserWarning, match="trunc.jpg"):
        replaced = dataset[index]
    assert tmp_path / "trunc.jpg" in dataset.skipped
    assert torch.equal(replaced, dataset[dataset.files.index(tmp_path / "good.png")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second access must not warn again
        dataset[index]


def test_missing_folder_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.ImageFolder(tmp_path / "nope", size=32)


def test_folder_without_images_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="found none"):
        data.ImageFolder(tmp_path, size=32)


def test_folder_of_only_corrupt_images_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="bad.png"), pytest.raises(ValueError, match="unreadable"):
        data.ImageFolder(tmp_path, size=32)


def test_small_images_are_scaled_up_to_the_crop(tmp_path: Path) -> None:
    _write_png(tmp_path / "tiny.png", 10, 14, 0)
    x = data.ImageFolder(tmp_path, size=32)[0]
    assert x.shape == (3, 32, 32)


def test_folder_split_is_by_file_and_covers_every_file(tmp_path: Path) -> None:
    for i in range(12):
        _write_png(tmp_path / f"img{i:02d}.png", 34, 34, i)
    train = data.ImageFolder(tmp_path, size=32, split="train", heldout_fraction=0.25)
    held = data.ImageFolder(tmp_path, size=32, split="heldout", heldout_fraction=0.25)
    assert set(train.files).isdisjoint(held.files)
    assert len(train.files) + len(held.files) == 12
    assert len(held.files) == 3
    assert not held.augment and train.augment
    again = data.ImageFolder(tmp_path, size=32, split="heldout", heldout_fraction=0.25)
    assert again.files == held.files
    assert torch.equal(held[0], again[0])


def test_folder_crops_are_deterministic_for_a_seed(folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = data.ImageFolder(folder, size=32, seed=3)
        b = data.ImageFolder(folder, size=32, seed=3)
    assert all(torch.equal(a[i], b[i]) for i in range(len(a)))
    a.set_epoch(1)
    assert not all(torch.equal(a[i], b[i]) for i in range(len(a)))


# ---- make_dataset ----------------------------------------------------------------------------------------------------


def test_make_dataset_picks_the_loader(folder: Path) -> None:
    assert isinstance(data.make_dataset("skimage", split="heldout", size=32), data.PhotoCrops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(data.make_dataset(folder, split=None, size=32), data.ImageFolder)
    with pytest.raises(ValueError, match="split"):
        data.make_dataset("skimage", split=None)


# ---- ColourAugment ---------------------------------------------------------------------------------------------------


def test_colour_augment_permutes_channels_and_negates_from_its_own_stream(train: data.PhotoCrops) -> None:
    """Each item is the wrapped crop with its channels in the drawn order, negated when drawn; the crops
    themselves (position, flip) are those of the dataset without the wrapper."""
    aug = data.ColourAugment(train, seed=3)
    seen_orders, seen_negated = set(), set()
    for i in range(len(train)):
        order, negated = aug.remap(i)
        want = train[i][list(order)]
        torch.testing.assert_close(aug[i], -want if negated else want, rtol=0, atol=0)
        seen_orders.add(order)
        seen_negated.add(negated)
    assert len(seen_orders) == 6 and seen_negated == {False, True}  # 64 draws: every order, both signs
    assert sorted(aug.remap(0)[0]) == [0, 1, 2]


def test_colour_augment_is_deterministic_per_seed_and_epoch_and_forwards_set_epoch() -> None:
    def items(seed: int, epoch: int) -> torch.Tensor:
        aug = data.ColourAugment(data.PhotoCrops("train", size=16, length=12, seed=0), seed=seed)
        aug.set_epoch(epoch)
        return torch.stack([aug[i] for i in range(len(aug))])

    base = data.PhotoCrops("train", size=16, length=12, seed=0)
    base.set_epoch(1)
    torch.testing.assert_close(items(0, 1), items(0, 1), rtol=0, atol=0)
    assert not torch.equal(items(0, 1), items(1, 1))  # another remap seed
    assert not torch.equal(items(0, 0), items(0, 1))  # the epoch reaches the crops and the remap
    # up to the remap, epoch 1's items are the wrapped dataset's epoch-1 crops
    aug = data.ColourAugment(data.PhotoCrops("train", size=16, length=12, seed=0), seed=0)
    aug.set_epoch(1)
    for i in range(12):
        order, negated = aug.remap(i)
        torch.testing.assert_close(aug[i], (-1 if negated else 1) * base[i][list(order)], rtol=0, atol=0)


def test_colour_augment_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        data.ColourAugment([], seed=-1)
    aug = data.ColourAugment([torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match=r"base\[0\]: expected a \(3, H, W\) tensor, got shape \(1, 4, 4\)"):
        aug[0]
