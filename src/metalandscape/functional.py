"""Adaptation as pure functions of a parameter dict: the one inner loop every other module uses.

A network's parameters travel as ``Params = {name: tensor}`` and are applied with
``torch.func.functional_call``. :func:`adapt` runs T steps of full-batch gradient descent on the
support loss, with one step size or one per parameter (Meta-SGD's α, ANIL's head-only loop).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalandscape.data.tasks import TaskKind

Params = dict[str, Tensor]
StepSizes = Mapping[str, Tensor | float]
"""Step sizes by parameter name: a float or a tensor broadcastable to the parameter."""


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


_network_batched_forward = True


@contextmanager
def vmapped_forward_only() -> Iterator[None]:
    """Within it, :func:`forward_tasks` maps :meth:`forward` with ``vmap`` even for networks
    with their own ``forward_batched``, and :func:`losses_from_outputs` and
    :func:`scores_from_outputs` map the one-task loss and score with ``vmap`` (the reference
    path of tests and benchmarks, the code before issue 24)."""
    global _network_batched_forward
    previous, _network_batched_forward = _network_batched_forward, False
    try:
        yield
    finally:
        _network_batched_forward = previous


def forward_tasks(model: nn.Module, params: Params, inputs: Tensor) -> Tensor:
    """Outputs ``[tasks, examples, ...]`` of per-task ``params`` on per-task ``inputs`` (both
    with a leading task axis): the network's ``forward_batched`` where it has one (Conv-4, the
    MLP), else ``vmap`` of :func:`forward` over tasks."""
    batched = getattr(model, "forward_batched", None)
    if batched is not None and _network_batched_forward:
        return batched(params, inputs)
    return torch.func.vmap(lambda p, x: forward(model, p, x))(params, inputs)


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


def losses_from_outputs(outputs: Tensor, labels: Tensor, kind: TaskKind) -> Tensor:
    """Per-task :func:`loss_from_outputs` ``[tasks]`` of ``outputs`` ``[tasks, examples, ...]``:
    what ``vmap`` of it computes, without ``vmap``'s per-call cost."""
    if not _network_batched_forward:
        return torch.func.vmap(lambda o, y: loss_from_outputs(o, y, kind))(outputs, labels)
    if kind == "classification":
        per_example = F.cross_entropy(outputs.flatten(0, 1), labels.flatten(0, 1), reduction="none")
        return per_example.view(labels.shape[:2]).mean(dim=1)
    return ((outputs - labels) ** 2).flatten(start_dim=1).mean(dim=1)


def scores_from_outputs(outputs: Tensor, labels: Tensor, kind: TaskKind) -> Tensor:
    """Per-task :func:`score_from_outputs` ``[tasks]`` of ``outputs`` ``[tasks, examples, ...]``."""
    if not _network_batched_forward:
        return torch.func.vmap(lambda o, y: score_from_outputs(o, y, kind))(outputs, labels)
    with torch.no_grad():
        if kind == "classification":
            return (outputs.argmax(dim=-1) == labels).to(outputs.dtype).mean(dim=1)
        return ((outputs - labels) ** 2).flatten(start_dim=1).mean(dim=1)


def task_loss(
    model: nn.Module, params: Params, inputs: Tensor, labels: Tensor, kind: TaskKind
) -> Tensor:
    """Loss of the network at ``params`` on one set (support or target) of one task."""
    return loss_from_outputs(forward(model, params, inputs), labels, kind)


def task_losses(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    kind: TaskKind,
    *,
    batched: bool = False,
) -> Tensor:
    """Per-task losses ``[tasks]`` (``batched``: params, inputs, labels carry a task axis).

    Only the forward pass is batched (:func:`forward_tasks`); gradients are taken outside with
    plain autograd with respect to the per-task parameters, which is exact also with BatchNorm
    (unlike ``torch.func.grad`` of a mean over a vmapped loss).
    """
    if not batched:
        return task_loss(model, params, inputs, labels, kind)[None]
    return losses_from_outputs(forward_tasks(model, params, inputs), labels, kind)


def gradient_leaves(params: Params, names: Container[str] | None = None) -> Params:
    """Detached views of ``params`` as autograd leaves, requiring gradients (only ``names``)."""
    return {
        name: p.detach().requires_grad_(names is None or name in names)
        for name, p in params.items()
    }


