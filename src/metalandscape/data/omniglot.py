"""Omniglot (Lake et al., 2015) in Finn et al.'s 1100/100/423 character split.

Accepted layouts under ``path`` (auto-detected, see :data:`OMNIGLOT_LAYOUTS`):

* the original ``images_background/`` and ``images_evaluation/`` folders, or their zips
  ``images_background.zip`` and ``images_evaluation.zip`` (read in place, no extraction), each
  holding ``<Alphabet>/characterNN/<id>_<drawer>.png`` as 105×105 1-bit (mode '1') PNGs;
* torchvision's ``omniglot-py/images_background/`` and ``omniglot-py/images_evaluation/``
  (``path`` may be ``omniglot-py`` or its parent);
* Finn et al.'s pre-resized ``<Alphabet>/<character>/*.png`` (28×28), all alphabets in one folder.

Class keys are ``"Alphabet/characterNN"``; all classes are split with
:func:`~metalandscape.data.splits.finn_split`. Images are inverted: 255 is stroke, 0 background.
A copy with fewer than Omniglot's 1,623 characters (a missing alphabet) is refused unless
``proportional_split=True`` (the run config's ``omniglot_proportional_split``), which splits it
in the 1100/100/423 proportions. Where a folder and its zip both exist (torchvision keeps both),
the folder is read only if it holds every image of the zip: a half-extracted folder is ignored.

Resizing. Pillow resizes mode '1' images with nearest neighbour whatever filter is asked for, so
Finn's ``resize((28, 28), LANCZOS)`` on the original PNGs produced nearest-neighbour, binary
characters. ``resize="lanczos"`` (default) converts to 8-bit grey first and then applies Lanczos,
giving anti-aliased grey strokes; ``resize="nearest"`` reproduces Finn's preprocessing pixel for
pixel. Images already ``image_size`` square (Finn's layout at 28) are not resampled.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from metalandscape.data import DataOptions
from metalandscape.data.splits import OMNIGLOT_CLASSES, finn_split
from metalandscape.data.tasks import SPLITS, ClassImages, DataError, unequal_counts

ResizeMode = Literal["lanczos", "nearest"]

HALVES = ("images_background", "images_evaluation")
TORCHVISION_FOLDER = "omniglot-py"
OMNIGLOT_LAYOUTS: tuple[str, ...] = (
    "original: images_background/ and images_evaluation/ (or images_background.zip and "
    "images_evaluation.zip), each <Alphabet>/characterNN/<id>_<drawer>.png",
    "torchvision: omniglot-py/images_background/ and omniglot-py/images_evaluation/ "
    "(path may be omniglot-py or its parent)",
    "Finn et al.: <Alphabet>/<character>/*.png resized to 28x28, all alphabets in one folder",
)

RESIZE_MODES: tuple[ResizeMode, ...] = ("lanczos", "nearest")
ORIGINAL, TORCHVISION, FINN = (text.split(":")[0] for text in OMNIGLOT_LAYOUTS)

log = logging.getLogger(__name__)


def describe_layouts() -> str:
    """The accepted Omniglot layouts, on one line."""
    return "; ".join(f"({number}) {text}" for number, text in enumerate(OMNIGLOT_LAYOUTS, 1))


@dataclass
class OmniglotLayout:
    """What :func:`find_omniglot_layout` found: the layout read and the copies it ignored."""

    root: Path
    layout: str
    sources: list[str]
    ignored: list[str]
    characters: int = 0
    alphabets: int = 0

    def describe(self) -> dict[str, object]:
        """JSON-ready summary (``metalandscape data inspect`` prints it)."""
        return {
            "layout": self.layout,
            "read": self.sources,
            "ignored": self.ignored,
            "alphabets": self.alphabets,
            "characters": self.characters,
            "complete": self.characters >= OMNIGLOT_CLASSES,
        }


@dataclass(frozen=True)
class _CharacterFolder:
    """One character: its class key, where it lives (for messages) and how to read its PNGs."""

    key: str
    location: str
    members: tuple[str, ...]
    read: Callable[[str], bytes]


def _existing_root(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, or DataError if nothing is there."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"Omniglot path {root} does not exist; accepted layouts: {describe_layouts()}"
        )
    return root


def find_omniglot_layout(path: str | Path) -> OmniglotLayout:
    """The layout :func:`load_omniglot` would read at ``path``, without decoding any image."""
    root = _existing_root(path)
    with ExitStack() as archives:
        layout = OmniglotLayout(root, "", [], [])
        _find_characters(root, archives, layout)
    return layout


def load_omniglot(
    path: str | Path,
    *,
    image_size: int = 28,
    resize: ResizeMode = "lanczos",
    proportional_split: bool = False,
) -> dict[str, ClassImages]:
    """Load Omniglot from any accepted layout as Finn's train/val/test character split.

    Returns uint8 images ``(classes, drawers, image_size, image_size)`` per split, 255 = stroke.
    Raises :class:`DataError` for a missing path, an unknown layout, unreadable images or zip
    members, characters with differing numbers of drawings, or fewer than 1,623 characters
    unless ``proportional_split``.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be 'lanczos' or 'nearest', got {resize!r}")
    root = _existing_root(path)
    with ExitStack() as archives:
        layout = OmniglotLayout(root, "", [], [])
        characters = _find_characters(root, archives, layout)
        _check_complete(layout, proportional_split)
        _check_equal_counts(characters)
        images = _load_images(characters, image_size, resize)
    index = {character.key: number for number, character in enumerate(characters)}
    if len(index) < len(SPLITS):
        raise DataError(f"Omniglot at {root} has {len(index)} characters, too few to split")
    split = finn_split(list(index))
    return {
        name: ClassImages(
            images=images[[index[key] for key in split[name]]],
            class_names=tuple(split[name]),
        )
        for name in SPLITS
    }


