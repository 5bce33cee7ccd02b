"""Adaptation as pure functions of a parameter dict: the one inner loop every other module uses.

A network's parameters travel as ``Params = {name: tensor}`` and are applied with
``torch.func.functional_call``. :func:`adapt` runs T steps of full-batch gradient descent on the
support loss; it is written with ``torch.func.grad`` so it runs the same inside ``torch.func.vmap``
and ``torch.func.grad`` (second-order MAML) as in a plain loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalandscape.data.tasks import TaskKind

Params = dict[str, Tensor]


def parameters_of(model: nn.Module) -> Params:
    """Detached copies of ``model``'s parameters, in registration order."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def load_parameters(model: nn.Module, params: Params) -> None:
    """Copy ``params`` into ``model``'s parameters in place (names and shapes must match)."""
    own = dict(model.named_parameters())
    if own.keys() != params.keys():
        raise KeyError(f"parameter names differ: {sorted(own.keys() ^ params.keys())}")
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(value)


def forward(model: nn.Module, params: Params, inputs: Tensor) -> Tensor:
    """The network's outputs at ``params``."""
    return functional_call(model, params, (inputs,))


def loss_from_outputs(outputs: Tensor, labels: Tensor, kind: TaskKind) -> Tensor:
    """Cross-entropy (classification) or mean squared error (regression).

    The squared error is written out instead of ``F.mse_loss``, whose mean reduction breaks
    forward-over-reverse differentiation (pytorch#123996).
    """
    if kind == "classification":
        return F.cross_entropy(outputs, labels)
    return ((outputs - labels) ** 2).mean()


def score_from_outputs(outputs: Tensor, labels: Tensor, kind: TaskKind) -> Tensor:
    """Accuracy (classification) or mean squared error (regression), without gradient."""
    with torch.no_grad():
        if kind == "classification":
            return (outputs.argmax(dim=-1) == labels).to(outputs.dtype).mean()
        return ((outputs - labels) ** 2).mean()


def task_loss(
    model: nn.Module, params: Params, inputs: Tensor, labels: Tensor, kind: TaskKind
) -> Tensor:
    """Loss of the network at ``params`` on one set (support or target) of one task."""
    return loss_from_outputs(forward(model, params, inputs), labels, kind)


def gradient(
    model: nn.Module, params: Params, inputs: Tensor, labels: Tensor, kind: TaskKind
) -> Params:
    """∇ of the loss at ``params`` on (inputs, labels), via ``torch.func.grad``."""
    return torch.func.grad(lambda p: task_loss(model, p, inputs, labels, kind))(params)


@overload
def adapt(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    steps: int,
    step_size: float,
    create_graph: bool = ...,
    return_trajectory: Literal[False] = ...,
) -> Params: ...


@overload
def adapt(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    steps: int,
    step_size: float,
    create_graph: bool = ...,
    return_trajectory: Literal[True],
) -> tuple[Params, list[Params]]: ...


def adapt(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    steps: int,
    step_size: float,
    create_graph: bool = True,
    return_trajectory: bool = False,
) -> Params | tuple[Params, list[Params]]:
    """T steps of full-batch gradient descent on the support loss from ``params``.

    With ``create_graph`` the inner gradients stay differentiable (second-order MAML); without, they
    are detached, so the adapted parameters depend on ``params`` only through the identity
    (First-Order MAML). ``return_trajectory`` also returns ``[θ0, θ1, …, θT]``.
    """
    trajectory = [params]
    for _ in range(steps):
        grads = gradient(model, params, inputs, labels, kind)
        if not create_graph:
            grads = {name: g.detach() for name, g in grads.items()}
        params = {name: p - step_size * grads[name] for name, p in params.items()}
        trajectory.append(params)
    if return_trajectory:
        return params, trajectory
    return params


def flatten(params: Params | Iterable[Tensor]) -> Tensor:
    """All tensors concatenated into one vector (dict order)."""
    tensors = params.values() if isinstance(params, dict) else params
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Split ``vector`` into tensors shaped as ``like``'s (inverse of :func:`flatten`)."""
    out: Params = {}
    offset = 0
    for name, reference in like.items():
        size = reference.numel()
        out[name] = vector[offset : offset + size].view_as(reference)
        offset += size
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters need {offset}")
    return out


def displacement(adapted: Params, start: Params) -> Tensor:
    """θ̃ − θs as one flat vector."""
    return flatten(adapted[name] - start[name] for name in start)


def coherence_corrected(
    adapted: Params, start: Params, mean_direction: Tensor, gamma: float
) -> Params:
    """Regularized MAML's θ̄ = θ̃ − γ∇_θ̃ Ω with Ω = −θ̂ᵀθ̂μ and θ̂ = (θ̃ − θs)/‖θ̃ − θs‖.

    ``mean_direction`` (θ̂μ) is held constant. In closed form ∇_θ̃ Ω = −(θ̂μ − θ̂ θ̂ᵀθ̂μ)/‖θ̃ − θs‖;
    the expression stays differentiable in ``adapted`` and ``start``.
    """
    step = displacement(adapted, start)
    norm = step.norm()
    direction = step / norm
    gradient_of_omega = -(mean_direction - direction * (direction @ mean_direction)) / norm
    correction = unflatten(gradient_of_omega, adapted)
    return {name: value - gamma * correction[name] for name, value in adapted.items()}


def unit_direction(adapted: Params, start: Params) -> Tensor:
    """θ̂ = (θ̃ − θs)/‖θ̃ − θs‖ as one flat vector (the zero vector where θ̃ = θs)."""
    step = displacement(adapted, start)
    return step / step.norm().clamp_min(torch.finfo(step.dtype).tiny)
