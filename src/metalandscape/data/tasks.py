"""Few-shot tasks: one representation, and samplers that make each task a pure function.

A task is a support set (k shots per class, n classes) and a target set (``query`` samples per
class). A meta-batch stacks tasks on a leading axis, ``[tasks, n_way * k_shot, ...]``, ready for
``torch.func.vmap``. Every task is fully determined by ``(seed, split, index)``: the random
generator of task ``index`` of ``split`` is ``numpy.random.default_rng([seed, split_id, index])``,
so evaluation task sets are identical at every epoch and on every machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
TaskKind = Literal["classification", "regression"]


class DataError(ValueError):
    """A user-fixable problem with a data set: missing path, wrong layout, bad setting."""


@dataclass(frozen=True)
class Task:
    """One task. Classification labels are int64 in ``0..n_way-1``; regression targets are float."""

    support_inputs: Tensor
    support_labels: Tensor
    target_inputs: Tensor
    target_labels: Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Task:
        """Move to ``device``; ``dtype`` casts floating-point tensors only."""
        return Task(*(_move(t, device, dtype) for t in self._fields()))

    def _fields(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.support_inputs, self.support_labels, self.target_inputs, self.target_labels)


@dataclass(frozen=True)
class TaskBatch:
    """Tasks stacked on a leading axis: ``support_inputs`` is ``[tasks, n_way * k_shot, ...]``."""

    support_inputs: Tensor
    support_labels: Tensor
    target_inputs: Tensor
    target_labels: Tensor

    @staticmethod
    def stack(tasks: Sequence[Task]) -> TaskBatch:
        """Stack tasks of equal shapes."""
        if not tasks:
            raise ValueError("cannot stack an empty list of tasks")
        return TaskBatch(*(torch.stack(parts) for parts in zip(*(t._fields() for t in tasks))))

    def __len__(self) -> int:
        return self.support_inputs.shape[0]

    def __getitem__(self, index: int) -> Task:
        return Task(*(t[index] for t in self._fields()))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to ``device``; ``dtype`` casts floating-point tensors only."""
        return TaskBatch(*(_move(t, device, dtype) for t in self._fields()))

    def _fields(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.support_inputs, self.support_labels, self.target_inputs, self.target_labels)


def _move(tensor: Tensor, device: torch.device | str, dtype: torch.dtype | None) -> Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def task_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator that alone decides task ``index`` of ``split``."""
    if split not in SPLIT_IDS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError(f"task index must be non-negative, got {index}")
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


class TaskSource(Protocol):
    """Anything that turns a random generator into one task of a split."""

    kind: TaskKind

    def make_task(self, split: Split, rng: np.random.Generator) -> Task:
        """Draw one task of ``split`` using only ``rng``."""
        ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without batch axes."""
        ...

    @property
    def output_size(self) -> int:
        """Outputs a model needs: ``n_way`` for classification, 1 for regression."""
        ...


@runtime_checkable
class BatchTaskSource(TaskSource, Protocol):
    """A source that also draws many tasks at once, byte-identical to drawing them one by one."""

    def make_batch(self, split: Split, rngs: Sequence[np.random.Generator]) -> TaskBatch:
        """The tasks drawn by ``rngs`` (one generator per task), stacked: for every ``i``, the
        same bytes as ``make_task(split, rngs[i])``."""
        ...