def _check_complete(layout: OmniglotLayout, proportional_split: bool) -> None:
    if layout.characters < OMNIGLOT_CLASSES and not proportional_split:
        raise DataError(
            f"Omniglot at {layout.root} ({layout.layout} layout) has {layout.characters} of "
            f"{OMNIGLOT_CLASSES} characters ({layout.alphabets} of 50 alphabets), so Finn's "
            "1100/100/423 split cannot be made; complete the copy, or set the run config key "
            "omniglot_proportional_split: true to split it in those proportions"
        )


def _find_characters(
    root: Path, archives: ExitStack, layout: OmniglotLayout
) -> list[_CharacterFolder]:
    """The character folders of the layout found at ``root``; zips opened go on ``archives``.

    Fills ``layout`` with the layout read, what it read and what it ignored.
    """
    if root.name in HALVES or root.name in {f"{half}.zip" for half in HALVES}:
        raise DataError(
            f"Omniglot path {root} is one half of the data set; point at the folder that holds "
            f"both halves; {_layouts_hint()}"
        )
    if not root.is_dir():
        raise DataError(f"Omniglot path {root} is not a folder; {_layouts_hint()}")
    for candidate, name in ((root, ORIGINAL), (root / TORCHVISION_FOLDER, TORCHVISION)):
        halves = [_find_half(candidate, half, archives, layout) for half in HALVES]
        if any(found is not None for found in halves):
            missing = [half for half, found in zip(HALVES, halves, strict=True) if found is None]
            if missing:
                raise DataError(
                    f"Omniglot at {candidate} lacks {missing[0]}/ (or {missing[0]}.zip); "
                    f"{_layouts_hint()}"
                )
            characters = [character for found in halves for character in found or []]
            _check_unique_keys(characters)
            layout.layout = name
            if name == ORIGINAL and (root / TORCHVISION_FOLDER).is_dir():
                layout.ignored.append(f"{root / TORCHVISION_FOLDER} (the original layout wins)")
            return _counted(characters, layout)
    characters = _characters_in_folder(root)
    if not characters:
        raise DataError(f"no Omniglot images found at {root}; {_layouts_hint()}")
    layout.layout = FINN
    layout.sources.append(str(root))
    return _counted(characters, layout)


def _counted(characters: list[_CharacterFolder], layout: OmniglotLayout) -> list[_CharacterFolder]:
    layout.characters = len(characters)
    layout.alphabets = len({character.key.split("/")[0] for character in characters})
    return characters


def _find_half(
    folder: Path, half: str, archives: ExitStack, layout: OmniglotLayout
) -> list[_CharacterFolder] | None:
    """The characters of ``half`` in ``folder`` (its directory, else its zip), or None.

    Where both exist the directory is read only if it holds every image the zip lists (a
    half-extracted directory is ignored, with a warning).
    """
    directory = folder / half
    zip_path = folder / f"{half}.zip"
    if directory.is_dir():
        if (directory / half).is_dir():  # unzipped into a folder of the same name
            directory = directory / half
        characters = _characters_in_folder(directory)
        if zip_path.is_file():
            zipped = _characters_in_zip(zip_path, half, archives)
            if _image_counts(characters) != _image_counts(zipped):
                found, listed = (
                    sum(_image_counts(characters).values()),
                    sum(_image_counts(zipped).values()),
                )
                reason = f"incomplete: {found} of the zip's {listed} images"
                log.warning("ignoring %s (%s); reading %s", directory, reason, zip_path)
                layout.ignored.append(f"{directory} ({reason})")
                characters, directory = zipped, zip_path
            else:
                layout.ignored.append(f"{zip_path} (its folder holds the same images)")
        layout.sources.append(str(directory))
    elif zip_path.is_file():
        characters = _characters_in_zip(zip_path, half, archives)
        layout.sources.append(str(zip_path))
    else:
        return None
    if not characters:
        raise DataError(
            f"no <Alphabet>/<character>/*.png images in {directory}(.zip); {_layouts_hint()}"
        )
    return characters


