"""What a figure is: :class:`FigureSpec` (drawing, needs, caption) and :class:`Needs`.

Every figure module declares one spec next to its drawing code; the workflow's grid
(:mod:`metalandscape.grid`), the config check, the report captions and the SLURM grouping read
those specs. Importing this module is cheap: no matplotlib, seaborn, xarray or torch.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from metalandscape.algorithms import ALGORITHMS, Role

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

Kind = Literal["classification", "regression"]


@dataclass(frozen=True)
class Needs:
    """One way a family's runs can supply a figure.

    A run qualifies when it is of ``kind`` (None: any), one of ``variants`` (empty: any), its
    algorithm has one of ``roles`` or is one of ``algorithms`` (both empty: any), and it is
    measured with every metric of ``metrics`` (and with the accuracy splits of
    ``accuracy_splits`` when ``accuracy`` is among them). With ``together``, every algorithm of
    ``algorithms`` needs such a run in one setting (dataset, variant, way, shot).
    """

    metrics: tuple[str, ...]
    kind: Kind | None = None
    roles: tuple[Role, ...] = ()
    algorithms: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    accuracy_splits: tuple[str, ...] = ("test",)
    together: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.algorithms if name not in ALGORITHMS]
        if unknown:
            raise ValueError(f"figure needs name unregistered algorithms {unknown}")

    def describe(self) -> str:
        """These needs in words, e.g. ``a classification meta-learner run with [accuracy]``."""
        who = " or ".join([*self.roles, *self.algorithms]) or "any algorithm"
        text = f"a {self.kind or 'classification or regression'} run of {who}"
        if self.together:
            text = f"{self.kind or ''} runs of each of {list(self.algorithms)} in one setting"
        text += f" measured with {list(self.metrics)}"
        if self.variants:
            text += f" of variant {' or '.join(repr(v) for v in self.variants)}"
        if "accuracy" in self.metrics:
            text += f" (accuracy splits {list(self.accuracy_splits)})"
        return text.strip()


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: how to draw it, what it needs, and its report caption."""

    name: str
    description: str
    draw: Callable[[xr.Dataset], Figure]
    variables: tuple[str, ...]
    missing: Callable[[xr.Dataset], str | None]
    optional_variables: tuple[str, ...] = ()
    #: Alternatives: a family meeting any one of them can be drawn.
    needs: tuple[Needs, ...] = field(default=(), kw_only=True)
    #: The report's category, e.g. ``Flatness (fig. 2)``.
    title: str = field(default="", kw_only=True)
    #: The report caption (reStructuredText).
    caption: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if not self.needs or not self.title or not self.caption:
            raise ValueError(f"figure {self.name} must declare needs, title and caption")

    def is_drawable(self, dataset: xr.Dataset) -> bool:
        """Whether ``dataset`` holds everything this figure needs."""
        return self.missing(dataset) is None


def lazy_import(name: str) -> ModuleType:
    """Module ``name``, executed on its first attribute access (importlib's LazyLoader).

    Figure modules import matplotlib, seaborn, scipy and xarray through this, so that
    reading the figure registry (the workflow does it when it plans) stays cheap.
    """
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.find_spec(name)
    if found is None or found.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(found.loader)
    found.loader = loader
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
