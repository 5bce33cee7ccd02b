"""Convolution and training-mode BatchNorm with their own second derivatives, for the networks'
batched forward passes (issue 24).

Second-order MAML differentiates every layer's backward pass once more. PyTorch's own double
backward of a grouped convolution computes its weight term with one small convolution per group
(per task: hundreds per meta-iteration), and its BatchNorm double backward takes 36
multiplications and 33 reductions (and treats the batch statistics as constants at third order).
Here each backward is an ``autograd.Function`` of its own whose backward is written out:

- convolution ``y = conv(x, W)``, backward ``(gx, gW) = (convᵀ_W(gy), ∂W(gy, x))``; with cotangents
  ``(ux, uW)`` its derivative is ``gy ← conv(ux, W) + conv(x, uW)``, ``x ← convᵀ_uW(gy)``,
  ``W ← ∂W(gy, ux)``: the last two are one grouped ``convolution_backward`` call;
- BatchNorm over every axis but the channel axis 1, ``x̂ = (x − μ)·r``, ``r = (σ² + ε)^-½``
  (biased σ²), backward ``gx = γr(g − m(g) − x̂·m(g·x̂))``, ``gγ = Σ g·x̂``, ``gβ = Σ g`` (``m``
  the mean per channel); with cotangents ``(u, a, b)``, ``S = m(ug) − m(u)m(g) − m(ux̂)m(gx̂)``,
  ``c₁ = −γr·m(gx̂)``, ``c₂ = a − γr·m(ux̂)`` and ``h = c₁u + c₂g``:
  ``g ← γr·u + (a − γr·m(ux̂))·x̂ + b − γr·m(u)``, ``γ ← r·N·S`` (N elements per channel),
  ``x ← r(h − m(h) − x̂·m(hx̂)) − γr²S·x̂``.

Every derivative is again built of these Functions or of plain differentiable operations (the
statistics recomputed from ``x`` when a graph is being recorded), so any order is exact:
``tests/test_batched_ops.py`` checks them with ``gradcheck`` to third order in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_Geometry = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]


def grouped_conv2d(
    inputs: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """``F.conv2d`` without bias, whose double backward is one grouped kernel per term."""
    geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
    return _Convolution.apply(inputs, weight, geometry)


class ImagePatches(NamedTuple):
    """Unfolded ``[examples, channels × kh × kw, H' × W']`` patches of ``[examples, channels, H,
    W]`` images, and the output's ``(H', W')``."""

    values: Tensor
    output_size: tuple[int, int]


