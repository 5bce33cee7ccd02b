"""The model plugin interface: one small class a network, discovered by entry points.

A plugin subclasses :class:`Model`: ``name``, ``kind`` (what its outputs are), a ``Settings``
dataclass whose fields may declare their rules with :func:`metalandscape.settings.setting`
(they become the workflow schema's checks of ``model_settings``), and :meth:`Model.build`. The
network it builds must end in an ``nn.Linear`` module named ``head`` with ``outputs`` outputs
(:data:`metalandscape.models.HEAD_PREFIX`): every algorithm and metric then works on it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import nn

from metalandscape.models import HEAD_PREFIX, model_entry_points
from metalandscape.plugins import load_failure
from metalandscape.settings import SettingsError, parse_settings

if TYPE_CHECKING:
    from metalandscape.config import RunConfig

Kind = Literal["classification", "regression"]


class ModelError(ValueError):
    """Unknown model, bad model setting, or a plugin that broke its contract (one line)."""


class Model(ABC):
    """Base class of every model plugin."""

    name: ClassVar[str]
    #: ``classification``: the network returns logits (cross-entropy, accuracy);
    #: ``regression``: predictions (squared error).
    kind: ClassVar[Kind]
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Settings:
        """No settings."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @classmethod
    def settings_from_run(cls, config: RunConfig) -> dict[str, Any]:
        """Settings the run's older config keys give (the built-ins: ``filters``,
        ``hidden_sizes``); ``model_settings`` overrides them. None by default."""
        return {}

    @abstractmethod
    def build(self, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
        """A fresh network for examples shaped ``input_shape`` (no batch axis) with ``outputs``
        outputs, its last layer an ``nn.Linear`` named ``head``."""


def model_class(name: str) -> type[Model]:
    """The Model class registered as ``name``, loading that plugin only."""
    entries = model_entry_points()
    if name not in entries:
        raise ModelError(
            f"unknown model {name!r}; available models: {', '.join(sorted(entries)) or 'none'} "
            "(install the package that registers it, or fix config key 'model')"
        )
    entry = entries[name]
    try:
        cls = entry.load()
    except Exception as error:  # any import error of a plugin, named clearly
        raise ModelError(
            f"model plugin {name!r} (entry point {entry.value}) failed to load: "
            f"{load_failure(error)}; reinstall the package that declares it"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelError(
            f"model plugin {name!r} (entry point {entry.value}) is not a Model class; fix the "
            "entry point in the pyproject.toml that declares it and reinstall"
        )
    if getattr(cls, "kind", None) not in ("classification", "regression"):
        raise ModelError(
            f"model plugin {name!r} must set kind = 'classification' or 'regression', "
            f"got {getattr(cls, 'kind', None)!r}"
        )
    return cls


def configured_model(cls: type[Model], settings: Mapping[str, Any] | None = None) -> Model:
    """A ``cls`` plugin with ``settings`` checked against its Settings dataclass."""
    try:
        parsed = parse_settings(
            cls.Settings,
            dict(settings or {}),
            owner=f"model {cls.name!r}",
            fix="config key model_settings: {key}",
        )
    except SettingsError as error:
        raise ModelError(str(error)) from None
    return cls(parsed)


def check_network(plugin: Model, network: nn.Module, outputs: int) -> nn.Module:
    """``network`` when it keeps the plugin contract (an ``nn.Linear`` head of ``outputs``)."""
    head = getattr(network, HEAD_PREFIX.rstrip("."), None)
    if not isinstance(head, nn.Linear) or head.out_features != outputs:
        raise ModelError(
            f"model {plugin.name!r} built a network without an nn.Linear module 'head' of "
            f"{outputs} outputs; name its last layer head (the finetune baseline and ANIL "
            "adapt it)"
        )
    return network


def format_models() -> str:
    """``train --list-models``: each registered model, its kind, meaning and settings (with
    defaults); a plugin that fails to load is listed with its one-line reason."""
    from metalandscape.models import model_entry_points

    lines = []
    for name in sorted(model_entry_points()):
        try:
            cls = model_class(name)
        except ModelError as error:
            lines.append(f"{name}  (broken: {error})")
            continue
        defaults = cls.Settings()
        settings = ", ".join(
            f"{field.name}={getattr(defaults, field.name)!r}"
            for field in dataclasses.fields(cls.Settings)
        )
        lines.append(f"{name}  {cls.kind}  {cls.description}  settings: {settings or 'none'}")
    return "\n".join(lines)
