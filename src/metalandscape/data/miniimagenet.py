"""MiniImagenet (Vinyals et al., 2016) in Ravi & Larochelle's 64/16/20 class split.

The MAML paper reports 64/12/24 training/validation/test classes, but no 64/12/24 class list was
ever released, and every published MAML implementation (Finn's included) uses Ravi & Larochelle's
public 64/16/20 CSVs; this loader therefore uses the split the files carry, 600 images per class.

Accepted layouts under ``path`` (auto-detected, see :data:`MINIIMAGENET_LAYOUTS`); when several
are present the first complete one in this order wins:

* torchmeta's ``{split}_data.hdf5`` + ``{split}_labels.json`` (``path`` may be the parent of its
  ``miniimagenet/`` folder): a group ``datasets`` with one uint8 ``(N, 84, 84, 3)`` dataset per
  class name, and a JSON list of the (sorted) class names;
* the ``mini-imagenet-cache-{train,val|validation,test}.pkl`` pickles: a dict with
  ``image_data`` uint8 ``(N, 84, 84, 3)`` and ``class_dict`` ``{wnid: [indices]}``, read with an
  unpickler that only admits numpy arrays, dtypes and scalars and plain containers;
* Finn et al.'s ``{train,val,test}/<wnid>/*.jpg`` folders;
* Ravi & Larochelle's ``{train,val,test}.csv`` (header ``filename,label``, label = wnid) with a
  flat ``images/`` folder.

Images are RGB uint8 ``(classes, samples, image_size, image_size, 3)``; images of another size
are resized with Lanczos. Every class of a split must have the same number of images, else a
:class:`DataError` names the class; classes of different splits must be disjoint.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from metalandscape.data import DataOptions
from metalandscape.data.parallel import run_per_class
from metalandscape.data.tasks import SPLITS, ClassImages, DataError, unequal_counts

MINIIMAGENET_LAYOUTS: tuple[str, ...] = (
    "torchmeta: {train,val,test}_data.hdf5 and {train,val,test}_labels.json "
    "(path may be the parent of miniimagenet/)",
    "pickle cache: mini-imagenet-cache-{train,val|validation,test}.pkl",
    "Finn et al.: {train,val,test}/<wnid>/*.jpg",
    "Ravi & Larochelle: {train,val,test}.csv (filename,label) and a flat images/ folder",
)
TORCHMETA_FOLDER = "miniimagenet"
SPLIT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation"),
    "test": ("test",),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# (classes, samples, H, W, 3) uint8 images and the class names, for one split.
_SplitImages = tuple[np.ndarray, tuple[str, ...]]
# Loads one split; image files are decoded straight at ``image_size``, arrays as stored.
_SplitLoader = Callable[[str, int], _SplitImages]


def describe_layouts() -> str:
    """The accepted MiniImagenet layouts, on one line."""
    return "; ".join(f"({number}) {text}" for number, text in enumerate(MINIIMAGENET_LAYOUTS, 1))


def load_miniimagenet(path: str | Path, *, image_size: int = 84) -> dict[str, ClassImages]:
    """Load MiniImagenet's train/val/test classes from any accepted layout.

    Returns uint8 RGB images ``(classes, samples, image_size, image_size, 3)`` per split. Raises
    :class:`DataError` for a missing path, an unknown or incomplete layout, unreadable files,
    classes with differing image counts, or a class in two splits.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"MiniImagenet path {root} does not exist; {_layouts_hint()}")
    if not root.is_dir():
        raise DataError(f"MiniImagenet path {root} is not a folder; {_layouts_hint()}")
    load_split = _detect_layout(root)
    splits: dict[str, ClassImages] = {}
    for split in SPLITS:
        images, class_names = load_split(split, image_size)
        if images.shape[2:4] != (image_size, image_size):
            images = _resize_images(images, image_size, f"MiniImagenet {split} resize")
        splits[split] = ClassImages(images=images, class_names=class_names)
    _check_disjoint(splits, root)
    return splits


def _layouts_hint() -> str:
    return f"accepted layouts: {describe_layouts()}"


# --- layout detection -------------------------------------------------------------------------