def image_patches(
    inputs: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> ImagePatches:
    """The patches a convolution of this geometry multiplies with its weight (``F.unfold``)."""
    values = F.unfold(inputs, kernel_size, dilation=dilation, padding=padding, stride=stride)
    height, width = (
        (size + 2 * pad - spread * (extent - 1) - 1) // step + 1
        for size, pad, spread, extent, step in zip(
            inputs.shape[2:], padding, dilation, kernel_size, stride, strict=True
        )
    )
    return ImagePatches(values, (height, width))


def patch_conv2d(patches: ImagePatches, weight: Tensor, groups: int) -> Tensor:
    """``F.conv2d`` without bias as a batched product of ``weight`` with the input's
    :func:`image_patches`, differentiated by autograd. On one core it is faster than a grouped
    convolution with one input channel per group, and the patches can be reused for every
    convolution of the same images."""
    values = patches.values
    products = torch.matmul(
        weight.reshape(groups, weight.shape[0] // groups, -1),
        values.view(values.shape[0], groups, -1, values.shape[-1]),
    )  # [examples, groups, out per group, H' × W']
    return products.view(values.shape[0], weight.shape[0], *patches.output_size)


def training_batch_norm(inputs: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.batch_norm`` in training mode without running statistics (batch statistics over every
    axis but axis 1), with a short, exact double backward."""
    return _BatchNorm.apply(inputs, weight, bias, eps)


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: Tensor, weight: Tensor, geometry: _Geometry) -> Tensor:
        stride, padding, dilation, groups = geometry
        ctx.save_for_backward(inputs, weight)
        ctx.geometry = geometry
        return F.conv2d(inputs, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        inputs, weight = ctx.saved_tensors
        mask = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        grad_inputs, grad_weight = _ConvolutionBackward.apply(
            grad_output, inputs, weight, ctx.geometry, mask
        )
        return grad_inputs, grad_weight, None


class _ConvolutionBackward(torch.autograd.Function):
    """``(gy, x, W) → (convᵀ_W(gy), ∂W(gy, x))``, each ``None`` where ``mask`` says so; ``x`` and
    ``W`` only give their shapes to an output the mask leaves out."""

    @staticmethod
    def forward(
        ctx: Any,
        grad_output: Tensor,
        inputs: Tensor,
        weight: Tensor,
        geometry: _Geometry,
        mask: tuple[bool, bool],
    ) -> tuple[Tensor | None, Tensor | None]:
        stride, padding, dilation, groups = geometry
        grad_inputs, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_output,
            inputs,
            weight,
            None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0] * len(stride),
            groups,
            [mask[0], mask[1], False],
        )
        ctx.save_for_backward(grad_output, inputs, weight)
        ctx.geometry = geometry
        ctx.set_materialize_grads(False)
        return grad_inputs, grad_weight

    @staticmethod
    def backward(
        ctx: Any, cotangent_inputs: Tensor | None, cotangent_weight: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        grad_output, inputs, weight = ctx.saved_tensors
        needs_grad_output, needs_inputs, needs_weight = ctx.needs_input_grad[:3]
        to_grad_output = to_inputs = to_weight = None
        if needs_grad_output:
            terms = []
            if cotangent_inputs is not None:
                terms.append(_Convolution.apply(cotangent_inputs, weight, ctx.geometry))
            if cotangent_weight is not None:
                terms.append(_Convolution.apply(inputs, cotangent_weight, ctx.geometry))
            if terms:
                to_grad_output = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        mask = (
            bool(needs_inputs and cotangent_weight is not None),
            bool(needs_weight and cotangent_inputs is not None),
        )
        if any(mask):
            to_inputs, to_weight = _ConvolutionBackward.apply(
                grad_output,
                cotangent_inputs if mask[1] else inputs,
                cotangent_weight if mask[0] else weight,
                ctx.geometry,
                mask,
            )
        return to_grad_output, to_inputs, to_weight, None, None


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        if inputs.device.type != "cpu" or inputs.numel() < _ELEMENTARY_BATCH_NORM_MIN_ELEMENTS:
            outputs, mean, inverse_std = torch.native_batch_norm(
                inputs, weight, bias, None, None, True, 0.0, eps
            )
        else:
            mean, centered, inverse_std = _batch_statistics(inputs, eps)
            outputs = _affine(centered, weight * inverse_std, bias, out=centered)
        ctx.save_for_backward(inputs, weight, mean, inverse_std)
        ctx.eps = eps
        return outputs

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        inputs, weight, mean, inverse_std = ctx.saved_tensors
        grad_inputs, grad_weight, grad_bias = _BatchNormBackward.apply(
            grad_output, inputs, weight, mean, inverse_std, ctx.eps
        )
        return grad_inputs, grad_weight, grad_bias, None


class _BatchNormBackward(torch.autograd.Function):
    """``(g, x, γ) → (gx, gγ, gβ)`` of training-mode BatchNorm; ``μ``, ``r`` are the forward's
    batch statistics of ``x``."""

    @staticmethod
    def forward(
        ctx: Any,
        grad_output: Tensor,
        inputs: Tensor,
        weight: Tensor,
        mean: Tensor,
        inverse_std: Tensor,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        grads = torch.ops.aten.native_batch_norm_backward(
            grad_output, inputs, weight, None, None, mean, inverse_std, True, eps, [True] * 3
        )
        ctx.save_for_backward(grad_output, inputs, weight, mean, inverse_std)
        ctx.eps = eps
        return grads

    @staticmethod
    def backward(
        ctx: Any, cotangent_inputs: Tensor, cotangent_weight: Tensor, cotangent_bias: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None, None, None]:
        g, x, weight, mean, inverse_std = ctx.saved_tensors
        u, a, b = cotangent_inputs, cotangent_weight, cotangent_bias
        axes = _channel_axes(x)
        if torch.is_grad_enabled():  # a graph is recorded: the statistics are functions of x
            mean, _, inverse_std = _batch_statistics(x, ctx.eps)

        def channel(values: Tensor) -> Tensor:
            return _per_channel(values, x)

        # Per-channel coefficients times whole tensors: one pass per term (an addcmul onto a
        # whole tensor, or a multiplication then an in-place addition of a per-channel shift).
        normalized = _affine(x, inverse_std, -mean * inverse_std)
        mean_u = u.mean(axes)
        mean_u_normalized = (u * normalized).mean(axes)
        mean_g = g.mean(axes)
        mean_g_normalized = (g * normalized).mean(axes)
        mean_ug = (u * g).mean(axes)
        scale = weight * inverse_std  # γr
        s = mean_ug - mean_u * mean_g - mean_u_normalized * mean_g_normalized
        c1 = -scale * mean_g_normalized
        c2 = a - scale * mean_u_normalized
        to_g = torch.addcmul(_affine(u, scale, b - scale * mean_u), channel(c2), normalized)
        mean_h = c1 * mean_u + c2 * mean_g
        mean_h_normalized = c1 * mean_u_normalized + c2 * mean_g_normalized
        to_x = torch.addcmul(
            torch.addcmul(
                _affine(u, inverse_std * c1, -inverse_std * mean_h), channel(inverse_std * c2), g
            ),
            channel(-inverse_std * (mean_h_normalized + scale * s)),
            normalized,
        )
        to_weight = inverse_std * (x.numel() // x.shape[1]) * s
        return to_g, to_x, to_weight, None, None, None


# On a CPU, below this many elements PyTorch's batch_norm kernel is faster than the passes of
# _batch_statistics and _affine (measured on one core: 0.08 vs 0.21 ms on [25, 192, 2, 2]; above,
# 0.29 vs 0.51 ms on [25, 192, 7, 7] and 0.89 vs 1.92 ms on [25, 192, 14, 14]). Other devices
# keep PyTorch's fused kernel (not measured there).
_ELEMENTARY_BATCH_NORM_MIN_ELEMENTS = 1 << 16


def _channel_axes(values: Tensor) -> list[int]:
    return [axis for axis in range(values.dim()) if axis != 1]


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """Per-channel ``values`` viewed to broadcast along axis 1 of ``like``."""
    return values.view(1, -1, *([1] * (like.dim() - 2)))


def _batch_statistics(inputs: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mean ``μ``, ``x − μ`` and ``r = (σ² + ε)^-½`` (biased σ², two passes) per channel."""
    axes = _channel_axes(inputs)
    mean = inputs.mean(axes)
    centered = inputs - _per_channel(mean, inputs)
    inverse_std = (centered.square().mean(axes) + eps).rsqrt()
    return mean, centered, inverse_std


def _affine(values: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """``values · scale + shift`` with per-channel ``scale`` and ``shift``, written into ``out``
    if given. Two passes, yet twice as fast as one ``addcmul`` of two per-channel operands."""
    return torch.mul(values, _per_channel(scale, values), out=out).add_(_per_channel(shift, values))
