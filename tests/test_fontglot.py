"""Fontglot, the font-made Omniglot surrogate: file layout, statistics, determinism, checks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metalandscape.data import fontglot
from metalandscape.data.fontglot import build_fontglot, describe_fontglot, load_fontglot
from metalandscape.data.splits import finn_split
from metalandscape.data.tasks import DataError, ImageClassificationSource, TaskSampler

CLASSES = 50
SAMPLES = 20


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fontglot") / "fontglot.npz"
    return build_fontglot(out, seed=0, classes=CLASSES, workers=2, progress=False)


@pytest.fixture(scope="module")
def arrays(built: Path) -> dict[str, np.ndarray]:
    with np.load(built, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _rewrite(source: dict[str, np.ndarray], path: Path, **changes: np.ndarray | None) -> Path:
    contents = {**source, **changes}
    np.savez_compressed(path, **{k: v for k, v in contents.items() if v is not None})
    return path


def test_file_layout(built: Path, arrays: dict[str, np.ndarray]) -> None:
    assert set(arrays) == set(fontglot.REQUIRED_KEYS)
    assert all(array.dtype.kind != "O" for array in arrays.values())
    images = arrays["images"]
    assert images.shape == (CLASSES, SAMPLES, 28, 28)
    assert images.dtype == np.uint8
    assert arrays["code_points"].shape == (CLASSES,)
    assert len(set(arrays["code_points"].tolist())) == CLASSES
    assert arrays["alphabet_ids"].min() >= 0
    assert arrays["alphabet_ids"].max() < len(arrays["alphabet_names"])
    assert arrays["alphabet_names"].dtype.kind == "U"
    assert str(arrays["generator_version"]) == fontglot.GENERATOR_VERSION
    assert int(arrays["seed"]) == 0
    versions = json.loads(str(arrays["library_versions"]))
    assert {"numpy", "matplotlib", "fonttools", "scipy", "pillow"} <= set(versions)
    assert not [p for p in built.parent.iterdir() if p.name.endswith(".tmp")]


def test_pixels_are_strokes_on_background(arrays: dict[str, np.ndarray]) -> None:
    images = arrays["images"]
    ink = (images >= fontglot.INK_THRESHOLD).sum(axis=(2, 3))
    assert ink.min() >= fontglot.MIN_SAMPLE_INK_PIXELS  # no blank sample
    assert images.max() == 255
    background_share = (images == 0).mean()
    assert 0.5 < background_share < 0.98  # mostly background, like inverted Omniglot
    border = np.concatenate([images[..., 0, :], images[..., -1, :]], axis=-1)
    assert (border == 0).mean() > 0.9  # glyphs are centred, seldom touch the edge


def test_samples_vary_within_a_class_less_than_between(arrays: dict[str, np.ndarray]) -> None:
    flat = arrays["images"].reshape(CLASSES * SAMPLES, -1).astype(np.float32) / 255.0
    for samples in flat.reshape(CLASSES, SAMPLES, -1):
        assert not np.all(samples == samples[0])
    squared = (flat**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * flat @ flat.T, 0.0))
    labels = np.repeat(np.arange(CLASSES), SAMPLES)
    same_class = labels[:, None] == labels[None]
    np.fill_diagonal(same_class, False)
    different_class = labels[:, None] != labels[None]
    within, between = distances[same_class].mean(), distances[different_class].mean()
    assert within < 0.95 * between
    # Leave-one-out raw-pixel nearest neighbour: far above chance (1/50), far from perfect.
    np.fill_diagonal(distances, np.inf)
    accuracy = (labels[distances.argmin(axis=1)] == labels).mean()
    assert 0.3 < accuracy < 0.99


def test_same_seed_rebuilds_identically_for_any_worker_count(
    built: Path, arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    again = build_fontglot(
        tmp_path / "again.npz", seed=0, classes=CLASSES, workers=1, progress=False
    )
    with np.load(again, allow_pickle=False) as archive:
        assert np.array_equal(archive["images"], arrays["images"])
        assert np.array_equal(archive["code_points"], arrays["code_points"])
        assert str(archive["sha256"]) == str(arrays["sha256"])


def test_other_seed_gives_other_classes_and_drawings(
    arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    other = build_fontglot(tmp_path / "seed1.npz", seed=1, classes=CLASSES, progress=False)
    with np.load(other, allow_pickle=False) as archive:
        assert not np.array_equal(archive["code_points"], arrays["code_points"])
        assert not np.array_equal(archive["images"], arrays["images"])


def test_load_splits_classes_disjointly(built: Path, arrays: dict[str, np.ndarray]) -> None:
    splits = load_fontglot(built)
    assert set(splits) == {"train", "val", "test"}
    names = [set(split.class_names) for split in splits.values()]
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1 :])
    keys = [
        f"{arrays['alphabet_names'][a]}/{cp:05X}"
        for a, cp in zip(arrays["alphabet_ids"], arrays["code_points"], strict=True)
    ]
    assert {name: list(split.class_names) for name, split in splits.items()} == finn_split(keys)
    row_of_key = {key: row for row, key in enumerate(keys)}
    for split in splits.values():
        assert split.images.dtype == np.uint8
        assert split.images.shape[1:] == (SAMPLES, 28, 28)
        rows = [row_of_key[name] for name in split.class_names]
        assert np.array_equal(split.images, arrays["images"][rows])


def test_tasks_from_fontglot_have_the_right_shape(built: Path) -> None:
    # 50 classes split 34/3/13, so at most 3 ways.
    source = ImageClassificationSource(load_fontglot(built), n_way=3, k_shot=2, query=4)
    sampler = TaskSampler(source, seed=0)
    for split in ("train", "val", "test"):
        task = sampler.task(split, 0)
        assert task.support_inputs.shape == (6, 1, 28, 28)
        assert task.target_inputs.shape == (12, 1, 28, 28)
        assert task.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert float(task.support_inputs.min()) == 0.0  # background
        assert float(task.support_inputs.max()) == 1.0  # strokes
    batch = sampler.meta_batch("train", 0, 4)
    assert batch.support_inputs.shape == (4, 6, 1, 28, 28)


def test_describe_summarises_the_file(built: Path, arrays: dict[str, np.ndarray]) -> None:
    summary = describe_fontglot(built)
    assert summary["classes"] == CLASSES
    assert summary["samples_per_class"] == SAMPLES
    assert summary["alphabets"] == len(arrays["alphabet_names"])
    assert summary["seed"] == 0
    assert summary["generator_version"] == fontglot.GENERATOR_VERSION
    assert summary["sha256"] == str(arrays["sha256"])
    assert sum(summary["splits"].values()) == CLASSES
    json.dumps(summary)  # plain values, printable by a CLI


def test_missing_file_says_how_to_build_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(DataError, match="not found; build it with `metalandscape data fontglot"):
        load_fontglot(missing)


def test_truncated_file_is_a_data_error(built: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.npz"
    broken.write_bytes(built.read_bytes()[: built.stat().st_size // 2])
    with pytest.raises(DataError, match="rebuild it"):
        load_fontglot(broken)


def test_damaged_bytes_are_a_data_error(built: Path, tmp_path: Path) -> None:
    data = bytearray(built.read_bytes())
    with zipfile.ZipFile(built) as archive:
        info = archive.getinfo("images.npy")
    middle = info.header_offset + 100 + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    broken = tmp_path / "damaged.npz"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match="rebuild it"):
        load_fontglot(broken)


def test_not_an_archive_is_a_data_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a numpy file at all" * 10)
    with pytest.raises(DataError, match="unreadable or corrupt"):
        load_fontglot(junk)


def test_changed_images_fail_the_checksum(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    images = arrays["images"].copy()
    images[0, 0, 14, 14] ^= 1
    changed = _rewrite(arrays, tmp_path / "changed.npz", images=images)
    with pytest.raises(DataError, match="sha256"):
        load_fontglot(changed)


def test_missing_key_is_a_data_error(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    incomplete = _rewrite(arrays, tmp_path / "incomplete.npz", code_points=None)
    with pytest.raises(DataError, match="lacks code_points"):
        describe_fontglot(incomplete)


def test_pickled_arrays_are_refused(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    names = np.array(list(arrays["alphabet_names"]), dtype=object)
    pickled = _rewrite(arrays, tmp_path / "pickled.npz", alphabet_names=names)
    with pytest.raises(DataError, match="rebuild it"):
        load_fontglot(pickled)


def test_other_generator_version_is_refused(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    old = _rewrite(arrays, tmp_path / "old.npz", generator_version=np.array("fontglot-0"))
    with pytest.raises(DataError, match="fontglot-0"):
        load_fontglot(old)


def test_too_many_classes_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"only \d+ glyphs pass the filters"):
        build_fontglot(tmp_path / "huge.npz", classes=100_000, progress=False)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fontglot.np, "savez_compressed", fail)
    with pytest.raises(OSError, match="disk full"):
        build_fontglot(tmp_path / "out.npz", classes=3, samples_per_class=2, progress=False)
    assert not list(tmp_path.iterdir())


def test_near_duplicates_are_dropped_in_code_point_order() -> None:
    vectors = np.zeros((4, 784), dtype=bool)
    vectors[:, :100] = True
    vectors[1, :10] = False  # 10 pixels from row 0: a near-duplicate
    vectors[2, 100:200] = True  # 100 pixels away from both: distinct
    vectors[3, :30] = False  # 30 from row 0, 20 from row 1 (dropped, so it does not count)
    assert fontglot._distinct_rows(vectors).tolist() == [0, 2, 3]
