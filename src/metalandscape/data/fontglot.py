"""Fontglot: an Omniglot-like set of handwritten-looking characters generated from fonts.

The glyphs come from the fonts that matplotlib ships (the 12 DejaVu faces and the 4 STIXGeneral
faces), so nothing is downloaded. One Unicode block plays the part of one Omniglot alphabet.

Candidate glyphs, in order of the filters:

1. every code point in a face's character map whose Unicode category is L, N, S or P;
2. rendered in the first face that has it: drop blank and tiny glyphs (fewer than 12 ink pixels
   at 28×28);
3. drop near-duplicates: a glyph whose binarised image is within Hamming distance 24 of a glyph
   with a lower code point that was kept;
4. keep glyphs present in at least 4 of the 12 DejaVu faces, so that samples vary in style;
5. keep at most 55 glyphs per Unicode block, evenly spaced over the block's survivors.

Of these, ``classes`` glyphs (1,623 by default, Omniglot's count) are chosen from ``seed``. Each
sample of a class is its glyph in a random face that has it, put through a random affine map
(rotation ±12°, shear ±0.25, scale 0.85–1.1, shift ±2 px), a smooth elastic displacement field
and random stroke thickening or thinning, drawn at 56×56 and averaged down to 28×28. Class
``c`` uses only ``numpy.random.default_rng([seed, c])``, so a build is bit-identical for any
number of workers, and across machines with the same library versions (stored in the file).

The file is one compressed ``.npz`` without pickled objects; ``images`` is uint8
``(classes, samples, 28, 28)`` with stroke 255 on background 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metalandscape.atomic import atomic_output
from metalandscape.data import DataOptions
from metalandscape.data.splits import OMNIGLOT_CLASSES, finn_split
from metalandscape.data.tasks import ClassImages, DataError

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont

GENERATOR_VERSION = "fontglot-1"

IMAGE_SIZE = 28
SUPERSAMPLING = 2
CANVAS_SIZE = IMAGE_SIZE * SUPERSAMPLING
FONT_PIXEL_SIZE = 52  # em size on the supersampled canvas: capitals come out ~19 px tall
MAX_GLYPH_EXTENT = 48  # larger glyphs are shrunk to fit this box on the supersampled canvas

INK_THRESHOLD = 128  # a pixel is ink when its 0..255 value is at least this
MIN_INK_PIXELS = 12
DUPLICATE_HAMMING_DISTANCE = 24
MIN_DEJAVU_FACES = 4
MAX_GLYPHS_PER_ALPHABET = 55
KEPT_CATEGORY_CLASSES = ("L", "N", "S", "P")
MIN_SAMPLE_INK_PIXELS = 6  # a drawn sample with less ink than this counts as blank
MAX_REDRAWS = 50

ROTATION_DEGREES = 12.0
SHEAR = 0.25
SCALE_RANGE = (0.85, 1.1)
SHIFT_PIXELS = 2.0
ELASTIC_SIGMA_PIXELS = 2.5
ELASTIC_RMS_PIXELS = 0.8
# Stroke operations and their probabilities: -1 thins, 0 keeps, 1 thickens (by about half a
# pixel on each side of the stroke).
STROKE_OPERATIONS = (-1, 0, 1)
STROKE_PROBABILITIES = (0.25, 0.45, 0.3)

DEJAVU_FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
)
STIX_FACES = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
FACES = DEJAVU_FACES + STIX_FACES

REQUIRED_KEYS = (
    "images",
    "code_points",
    "alphabet_ids",
    "alphabet_names",
    "generator_version",
    "seed",
    "library_versions",
    "sha256",
)

# The class choice uses default_rng([seed, _CLASS_CHOICE_STREAM]); class c uses [seed, c].
_CLASS_CHOICE_STREAM = 2**32 - 1
_CODE_POINTS_PER_CHUNK = 256


@dataclass(frozen=True)
class GlyphCandidate:
    """A glyph that passed the filters: its code point, Unicode block and faces (indices)."""

    code_point: int
    alphabet: str
    faces: tuple[int, ...]


@dataclass(frozen=True)
class FilterStage:
    """How many glyphs and alphabets (Unicode blocks) were left after one filter."""

    name: str
    glyphs: int
    alphabets: int


def build_fontglot(
    out_path: str | Path,
    *,
    seed: int = 0,
    classes: int = OMNIGLOT_CLASSES,
    samples_per_class: int = 20,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Generate the fontglot file at ``out_path`` (written atomically) and return its path."""
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    if classes < 1:
        raise DataError(f"classes must be at least 1, got {classes}")
    if samples_per_class < 1:
        raise DataError(f"samples_per_class must be at least 1, got {samples_per_class}")
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    out_path = Path(out_path)
    with _process_pool(workers) as executor:
        candidates = _cached_candidates(executor)
        if classes > len(candidates):
            raise DataError(
                f"asked for {classes} fontglot classes but only {len(candidates)} glyphs pass "
                "the filters; ask for fewer classes"
            )
        chosen = choose_classes(candidates, classes, seed)
        jobs = [
            (seed, class_index, glyph.code_point, glyph.faces, samples_per_class)
            for class_index, glyph in enumerate(chosen)
        ]
        images = np.empty((classes, samples_per_class, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        results = _map(executor, _draw_class_job, jobs, chunksize=8)
        for class_index, samples in enumerate(_progress(results, classes, progress)):
            images[class_index] = samples
    alphabet_names = sorted({glyph.alphabet for glyph in chosen}, key=_alphabet_start)
    alphabet_index = {name: index for index, name in enumerate(alphabet_names)}
    arrays = {
        "images": images,
        "code_points": np.array([glyph.code_point for glyph in chosen], dtype=np.int64),
        "alphabet_ids": np.array([alphabet_index[glyph.alphabet] for glyph in chosen], np.int64),
        "alphabet_names": np.array(alphabet_names, dtype=np.str_),
        "generator_version": np.array(GENERATOR_VERSION, dtype=np.str_),
        "seed": np.array(seed, dtype=np.int64),
        "library_versions": np.array(json.dumps(library_versions(), sort_keys=True), np.str_),
        "sha256": np.array(_images_sha256(images), dtype=np.str_),
    }
    _save_atomically(out_path, arrays)
    return out_path


def load_fontglot(path: str | Path) -> dict[str, ClassImages]:
    """Verify the fontglot file and split its classes (Finn's split) into train, val and test."""
    path = Path(path)
    arrays = _read_verified(path)
    keys = _class_keys(arrays)
    if len(keys) < 3:
        raise DataError(f"fontglot file {path} has {len(keys)} classes; at least 3 are needed")
    row_of_key = {key: row for row, key in enumerate(keys)}
    images = arrays["images"]
    return {
        split: ClassImages(
            images=np.ascontiguousarray(images[[row_of_key[key] for key in split_keys]]),
            class_names=tuple(split_keys),
        )
        for split, split_keys in finn_split(keys).items()
    }


def describe_fontglot(path: str | Path) -> dict[str, Any]:
    """Verify the fontglot file and summarise it: sizes, alphabets, seed, version, checksum."""
    path = Path(path)
    arrays = _read_verified(path)
    images = arrays["images"]
    keys = _class_keys(arrays)
    splits = finn_split(keys) if len(keys) >= 3 else {}
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "classes": int(images.shape[0]),
        "samples_per_class": int(images.shape[1]),
        "image_shape": [int(size) for size in images.shape[2:]],
        "alphabets": len(arrays["alphabet_names"]),
        "alphabet_names": [str(name) for name in arrays["alphabet_names"]],
        "splits": {split: len(split_keys) for split, split_keys in splits.items()},
        "seed": int(arrays["seed"]),
        "generator_version": str(arrays["generator_version"]),
        "sha256": str(arrays["sha256"]),
        "library_versions": json.loads(str(arrays["library_versions"])),
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour decides the generated pixels."""
    import fontTools
    import matplotlib
    import PIL
    import scipy
    from PIL import ImageFont

    return {
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "fonttools": fontTools.version,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
        "freetype": str(ImageFont.core.freetype2_version),
        "unicodedata": unicodedata.unidata_version,
    }


def glyph_candidates(
    executor: concurrent.futures.Executor | None = None,
) -> tuple[list[GlyphCandidate], list[FilterStage]]:
    """The glyphs that pass every filter, by code point, and the count after each filter."""
    from fontTools import unicodedata as fonttools_unicodedata

    face_code_points = [_face_code_points(face) for face in FACES]
    stages: list[FilterStage] = []

    def record(name: str, code_points: Iterable[int]) -> None:
        code_points = list(code_points)
        alphabets = {fonttools_unicodedata.block(chr(cp)) for cp in code_points}
        stages.append(FilterStage(name, len(code_points), len(alphabets)))

    all_code_points = sorted(set().union(*face_code_points))
    kept = [
        cp
        for cp in all_code_points
        if unicodedata.category(chr(cp))[0] in KEPT_CATEGORY_CLASSES
        and fonttools_unicodedata.block(chr(cp)) != "No_Block"
    ]
    record("categories L/N/S/P", kept)

    first_face = {cp: next(f for f, cps in enumerate(face_code_points) if cp in cps) for cp in kept}
    chunks = [
        kept[i : i + _CODE_POINTS_PER_CHUNK] for i in range(0, len(kept), _CODE_POINTS_PER_CHUNK)
    ]
    jobs = [[(first_face[cp], cp) for cp in chunk] for chunk in chunks]
    images = np.concatenate(list(_map(executor, _binary_glyph_images, jobs, chunksize=1)))
    ink = images.sum(axis=(1, 2))
    kept_rows = np.flatnonzero(ink >= MIN_INK_PIXELS)
    record("not blank or tiny", (kept[row] for row in kept_rows))

    distinct_rows = kept_rows[_distinct_rows(images[kept_rows].reshape(len(kept_rows), -1))]
    record("not near-duplicate", (kept[row] for row in distinct_rows))

    dejavu_count = len(DEJAVU_FACES)
    by_alphabet: dict[str, list[GlyphCandidate]] = {}
    for row in distinct_rows:
        cp = kept[row]
        faces = tuple(f for f, cps in enumerate(face_code_points) if cp in cps)
        if sum(f < dejavu_count for f in faces) >= MIN_DEJAVU_FACES:
            alphabet = fonttools_unicodedata.block(chr(cp))
            by_alphabet.setdefault(alphabet, []).append(GlyphCandidate(cp, alphabet, faces))
    in_enough_faces = [glyph.code_point for glyphs in by_alphabet.values() for glyph in glyphs]
    record(f"in ≥{MIN_DEJAVU_FACES} DejaVu faces", in_enough_faces)

    candidates = []
    for glyphs in by_alphabet.values():
        if len(glyphs) > MAX_GLYPHS_PER_ALPHABET:
            spread = np.linspace(0, len(glyphs) - 1, MAX_GLYPHS_PER_ALPHABET).round()
            glyphs = [glyphs[int(i)] for i in spread]
        candidates.extend(glyphs)
    candidates.sort(key=lambda glyph: glyph.code_point)
    record(f"≤{MAX_GLYPHS_PER_ALPHABET} per alphabet", (g.code_point for g in candidates))
    return candidates, stages


_candidates_of_this_process: list[GlyphCandidate] = []


def _cached_candidates(executor: concurrent.futures.Executor | None) -> list[GlyphCandidate]:
    """The candidates, computed once per process (they depend on nothing but the fonts)."""
    if not _candidates_of_this_process:
        _candidates_of_this_process.extend(glyph_candidates(executor)[0])
    return _candidates_of_this_process


def choose_classes(
    candidates: Sequence[GlyphCandidate], classes: int, seed: int
) -> list[GlyphCandidate]:
    """``classes`` candidates chosen from ``seed``, ordered by alphabet, then code point."""
    rng = np.random.default_rng([seed, _CLASS_CHOICE_STREAM])
    picks = rng.choice(len(candidates), size=classes, replace=False)
    chosen = [candidates[int(i)] for i in picks]
    return sorted(chosen, key=lambda g: (_alphabet_start(g.alphabet), g.code_point))


def draw_class_samples(
    code_point: int, faces: Sequence[int], samples: int, rng: np.random.Generator
) -> np.ndarray:
    """``samples`` random drawings of one glyph: uint8 ``(samples, 28, 28)``, stroke 255."""
    masters: dict[int, np.ndarray | None] = {}
    drawn = np.empty((samples, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for sample in range(samples):
        for _ in range(MAX_REDRAWS):
            face = faces[rng.integers(len(faces))]
            if face not in masters:
                masters[face] = _glyph_master(face, code_point)
            master = masters[face]
            if master is None:  # the face maps the code point to an empty glyph
                continue
            image = _distort(master, rng)
            if np.count_nonzero(image >= INK_THRESHOLD) >= MIN_SAMPLE_INK_PIXELS:
                break
        else:  # practically unreachable: the glyph as rendered in its first face
            master = _glyph_master(faces[0], code_point)
            if master is None:
                raise DataError(f"glyph U+{code_point:04X} renders blank in its first face")
            image = _downsample(master)
        drawn[sample] = image
    return drawn


# --- rendering ---------------------------------------------------------------------------------


def _fonts_directory() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _face_code_points(face: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    path = _fonts_directory() / face
    if not path.is_file():
        raise DataError(f"font {path} is missing; fontglot needs the fonts matplotlib ships")
    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap())


@cache
def _font(face_index: int) -> FreeTypeFont:
    from PIL import ImageFont

    path = _fonts_directory() / FACES[face_index]
    return ImageFont.truetype(str(path), FONT_PIXEL_SIZE, layout_engine=ImageFont.Layout.BASIC)


def _glyph_master(face_index: int, code_point: int) -> np.ndarray | None:
    """The glyph centred on the supersampled canvas, float32 in [0, 1]; None if blank."""
    from PIL import Image, ImageDraw

    font = _font(face_index)
    character = chr(code_point)
    left, top, right, bottom = font.getbbox(character)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left + 2, bottom - top + 2))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), character, fill=255, font=font)
    pixels = np.asarray(canvas)
    rows, columns = np.nonzero(pixels)
    if rows.size == 0:
        return None
    glyph = canvas.crop((columns.min(), rows.min(), columns.max() + 1, rows.max() + 1))
    width, height = glyph.size
    if max(width, height) > MAX_GLYPH_EXTENT:
        shrink = MAX_GLYPH_EXTENT / max(width, height)
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        glyph = glyph.resize(size, Image.Resampling.BOX)
        width, height = glyph.size
    master = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE))
    master.paste(glyph, ((CANVAS_SIZE - width) // 2, (CANVAS_SIZE - height) // 2))
    result = np.asarray(master, dtype=np.float32) / 255.0
    if np.count_nonzero(_downsample(result) >= INK_THRESHOLD) < MIN_INK_PIXELS:
        return None
    return result


def _downsample(image: np.ndarray) -> np.ndarray:
    """Average supersampled float [0, 1] pixels down to uint8 ``(28, 28)``."""
    blocks = image.reshape(IMAGE_SIZE, SUPERSAMPLING, IMAGE_SIZE, SUPERSAMPLING).sum(axis=(1, 3))
    scale = 255.0 / SUPERSAMPLING**2
    return np.rint(np.clip(blocks * scale, 0.0, 255.0)).astype(np.uint8)


def _binary_glyph_images(glyphs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Binarised 28×28 images (bool) of ``(face, code_point)`` pairs; blank glyphs are empty."""
    images = np.zeros((len(glyphs), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for row, (face, code_point) in enumerate(glyphs):
        master = _glyph_master(face, code_point)
        if master is not None:
            images[row] = _downsample(master) >= INK_THRESHOLD
    return images


def _distinct_rows(vectors: np.ndarray, block: int = 256) -> np.ndarray:
    """Rows kept by a greedy pass in order, dropping rows near (Hamming) an earlier kept row."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int64)
    vectors = vectors.astype(np.float32)
    ink = vectors.sum(axis=1)
    # Rows can only be near when their ink counts differ by at most the distance: compare each
    # block of rows, sorted by ink, with the rows of similar ink only.
    by_ink = np.argsort(ink, kind="stable")
    sorted_ink = ink[by_ink]
    pair_rows, pair_others = [], []
    for start in range(0, len(vectors), block):
        rows = by_ink[start : start + block]
        low = np.searchsorted(sorted_ink, sorted_ink[start] - DUPLICATE_HAMMING_DISTANCE, "left")
        high = np.searchsorted(
            sorted_ink, sorted_ink[start + rows.size - 1] + DUPLICATE_HAMMING_DISTANCE, "right"
        )
        others = by_ink[low:high]
        # Exact in float32: the sums are integers below 2**24.
        overlap = vectors[rows] @ vectors[others].T
        distances = ink[rows, None] + ink[None, others] - 2.0 * overlap
        near = (distances <= DUPLICATE_HAMMING_DISTANCE) & (others[None, :] > rows[:, None])
        i, j = np.nonzero(near)
        pair_rows.append(rows[i])
        pair_others.append(others[j])
    # Later rows near each row, as a compressed sparse row table.
    rows, others = np.concatenate(pair_rows), np.concatenate(pair_others)
    order = np.argsort(rows, kind="stable")
    rows, others = rows[order], others[order]
    bounds = np.searchsorted(rows, np.arange(len(vectors) + 1))
    dropped = np.zeros(len(vectors), dtype=bool)
    kept = []
    for row in range(len(vectors)):
        if not dropped[row]:
            kept.append(row)
            dropped[others[bounds[row] : bounds[row + 1]]] = True
    return np.array(kept, dtype=np.int64)


# --- distortion --------------------------------------------------------------------------------

_CENTRE = (CANVAS_SIZE - 1) / 2.0
_GRID_ROWS, _GRID_COLUMNS = np.mgrid[0:CANVAS_SIZE, 0:CANVAS_SIZE].astype(np.float64) - _CENTRE


def _distort(master: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random drawing of a supersampled glyph, downsampled to uint8 28×28."""
    from scipy import ndimage

    angle = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    shear = rng.uniform(-SHEAR, SHEAR)
    scale = rng.uniform(*SCALE_RANGE)
    shift = rng.uniform(-SHIFT_PIXELS, SHIFT_PIXELS, size=2) * SUPERSAMPLING
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    inverse = np.linalg.inv(forward)
    rows = _GRID_ROWS - shift[0]
    columns = _GRID_COLUMNS - shift[1]
    source_rows = inverse[0, 0] * rows + inverse[0, 1] * columns + _CENTRE
    source_columns = inverse[1, 0] * rows + inverse[1, 1] * columns + _CENTRE

    # The smooth field is drawn on the 28×28 grid and interpolated up: same field, 8× cheaper.
    noise = rng.standard_normal((2, IMAGE_SIZE, IMAGE_SIZE))
    field = ndimage.gaussian_filter(
        noise, sigma=(0, ELASTIC_SIGMA_PIXELS, ELASTIC_SIGMA_PIXELS), mode="reflect", truncate=3.0
    )
    field *= ELASTIC_RMS_PIXELS * SUPERSAMPLING / max(float(np.sqrt(np.mean(field**2))), 1e-12)
    field = _upsample_twice(_upsample_twice(field, axis=1), axis=2)
    source_rows += field[0]
    source_columns += field[1]
    drawn = ndimage.map_coordinates(
        master, (source_rows, source_columns), order=1, mode="constant", cval=0.0
    )

    stroke = rng.choice(STROKE_OPERATIONS, p=STROKE_PROBABILITIES)
    if stroke < 0:
        drawn = ndimage.grey_erosion(drawn, size=(3, 3))
    elif stroke > 0:
        drawn = ndimage.grey_dilation(drawn, size=(1 + 2 * stroke, 1 + 2 * stroke))
    return _downsample(drawn)


def _upsample_twice(values: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation to twice the samples along ``axis`` (pixel centres kept aligned)."""
    values = np.moveaxis(values, axis, -1)
    padded = np.concatenate([values[..., :1], values, values[..., -1:]], axis=-1)
    upsampled = np.empty((*values.shape[:-1], 2 * values.shape[-1]), dtype=values.dtype)
    upsampled[..., 0::2] = 0.75 * values + 0.25 * padded[..., :-2]
    upsampled[..., 1::2] = 0.75 * values + 0.25 * padded[..., 2:]
    return np.moveaxis(upsampled, -1, axis)


def _draw_class_job(job: tuple[int, int, int, tuple[int, ...], int]) -> np.ndarray:
    seed, class_index, code_point, faces, samples = job
    return draw_class_samples(
        code_point, faces, samples, np.random.default_rng([seed, class_index])
    )


# --- processes, files --------------------------------------------------------------------------


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[concurrent.futures.Executor | None]:
    """A pool of ``workers`` processes, or ``None`` (work in this process) for one worker."""
    if workers == 1:
        yield None
        return
    # fork keeps the imported modules (start-up in milliseconds); other systems spawn.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield pool


def _map(
    executor: concurrent.futures.Executor | None, function, jobs: Sequence, chunksize: int
) -> Iterator:
    if executor is None:
        return map(function, jobs)
    return executor.map(function, jobs, chunksize=chunksize)


def _progress(results: Iterator, total: int, enabled: bool) -> Iterator:
    if not enabled:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc="fontglot classes", unit="class")


@cache
def _alphabet_start(alphabet: str) -> int:
    from fontTools.unicodedata import Blocks

    return next(
        start for start, name in zip(Blocks.RANGES, Blocks.VALUES, strict=True) if name == alphabet
    )


def _images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        np.savez_compressed(file, **arrays)
        file.flush()
        os.fsync(file.fileno())


def _rebuild_hint(path: Path) -> str:
    return f"rebuild it with `metalandscape data fontglot --out {path}`"


def _read_verified(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"fontglot file {path} not found; build it with `metalandscape data fontglot "
            f"--out {path}`"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in REQUIRED_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"fontglot file {path} lacks {', '.join(missing)}; {_rebuild_hint(path)}"
                )
            arrays = {key: archive[key] for key in REQUIRED_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"fontglot file {path} is unreadable or corrupt ({error}); {_rebuild_hint(path)}"
        ) from error
    version = str(arrays["generator_version"])
    if version != GENERATOR_VERSION:
        raise DataError(
            f"fontglot file {path} was made by generator {version!r}, this code reads "
            f"{GENERATOR_VERSION!r}; {_rebuild_hint(path)}"
        )
    images = arrays["images"]
    classes = images.shape[0] if images.ndim else 0
    layout_ok = (
        images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[2:] == (IMAGE_SIZE, IMAGE_SIZE)
        and arrays["code_points"].shape == (classes,)
        and arrays["alphabet_ids"].shape == (classes,)
        and arrays["alphabet_names"].ndim == 1
        and arrays["alphabet_names"].dtype.kind == "U"
        and np.all(arrays["alphabet_ids"] >= 0)
        and np.all(arrays["alphabet_ids"] < len(arrays["alphabet_names"]))
    )
    if not layout_ok:
        raise DataError(f"fontglot file {path} has an unexpected layout; {_rebuild_hint(path)}")
    if _images_sha256(images) != str(arrays["sha256"]):
        raise DataError(
            f"fontglot file {path} fails its sha256 check (images changed or damaged); "
            f"{_rebuild_hint(path)}"
        )
    return arrays


def _class_keys(arrays: dict[str, np.ndarray]) -> list[str]:
    names = arrays["alphabet_names"]
    return [
        f"{names[alphabet]}/{code_point:05X}"
        for alphabet, code_point in zip(
            arrays["alphabet_ids"].tolist(), arrays["code_points"].tolist(), strict=True
        )
    ]


def load_fontglot_split(path: str | Path, options: DataOptions) -> dict[str, ClassImages]:
    """The registry's loader (metalandscape.data.DATASET_REGISTRY): :func:`load_fontglot`."""
    return load_fontglot(path)