def _detect_layout(root: Path) -> _SplitLoader:
    """The split loader of the first complete layout in ``root`` or ``root/miniimagenet``."""
    partial: list[str] = []
    for folder in (root, root / TORCHMETA_FOLDER):
        if not folder.is_dir():
            continue
        for find in (_find_torchmeta, _find_pickles, _find_finn, _find_csv):
            loader, found, missing = find(folder)
            if loader is not None:
                return loader
            if found:
                partial.append(f"{', '.join(found)} without {', '.join(missing)} in {folder}")
    if partial:
        raise DataError(f"incomplete MiniImagenet: found {'; '.join(partial)}; {_layouts_hint()}")
    raise DataError(f"no MiniImagenet data set found at {root}; {_layouts_hint()}")


_Found = tuple[_SplitLoader | None, list[str], list[str]]


def _split_result(
    files: dict[str, Path | None], names: dict[str, str], loader: _SplitLoader
) -> _Found:
    found = [names[split] for split, file in files.items() if file is not None]
    missing = [names[split] for split, file in files.items() if file is None]
    return (None if missing else loader), found, missing


def _first_existing(candidates: Sequence[Path], want_dir: bool = False) -> Path | None:
    for candidate in candidates:
        if candidate.is_dir() if want_dir else candidate.is_file():
            return candidate
    return None


def _find_torchmeta(folder: Path) -> _Found:
    files: dict[str, Path | None] = {}
    for split in SPLITS:
        data, labels = folder / f"{split}_data.hdf5", folder / f"{split}_labels.json"
        files[f"{split}_data"] = data if data.is_file() else None
        files[f"{split}_labels"] = labels if labels.is_file() else None
    names = {key: f"{key}.hdf5" if key.endswith("_data") else f"{key}.json" for key in files}

    def load(split: str, image_size: int) -> _SplitImages:
        return _load_torchmeta_split(folder / f"{split}_data.hdf5", folder / f"{split}_labels.json")

    return _split_result(files, names, load)


def _find_pickles(folder: Path) -> _Found:
    files = {
        split: _first_existing(
            [folder / f"mini-imagenet-cache-{name}.pkl" for name in SPLIT_FILE_NAMES[split]]
        )
        for split in SPLITS
    }
    names = {
        split: f"mini-imagenet-cache-{'|'.join(SPLIT_FILE_NAMES[split])}.pkl" for split in SPLITS
    }

    def load(split: str, image_size: int) -> _SplitImages:
        file = files[split]
        assert file is not None
        return _load_pickle_split(file)

    return _split_result(files, names, load)


def _find_finn(folder: Path) -> _Found:
    files = {split: _first_existing([folder / split], want_dir=True) for split in SPLITS}
    names = {split: f"{split}/" for split in SPLITS}

    def load(split: str, image_size: int) -> _SplitImages:
        return _load_folder_split(folder / split, split, image_size)

    return _split_result(files, names, load)


def _find_csv(folder: Path) -> _Found:
    files: dict[str, Path | None] = {
        split: _first_existing([folder / f"{split}.csv"]) for split in SPLITS
    }
    names = {split: f"{split}.csv" for split in SPLITS}
    if any(files.values()) or (folder / "images").is_dir():
        files["images"] = _first_existing([folder / "images"], want_dir=True)
        names["images"] = "images/"

    def load(split: str, image_size: int) -> _SplitImages:
        return _load_csv_split(folder / f"{split}.csv", folder / "images", split, image_size)

    return _split_result(files, names, load)


# --- loaders ----------------------------------------------------------------------------------


