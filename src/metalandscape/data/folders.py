"""Any image data set stored as class folders: ``root/<split>/<class>/<image>``.

Split folders are ``train`` (required), ``val`` (also spelled ``validation`` or ``valid``;
optional) and ``test`` (optional); a missing optional split is absent from the result. Each
sub-folder of a split folder is one class, named after the folder; its images are the files
directly inside it whose names end in one of :data:`IMAGE_SUFFIXES` (any case), decoded with
Pillow (first frame of an animation; EXIF orientation is not applied). Hidden entries (names
starting with ``.``), ``__MACOSX`` folders, nested folders and other files are ignored.

Order is deterministic: splits in ``train, val, test`` order, classes by sorted folder name,
images by sorted file name (plain string order, so ``10.png`` comes before ``2.png``). Classes of
one split with different image counts are all cut to the smallest count of that split: each keeps
its first images in that order, the rest are never opened (a warning says how many were dropped).

Channels: ``grey`` stores luminance as-is (0 black, 255 white; never inverted) as ``(classes,
samples, H, W)``; ``rgb`` stores ``(classes, samples, H, W, 3)``; ``auto`` picks grey when every
kept image of every split is single-channel (Pillow modes 1, L, LA, I, I;16…), else rgb. Palette
(``P``) images count as colour. Alpha is dropped; 16-bit grey is scaled to 8 bits. Images are
resized (Lanczos or nearest neighbour) only where their size differs from ``image_size``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from metalandscape.data import DataOptions
from metalandscape.data.parallel import run_per_class
from metalandscape.data.tasks import SPLITS, ClassImages, DataError

ChannelMode = Literal["auto", "grey", "rgb"]
ResizeMode = Literal["lanczos", "nearest"]

CHANNEL_MODES: tuple[ChannelMode, ...] = ("auto", "grey", "rgb")
RESIZE_MODES: tuple[ResizeMode, ...] = ("lanczos", "nearest")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Folder names accepted for each split, in the order they are looked for.
SPLIT_FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation", "valid"),
    "test": ("test",),
}
# The setting that sets ``image_size``, named in the "mixed sizes" message.
IMAGE_SIZE_SETTING = "run config key, e.g. image_size: [84, 84]"

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}
_IGNORED_FOLDERS = ("__MACOSX",)

log = logging.getLogger(__name__)


def describe_class_folders() -> str:
    """The class-folders layout, as one line for error messages."""
    suffixes = " ".join(IMAGE_SUFFIXES)
    return (
        "class folders: <path>/train/<class>/<image>, plus optional <path>/val/ (or validation/ "
        "or valid/) and <path>/test/ laid out the same way; each class is a folder named after "
        f"the class holding its images directly ({suffixes}, any case; any size; grey or RGB); "
        "hidden entries and other files are ignored"
    )


@dataclass(frozen=True)
class _SplitFiles:
    """The kept image files of one split, classes and files sorted."""

    split: str
    folder: Path
    class_names: tuple[str, ...]
    files: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class _Header:
    """What opening an image file (without decoding it) tells: Pillow mode, (width, height)."""

    file: str
    mode: str
    size: tuple[int, int]


def load_class_folders(
    path: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: Literal["auto", "grey", "rgb"] = "auto",
    resize: Literal["lanczos", "nearest"] = "lanczos",
) -> dict[str, ClassImages]:
    """Load ``path/<split>/<class>/<image>`` as uint8 class images per split.

    ``image_size`` is ``(height, width)``; None keeps the images' own size, which then must be
    the same for every image of every split. Returns ``"train"`` and, where their folders exist,
    ``"val"`` and ``"test"``: ``(classes, samples, H, W)`` grey or ``(classes, samples, H, W,
    3)`` RGB, ``samples`` being the smallest class's image count in that split. Raises
    :class:`DataError` for bad settings, a missing path or ``train`` folder, a split without
    class folders, a class folder without images, an unreadable image, or mixed image sizes
    without ``image_size``.
    """
    size = _checked_image_size(image_size)
    if channels not in CHANNEL_MODES:
        raise DataError(f"channels must be 'auto', 'grey' or 'rgb', got {channels!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be 'lanczos' or 'nearest', got {resize!r}")
    root = _existing_folder(path)
    split_files = [_list_split(split, folder) for split, folder in _split_folders(root).items()]
    headers = {files.split: _read_headers(files) for files in split_files}
    if channels == "auto":
        modes = (
            h.mode for per_split in headers.values() for per_class in per_split for h in per_class
        )
        grey = all(mode in GREY_MODES for mode in modes)
    else:
        grey = channels == "grey"
    height_width = size if size is not None else _common_size(headers)
    return {
        files.split: ClassImages(
            images=_decode_split(files, height_width, grey, resize),
            class_names=files.class_names,
        )
        for files in split_files
    }


# --- layout -----------------------------------------------------------------------------------


def _checked_image_size(image_size: object) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        raise DataError(
            f"image_size must be (height, width) or None, got {image_size!r}; "
            f"write [{image_size}, {image_size}] for a square"
        )
    if (
        not isinstance(image_size, Sequence)
        or isinstance(image_size, str)
        or len(image_size) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in image_size)
    ):
        raise DataError(
            f"image_size must be None or (height, width), two positive integers, got {image_size!r}"
        )
    return (int(image_size[0]), int(image_size[1]))


def _existing_folder(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"class-folders path {root} does not exist; expected {_layout_hint()}")
    if not root.is_dir():
        raise DataError(f"class-folders path {root} is not a folder; expected {_layout_hint()}")
    return root


def _layout_hint() -> str:
    return describe_class_folders()


def _subfolders(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    try:
        entries = list(os.scandir(folder))
    except OSError as error:
        raise DataError(f"cannot list folder {folder}: {_one_line(error)}") from error
    return sorted(
        entry.name
        for entry in entries
        if entry.is_dir() and not entry.name.startswith(".")
        if entry.name not in _IGNORED_FOLDERS
    )


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders present in ``root``, in ``train, val, test`` order; train is required."""
    present = set(_subfolders(root))
    folders: dict[str, Path] = {}
    for split in SPLITS:
        names = [name for name in SPLIT_FOLDER_NAMES[split] if name in present]
        if len(names) > 1:
            listed = " and ".join(f"{root / name}" for name in names)
            raise DataError(
                f"{listed} are both the {split} split; keep one of them and rename or remove "
                "the other"
            )
        if names:
            folders[split] = root / names[0]
    if "train" not in folders:
        found = sorted(present)
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        holds = f"it holds the folders {shown}" if found else "it holds no folders"
        parent = ""
        if root.name in {name for names in SPLIT_FOLDER_NAMES.values() for name in names}:
            parent = f"; {root} looks like a split folder itself, point at {root.parent}"
        raise DataError(
            f"no train/ split folder in {root} ({holds}){parent}; expected {_layout_hint()}"
        )
    return folders


