"""MiniImagenet loader on tiny fake copies of every accepted layout."""

from __future__ import annotations

import os
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import (
    miniimagenet_arrays,
    miniimagenet_wnids,
    write_miniimagenet_csv,
    write_miniimagenet_finn,
    write_miniimagenet_pickle,
    write_miniimagenet_torchmeta,
)
from PIL import Image

from metalandscape.data.miniimagenet import (
    MINIIMAGENET_LAYOUTS,
    describe_layouts,
    load_miniimagenet,
)
from metalandscape.data.tasks import (
    SPLITS,
    ClassImages,
    DataError,
    ImageClassificationSource,
    TaskSampler,
    unequal_counts,
)

CLASSES_PER_SPLIT = (5, 3, 3)
IMAGES = 6
LAYOUTS = ("csv", "finn", "pickle", "pickle_contiguous", "torchmeta", "torchmeta_inner")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("miniimagenet")
    torchmeta = write_miniimagenet_torchmeta(base / "torchmeta")
    return {
        "csv": write_miniimagenet_csv(base / "csv"),
        "finn": write_miniimagenet_finn(base / "finn"),
        "pickle": write_miniimagenet_pickle(base / "pickle"),
        "pickle_contiguous": write_miniimagenet_pickle(
            base / "pickle_contiguous", val_name="validation", interleave=False
        ),
        "torchmeta": torchmeta,
        "torchmeta_inner": torchmeta / "miniimagenet",
    }


@pytest.fixture(scope="module")
def loaded(roots: dict[str, Path]) -> dict[str, dict[str, ClassImages]]:
    return {layout: load_miniimagenet(root) for layout, root in roots.items()}