def _image_counts(characters: Sequence[_CharacterFolder]) -> dict[str, int]:
    return {character.key: len(character.members) for character in characters}


def _characters_in_zip(zip_path: Path, half: str, archives: ExitStack) -> list[_CharacterFolder]:
    try:
        archive = archives.enter_context(zipfile.ZipFile(zip_path))
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"cannot open Omniglot zip {zip_path}: {error}; download it again"
        ) from error
    lock = threading.Lock()

    def read(member: str) -> bytes:
        with lock:
            try:
                return archive.read(member)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
                raise DataError(
                    f"Omniglot zip {zip_path}: member {member} is corrupt ({error}); "
                    "download the zip again"
                ) from None

    members: dict[tuple[str, str], list[str]] = {}
    for name in archive.namelist():
        parts = [part for part in name.split("/") if part]
        if parts and parts[0] == half:
            parts = parts[1:]
        if (
            len(parts) == 3
            and parts[2].lower().endswith(".png")
            and not any(part.startswith((".", "__MACOSX")) for part in parts)
        ):
            members.setdefault((parts[0], parts[1]), []).append(name)
    return [
        _CharacterFolder(
            key=f"{alphabet}/{character}",
            location=f"{zip_path}:{half}/{alphabet}/{character}",
            members=tuple(sorted(names)),
            read=read,
        )
        for (alphabet, character), names in sorted(members.items())
    ]


def _characters_in_folder(folder: Path) -> list[_CharacterFolder]:
    """``<Alphabet>/<character>/*.png`` under ``folder``, sorted by key."""
    characters = []
    for alphabet in _subfolders(folder):
        for character in _subfolders(alphabet):
            files = sorted(
                entry.path
                for entry in os.scandir(character)
                if entry.is_file() and entry.name.lower().endswith(".png")
                if not entry.name.startswith(".")
            )
            if files:
                characters.append(
                    _CharacterFolder(
                        key=f"{alphabet.name}/{character.name}",
                        location=str(character),
                        members=tuple(files),
                        read=_read_file,
                    )
                )
    return characters


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith((".", "__MACOSX"))
        if entry.name != TORCHVISION_FOLDER and entry.name not in HALVES
    )


def _read_file(file: str) -> bytes:
    return Path(file).read_bytes()


def _layouts_hint() -> str:
    return f"accepted layouts: {describe_layouts()}"


def _check_unique_keys(characters: Sequence[_CharacterFolder]) -> None:
    seen: dict[str, str] = {}
    for character in characters:
        if character.key in seen:
            raise DataError(
                f"Omniglot character {character.key} appears twice: {seen[character.key]} "
                f"and {character.location}"
            )
        seen[character.key] = character.location


def _check_equal_counts(characters: Sequence[_CharacterFolder]) -> None:
    """Every character must have as many drawings as the most common count (20 in Omniglot)."""
    expected, odd, more = unequal_counts([len(c.members) for c in characters])
    if odd:
        first = characters[odd[0]]
        raise DataError(
            f"Omniglot character folder {first.location} has {len(first.members)} images, "
            f"other characters have {expected}{more}; every character needs the same count"
        )


def _load_images(
    characters: Sequence[_CharacterFolder], image_size: int, resize: ResizeMode
) -> np.ndarray:
    drawers = len(characters[0].members)
    images = np.empty((len(characters), drawers, image_size, image_size), dtype=np.uint8)

    def load(number: int) -> int:
        character = characters[number]
        for drawer, member in enumerate(character.members):
            images[number, drawer] = _decode(character.read(member), member, image_size, resize)
        return number

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(
            pool.map(load, range(len(characters))),
            total=len(characters),
            desc="Omniglot",
            unit="class",
            disable=None,
            leave=False,
        ):
            pass
    return images


def _decode(data: bytes, name: str, image_size: int, resize: ResizeMode) -> np.ndarray:
    """PNG bytes → inverted uint8 ``(image_size, image_size)``, 255 = stroke."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = (image_size, image_size)
            if image.size != size:
                if resize == "nearest":  # what Pillow does to mode '1' whatever the filter
                    image = image.resize(size, Image.Resampling.NEAREST)
                else:
                    image = image.convert("L").resize(size, Image.Resampling.LANCZOS)
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read Omniglot image {name}: {error}") from error
    return 255 - grey


def load_omniglot_split(path: str | Path, options: DataOptions) -> dict[str, ClassImages]:
    """The registry's loader (metalandscape.data.DATASET_REGISTRY): :func:`load_omniglot` with the
    run's resampling filter and split rule."""
    return load_omniglot(
        path,
        resize=options.resize,  # type: ignore[arg-type]
        proportional_split=options.omniglot_proportional_split,
    )