def _list_split(split: str, folder: Path) -> _SplitFiles:
    """The class folders of ``folder`` and their images, cut to the smallest count."""
    class_names = tuple(_subfolders(folder))
    if not class_names:
        raise DataError(
            f"split folder {folder} has no class folders; put each class's images in its own "
            f"folder {folder}/<class>/; expected {_layout_hint()}"
        )
    files = []
    for name in class_names:
        class_folder = folder / name
        try:
            entries = list(os.scandir(class_folder))
        except OSError as error:
            raise DataError(f"cannot list folder {class_folder}: {_one_line(error)}") from error
        images = sorted(
            entry.path
            for entry in entries
            if entry.is_file() and not entry.name.startswith(".")
            if entry.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not images:
            raise DataError(
                f"class folder {class_folder} holds no images ({' '.join(IMAGE_SUFFIXES)}); "
                "add its images or remove the folder"
            )
        files.append(images)
    counts = [len(images) for images in files]
    smallest = min(counts)
    if max(counts) > smallest:
        cut = sum(count > smallest for count in counts)
        log.warning(
            "%s: %d of %d classes have more than %d images (the smallest class); using the "
            "first %d of each by file name, dropping %d images",
            folder,
            cut,
            len(counts),
            smallest,
            smallest,
            sum(counts) - smallest * len(counts),
        )
    return _SplitFiles(
        split=split,
        folder=folder,
        class_names=class_names,
        files=tuple(tuple(images[:smallest]) for images in files),
    )


# --- decoding ---------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _unreadable(file: str, error: BaseException) -> DataError:
    return DataError(
        f"cannot read image {file} ({_one_line(error)}); replace it with a readable image "
        "or delete it"
    )


_DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
)


