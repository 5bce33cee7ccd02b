"""Data sets: the registry of task sources (entry points ``metalandscape.datasets``).

Each data set is one :class:`DatasetSpec`: its name (a field of run ids), what its tasks are
(classification or regression), which run-config defaults it takes, and where its images come
from (``loader``: ``"module:function"`` taking the data path and :class:`DataOptions`, returning
``{split: ClassImages}``) or its task source (``source``: ``"module:function"`` taking the run
config). The built-ins are declared here; a third-party package adds one with an entry point
whose object is a DatasetSpec (in a module that imports no torch: the registry is read whenever a
config is)::

    [project.entry-points."metalandscape.datasets"]
    cifarfs = "my_package.data:CIFARFS"

Importing this package is cheap (no torch, no numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metalandscape.plugins import registry_with_plugins, unknown_name_message

#: The entry-point group third-party data sets register under (their DatasetSpec).
ENTRY_POINT_GROUP = "metalandscape.datasets"

#: Run-config defaults by data set family (metalandscape.config.resolve_run_config):
#: ``sinusoid`` (Finn et al.'s regression), ``characters`` (the paper's Omniglot setup),
#: ``images`` (the paper's MiniImagenet setup).
DEFAULT_FAMILIES = ("sinusoid", "characters", "images")


@dataclass(frozen=True)
class DataOptions:
    """How image files become arrays: the run-config keys a loader may read."""

    resize: str = "lanczos"
    image_size: tuple[int, int] | None = None
    image_channels: str = "auto"
    omniglot_proportional_split: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """One registered data set."""

    name: str
    kind: Literal["classification", "regression"]
    title: str  # as figures and claims name it
    defaults: Literal["sinusoid", "characters", "images"]
    loader: str | None = None  # "module:function"(path, DataOptions) -> {split: ClassImages}
    source: str | None = None  # "module:function"(RunConfig) -> TaskSource (no files)
    default_path: str | None = None  # the file the workflow builds (fontglot); None: configured
    layout_help: str = "see README's data layouts"
    claims_title: str = ""  # how the claims table names it (default: ``title``)

    def __post_init__(self) -> None:
        if not self.name.isascii() or not self.name.isalpha() or not self.name.islower():
            raise ValueError(
                f"data set name {self.name!r} must be lowercase letters a-z only (it is a field "
                f"of run ids such as {self.name}-default-5way1shot-maml-seed0); rename it"
            )
        if (self.loader is None) == (self.source is None):
            raise ValueError(f"data set {self.name!r} needs exactly one of loader and source")
        if self.defaults not in DEFAULT_FAMILIES:
            raise ValueError(f"data set {self.name!r}: defaults must be one of {DEFAULT_FAMILIES}")

    @property
    def needs_files(self) -> bool:
        """Whether runs read files (a path), not generated tasks."""
        return self.loader is not None


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "sinusoid",
            "regression",
            "sinusoid",
            "sinusoid",
            source="metalandscape.data.sinusoid:sinusoid_source",
            claims_title="sinusoid regression",
        ),
        DatasetSpec(
            "fontglot",
            "classification",
            "fontglot (Omniglot stand-in)",
            "characters",
            loader="metalandscape.data.fontglot:load_fontglot_split",
            default_path="results/data/fontglot.npz",
            claims_title="fontglot (embedded Omniglot stand-in, not the paper's data)",
        ),
        DatasetSpec(
            "omniglot",
            "classification",
            "Omniglot",
            "characters",
            loader="metalandscape.data.omniglot:load_omniglot_split",
        ),
        DatasetSpec(
            "miniimagenet",
            "classification",
            "MiniImagenet",
            "images",
            loader="metalandscape.data.miniimagenet:load_miniimagenet_split",
        ),
        DatasetSpec(
            "folders",
            "classification",
            "class folders",
            "images",
            loader="metalandscape.data.folders:load_folders_split",
            layout_help="root/<train|val|test>/<class>/<image> (PNG or JPEG)",
        ),
    )
}


def dataset_names() -> tuple[str, ...]:
    """Registered data set names in registry order."""
    return tuple(DATASET_REGISTRY)


def unknown_dataset_message(name: str) -> str:
    """One line: ``name`` is not a registered data set (and why, when its plugin broke)."""
    return unknown_name_message(name, DATASET_REGISTRY, BROKEN_DATASET_PLUGINS, "data set")


def dataset_kind(name: str) -> str:
    """``classification`` or ``regression`` (an unknown name: classification)."""
    spec = DATASET_REGISTRY.get(name)
    return spec.kind if spec is not None else "classification"


#: Every data set: the built-ins, then the plugins' (read once, when this package is imported).
DATASET_REGISTRY, BROKEN_DATASET_PLUGINS = registry_with_plugins(
    ENTRY_POINT_GROUP, BUILTIN_DATASETS, DatasetSpec, "data set"
)
