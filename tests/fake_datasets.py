"""Tiny fake copies of Omniglot and MiniImagenet, written in the real on-disk formats.

Every writer draws simple, distinguishable shapes with a seeded numpy generator, so the same
arguments always give the same files, and writers of one data set given the same ``seed`` draw
the same content. Each writer returns the path to hand to the loader.
"""

from __future__ import annotations

import csv
import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

OMNIGLOT_HALVES = ("images_background", "images_evaluation")
OMNIGLOT_SIZE = 105
FINN_OMNIGLOT_SIZE = 28
ALPHABET_NAMES = (
    "Japanese_(hiragana)",
    "Alphabet_of_the_Magi",
    "Tifinagh",
    "Japanese_(katakana)",
    "Braille",
    "Korean",
)
MINIIMAGENET_SPLITS = ("train", "val", "test")
MINIIMAGENET_SIZE = 84


# --- Omniglot ---------------------------------------------------------------------------------


def omniglot_drawings(
    alphabets: int = 3, characters: int = 4, drawers: int = 20, seed: int = 0
) -> Iterator[tuple[str, str, str, str, Image.Image]]:
    """``(half, alphabet, characterNN, filename, image)`` of every fake drawing.

    Images are 105×105 mode '1' (white background, black strokes) like the real PNGs; each
    character is three random polylines, each drawer jitters them. The first ``ceil(alphabets /
    2)`` alphabets go to ``images_background``, the others to ``images_evaluation``.
    """
    if alphabets < 2:
        raise ValueError("need at least 2 alphabets, one per half")
    rng = np.random.default_rng(seed)
    background_alphabets = (alphabets + 1) // 2
    character_id = 0
    for alphabet_number in range(alphabets):
        half = OMNIGLOT_HALVES[0 if alphabet_number < background_alphabets else 1]
        alphabet = (
            ALPHABET_NAMES[alphabet_number]
            if alphabet_number < len(ALPHABET_NAMES)
            else f"Fake_alphabet_{alphabet_number:02d}_(test)"
        )
        for character_number in range(1, characters + 1):
            character_id += 1
            strokes = rng.uniform(12, OMNIGLOT_SIZE - 12, size=(3, 3, 2))
            for drawer in range(1, drawers + 1):
                image = Image.new("1", (OMNIGLOT_SIZE, OMNIGLOT_SIZE), 1)
                draw = ImageDraw.Draw(image)
                for stroke in strokes + rng.normal(0, 1.5, size=strokes.shape):
                    width = int(rng.integers(4, 7))
                    draw.line([(float(x), float(y)) for x, y in stroke], fill=0, width=width)
                filename = f"{character_id:04d}_{drawer:02d}.png"
                yield half, alphabet, f"character{character_number:02d}", filename, image


def write_omniglot_original(
    root: str | Path,
    alphabets: int = 3,
    characters: int = 4,
    drawers: int = 20,
    zipped: bool = False,
    seed: int = 0,
) -> Path:
    """``images_background/`` + ``images_evaluation/`` (or their zips) of 105×105 mode '1' PNGs."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    drawings = omniglot_drawings(alphabets, characters, drawers, seed)
    if not zipped:
        for half, alphabet, character, filename, image in drawings:
            folder = root / half / alphabet / character
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / filename)
        return root
    archives = {
        half: zipfile.ZipFile(root / f"{half}.zip", "w", zipfile.ZIP_DEFLATED)
        for half in OMNIGLOT_HALVES
    }
    written_folders: set[str] = set()
    try:
        for half, alphabet, character, filename, image in drawings:
            for folder in (f"{half}/", f"{half}/{alphabet}/", f"{half}/{alphabet}/{character}/"):
                if folder not in written_folders:  # the real zips list their folders too
                    archives[half].writestr(folder, b"")
                    written_folders.add(folder)
            archives[half].writestr(f"{half}/{alphabet}/{character}/{filename}", _png(image))
    finally:
        for archive in archives.values():
            archive.close()
    return root


def write_omniglot_torchvision(
    root: str | Path, alphabets: int = 3, characters: int = 4, drawers: int = 20, seed: int = 0
) -> Path:
    """torchvision's extracted ``omniglot-py/images_{background,evaluation}/``; returns ``root``."""
    write_omniglot_original(Path(root) / "omniglot-py", alphabets, characters, drawers, seed=seed)
    return Path(root)


def write_omniglot_finn(
    root: str | Path, alphabets: int = 3, characters: int = 4, drawers: int = 20, seed: int = 0
) -> Path:
    """Finn's ``<Alphabet>/<character>/*.png``: 28×28 'L' PNGs, resized as Finn's script did.

    Finn's ``resize((28, 28), LANCZOS)`` of a mode '1' image is a nearest-neighbour resize.
    """
    root = Path(root)
    size = (FINN_OMNIGLOT_SIZE, FINN_OMNIGLOT_SIZE)
    for _, alphabet, character, filename, image in omniglot_drawings(
        alphabets, characters, drawers, seed
    ):
        folder = root / alphabet / character
        folder.mkdir(parents=True, exist_ok=True)
        image.resize(size, Image.Resampling.LANCZOS).convert("L").save(folder / filename)
    return root


def _png(image: Image.Image) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- MiniImagenet -----------------------------------------------------------------------------


def miniimagenet_wnids(classes_per_split: tuple[int, int, int] = (5, 3, 3)) -> dict[str, list[str]]:
    """Fake, distinct WordNet ids (``n`` + 8 digits) per split."""
    wnids, number = {}, 0
    for split, count in zip(MINIIMAGENET_SPLITS, classes_per_split, strict=True):
        wnids[split] = [f"n{1000000 + 1000 * (number + i):08d}" for i in range(count)]
        number += count
    return wnids


