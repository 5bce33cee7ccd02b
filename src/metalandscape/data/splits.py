"""Class splits shared by the character data sets (Omniglot and its fontglot surrogate)."""

from __future__ import annotations

import random
from collections.abc import Sequence

OMNIGLOT_CLASSES = 1623
OMNIGLOT_SPLIT = {"train": 1100, "val": 100, "test": 423}


def finn_split_sizes(classes: int) -> dict[str, int]:
    """How many of ``classes`` classes :func:`finn_split` puts in train, val and test."""
    if classes < 3:
        raise ValueError(f"need at least 3 classes to split, got {classes}")
    if classes >= OMNIGLOT_CLASSES:
        n_train, n_val = OMNIGLOT_SPLIT["train"], OMNIGLOT_SPLIT["val"]
    else:
        n_train = max(1, round(classes * OMNIGLOT_SPLIT["train"] / OMNIGLOT_CLASSES))
        n_val = max(1, round(classes * OMNIGLOT_SPLIT["val"] / OMNIGLOT_CLASSES))
        n_train = min(n_train, classes - n_val - 1)
    return {"train": n_train, "val": n_val, "test": classes - n_train - n_val}


def finn_split(class_keys: Sequence[str], seed: int = 1) -> dict[str, list[str]]:
    """Finn et al.'s Omniglot split: sort the keys, ``random.seed(seed)`` shuffle, 1100/100/rest.

    With fewer than 1,623 classes (test fixtures, small surrogates) the 1100/100/423 proportions
    are kept, each split getting at least one class.
    """
    keys = sorted(class_keys)
    sizes = finn_split_sizes(len(keys))
    random.Random(seed).shuffle(keys)
    n_train, n_val = sizes["train"], sizes["val"]
    return {
        "train": keys[:n_train],
        "val": keys[n_train : n_train + n_val],
        "test": keys[n_train + n_val :],
    }
