"""Registries that third-party packages extend through entry points (torch-free).

Algorithms and data sets are declared as spec objects (an ``AlgorithmSpec``, a
``DatasetSpec``): the built-ins in their package, a plugin's behind an entry point of the
registry's group. :func:`registry_with_plugins` merges them once, when the registry is first
imported; a plugin that cannot be used is left out and its one-line reason kept, to be shown
when a config asks for that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TypeVar

Spec = TypeVar("Spec")


def load_failure(error: BaseException) -> str:
    """``ModuleNotFoundError: No module named 'x'``: an import error in one line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def registry_with_plugins(
    group: str, builtins: Mapping[str, Spec], spec_type: type[Spec], what: str
) -> tuple[dict[str, Spec], dict[str, str]]:
    """``builtins`` plus every ``group`` entry point whose object is a ``spec_type`` named as
    the entry point, and ``{entry name: why it was left out}`` for the others."""
    registry = dict(builtins)
    broken: dict[str, str] = {}
    for entry in entry_points(group=group):
        if entry.name in builtins:
            broken[entry.name] = f"its name is a built-in {what}'s; rename it"
            continue
        try:
            spec = entry.load()
        except Exception as error:  # any import error of a plugin, named in one line
            broken[entry.name] = f"failed to load ({load_failure(error)})"
            continue
        if not isinstance(spec, spec_type) or getattr(spec, "name", None) != entry.name:
            broken[entry.name] = (
                f"entry point {entry.value} must be an instance of {spec_type.__name__} named "
                f"{entry.name!r}"
            )
            continue
        registry[entry.name] = spec
    return registry, broken


def unknown_name_message(
    name: str, registry: Mapping[str, object], broken: Mapping[str, str], what: str
) -> str:
    """One line: ``name`` is not a registered ``what`` (and why, when its plugin broke)."""
    if name in broken:
        return (
            f"{what} plugin {name!r} {broken[name]}; fix or reinstall the package that declares it"
        )
    return f"unknown {what} {name!r}; registered: {', '.join(registry)}"
