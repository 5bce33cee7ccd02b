"""The convolution and BatchNorm with written-out second derivatives (issue 24) against
finite differences to third order, and against PyTorch's own operations to round-off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalandscape.models import batched_ops
from metalandscape.models.batched_ops import (
    grouped_conv2d,
    image_patches,
    patch_conv2d,
    training_batch_norm,
)

CONVOLUTIONS = {
    "3 groups, stride 1, padding 1": ((1, 1), (1, 1), (1, 1), 3),
    "2 groups, stride 2": ((2, 2), (1, 1), (1, 1), 2),
    "1 group, dilation 2, no padding": ((1, 1), (0, 0), (2, 2), 1),
}


def _convolution_inputs(groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 2 * groups, 7, 6, dtype=torch.float64, generator=generator)
    weight = torch.randn(3 * groups, 2, 3, 3, dtype=torch.float64, generator=generator)
    return inputs.requires_grad_(), weight.requires_grad_()


def _first_derivatives(function):
    """(x, w, ...) → the gradients of a non-linear scalar of ``function``'s output, as a graph."""

    def gradients(*arguments):
        return torch.autograd.grad(function(*arguments).sin().sum(), arguments, create_graph=True)

    return gradients


def _patch_convolution(inputs, weight, stride, padding, dilation, groups):
    patches = image_patches(inputs, weight.shape[2:], stride, padding, dilation)
    return patch_conv2d(patches, weight, groups)


CONVOLUTION_FUNCTIONS = {"grouped": grouped_conv2d, "patches": _patch_convolution}


@pytest.mark.parametrize("function", list(CONVOLUTION_FUNCTIONS))
@pytest.mark.parametrize("geometry", list(CONVOLUTIONS))
def test_convolution_derivatives_to_third_order_match_finite_differences(geometry, function):
    stride, padding, dilation, groups = CONVOLUTIONS[geometry]
    inputs, weight = _convolution_inputs(groups)

    def convolution(x, w):
        return CONVOLUTION_FUNCTIONS[function](x, w, stride, padding, dilation, groups)

    assert torch.autograd.gradcheck(convolution, (inputs, weight))
    assert torch.autograd.gradgradcheck(convolution, (inputs, weight))
    assert torch.autograd.gradgradcheck(_first_derivatives(convolution), (inputs, weight))


@pytest.mark.parametrize("function", list(CONVOLUTION_FUNCTIONS))
@pytest.mark.parametrize("geometry", list(CONVOLUTIONS))
def test_convolution_second_order_equals_pytorchs(geometry, function):
    stride, padding, dilation, groups = CONVOLUTIONS[geometry]
    inputs, weight = _convolution_inputs(groups)

    def meta_gradients(convolution, inputs_need_grad: bool):
        x = inputs if inputs_need_grad else inputs.detach()
        leaves = (x, weight) if inputs_need_grad else (weight,)
        first = torch.autograd.grad(convolution(x, weight).tanh().sum(), leaves, create_graph=True)
        return torch.autograd.grad(sum((g**3).sum() for g in first), leaves)

    ours = lambda x, w: CONVOLUTION_FUNCTIONS[function](  # noqa: E731
        x, w, stride, padding, dilation, groups
    )
    pytorchs = lambda x, w: F.conv2d(x, w, None, stride, padding, dilation, groups)  # noqa: E731
    for inputs_need_grad in (True, False):  # the images need no gradient
        for got, expected in zip(
            meta_gradients(ours, inputs_need_grad),
            meta_gradients(pytorchs, inputs_need_grad),
            strict=True,
        ):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["pytorch's kernel", "elementary"])
def batch_statistics(request, monkeypatch):
    """Both ways the forward pass computes its batch statistics (chosen by size)."""
    smallest = 0 if request.param == "elementary" else 1 << 62
    monkeypatch.setattr(batched_ops, "_ELEMENTARY_BATCH_NORM_MIN_ELEMENTS", smallest)
    return request.param


def _batch_norm_inputs(shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    inputs = 2 * torch.randn(*shape, dtype=torch.float64, generator=generator) + 0.5
    weight = torch.randn(shape[1], dtype=torch.float64, generator=generator)
    bias = torch.randn(shape[1], dtype=torch.float64, generator=generator)
    return inputs.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (6, 4)], ids=["images", "features"])
def test_batch_norm_derivatives_to_third_order_match_finite_differences(shape, batch_statistics):
    arguments = _batch_norm_inputs(shape)

    def batch_norm(x, w, b):
        return training_batch_norm(x, w, b, 1e-5)

    assert torch.autograd.gradcheck(batch_norm, arguments)
    assert torch.autograd.gradgradcheck(batch_norm, arguments)
    # PyTorch's own BatchNorm fails this one: its double backward holds the statistics constant.
    assert torch.autograd.gradgradcheck(_first_derivatives(batch_norm), arguments)


def test_batch_norm_forward_and_second_order_equal_pytorchs(batch_statistics):
    inputs, weight, bias = _batch_norm_inputs((5, 6, 4, 4))
    position = torch.arange(inputs.numel(), dtype=inputs.dtype).view_as(inputs) / inputs.numel()

    def outputs_and_meta_gradients(batch_norm):
        outputs = batch_norm(inputs, weight, bias)
        first = torch.autograd.grad(
            (outputs.sin() * position).sum(), (inputs, weight, bias), create_graph=True
        )
        objective = first[0].cos().sum() + (first[1] ** 2).sum() + (first[2] ** 3).sum()
        return (outputs, *torch.autograd.grad(objective, (inputs, weight, bias)))

    got = outputs_and_meta_gradients(lambda x, w, b: training_batch_norm(x, w, b, 1e-5))
    expected = outputs_and_meta_gradients(
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    )
    for ours, pytorchs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, pytorchs, rtol=1e-12, atol=1e-12)
