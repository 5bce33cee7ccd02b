"""Omniglot loader on tiny fake copies of every accepted layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import (
    write_omniglot_finn,
    write_omniglot_original,
    write_omniglot_torchvision,
)
from PIL import Image

from metalandscape.data.omniglot import OMNIGLOT_LAYOUTS, describe_layouts, load_omniglot
from metalandscape.data.splits import finn_split
from metalandscape.data.tasks import (
    SPLITS,
    ClassImages,
    DataError,
    ImageClassificationSource,
    TaskSampler,
)

ALPHABETS, CHARACTERS, DRAWERS = 3, 4, 20
CLASSES = ALPHABETS * CHARACTERS
LAYOUTS = ("original", "zipped", "torchvision", "torchvision_inner", "finn")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("omniglot")
    torchvision = write_omniglot_torchvision(base / "torchvision")
    return {
        "original": write_omniglot_original(base / "original"),
        "zipped": write_omniglot_original(base / "zipped", zipped=True),
        "torchvision": torchvision,
        "torchvision_inner": torchvision / "omniglot-py",
        "finn": write_omniglot_finn(base / "finn"),
    }


@pytest.fixture(scope="module")
def loaded(roots: dict[str, Path]) -> dict[str, dict[str, ClassImages]]:
    return {layout: load_omniglot(root, proportional_split=True) for layout, root in roots.items()}


@pytest.fixture(scope="module")
def train(loaded: dict[str, dict[str, ClassImages]]) -> ClassImages:
    return loaded["original"]["train"]


def small_copy(root: Path) -> Path:
    return write_omniglot_original(root, alphabets=2, characters=2, drawers=3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_shapes_dtype_and_split(
    layout: str, loaded: dict[str, dict[str, ClassImages]]
) -> None:
    splits = loaded[layout]
    assert set(splits) == set(SPLITS)
    names = [name for split in SPLITS for name in splits[split].class_names]
    assert len(names) == len(set(names)) == CLASSES
    assert all(re.fullmatch(r"[^/]+/character\d\d", name) for name in names)
    assert "Japanese_(hiragana)/character01" in names
    expected = finn_split(names)
    for split in SPLITS:
        data = splits[split]
        assert list(data.class_names) == expected[split]
        assert data.images.dtype == np.uint8
        assert data.images.shape == (len(expected[split]), DRAWERS, 28, 28)
    assert [len(expected[s]) for s in SPLITS] == [8, 1, 3]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strokes_are_high_and_background_zero(
    layout: str, loaded: dict[str, dict[str, ClassImages]]
) -> None:
    images = np.concatenate([loaded[layout][split].images for split in SPLITS], axis=0)
    assert (images[..., 0, 0] == 0).all()  # corner: paper
    border = np.concatenate([images[..., [0, -1], :], images[..., [0, -1]].swapaxes(-1, -2)], -2)
    assert border.max() <= 8  # at most faint Lanczos ringing
    assert (images == 0).mean() > 0.5
    assert (images.max(axis=(2, 3)) >= 200).all()  # every drawing has strokes
    assert (images > 127).mean() < 0.3  # mostly background


def test_original_zip_and_torchvision_layouts_agree(
    loaded: dict[str, dict[str, ClassImages]],
) -> None:
    reference = loaded["original"]
    for layout in ("zipped", "torchvision", "torchvision_inner"):
        for split in SPLITS:
            assert loaded[layout][split].class_names == reference[split].class_names
            np.testing.assert_array_equal(loaded[layout][split].images, reference[split].images)


def test_nearest_reproduces_finn_preprocessing(
    roots: dict[str, Path], loaded: dict[str, dict[str, ClassImages]]
) -> None:
    nearest = load_omniglot(roots["original"], resize="nearest", proportional_split=True)
    for split in SPLITS:
        np.testing.assert_array_equal(nearest[split].images, loaded["finn"][split].images)
    # Finn's script: Pillow "Lanczos" on the mode '1' PNG, which is nearest neighbour.
    key = nearest["train"].class_names[0]
    first_png = sorted((roots["original"] / "images_background" / key).glob("*.png"))
    if not first_png:
        first_png = sorted((roots["original"] / "images_evaluation" / key).glob("*.png"))
    with Image.open(first_png[0]) as image:
        assert image.mode == "1" and image.size == (105, 105)
        finn = 255 - np.asarray(image.resize((28, 28), Image.Resampling.LANCZOS).convert("L"))
    np.testing.assert_array_equal(nearest["train"].images[0, 0], finn)
    assert set(np.unique(nearest["train"].images)) == {0, 255}


def test_lanczos_gives_grey_antialiased_strokes(train: ClassImages) -> None:
    assert len(np.unique(train.images)) > 50


def test_loading_is_deterministic(roots: dict[str, Path], train: ClassImages) -> None:
    again = load_omniglot(roots["original"], proportional_split=True)
    np.testing.assert_array_equal(again["train"].images, train.images)
    assert again["train"].class_names == train.class_names


def test_image_size(roots: dict[str, Path]) -> None:
    splits = load_omniglot(roots["zipped"], image_size=20, proportional_split=True)
    assert splits["test"].images.shape == (3, DRAWERS, 20, 20)


def stored_images(data: ClassImages) -> dict[bytes, int]:
    """Every stored image of a split, as bytes, mapped to its class index."""
    return {image.tobytes(): c for c, images in enumerate(data.images) for image in images}


def task_images(task_inputs) -> np.ndarray:
    """Float ``(N, 1, H, W)`` task inputs back to uint8 ``(N, H, W)``."""
    return np.rint(task_inputs.numpy()[:, 0] * 255).astype(np.uint8)


def rotation_of(image: np.ndarray, stored: dict[bytes, int]) -> tuple[int, int]:
    """``(class, k)`` with ``image == np.rot90(stored image of class, k)``."""
    matches = [
        (stored[np.ascontiguousarray(np.rot90(image, -k)).tobytes()], k)
        for k in range(4)
        if np.ascontiguousarray(np.rot90(image, -k)).tobytes() in stored
    ]
    assert len(matches) == 1, "image is not exactly one rotation of one stored image"
    return matches[0]


def sampler(train: ClassImages, rotation: str, n_way: int = 3) -> TaskSampler:
    source = ImageClassificationSource(
        {"train": train}, n_way=n_way, k_shot=2, query=3, rotation=rotation
    )
    return TaskSampler(source, seed=0)


def test_rotation_off_uses_stored_images(train: ClassImages) -> None:
    stored = stored_images(train)
    for index in range(5):
        task = sampler(train, "off").task("train", index)
        for images in (task.support_inputs, task.target_inputs):
            assert all(image.tobytes() in stored for image in task_images(images))


def test_rotation_per_task_rotates_each_class_by_one_multiple_of_90(train: ClassImages) -> None:
    stored = stored_images(train)
    seen_rotations = set()
    for index in range(10):
        task = sampler(train, "per_task").task("train", index)
        images = np.concatenate([task_images(task.support_inputs), task_images(task.target_inputs)])
        labels = np.concatenate([task.support_labels.numpy(), task.target_labels.numpy()])
        for label in range(3):
            found = {rotation_of(image, stored) for image in images[labels == label]}
            assert len(found) == 1  # one class, one rotation per task
            seen_rotations |= {k for _, k in found}
    assert seen_rotations == {0, 1, 2, 3}


def test_rotation_expand_has_four_times_the_classes(train: ClassImages) -> None:
    with pytest.raises(DataError, match="fewer than n_way"):
        sampler(train, "off", n_way=len(train.class_names) + 1)
    expand = sampler(train, "expand", n_way=len(train.class_names) + 1)
    stored = stored_images(train)
    rotated_classes = set()
    for index in range(10):
        task = expand.task("train", index)
        labels = task.support_labels.numpy()
        for label in range(expand.source.n_way):
            found = {
                rotation_of(image, stored)
                for image in task_images(task.support_inputs)[labels == label]
            }
            assert len(found) == 1
            rotated_classes |= found
    assert len(rotated_classes) > len(train.class_names)


def assert_lists_layouts(error: pytest.ExceptionInfo[DataError], path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert describe_layouts() in message
    assert len(OMNIGLOT_LAYOUTS) == 3
    for phrase in ("images_background", "images_evaluation.zip", "omniglot-py", "Finn"):
        assert phrase in message


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_omniglot(missing, proportional_split=True)
    assert_lists_layouts(error, missing)


def test_folder_without_omniglot(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not omniglot")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(DataError) as error:
        load_omniglot(tmp_path, proportional_split=True)
    assert_lists_layouts(error, tmp_path)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    file = tmp_path / "omniglot.tar"
    file.write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_omniglot(file, proportional_split=True)
    assert_lists_layouts(error, file)


def test_one_half_only(tmp_path: Path) -> None:
    root = small_copy(tmp_path)
    (root / "images_evaluation").rename(tmp_path.parent / f"{tmp_path.name}_moved")
    with pytest.raises(DataError, match="lacks images_evaluation") as error:
        load_omniglot(root, proportional_split=True)
    assert_lists_layouts(error, root)
    with pytest.raises(DataError, match="one half"):
        load_omniglot(root / "images_background", proportional_split=True)


def test_character_with_a_missing_drawing(tmp_path: Path) -> None:
    root = small_copy(tmp_path)
    folder = next((root / "images_evaluation").glob("*/character02"))
    next(folder.glob("*.png")).unlink()
    with pytest.raises(DataError, match="same count") as error:
        load_omniglot(root, proportional_split=True)
    assert str(folder) in str(error.value)


def test_corrupt_png(tmp_path: Path) -> None:
    root = small_copy(tmp_path)
    png = next((root / "images_background").glob("*/character01/*.png"))
    png.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read Omniglot image") as error:
        load_omniglot(root, proportional_split=True)
    assert png.name in str(error.value)


def test_bad_arguments(roots: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="resize"):
        load_omniglot(roots["finn"], resize="bicubic", proportional_split=True)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="image_size"):
        load_omniglot(roots["finn"], image_size=0, proportional_split=True)