@pytest.fixture(scope="module")
def source_arrays() -> dict[str, np.ndarray]:
    """The fake images per split as ``(classes, samples, 84, 84, 3)``, classes sorted."""
    arrays = miniimagenet_arrays(CLASSES_PER_SPLIT, IMAGES)
    return {split: np.stack([arrays[split][w] for w in sorted(arrays[split])]) for split in SPLITS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_shapes_dtype_and_split(
    layout: str, loaded: dict[str, dict[str, ClassImages]]
) -> None:
    wnids = miniimagenet_wnids(CLASSES_PER_SPLIT)
    splits = loaded[layout]
    assert set(splits) == set(SPLITS)
    for split, classes in zip(SPLITS, CLASSES_PER_SPLIT, strict=True):
        data = splits[split]
        assert data.images.dtype == np.uint8
        assert data.images.shape == (classes, IMAGES, 84, 84, 3)
        assert data.class_names == tuple(sorted(wnids[split]))
        assert data.images.std() > 10  # real content, not a blank array
    names = [name for split in SPLITS for name in splits[split].class_names]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("layout", ("pickle", "pickle_contiguous", "torchmeta", "torchmeta_inner"))
def test_array_layouts_are_exact(
    layout: str,
    loaded: dict[str, dict[str, ClassImages]],
    source_arrays: dict[str, np.ndarray],
) -> None:
    for split in SPLITS:
        np.testing.assert_array_equal(loaded[layout][split].images, source_arrays[split])


def assert_close_after_jpeg(loaded: np.ndarray, expected: np.ndarray) -> None:
    """Per-image mean colours agree; pixels differ by JPEG noise, far less than across images."""
    colour_error = np.abs(loaded.mean(axis=(2, 3)) - expected.mean(axis=(2, 3)))
    assert colour_error.max() < 4
    pixel_error = np.abs(loaded.astype(float) - expected).mean()
    other_image_error = np.abs(loaded.astype(float) - np.roll(expected, 1, axis=0)).mean()
    assert pixel_error < 12 and pixel_error < other_image_error / 3


def lanczos_84(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((84, 84), Image.Resampling.LANCZOS))


def test_jpeg_layouts_are_close_to_the_source(
    loaded: dict[str, dict[str, ClassImages]], source_arrays: dict[str, np.ndarray]
) -> None:
    for split in SPLITS:
        assert_close_after_jpeg(loaded["finn"][split].images, source_arrays[split])
    # CSV images are 100×90 JPEGs drawn at that size: compare to Pillow's own Lanczos resize.
    csv_source = miniimagenet_arrays(CLASSES_PER_SPLIT, IMAGES, size=(100, 90))
    for split in SPLITS:
        classes = sorted(csv_source[split])
        expected = np.stack([[lanczos_84(i) for i in csv_source[split][w]] for w in classes])
        assert_close_after_jpeg(loaded["csv"][split].images, expected)


def test_loading_is_deterministic(
    roots: dict[str, Path], loaded: dict[str, dict[str, ClassImages]]
) -> None:
    for layout in ("csv", "pickle"):
        again = load_miniimagenet(roots[layout])
        for split in SPLITS:
            np.testing.assert_array_equal(again[split].images, loaded[layout][split].images)
            assert again[split].class_names == loaded[layout][split].class_names


@pytest.mark.parametrize("layout", ("csv", "torchmeta"))
def test_image_size(layout: str, roots: dict[str, Path]) -> None:
    splits = load_miniimagenet(roots[layout], image_size=32)
    assert splits["val"].images.shape == (3, IMAGES, 32, 32, 3)
    assert splits["val"].images.dtype == np.uint8


def test_torchmeta_preferred_over_pickles_in_the_same_folder(tmp_path: Path) -> None:
    root = write_miniimagenet_torchmeta(tmp_path)
    (root / "miniimagenet" / "mini-imagenet-cache-train.pkl").write_bytes(b"never read")
    assert load_miniimagenet(root)["train"].images.shape[0] == CLASSES_PER_SPLIT[0]


def stored_images(data: ClassImages) -> set[bytes]:
    return {image.tobytes() for images in data.images for image in images}


def task_images(task_inputs) -> np.ndarray:
    """Float ``(N, 3, H, W)`` task inputs back to uint8 ``(N, H, W, 3)``."""
    return np.rint(task_inputs.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def test_rotation_through_task_sampler(loaded: dict[str, dict[str, ClassImages]]) -> None:
    train = loaded["pickle"]["train"]
    stored = stored_images(train)

    def sampler(rotation: str) -> TaskSampler:
        source = ImageClassificationSource(
            {"train": train}, n_way=5, k_shot=1, query=2, rotation=rotation
        )
        return TaskSampler(source, seed=3)

    off = sampler("off").task("train", 0)
    assert off.support_inputs.shape == (5, 3, 84, 84)
    assert all(image.tobytes() in stored for image in task_images(off.support_inputs))
    rotations_seen = set()
    for index in range(6):
        task = sampler("per_task").task("train", index)
        for image in task_images(task.support_inputs):
            ks = [
                k for k in range(4) if np.ascontiguousarray(np.rot90(image, -k)).tobytes() in stored
            ]
            assert len(ks) == 1
            rotations_seen.add(ks[0])
    assert rotations_seen == {0, 1, 2, 3}
    with pytest.raises(DataError, match="fewer than n_way"):
        ImageClassificationSource({"train": train}, n_way=6, k_shot=1, query=1)
    expand = ImageClassificationSource(
        {"train": train}, n_way=4 * len(train.class_names), k_shot=1, query=1, rotation="expand"
    )
    task = TaskSampler(expand, seed=0).task("train", 0)
    assert task.support_inputs.shape[0] == 20


def assert_lists_layouts(error: pytest.ExceptionInfo[DataError], path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert describe_layouts() in message
    assert len(MINIIMAGENET_LAYOUTS) == 4
    for phrase in ("_data.hdf5", "mini-imagenet-cache", "<wnid>/*.jpg", "images/"):
        assert phrase in message


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_miniimagenet(tmp_path / "nowhere")
    assert_lists_layouts(error, tmp_path / "nowhere")


def test_folder_without_miniimagenet(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no MiniImagenet") as error:
        load_miniimagenet(tmp_path)
    assert_lists_layouts(error, tmp_path)


def test_incomplete_layout(tmp_path: Path) -> None:
    root = write_miniimagenet_csv(tmp_path, classes_per_split=(2, 2, 2), images=2)
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match=r"incomplete MiniImagenet.*without test\.csv") as error:
        load_miniimagenet(root)
    assert_lists_layouts(error, root)


def test_unequal_image_counts(tmp_path: Path) -> None:
    root = write_miniimagenet_finn(tmp_path, classes_per_split=(3, 2, 2), images=3)
    class_folder = sorted((root / "val").iterdir())[1]
    next(class_folder.iterdir()).unlink()
    with pytest.raises(DataError, match="same count") as error:
        load_miniimagenet(root)
    assert str(class_folder) in str(error.value)


def test_unequal_counts_names_the_most_common_count_and_the_others() -> None:
    assert unequal_counts([20, 20, 19, 20, 18]) == (20, [2, 4], " (and 1 more)")
    assert unequal_counts([3, 3]) == (3, [], "")
    assert unequal_counts([2, 5]) == (2, [1], "")  # a tie: the count seen first


def test_csv_with_a_missing_image(tmp_path: Path) -> None:
    root = write_miniimagenet_csv(tmp_path, classes_per_split=(2, 2, 2), images=2)
    missing = sorted((root / "images").iterdir())[0]
    missing.unlink()
    with pytest.raises(DataError, match=missing.name):
        load_miniimagenet(root)


def test_csv_with_a_bad_header(tmp_path: Path) -> None:
    root = write_miniimagenet_csv(tmp_path, classes_per_split=(2, 2, 2), images=2)
    text = (root / "val.csv").read_text().replace("filename,label", "file,class")
    (root / "val.csv").write_text(text)
    with pytest.raises(DataError, match="filename,label"):
        load_miniimagenet(root)


def test_class_in_two_splits(tmp_path: Path) -> None:
    root = write_miniimagenet_finn(tmp_path, classes_per_split=(2, 2, 2), images=2)
    duplicate = sorted((root / "train").iterdir())[0]
    shutil.copytree(duplicate, root / "test" / duplicate.name)
    shutil.rmtree(sorted((root / "test").iterdir())[-1])
    with pytest.raises(DataError, match=f"class {duplicate.name} is in train and test"):
        load_miniimagenet(root)


class _RunsShellCommand:
    """Unpickling this runs ``touch marker`` through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    root = write_miniimagenet_pickle(tmp_path, classes_per_split=(2, 2, 2), images=2)
    marker = tmp_path / "pwned"
    payload = {"image_data": _RunsShellCommand(marker), "class_dict": {"n01": [0]}}
    data = pickle.dumps(payload, protocol=4)
    assert any(arg == "system" for _, arg, _ in pickletools.genops(data))
    (root / "mini-imagenet-cache-train.pkl").write_bytes(data)
    with pytest.raises(DataError, match=r"refusing to unpickle \w+\.system from .*train\.pkl"):
        load_miniimagenet(root)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"image_data": eval, "class_dict": {}},  # a builtin function
        {"image_data": Path("x"), "class_dict": {}},  # an arbitrary class
    ],
)
def test_pickle_with_other_globals_is_refused(tmp_path: Path, payload: dict) -> None:
    root = write_miniimagenet_pickle(tmp_path, classes_per_split=(2, 2, 2), images=2)
    (root / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_miniimagenet(root)


def test_protocol_2_and_5_pickles_load(tmp_path: Path) -> None:
    root = write_miniimagenet_pickle(tmp_path, classes_per_split=(2, 2, 2), images=2)
    for split, protocol in (("train", 2), ("test", 5)):
        file = root / f"mini-imagenet-cache-{split}.pkl"
        with file.open("rb") as stream:
            content = pickle.load(stream)  # our own fixture: trusted
        file.write_bytes(pickle.dumps(content, protocol=protocol))
    splits = load_miniimagenet(root)
    assert splits["train"].images.shape == (2, 2, 84, 84, 3)


def test_corrupt_and_malformed_pickles(tmp_path: Path) -> None:
    root = write_miniimagenet_pickle(tmp_path, classes_per_split=(2, 2, 2), images=2)
    file = root / "mini-imagenet-cache-val.pkl"
    file.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="cannot read pickle"):
        load_miniimagenet(root)
    file.write_bytes(pickle.dumps({"images": np.zeros(3)}, protocol=4))
    with pytest.raises(DataError, match="not a MiniImagenet cache"):
        load_miniimagenet(root)
    bad_index = {"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"n1": [0, 5]}}
    file.write_bytes(pickle.dumps(bad_index, protocol=4))
    with pytest.raises(DataError, match="outside image_data"):
        load_miniimagenet(root)


def test_csv_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheet programs write UTF-8 CSVs with a byte-order mark before the header."""
    plain = write_miniimagenet_csv(tmp_path / "plain", classes_per_split=(2, 2, 2), images=2)
    marked = write_miniimagenet_csv(tmp_path / "marked", classes_per_split=(2, 2, 2), images=2)
    for split in ("train", "val", "test"):
        csv_file = marked / f"{split}.csv"
        csv_file.write_bytes(b"\xef\xbb\xbf" + csv_file.read_bytes())
    expected, got = load_miniimagenet(plain), load_miniimagenet(marked)
    for split in ("train", "val", "test"):
        assert got[split].class_names == expected[split].class_names
        np.testing.assert_array_equal(got[split].images, expected[split].images)