def _load_torchmeta_split(data_file: Path, labels_file: Path) -> _SplitImages:
    try:
        labels = json.loads(labels_file.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read torchmeta labels {labels_file}: {error}") from error
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise DataError(f"torchmeta labels {labels_file} must be a non-empty list of class names")
    try:
        with h5py.File(data_file, "r") as hdf5:
            group = hdf5.get("datasets")
            if not isinstance(group, h5py.Group):
                raise DataError(f"torchmeta file {data_file} has no group 'datasets'")
            datasets = []
            for label in labels:
                dataset = group.get(label)
                if not isinstance(dataset, h5py.Dataset):
                    raise DataError(f"torchmeta file {data_file} has no dataset datasets/{label}")
                _check_image_array(dataset.dtype, dataset.shape, f"{data_file}:datasets/{label}")
                datasets.append(dataset)
            _check_equal_counts(
                {label: len(d) for label, d in zip(labels, datasets, strict=True)},
                f"torchmeta file {data_file}",
            )
            _check_equal_shapes([d.shape[1:] for d in datasets], labels, str(data_file))
            images = np.empty((len(labels), *datasets[0].shape), dtype=np.uint8)
            for number, dataset in enumerate(datasets):
                dataset.read_direct(images[number])
    except OSError as error:
        raise DataError(f"cannot read torchmeta file {data_file}: {error}") from error
    return images, tuple(labels)


def _load_pickle_split(file: Path) -> _SplitImages:
    data = _restricted_load(file)
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= data.keys():
        raise DataError(
            f"{file} is not a MiniImagenet cache: need a dict with image_data, class_dict"
        )
    image_data, class_dict = data["image_data"], data["class_dict"]
    if not isinstance(image_data, np.ndarray):
        raise DataError(f"{file}: image_data must be a numpy array")
    _check_image_array(image_data.dtype, image_data.shape, f"{file}:image_data")
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(f"{file}: class_dict must be a non-empty dict of wnid -> indices")
    class_names = tuple(sorted(class_dict))
    indices = {}
    for name in class_names:
        try:
            class_indices = np.asarray(class_dict[name], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as error:
            raise DataError(f"{file}: class_dict[{name!r}] is not a list of indices") from error
        if class_indices.size and (
            class_indices.min() < 0 or class_indices.max() >= len(image_data)
        ):
            raise DataError(f"{file}: class_dict[{name!r}] indexes outside image_data")
        indices[name] = class_indices
    _check_equal_counts({name: len(i) for name, i in indices.items()}, f"pickle {file}")
    order = np.concatenate([indices[name] for name in class_names])
    shape = (len(class_names), len(order) // len(class_names), *image_data.shape[1:])
    if np.array_equal(order, np.arange(len(image_data))):  # contiguous: no copy
        return image_data.reshape(shape), class_names
    images = np.empty(shape, dtype=np.uint8)
    for number, name in enumerate(class_names):
        np.take(image_data, indices[name], axis=0, out=images[number])
    return images, class_names


def _load_folder_split(split_folder: Path, split: str, image_size: int) -> _SplitImages:
    classes = sorted(
        entry.name
        for entry in os.scandir(split_folder)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise DataError(f"MiniImagenet folder {split_folder} has no <wnid>/ class folders")
    files = {
        name: sorted(
            entry.path
            for entry in os.scandir(split_folder / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
        )
        for name in classes
    }
    _check_equal_counts(
        {f"{split_folder / name}": len(f) for name, f in files.items()}, "MiniImagenet folders"
    )
    images = _load_image_files([files[name] for name in classes], image_size, split)
    return images, tuple(classes)


def _load_csv_split(
    csv_file: Path, images_folder: Path, split: str, image_size: int
) -> _SplitImages:
    files_by_class: dict[str, list[str]] = {}
    try:
        # utf-8-sig: spreadsheet programs save CSVs with a byte-order mark
        with csv_file.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = [field.strip() for field in next(reader, [])]
            if header[:2] != ["filename", "label"]:
                raise DataError(f"{csv_file} must start with the header 'filename,label'")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2:
                    raise DataError(f"{csv_file} line {line}: expected 'filename,label'")
                files_by_class.setdefault(row[1].strip(), []).append(row[0].strip())
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {csv_file}: {error}") from error
    if not files_by_class:
        raise DataError(f"{csv_file} lists no images")
    _check_equal_counts({name: len(f) for name, f in files_by_class.items()}, str(csv_file))
    available = set(os.listdir(images_folder))
    missing = [f for names in files_by_class.values() for f in names if f not in available]
    if missing:
        raise DataError(
            f"{len(missing)} images listed in {csv_file} are missing from {images_folder}, "
            f"e.g. {missing[0]}"
        )
    classes = sorted(files_by_class)
    files = [[str(images_folder / f) for f in sorted(files_by_class[name])] for name in classes]
    return _load_image_files(files, image_size, split), tuple(classes)


# --- image decoding ---------------------------------------------------------------------------


def _load_image_files(
    files_per_class: Sequence[Sequence[str]], image_size: int, split: str
) -> np.ndarray:
    """Decode image files to RGB uint8 ``(classes, samples, image_size, image_size, 3)``."""
    shape = (len(files_per_class), len(files_per_class[0]), image_size, image_size, 3)
    images = np.empty(shape, dtype=np.uint8)

    def load(number: int) -> None:
        for sample, file in enumerate(files_per_class[number]):
            images[number, sample] = _decode(file, image_size)

    run_per_class(load, len(files_per_class), f"MiniImagenet {split}")
    return images


def _decode(file: str, image_size: int) -> np.ndarray:
    """One image file as RGB uint8 ``(image_size, image_size, 3)``, Lanczos-resized if needed."""
    try:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read MiniImagenet image {file}: {error}") from error
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def _resize_images(images: np.ndarray, image_size: int, description: str) -> np.ndarray:
    """Lanczos-resize every image of ``(classes, samples, H, W, 3)`` to ``image_size``."""
    classes, samples = images.shape[:2]
    resized = np.empty((classes, samples, image_size, image_size, 3), dtype=np.uint8)
    size = (image_size, image_size)

    def resize(number: int) -> None:
        for sample in range(samples):
            image = Image.fromarray(images[number, sample]).resize(size, Image.Resampling.LANCZOS)
            resized[number, sample] = np.asarray(image)

    run_per_class(resize, classes, description)
    return resized


# --- restricted unpickling --------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if encoding.lower().replace("_", "-") not in {"latin1", "latin-1", "iso-8859-1"}:
        raise DataError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a MiniImagenet cache pickle may name: what numpy arrays need."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes, scalars and plain containers; refuses everything else."""

    def __init__(self, stream: Any, source: Path) -> None:
        super().__init__(stream, encoding="latin1")
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name} from {self.source}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refusing to unpickle persistent id {pid!r} from {self.source}")


def _restricted_load(file: Path) -> Any:
    try:
        with file.open("rb") as stream:
            return _RestrictedUnpickler(stream, file).load()
    except DataError:
        raise
    except Exception as error:  # a corrupt pickle can fail in many ways
        raise DataError(f"cannot read pickle {file}: {error}") from error


# --- checks -----------------------------------------------------------------------------------


def _check_image_array(dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
        raise DataError(f"{where} must be uint8 (N, H, W, 3) images, got {dtype} {shape}")


def _check_equal_counts(counts: dict[str, int], where: str) -> None:
    """Every class needs as many images as the most common count (600 in MiniImagenet)."""
    names = list(counts)
    expected, odd, more = unequal_counts([counts[name] for name in names])
    if odd:
        first = names[odd[0]]
        raise DataError(
            f"{where}: class {first} has {counts[first]} images, other classes have "
            f"{expected}{more}; every class of a split needs the same count"
        )


def _check_equal_shapes(
    shapes: Sequence[tuple[int, ...]], names: Sequence[str], where: str
) -> None:
    for shape, name in zip(shapes, names, strict=True):
        if shape != shapes[0]:
            raise DataError(f"{where}: class {name} has images {shape}, others {shapes[0]}")


def _check_disjoint(splits: dict[str, ClassImages], root: Path) -> None:
    seen: dict[str, str] = {}
    for split, data in splits.items():
        for name in data.class_names:
            if name in seen:
                raise DataError(
                    f"MiniImagenet at {root}: class {name} is in {seen[name]} and {split}"
                )
            seen[name] = split


def load_miniimagenet_split(path: str | Path, options: DataOptions) -> dict[str, ClassImages]:
    """The registry's loader (metalandscape.data.DATASET_REGISTRY): :func:`load_miniimagenet`."""
    return load_miniimagenet(path)