@dataclass(frozen=True)
class TaskSampler:
    """Deterministic tasks of a source: task ``index`` of ``split`` depends on nothing else."""

    source: TaskSource
    seed: int

    def task(self, split: Split, index: int) -> Task:
        """Task ``index`` of ``split``."""
        return self.source.make_task(split, task_rng(self.seed, split, index))

    def batch(self, split: Split, indices: Sequence[int] | range) -> TaskBatch:
        """The tasks ``indices`` of ``split``, stacked (the same bytes as stacking
        :meth:`task` of each index; a :class:`BatchTaskSource` draws them at once)."""
        if isinstance(self.source, BatchTaskSource):
            return self.source.make_batch(
                split, [task_rng(self.seed, split, index) for index in indices]
            )
        return TaskBatch.stack([self.task(split, i) for i in indices])

    def meta_batch(self, split: Split, iteration: int, meta_batch_size: int) -> TaskBatch:
        """Meta-batch number ``iteration``: tasks ``iteration*size .. (iteration+1)*size - 1``."""
        start = iteration * meta_batch_size
        return self.batch(split, range(start, start + meta_batch_size))


RotationMode = Literal["per_task", "off", "expand"]


@dataclass(frozen=True)
class ClassImages:
    """Images of one split grouped by class: ``images[c, s]`` is sample ``s`` of class ``c``.

    ``images`` is uint8 with shape ``(classes, samples, H, W)`` (grey) or ``(classes, samples, H,
    W, 3)`` (colour); 255 is full intensity (for characters: stroke).
    """

    images: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim not in (4, 5):
            raise ValueError(
                "ClassImages.images must be uint8 (classes, samples, H, W[, 3]), "
                f"got {self.images.dtype} {self.images.shape}"
            )
        if len(self.class_names) != self.images.shape[0]:
            raise ValueError("one class name per class is required")


def unequal_counts(counts: Sequence[int]) -> tuple[int, list[int], str]:
    """How ``counts`` (images per class) fall short of one ``ClassImages`` array.

    Returns the most common count (the first seen on a tie), the positions of the counts that
    differ from it, and ``" (and N more)"`` for the differing ones after the first (else ``""``).
    """
    expected, _ = Counter(counts).most_common(1)[0]
    odd = [position for position, count in enumerate(counts) if count != expected]
    more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
    return expected, odd, more


