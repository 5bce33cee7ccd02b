"""The networks' own batched forward passes against ``vmap`` of their forward (issue 24).

Conv-4 and the sinusoid MLP compute a chunk of tasks with grouped convolutions and batched
matrix products (``forward_batched``); every algorithm's meta-gradient must equal the one of
the ``vmap`` path to round-off.
"""

from __future__ import annotations

import pytest
import torch

from metalandscape.algorithms import ALGORITHMS, load_algorithm
from metalandscape.algorithms._shared import MetaBatchLearner
from metalandscape.config import resolve_run_config
from metalandscape.data.tasks import TaskSampler
from metalandscape.experiment import initial_params, make_model, make_task_source
from metalandscape.functional import (
    flatten,
    forward_tasks,
    gradient_leaves,
    losses_from_outputs,
    scores_from_outputs,
    task_losses,
    vmapped_forward_only,
)
from metalandscape.models import Conv4, SinusoidMLP


def per_task_params(model: torch.nn.Module, tasks: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        name: p.detach()[None]
        + 0.1 * torch.randn(tasks, *p.shape, dtype=p.dtype, generator=generator)
        for name, p in model.named_parameters()
    }


NETWORKS = {
    "strided conv4, 1 channel": (lambda: Conv4((1, 28, 28), 5, filters=8), (1, 28, 28)),
    "strided conv4, 3 channels, odd size": (lambda: Conv4((3, 13, 11), 4, filters=6), (3, 13, 11)),
    "max-pooled conv4": (lambda: Conv4((3, 84, 84), 5, filters=8, use_max_pool=True), (3, 84, 84)),
    "sinusoid mlp": (lambda: SinusoidMLP(), (1,)),
}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_outputs_and_second_order_gradients_equal_vmaps_in_float64(network):
    build, input_shape = NETWORKS[network]
    torch.manual_seed(0)
    model = build().double()
    tasks, examples = 3, 4
    params = gradient_leaves(per_task_params(model, tasks))
    inputs = torch.randn(tasks, examples, *input_shape, dtype=torch.float64)
    if isinstance(model, SinusoidMLP):
        kind, labels = "regression", torch.randn(tasks, examples, 1, dtype=torch.float64)
    else:
        kind, labels = "classification", torch.randint(0, 4, (tasks, examples))

    def outputs_and_gradients() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = forward_tasks(model, params, inputs)
        loss = task_losses(model, params, inputs, labels, kind, batched=True).sum()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), list(params.values()))
        return outputs, flatten(grads, batched=True), flatten(second, batched=True)

    own = outputs_and_gradients()
    with vmapped_forward_only():
        mapped = outputs_and_gradients()
    assert own[0].shape == mapped[0].shape == (tasks, examples, own[0].shape[-1])
    for got, want in zip(own, mapped, strict=True):
        assert (got - want).norm() <= 1e-12 * want.norm(), (got - want).abs().max()


def test_conv4_reuses_first_patches_only_while_its_inputs_are_unchanged():
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 5, filters=8).double()
    params = per_task_params(model, 2)
    inputs = torch.randn(2, 3, 1, 28, 28, dtype=torch.float64)
    first = model._first_patches(inputs)
    assert model._first_patches(inputs) is first  # every inner step: one unfold
    inputs.mul_(-1)  # changed in place: recomputed, and the outputs follow
    fresh = Conv4((1, 28, 28), 5, filters=8).double()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(
        model.forward_batched(params, inputs), fresh.forward_batched(params, inputs.clone())
    )
    assert model._first_patches(inputs.clone()) is not model._first_patches(inputs)
    needing_grad = inputs.clone().requires_grad_()
    assert model._first_patches(needing_grad) is not model._first_patches(needing_grad)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithms_meta_step_equals_the_vmap_path(name, tiny_fontglot):
    """The meta-gradient of a 4-task chunk in float32 (the meta-update where the learner has no
    separate meta-gradient: Meta-SGD, Reptile), equal to 1e-5 relative."""
    config = resolve_run_config(
        {
            "dataset": "fontglot",
            "data_path": str(tiny_fontglot),
            "algorithm": name,
            "n_way": 3,
            "k_shot": 1,
            "filters": 8,
            "meta_batch_size": 4,
            "task_chunk_size": 4,
            "inner_steps": 2,
            "seed": 0,
        }
    )
    source = make_task_source(config)
    algorithm = load_algorithm(name)

    batch = TaskSampler(source, config.seed).meta_batch("train", 0, config.meta_batch_size)

    def meta_gradient() -> torch.Tensor:
        torch.manual_seed(0)
        model = make_model(config, source)
        learner = algorithm.learner(
            config, model, initial_params(model), source, torch.device("cpu")
        )
        if not isinstance(learner, MetaBatchLearner):
            pytest.skip(f"{name} trains without task chunks")
        try:
            return flatten(learner.meta_gradient(batch).gradients)
        except NotImplementedError:
            start = {key: value.clone() for key, value in learner.parameters_to_save().items()}
            learner.step(batch)
            after = learner.parameters_to_save()
            return flatten([after[key] - start[key] for key in start])

    own = meta_gradient()
    with vmapped_forward_only():
        mapped = meta_gradient()
    assert mapped.norm() > 0
    assert (own - mapped).norm() <= 1e-5 * mapped.norm()


def test_the_reference_path_is_restored_after_an_error():
    model = SinusoidMLP()
    params = per_task_params(model, 2)
    inputs = torch.randn(2, 3, 1)
    with pytest.raises(RuntimeError), vmapped_forward_only():
        raise RuntimeError("inside")
    calls = []
    model.forward_batched = lambda p, x: calls.append(1) or torch.zeros(2, 3, 1)  # type: ignore[method-assign]
    forward_tasks(model, params, inputs)
    assert calls == [1]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_per_task_losses_and_scores_equal_vmaps(kind):
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(5, 7, 4 if kind == "classification" else 1, dtype=torch.float64)
    outputs.requires_grad_(True)
    if kind == "classification":
        labels = torch.randint(0, 4, (5, 7), generator=generator)
    else:
        labels = torch.randn(5, 7, 1, dtype=torch.float64, generator=generator)

    def losses_scores_and_gradient():
        losses = losses_from_outputs(outputs, labels, kind)
        scores = scores_from_outputs(outputs.detach(), labels, kind)
        (gradient,) = torch.autograd.grad((losses * torch.arange(1.0, 6.0)).sum(), outputs)
        return losses.detach(), scores, gradient

    own = losses_scores_and_gradient()
    with vmapped_forward_only():
        mapped = losses_scores_and_gradient()
    assert own[0].shape == own[1].shape == (5,)
    for got, want in zip(own, mapped, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