def _read_headers(files: _SplitFiles) -> list[list[_Header]]:
    """Mode and size of every kept image of a split, by opening (not decoding) each file."""

    def read(number: int) -> list[_Header]:
        headers = []
        for file in files.files[number]:
            try:
                with Image.open(file) as image:
                    headers.append(_Header(file, image.mode, image.size))
            except _DECODE_ERRORS as error:
                raise _unreadable(file, error) from error
        return headers

    return run_per_class(read, len(files.files), f"class folders {files.split} (scan)")


def _common_size(headers: dict[str, list[list[_Header]]]) -> tuple[int, int]:
    """The one ``(height, width)`` of every image; DataError naming two files that differ."""
    every = [
        header for per_split in headers.values() for per_class in per_split for header in per_class
    ]
    first = every[0]
    for header in every:
        if header.size != first.size:
            raise DataError(
                f"images differ in size: {first.file} is {_size_text(first.size)} but "
                f"{header.file} is {_size_text(header.size)} (height x width); set image_size "
                f"({IMAGE_SIZE_SETTING}) to resize them all to one size"
            )
    width, height = first.size
    return (height, width)


def _size_text(size: tuple[int, int]) -> str:
    width, height = size
    return f"{height}x{width}"


def _decode_split(
    files: _SplitFiles, image_size: tuple[int, int], grey: bool, resize: ResizeMode
) -> np.ndarray:
    """Decode a split's kept images into one preallocated uint8 array."""
    classes, samples = len(files.files), len(files.files[0])
    shape = (classes, samples, *image_size) if grey else (classes, samples, *image_size, 3)
    images = np.empty(shape, dtype=np.uint8)

    def load(number: int) -> None:
        for sample, file in enumerate(files.files[number]):
            images[number, sample] = _decode(file, image_size, grey, resize)

    run_per_class(load, classes, f"class folders {files.split}")
    return images


def _decode(file: str, image_size: tuple[int, int], grey: bool, resize: ResizeMode) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)``, resized only if its size differs."""
    height, width = image_size
    try:
        with Image.open(file) as image:
            image.load()
            converted = _convert(image, "L" if grey else "RGB")
    except _DECODE_ERRORS as error:
        raise _unreadable(file, error) from error
    if converted.size != (width, height):
        converted = converted.resize((width, height), _RESAMPLING[resize])
    return np.asarray(converted, dtype=np.uint8)


def _convert(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in mode ``L`` or ``RGB``; 16-bit grey is scaled (Pillow would clip it at 255)."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(((values + 128) // 257).astype(np.uint8))
    return image.convert(mode)


def load_folders_split(path: str | Path, options: DataOptions) -> dict[str, ClassImages]:
    """The registry's loader (metalandscape.data.DATASET_REGISTRY): :func:`load_class_folders` with the
    run's ``image_size``, ``image_channels`` and ``resize``."""
    return load_class_folders(
        path,
        image_size=options.image_size,
        channels=options.image_channels,  # type: ignore[arg-type]
        resize=options.resize,  # type: ignore[arg-type]
    )
