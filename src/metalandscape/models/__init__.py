"""Networks as plugins: the model registry (entry points ``metalandscape.models``).

A model is one small class (:class:`~metalandscape.models.base.Model`): a ``name``, a ``kind``
(``classification``: the network returns logits; ``regression``: predictions), a ``Settings``
dataclass and ``build(input_shape, outputs)``. The built-ins, Conv-4 (``conv4``: strided for
28×28 characters, max-pooled for MiniImagenet) and the sinusoid MLP (``mlp``), register the same
way as a third-party package does (``pyproject.toml``)::

    [project.entry-points."metalandscape.models"]
    my_resnet = "my_package.models:MyResNet"

A run names its model with the config key ``model`` (default: conv4 for image data, mlp for
sinusoids) and its settings with ``model_settings``. Importing this package is cheap (no torch):
config validation and planning read the names; the networks load on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

#: The entry-point group model plugins register under (pyproject.toml).
ENTRY_POINT_GROUP = "metalandscape.models"
#: Every model's last layer is an ``nn.Linear`` module named ``head``: the finetune baseline
#: replaces it per task, ANIL adapts only it.
HEAD_PREFIX = "head."
#: Weight initializations (key ``initialization``): ``pytorch``, PyTorch's default
#: (Kaiming-uniform weights, uniform biases); ``xavier``, Finn et al.'s code (Glorot-uniform
#: weights of every convolution and linear layer, zero biases).
INITIALIZATIONS: tuple[str, ...] = ("pytorch", "xavier")


def model_entry_points() -> dict[str, EntryPoint]:
    """Every entry point of the ``metalandscape.models`` group by name, none of them loaded."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def default_model_name(dataset: str) -> str:
    """The model a run of ``dataset`` trains when its config names none."""
    return "mlp" if dataset == "sinusoid" else "conv4"


# The networks and the plugin base import torch: loaded on first access (PEP 562).
_LAZY = {
    "Conv4": "networks",
    "SinusoidMLP": "networks",
    "conv_block": "networks",
    "initialize": "networks",
    "Model": "base",
    "ModelError": "base",
    "model_class": "base",
    "configured_model": "base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