def miniimagenet_arrays(
    classes_per_split: tuple[int, int, int] = (5, 3, 3),
    images: int = 6,
    size: tuple[int, int] = (MINIIMAGENET_SIZE, MINIIMAGENET_SIZE),
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {wnid: uint8 (images, height, width, 3)}}``; ``size`` is (width, height).

    Each class is a coloured ellipse or rectangle on a noisy background of its own colour; each
    image jitters position, size and colour.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split, wnids in miniimagenet_wnids(classes_per_split).items():
        arrays[split] = {}
        for wnid in wnids:
            shape_colour = rng.integers(0, 256, size=3)
            background_colour = rng.integers(0, 256, size=3)
            ellipse = bool(rng.integers(0, 2))
            stack = np.empty((images, height, width, 3), dtype=np.uint8)
            for sample in range(images):
                noise = rng.normal(0, 12, size=(height, width, 3))
                background = np.clip(background_colour + noise, 0, 255).astype(np.uint8)
                image = Image.fromarray(background)
                x0, y0 = rng.uniform(0.05, 0.35, size=2) * (width, height)
                x1, y1 = rng.uniform(0.65, 0.95, size=2) * (width, height)
                colour = tuple(int(c) for c in np.clip(shape_colour + rng.normal(0, 10, 3), 0, 255))
                box = (float(x0), float(y0), float(x1), float(y1))
                draw = ImageDraw.Draw(image)
                (draw.ellipse if ellipse else draw.rectangle)(box, fill=colour)
                stack[sample] = np.asarray(image)
            arrays[split][wnid] = stack
    return arrays


def _jpeg_name(wnid: str, sample: int) -> str:
    """Ravi's file names: wnid followed by an 8-digit image number."""
    return f"{wnid}{sample + 1:08d}.jpg"


def write_miniimagenet_csv(
    root: str | Path,
    classes_per_split: tuple[int, int, int] = (5, 3, 3),
    images: int = 6,
    size: tuple[int, int] = (100, 90),
    seed: int = 0,
) -> Path:
    """Ravi & Larochelle's ``{train,val,test}.csv`` and a flat ``images/`` of ``size`` JPEGs."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, classes in miniimagenet_arrays(classes_per_split, images, size, seed).items():
        with (root / f"{split}.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["filename", "label"])
            for wnid, stack in classes.items():
                for sample, array in enumerate(stack):
                    Image.fromarray(array).save(root / "images" / _jpeg_name(wnid, sample))
                    writer.writerow([_jpeg_name(wnid, sample), wnid])
    return root


def write_miniimagenet_finn(
    root: str | Path,
    classes_per_split: tuple[int, int, int] = (5, 3, 3),
    images: int = 6,
    size: tuple[int, int] = (MINIIMAGENET_SIZE, MINIIMAGENET_SIZE),
    seed: int = 0,
) -> Path:
    """Finn's ``{train,val,test}/<wnid>/*.jpg`` (84×84 JPEGs after his ``proc_images.py``)."""
    root = Path(root)
    for split, classes in miniimagenet_arrays(classes_per_split, images, size, seed).items():
        for wnid, stack in classes.items():
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for sample, array in enumerate(stack):
                Image.fromarray(array).save(folder / _jpeg_name(wnid, sample))
    return root


def write_miniimagenet_pickle(
    root: str | Path,
    classes_per_split: tuple[int, int, int] = (5, 3, 3),
    images: int = 6,
    seed: int = 0,
    val_name: str = "val",
    interleave: bool = True,
) -> Path:
    """``mini-imagenet-cache-{train,<val_name>,test}.pkl``: ``image_data`` and ``class_dict``.

    ``interleave`` stores the classes' images interleaved (class ``c`` image ``s`` at index
    ``s * classes + c``) to exercise the index lists; otherwise each class is contiguous.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, classes in miniimagenet_arrays(classes_per_split, images, seed=seed).items():
        stacks = list(classes.values())
        if interleave:
            image_data = np.stack(stacks, axis=1).reshape(-1, *stacks[0].shape[1:])
            class_dict = {
                wnid: [s * len(classes) + c for s in range(images)]
                for c, wnid in enumerate(classes)
            }
        else:
            image_data = np.concatenate(stacks)
            class_dict = {
                wnid: list(range(c * images, (c + 1) * images)) for c, wnid in enumerate(classes)
            }
        name = val_name if split == "val" else split
        with (root / f"mini-imagenet-cache-{name}.pkl").open("wb") as stream:
            pickle.dump({"image_data": image_data, "class_dict": class_dict}, stream, protocol=4)
    return root


def write_miniimagenet_torchmeta(
    root: str | Path,
    classes_per_split: tuple[int, int, int] = (5, 3, 3),
    images: int = 6,
    seed: int = 0,
) -> Path:
    """torchmeta's ``miniimagenet/{split}_data.hdf5`` + ``{split}_labels.json``; returns ``root``.

    As torchmeta's ``MiniImagenetClassDataset.download`` writes them: a group ``datasets`` with
    one uint8 ``(N, 84, 84, 3)`` dataset per class name, and the sorted class names as JSON.
    """
    folder = Path(root) / "miniimagenet"
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in miniimagenet_arrays(classes_per_split, images, seed=seed).items():
        with h5py.File(folder / f"{split}_data.hdf5", "w") as hdf5:
            group = hdf5.create_group("datasets")
            for wnid, stack in classes.items():
                group.create_dataset(wnid, data=stack)
        (folder / f"{split}_labels.json").write_text(json.dumps(sorted(classes)))
    return Path(root)