def gradient(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    kind: TaskKind,
    *,
    batched: bool = False,
) -> Params:
    """∇ of the loss at ``params`` on (inputs, labels), detached (per task when ``batched``)."""
    leaves = gradient_leaves(params)
    with torch.enable_grad():
        loss = task_losses(model, leaves, inputs, labels, kind, batched=batched).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def adapt(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    *,
    kind: TaskKind,
    steps: int,
    step_size: float | StepSizes,
    create_graph: bool = True,
    batched: bool = False,
    trajectory: list[Params] | None = None,
    gradients: list[Params] | None = None,
    sam_radius: float = 0.0,
) -> Params:
    """T steps θ ← θ − α ⊙ ∇θ L(support) of full-batch gradient descent from ``params``.

    ``sam_radius`` ρ > 0 makes each step sharpness-aware (Sharp-MAML's lower level): the
    gradient is taken at θ + ρ·g/(‖g‖ + 1e-12), g = ∇L(θ), ‖·‖ over all adapted parameters of
    the task, and with ``create_graph`` that perturbation is differentiated through too.

    ``step_size`` is one α for every parameter, or a mapping from parameter name to a float or a
    tensor broadcastable to the parameter (α shaped like θ, also against a leading task axis);
    parameters it does not name stay at the start. With ``create_graph`` the inner gradients stay
    differentiable (second-order MAML); without, they are detached, so the adapted parameters
    depend on ``params`` only through the identity (First-Order MAML). When neither the
    parameters nor the step sizes require gradients (evaluation) no graph is kept. ``batched``:
    every tensor carries a leading task axis and each task adapts on its own support set
    (``params`` may be ``θ.expand(tasks, ...)`` views of shared parameters). ``trajectory``, when
    given, receives [θ0, θ1, …, θT]; ``gradients``, when given, receives each step's
    ∇L(support) at θ0, …, θT−1 of the adapted parameters (detached in evaluation).
    """
    step_sizes = step_size if isinstance(step_size, Mapping) else dict.fromkeys(params, step_size)
    names = [name for name in params if name in step_sizes]
    if not names:
        raise ValueError("step_size names none of the parameters: nothing would adapt")
    tracked = any(p.requires_grad for p in params.values()) or any(
        isinstance(a, Tensor) and a.requires_grad for a in step_sizes.values()
    )
    if not tracked:
        params = gradient_leaves(params, step_sizes)
        create_graph = False
    points = [params]
    with torch.enable_grad():
        for _ in range(steps):
            loss = task_losses(model, params, inputs, labels, kind, batched=batched).sum()
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
            if sam_radius:
                grads = _sharpness_aware_gradients(
                    model,
                    params,
                    names,
                    grads,
                    inputs,
                    labels,
                    kind,
                    batched,
                    sam_radius,
                    create_graph or tracked,
                )
            if gradients is not None:
                gradients.append(dict(zip(names, grads, strict=True)))
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                params[name] = params[name] - step_sizes[name] * grad
            if not tracked:  # evaluation: keep no graph between steps
                params = gradient_leaves(params, step_sizes)
            points.append(params)
    if not tracked:
        points = [{name: p.detach() for name, p in point.items()} for point in points]
        params = points[-1]
    if trajectory is not None:
        trajectory.extend(points)
    return params


def _sharpness_aware_gradients(
    model: nn.Module,
    params: Params,
    names: list[str],
    grads: tuple[Tensor, ...],
    inputs: Tensor,
    labels: Tensor,
    kind: TaskKind,
    batched: bool,
    radius: float,
    keep_graph: bool,
) -> tuple[Tensor, ...]:
    """∇L at θ + ρ·g/(‖g‖ + 1e-12) of the adapted parameters ``names`` (per task when
    ``batched``); the other parameters stay at θ."""
    if batched:
        squares = sum(g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads)
        scale = radius / (squares.sqrt() + 1e-12)  # [tasks]
        shifts = [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]
    else:
        scale = radius / (torch.sqrt(sum(g.pow(2).sum() for g in grads)) + 1e-12)
        shifts = [g * scale for g in grads]
    perturbed = dict(params)
    for name, shift in zip(names, shifts, strict=True):
        perturbed[name] = params[name] + shift
    if not keep_graph:
        perturbed = gradient_leaves({n: p.detach() for n, p in perturbed.items()})
    loss = task_losses(model, perturbed, inputs, labels, kind, batched=batched).sum()
    return torch.autograd.grad(
        loss, [perturbed[n] for n in names], create_graph=keep_graph and grads[0].requires_grad
    )


def flatten(params: Params | Iterable[Tensor], *, batched: bool = False) -> Tensor:
    """All tensors concatenated into one vector (``[tasks, P]`` when ``batched``)."""
    tensors = params.values() if isinstance(params, dict) else params
    if batched:
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Params, *, batched: bool = False) -> Params:
    """Split ``vector`` into tensors shaped as ``like``'s (inverse of :func:`flatten`)."""
    out: Params = {}
    offset = 0
    lead = vector.shape[:1] if batched else ()
    for name, reference in like.items():
        shape = reference.shape[1:] if batched else reference.shape
        size = shape.numel()
        out[name] = vector[..., offset : offset + size].reshape(*lead, *shape)
        offset += size
    if offset != vector.shape[-1]:
        raise ValueError(f"vector has {vector.shape[-1]} entries, parameters need {offset}")
    return out


def displacement(adapted: Params, start: Params, *, batched: bool = False) -> Tensor:
    """θ̃ − θs as one flat vector (``[tasks, P]`` when ``batched``)."""
    return flatten((adapted[name] - start[name] for name in start), batched=batched)


def unit_direction(adapted: Params, start: Params, *, batched: bool = False) -> Tensor:
    """θ̂ = (θ̃ − θs)/‖θ̃ − θs‖ flattened (the zero vector where θ̃ = θs)."""
    step = displacement(adapted, start, batched=batched)
    norm = step.norm(dim=-1, keepdim=True)
    return step / norm.clamp_min(torch.finfo(step.dtype).tiny)


def coherence_corrected(
    adapted: Params,
    start: Params,
    mean_direction: Tensor,
    gamma: float,
    *,
    batched: bool = False,
) -> Params:
    """Regularized MAML's θ̄ = θ̃ − γ∇_θ̃ Ω with Ω = −θ̂ᵀθ̂μ and θ̂ = (θ̃ − θs)/‖θ̃ − θs‖.

    ``mean_direction`` (θ̂μ) is held constant. In closed form ∇_θ̃ Ω = −(θ̂μ − θ̂ θ̂ᵀθ̂μ)/‖θ̃ − θs‖;
    the expression stays differentiable in ``adapted`` and ``start``.
    """
    step = displacement(adapted, start, batched=batched)
    norm = step.norm(dim=-1, keepdim=True)
    direction = step / norm
    alignment = (direction * mean_direction).sum(dim=-1, keepdim=True)
    gradient_of_omega = -(mean_direction - direction * alignment) / norm
    correction = unflatten(gradient_of_omega, adapted, batched=batched)
    return {name: value - gamma * correction[name] for name, value in adapted.items()}
