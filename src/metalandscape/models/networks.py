"""The paper's networks: Conv-4 (Vinyals et al., Finn et al.) and the sinusoid MLP, and their
model plugins (``conv4``, ``mlp``; registered in pyproject.toml like any third-party model).

BatchNorm always normalises with the statistics of the batch it sees (``track_running_stats=
False``), at meta-training and at meta-test alike, as MAML's reference code does. Convolutions
feeding a BatchNorm have no bias: BatchNorm subtracts the batch mean, so such a bias would only
receive round-off gradients.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from metalandscape.models import INITIALIZATIONS
from metalandscape.models.base import Model
from metalandscape.models.batched_ops import (
    ImagePatches,
    grouped_conv2d,
    image_patches,
    patch_conv2d,
    training_batch_norm,
)
from metalandscape.settings import setting

if TYPE_CHECKING:
    from metalandscape.config import RunConfig


def conv_block(in_channels: int, out_channels: int, *, use_max_pool: bool) -> nn.Sequential:
    """3×3 conv → BatchNorm (batch statistics) → ReLU → 2×2 max-pool, or stride-2 conv instead."""
    stride = 1 if use_max_pool else 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
    ]
    if use_max_pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """Four conv blocks and a linear head, as in Finn et al.'s code.

    Omniglot-like 28×28 inputs: 64 filters, stride-2 convolutions, features averaged over the
    remaining 2×2 positions. MiniImagenet 84×84×3: 2×2 max-pooling, 32 (Finn) or 48 (the paper)
    filters, features flattened (5×5×filters).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        outputs: int,
        *,
        filters: int = 64,
        use_max_pool: bool = False,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        channels = [in_channels, filters, filters, filters, filters]
        self.features = nn.Sequential(
            *(conv_block(channels[i], channels[i + 1], use_max_pool=use_max_pool) for i in range(4))
        )
        self.flatten_features = use_max_pool
        if use_max_pool:
            for _ in range(4):
                height, width = height // 2, width // 2
            head_inputs = filters * height * width
        else:
            head_inputs = filters
        self.head = nn.Linear(head_inputs, outputs)
        self._cached_patches: tuple[weakref.ref[Tensor], int, ImagePatches] | None = None

    def forward(self, inputs: Tensor) -> Tensor:
        features = self.features(inputs)
        if self.flatten_features:
            features = features.flatten(start_dim=1)
        else:
            features = features.mean(dim=(2, 3))
        return self.head(features)

    def _first_patches(self, inputs: Tensor) -> ImagePatches:
        """The first convolution's patches of ``inputs`` ``[tasks, examples, C, H, W]`` as
        ``[examples, tasks × C × 3 × 3, H' × W']``. Every inner step of an adaptation passes the
        same support images: while the same, unchanged tensor that needs no gradient comes back,
        the last patches (not made in inference mode) are reused."""
        cached = self._cached_patches
        if cached is not None and cached[0]() is inputs and cached[1] == inputs._version:
            return cached[2]
        examples = inputs.shape[1]
        convolution = self.features[0][0]
        patches = image_patches(
            inputs.transpose(0, 1).reshape(examples, -1, *inputs.shape[3:]),
            convolution.kernel_size,
            convolution.stride,
            convolution.padding,
            convolution.dilation,
        )
        if not (inputs.requires_grad or torch.is_inference_mode_enabled()):
            self._cached_patches = (weakref.ref(inputs), inputs._version, patches)
        return patches

    def forward_batched(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """Outputs ``[tasks, examples, outputs]`` of one parameter set per task (every tensor of
        ``params`` has a leading task axis) on that task's ``inputs`` ``[tasks, examples, C, H,
        W]``: what ``vmap`` of :meth:`forward` over tasks computes, in fewer, larger kernels.

        Activations stay ``[examples, tasks × channels, H, W]`` throughout: convolutions are
        grouped by task and BatchNorm normalises each (task, channel) over its examples, both with
        the short double backward of :mod:`metalandscape.models.batched_ops`.
        """
        tasks, examples = inputs.shape[:2]
        for index, block in enumerate(self.features):
            convolution, norm = block[0], block[1]
            weight = params[f"features.{index}.0.weight"]
            weight = weight.reshape(-1, *weight.shape[2:])
            if index == 0 and not self.flatten_features:
                hidden = patch_conv2d(self._first_patches(inputs), weight, tasks)
            else:
                if index == 0:
                    hidden = inputs.transpose(0, 1).reshape(examples, -1, *inputs.shape[3:])
                hidden = grouped_conv2d(
                    hidden,
                    weight,
                    convolution.stride,
                    convolution.padding,
                    convolution.dilation,
                    tasks,
                )
            hidden = training_batch_norm(
                hidden,
                params[f"features.{index}.1.weight"].reshape(-1),
                params[f"features.{index}.1.bias"].reshape(-1),
                norm.eps,
            )
            # ReLU, max-pooling, per channel (islice: slicing a Sequential builds a new module)
            for layer in itertools.islice(block, 2, None):
                hidden = layer(hidden)
        if self.flatten_features:
            features = hidden.reshape(examples, tasks, -1)
        else:
            features = hidden.mean(dim=(2, 3)).view(examples, tasks, -1)
        return torch.baddbmm(
            params["head.bias"].unsqueeze(1),
            features.transpose(0, 1),
            params["head.weight"].transpose(1, 2),
        )


class SinusoidMLP(nn.Module):
    """MLP 1 → 40 → 40 → 1 with ReLU (Finn et al.'s sinusoid regressor)."""

    def __init__(self, hidden: Sequence[int] = (40, 40), inputs: int = 1, outputs: int = 1) -> None:
        super().__init__()
        sizes = [inputs, *hidden]
        layers: list[nn.Module] = []
        for size_in, size_out in itertools.pairwise(sizes):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], outputs)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.body(inputs))

    def forward_batched(self, params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        """Outputs ``[tasks, examples, outputs]`` of one parameter set per task on that task's
        ``inputs`` ``[tasks, examples, inputs]`` (``vmap`` of :meth:`forward`, as batched
        matrix products)."""
        hidden = inputs
        for name, layer in [*self.body.named_children(), ("head", self.head)]:
            if isinstance(layer, nn.Linear):
                prefix = name if name == "head" else f"body.{name}"
                hidden = torch.baddbmm(
                    params[f"{prefix}.bias"].unsqueeze(1),
                    hidden,
                    params[f"{prefix}.weight"].transpose(1, 2),
                )
            else:
                hidden = layer(hidden)
        return hidden


def initialize(model: nn.Module, initialization: str) -> nn.Module:
    """Re-draw ``model``'s weights in place as ``initialization`` says (from torch's RNG).

    ``xavier``: Glorot-uniform weights of every convolution and linear layer, zero biases
    (Finn et al.'s code); ``pytorch``: leaves PyTorch's default initialization.
    """
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {INITIALIZATIONS}, got {initialization!r}")
    if initialization == "xavier":
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model


class Conv4Model(Model):
    """Conv-4: four 3×3 conv blocks (BatchNorm on batch statistics, ReLU) and a linear head."""

    name = "conv4"
    kind = "classification"
    description = "Conv-4 of Finn et al. (strided for characters, max-pooled for MiniImagenet)"

    @dataclass(frozen=True)
    class Settings:
        filters: int = setting(64, minimum=1, description="convolution filters per layer")
        max_pool: bool = setting(
            False,
            description="2×2 max-pooling after each block and flattened features (MiniImagenet) "
            "instead of stride-2 convolutions and averaged features (characters)",
        )

    @classmethod
    def settings_from_run(cls, config: RunConfig) -> dict[str, Any]:
        """``filters`` from the run's key of that name, max-pooling on MiniImagenet."""
        return {"filters": config.filters or 64, "max_pool": config.dataset == "miniimagenet"}

    def build(self, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
        return Conv4(
            input_shape,
            outputs,
            filters=self.settings.filters,
            use_max_pool=self.settings.max_pool,
        )


class MLPModel(Model):
    """A ReLU MLP with a linear head (Finn et al.'s sinusoid regressor: 1 → 40 → 40 → 1)."""

    name = "mlp"
    kind = "regression"
    description = "ReLU MLP regressor (Finn et al.'s sinusoid network)"

    @dataclass(frozen=True)
    class Settings:
        hidden_sizes: tuple[int, ...] = setting(
            (40, 40), kind=tuple, items=int, minimum=1, description="hidden layer widths"
        )

    @classmethod
    def settings_from_run(cls, config: RunConfig) -> dict[str, Any]:
        """``hidden_sizes`` from the run's key of that name."""
        return {"hidden_sizes": tuple(config.hidden_sizes)}

    def build(self, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
        return SinusoidMLP(
            hidden=self.settings.hidden_sizes, inputs=input_shape[-1], outputs=outputs
        )