@dataclass(frozen=True)
class ImageClassificationSource:
    """n-way k-shot classification tasks drawn from per-split class images.

    ``rotation``: ``per_task`` rotates every class of a task by a random multiple of 90° (Finn's
    Omniglot augmentation); ``expand`` treats each of the 4 rotations as its own class (×4
    classes); ``off`` uses the images as they are.
    """

    splits: dict[str, ClassImages]
    n_way: int
    k_shot: int
    query: int
    rotation: RotationMode = "off"
    kind: TaskKind = "classification"

    def __post_init__(self) -> None:
        if self.n_way < 2:
            raise DataError(f"n_way must be at least 2, got {self.n_way}")
        if self.k_shot < 1 or self.query < 1:
            raise DataError(f"k_shot and query must be at least 1, got {self.k_shot}, {self.query}")
        if self.rotation not in ("per_task", "off", "expand"):
            raise DataError(f"rotation must be per_task, off or expand, got {self.rotation!r}")
        for split, data in self.splits.items():
            classes, samples, height, width = data.images.shape[:4]
            if self.rotation != "off" and height != width:
                raise DataError(
                    f"rotation {self.rotation!r} turns images by 90°, which needs square images; "
                    f"split {split!r} has {height}×{width}: set rotation: off or a square "
                    "image_size"
                )
            if self.rotation == "expand":
                classes *= 4
            if classes < self.n_way:
                raise DataError(
                    f"split {split!r} has {classes} classes, fewer than n_way={self.n_way}"
                )
            if samples < self.k_shot + self.query:
                raise DataError(
                    f"split {split!r} has {samples} samples per class, fewer than "
                    f"k_shot + query = {self.k_shot + self.query}"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = next(iter(self.splits.values())).images.shape[2:]
        if len(shape) == 3:  # H, W, C -> C, H, W
            return (shape[2], shape[0], shape[1])
        return (1, *shape)

    @property
    def output_size(self) -> int:
        return self.n_way

    @property
    def supervised_classes(self) -> int:
        """Classes of the meta-train split seen as one ordinary classification problem."""
        classes = self.splits["train"].images.shape[0]
        return classes if self.rotation == "off" else classes * 4

    def supervised_batch(self, rng: np.random.Generator, batch_size: int) -> tuple[Tensor, Tensor]:
        """A batch of meta-train images labelled by their class (for the finetune baseline).

        Rotations (``per_task`` or ``expand``) make each rotated class its own label.
        """
        data = self.splits["train"].images
        n_classes, n_samples = data.shape[:2]
        rotations = 1 if self.rotation == "off" else 4
        labels = rng.integers(0, n_classes * rotations, size=batch_size)
        samples = rng.integers(0, n_samples, size=batch_size)
        images = data[labels % n_classes, samples]
        turns = labels // n_classes
        images = np.stack(
            [
                np.rot90(image, k=int(k), axes=(0, 1)) if k else image
                for image, k in zip(images, turns)
            ]
        )
        return _to_float_images(images), torch.from_numpy(labels.astype(np.int64))

    def make_task(self, split: Split, rng: np.random.Generator) -> Task:
        return self.make_batch(split, [rng])[0]

    def make_batch(self, split: Split, rngs: Sequence[np.random.Generator]) -> TaskBatch:
        """The tasks of ``rngs`` stacked; each generator draws its task's classes, rotations and
        samples in turn, then the images of all tasks are gathered, rotated and converted at
        once (labels follow each task's random class order: class j of a task is label j)."""
        if not rngs:
            raise ValueError("cannot draw an empty batch of tasks")
        data = self.splits[split].images
        n_classes, n_samples = data.shape[:2]
        per_class = self.k_shot + self.query
        draws = [self._draw_task(rng, n_classes, n_samples, per_class) for rng in rngs]
        class_ids = np.stack([draw[0] for draw in draws])  # [tasks, n_way]
        rotations = np.stack([draw[1] for draw in draws])
        picks = np.stack([draw[2] for draw in draws])  # [tasks, n_way, per_class]
        images = data[class_ids[..., None], picks]  # [tasks, n_way, per_class, H, W(, 3)]
        for turns in (1, 2, 3):
            rotated = rotations == turns
            if rotated.any():
                images[rotated] = np.rot90(images[rotated], k=turns, axes=(2, 3))
        tasks = len(rngs)

        def inputs(part: np.ndarray) -> Tensor:
            flat = _to_float_images(part.reshape(-1, *part.shape[3:]))
            return flat.view(tasks, -1, *flat.shape[1:])

        def labels(shots: int) -> Tensor:
            return torch.arange(self.n_way).repeat_interleave(shots).expand(tasks, -1).contiguous()

        return TaskBatch(
            support_inputs=inputs(images[:, :, : self.k_shot]),
            support_labels=labels(self.k_shot),
            target_inputs=inputs(images[:, :, self.k_shot :]),
            target_labels=labels(self.query),
        )

    def _draw_task(
        self, rng: np.random.Generator, n_classes: int, n_samples: int, per_class: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One task's random draws, in order: class ids, quarter turns, samples per class."""
        total_classes = n_classes * (4 if self.rotation == "expand" else 1)
        chosen = rng.choice(total_classes, size=self.n_way, replace=False)
        if self.rotation == "expand":
            class_ids, rotations = chosen % n_classes, chosen // n_classes
        elif self.rotation == "per_task":
            class_ids, rotations = chosen, rng.integers(0, 4, size=self.n_way)
        else:
            class_ids, rotations = chosen, np.zeros(self.n_way, dtype=np.int64)
        picks = np.stack([rng.choice(n_samples, size=per_class, replace=False) for _ in class_ids])
        return class_ids, rotations, picks


def _to_float_images(images: np.ndarray) -> Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` → float32 ``(N, C, H, W)`` in [0, 1]."""
    array = np.ascontiguousarray(images, dtype=np.float32) / 255.0
    if array.ndim == 3:
        array = array[:, None]
    else:
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))
