"""Class-folders loader on tiny Pillow images written into ``tmp_path``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalandscape.data.folders import (
    IMAGE_SIZE_SETTING,
    describe_class_folders,
    load_class_folders,
)
from metalandscape.data.tasks import ClassImages, DataError, ImageClassificationSource

HEIGHT, WIDTH = 6, 8


def pixels(seed: int, rgb: bool, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """A distinct random uint8 image ``(H, W)`` or ``(H, W, 3)``."""
    shape = (*size, 3) if rgb else size
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_dataset(
    root: Path,
    classes: dict[str, dict[str, int]],
    *,
    rgb: bool = False,
    suffix: str = ".png",
) -> dict[str, dict[str, list[np.ndarray]]]:
    """``root/<split>/<class>/NN.png`` with ``classes[split][class]`` images each; returns the
    pixels written per split and class, in file-name order."""
    written: dict[str, dict[str, list[np.ndarray]]] = {}
    seed = 0
    for split, counts in classes.items():
        written[split] = {}
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            written[split][name] = []
            for number in range(count):
                seed += 1
                array = pixels(seed, rgb)
                Image.fromarray(array).save(folder / f"{number:02d}{suffix}")
                written[split][name].append(array)
    return written


def expected_array(per_class: dict[str, list[np.ndarray]], samples: int) -> np.ndarray:
    return np.stack([np.stack(per_class[name][:samples]) for name in sorted(per_class)])


THREE_SPLITS = {
    "train": {"b_cat": 3, "a_dog": 3, "c_emu": 3},
    "val": {"x": 3, "y": 3},
    "test": {"p": 3, "q": 3},
}


def assert_one_line_naming(error: pytest.ExceptionInfo[DataError], *names: object) -> str:
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message
    return message


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_exact_round_trip(tmp_path: Path, rgb: bool) -> None:
    written = write_dataset(tmp_path, THREE_SPLITS, rgb=rgb)
    splits = load_class_folders(tmp_path)
    assert list(splits) == ["train", "val", "test"]
    for split, data in splits.items():
        assert isinstance(data, ClassImages)
        assert data.images.dtype == np.uint8
        assert data.class_names == tuple(sorted(THREE_SPLITS[split]))
        assert data.images.shape == (
            len(data.class_names),
            3,
            HEIGHT,
            WIDTH,
            *((3,) if rgb else ()),
        )
        np.testing.assert_array_equal(data.images, expected_array(written[split], 3))


def test_explicit_channels(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, {"train": {"a": 2, "b": 2}}, rgb=True)
    grey = load_class_folders(tmp_path, channels="grey")["train"].images
    assert grey.shape == (2, 2, HEIGHT, WIDTH)
    source = written["train"]["a"][0]
    np.testing.assert_array_equal(grey[0, 0], np.asarray(Image.fromarray(source).convert("L")))
    written = write_dataset(tmp_path / "grey", {"train": {"a": 2, "b": 2}})
    rgb = load_class_folders(tmp_path / "grey", channels="rgb")["train"].images
    assert rgb.shape == (2, 2, HEIGHT, WIDTH, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[0, 0, ..., channel], written["train"]["a"][0])


def test_auto_is_rgb_when_any_image_has_colour(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"c": 2, "d": 2}})
    Image.fromarray(pixels(99, rgb=True)).save(tmp_path / "test" / "d" / "01.png")
    splits = load_class_folders(tmp_path)
    assert splits["train"].images.shape == (2, 2, HEIGHT, WIDTH, 3)
    assert splits["test"].images.shape == (2, 2, HEIGHT, WIDTH, 3)


def test_binary_and_sixteen_bit_grey_are_scaled_not_clipped(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    binary = pixels(1, rgb=False) > 127
    Image.fromarray(binary).save(folder / "0.png")
    deep = pixels(2, rgb=False).astype(np.uint16) * 257
    Image.fromarray(deep).save(folder / "1.png")
    with Image.open(folder / "1.png") as image:
        assert image.mode.startswith("I")
    images = load_class_folders(tmp_path)["train"].images
    assert images.shape == (1, 2, HEIGHT, WIDTH)
    np.testing.assert_array_equal(images[0, 0], binary.astype(np.uint8) * 255)
    np.testing.assert_array_equal(images[0, 1], pixels(2, rgb=False))


@pytest.mark.parametrize("resize", ["lanczos", "nearest"])
def test_image_size_resizes_any_sizes(tmp_path: Path, resize: str) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"c": 2, "d": 2}}, rgb=True)
    Image.fromarray(pixels(7, rgb=True, size=(10, 5))).save(tmp_path / "val" / "c" / "00.png")
    splits = load_class_folders(tmp_path, image_size=(4, 3), resize=resize)
    assert splits["train"].images.shape == (2, 2, 4, 3, 3)
    assert splits["val"].images.shape == (2, 2, 4, 3, 3)
    source = ImageClassificationSource(splits, n_way=2, k_shot=1, query=1)
    assert source.input_shape == (3, 4, 3)


def test_image_size_equal_to_the_images_is_exact(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, {"train": {"a": 2, "b": 2}})
    images = load_class_folders(tmp_path, image_size=[HEIGHT, WIDTH])["train"].images
    np.testing.assert_array_equal(images, expected_array(written["train"], 2))


def test_jpeg_and_case_insensitive_suffixes(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}}, rgb=True, suffix=".JPG")
    images = load_class_folders(tmp_path)["train"].images
    assert images.shape == (2, 2, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("alias", ["validation", "valid"])
def test_val_aliases(tmp_path: Path, alias: str) -> None:
    written = write_dataset(tmp_path, {"train": {"a": 2, "b": 2}, alias: {"c": 2, "d": 2}})
    splits = load_class_folders(tmp_path)
    assert list(splits) == ["train", "val"]
    np.testing.assert_array_equal(splits["val"].images, expected_array(written[alias], 2))


def test_two_val_folders_are_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 1}, "val": {"b": 1}, "validation": {"c": 1}})
    with pytest.raises(DataError) as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, tmp_path / "val", tmp_path / "validation")


def test_missing_val_and_test_are_absent(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"c": 2, "d": 2}})
    assert list(load_class_folders(tmp_path)) == ["train", "test"]
    only_train = tmp_path / "only"
    write_dataset(only_train, {"train": {"a": 2, "b": 2}})
    assert list(load_class_folders(only_train)) == ["train"]


def test_unequal_classes_are_cut_to_the_smallest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts = {"train": {"a": 4, "b": 2, "c": 3}, "test": {"d": 1, "e": 5}}
    written = write_dataset(tmp_path, counts)
    # "0.png" sorts before "00.png" ('.' < '0'), so it is kept and 01.png of class a is not
    early = pixels(123, rgb=False)
    Image.fromarray(early).save(tmp_path / "train" / "a" / "0.png")
    written["train"]["a"].insert(0, early)
    with caplog.at_level(logging.WARNING, logger="metalandscape.data.folders"):
        splits = load_class_folders(tmp_path)
    assert splits["train"].images.shape == (3, 2, HEIGHT, WIDTH)
    assert splits["test"].images.shape == (2, 1, HEIGHT, WIDTH)
    np.testing.assert_array_equal(splits["train"].images, expected_array(written["train"], 2))
    np.testing.assert_array_equal(splits["test"].images, expected_array(written["test"], 1))
    assert "using the first 2" in caplog.text and "using the first 1" in caplog.text


def test_unreadable_images_beyond_the_smallest_count_are_not_opened(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 3, "b": 2}})
    (tmp_path / "train" / "a" / "zz.png").write_bytes(b"not read: cut by the smallest count")
    assert load_class_folders(tmp_path)["train"].images.shape == (2, 2, HEIGHT, WIDTH)


def test_loading_is_deterministic(tmp_path: Path) -> None:
    write_dataset(tmp_path, THREE_SPLITS, rgb=True)
    first, second = load_class_folders(tmp_path), load_class_folders(tmp_path)
    for split in first:
        assert first[split].class_names == second[split].class_names
        assert first[split].images.tobytes() == second[split].images.tobytes()


def test_ignored_entries(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, {"train": {"a": 2, "b": 2}})
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "extra").mkdir()
    (tmp_path / "train" / "labels.csv").write_text("a,b")
    (tmp_path / "train" / ".cache").mkdir()
    (tmp_path / "train" / "__MACOSX").mkdir()
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a" / "._00.png").write_bytes(b"AppleDouble metadata")
    (tmp_path / "train" / "a" / "nested").mkdir()
    splits = load_class_folders(tmp_path)
    assert splits["train"].class_names == ("a", "b")
    np.testing.assert_array_equal(splits["train"].images, expected_array(written["train"], 2))


# --- refusals ---------------------------------------------------------------------------------


def test_describe_class_folders_is_one_line() -> None:
    text = describe_class_folders()
    assert "\n" not in text
    for phrase in ("train/<class>/<image>", "validation/", "test/", ".png", ".webp"):
        assert phrase in text


def test_missing_path_and_file_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as error:
        load_class_folders(tmp_path / "nowhere")
    message = assert_one_line_naming(error, tmp_path / "nowhere")
    assert describe_class_folders() in message
    file = tmp_path / "data.zip"
    file.write_bytes(b"zip")
    with pytest.raises(DataError, match="not a folder") as error:
        load_class_folders(file)
    assert_one_line_naming(error, file)


def test_no_train_folder(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"Train": {"a": 1}, "test": {"b": 1}})
    with pytest.raises(DataError, match="no train/ split folder") as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, tmp_path, "Train, test", describe_class_folders())


def test_pointing_at_a_split_folder(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 1, "b": 1}})
    with pytest.raises(DataError, match="looks like a split folder") as error:
        load_class_folders(tmp_path / "train")
    assert_one_line_naming(error, f"point at {tmp_path}")


def test_split_without_class_folders(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 1, "b": 1}})
    (tmp_path / "test").mkdir()
    Image.fromarray(pixels(1, rgb=False)).save(tmp_path / "test" / "loose.png")
    with pytest.raises(DataError, match="no class folders") as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, tmp_path / "test")


def test_empty_class_folder(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 1, "b": 1}})
    empty = tmp_path / "train" / "c"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images") as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, empty, "remove the folder")


@pytest.mark.parametrize("suffix", [".png", ".JPEG", ".webp", ".gif", ".bmp"])
def test_file_that_is_not_an_image(tmp_path: Path, suffix: str) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}})
    (tmp_path / "train" / "b" / "00.png").unlink()
    bad = tmp_path / "train" / "b" / f"00{suffix}"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="cannot read image") as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, bad, "delete it")


def test_truncated_image(tmp_path: Path) -> None:
    """The header opens (the scan passes); decoding the cut image data fails."""
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}})
    bad = tmp_path / "train" / "a" / "01.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match="cannot read image") as error:
        load_class_folders(tmp_path)
    assert_one_line_naming(error, bad, "delete it")


def test_mixed_sizes_without_image_size(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"c": 2, "d": 2}})
    odd = tmp_path / "test" / "d" / "01.png"
    Image.fromarray(pixels(5, rgb=False, size=(7, 8))).save(odd)
    with pytest.raises(DataError, match="differ in size") as error:
        load_class_folders(tmp_path)
    message = assert_one_line_naming(
        error, tmp_path / "train" / "a" / "00.png", odd, f"set image_size ({IMAGE_SIZE_SETTING})"
    )
    assert "6x8" in message and "7x8" in message
    assert load_class_folders(tmp_path, image_size=(6, 8))["test"].images.shape == (2, 2, 6, 8)


@pytest.mark.parametrize(
    ("settings", "phrase"),
    [
        ({"channels": "gray"}, "channels must be"),
        ({"channels": "RGB"}, "channels must be"),
        ({"resize": "bicubic"}, "resize must be"),
        ({"image_size": 28}, "write [28, 28]"),
        ({"image_size": (28,)}, "image_size must be"),
        ({"image_size": (28, 0)}, "image_size must be"),
        ({"image_size": (28, 2.5)}, "image_size must be"),
        ({"image_size": (True, 3)}, "image_size must be"),
        ({"image_size": "28x28"}, "image_size must be"),
    ],
)
def test_invalid_settings(tmp_path: Path, settings: dict, phrase: str) -> None:
    write_dataset(tmp_path, {"train": {"a": 1, "b": 1}})
    with pytest.raises(DataError) as error:
        load_class_folders(tmp_path, **settings)
    assert_one_line_naming(error, phrase)
