"""ANIL: head-only inner loop, meta-gradient against finite differences, first order, batching."""

from __future__ import annotations

import math

import pytest
import torch

from metalandscape.algorithms.anil import (
    ANILLearner,
    ANILSettings,
    adapt_for_evaluation,
    meta_gradient,
)
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskSampler
from metalandscape.functional import flatten, forward, gradient, parameters_of, task_loss, unflatten
from metalandscape.models import HEAD_PREFIX, Conv4, SinusoidMLP

KIND = "classification"


@pytest.fixture(scope="module")
def tiny_conv():
    torch.manual_seed(0)
    return Conv4((1, 8, 8), 3, filters=4).double()


@pytest.fixture(scope="module")
def tiny_batch():
    generator = torch.Generator().manual_seed(1)
    return TaskBatch(
        torch.randn(3, 6, 1, 8, 8, dtype=torch.float64, generator=generator),
        torch.arange(3).repeat_interleave(2).repeat(3, 1),
        torch.randn(3, 6, 1, 8, 8, dtype=torch.float64, generator=generator),
        torch.arange(3).repeat_interleave(2).repeat(3, 1),
    )


def head_adapted(model, params, inputs, labels, steps, step_size):
    """Reference inner loop written out: gradient steps on the head's two tensors only."""
    head = [name for name in params if name.startswith(HEAD_PREFIX)]
    adapted = dict(params)
    for _ in range(steps):
        loss = task_loss(model, adapted, inputs, labels, KIND)
        grads = torch.autograd.grad(loss, [adapted[n] for n in head], create_graph=True)
        adapted.update({n: adapted[n] - step_size * g for n, g in zip(head, grads, strict=True)})
    return adapted


def mean_target_loss(model, params, batch, steps, step_size):
    params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    total = 0.0
    for task in batch:
        adapted = head_adapted(
            model, params, task.support_inputs, task.support_labels, steps, step_size
        )
        total = total + task_loss(model, adapted, task.target_inputs, task.target_labels, KIND)
    return float(total.detach() / len(batch))


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_finite_differences(tiny_conv, tiny_batch, steps):
    params = parameters_of(tiny_conv)
    meta = flatten(
        meta_gradient(tiny_conv, params, tiny_batch, KIND, ANILSettings(steps, 0.3)).gradients
    )
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        direction = torch.randn(meta.shape, dtype=torch.float64, generator=generator)
        direction /= direction.norm()
        eps = 1e-5

        def shifted(sign, eps=eps, direction=direction):
            step = unflatten(sign * eps * direction, params)
            return {name: value + step[name] for name, value in params.items()}

        finite_difference = (
            mean_target_loss(tiny_conv, shifted(1), tiny_batch, steps, 0.3)
            - mean_target_loss(tiny_conv, shifted(-1), tiny_batch, steps, 0.3)
        ) / (2 * eps)
        analytic = float(meta @ direction)
        assert abs(analytic - finite_difference) <= 1e-4 * max(abs(analytic), 1e-3)


def test_body_gradient_is_second_order_and_first_order_is_the_target_gradient(
    tiny_conv, tiny_batch
):
    params = parameters_of(tiny_conv)
    first = meta_gradient(tiny_conv, params, tiny_batch, KIND, ANILSettings(2, 0.3, True))
    expected = 0.0
    for task in tiny_batch:
        adapted = adapt_for_evaluation(
            tiny_conv,
            params,
            task.support_inputs,
            task.support_labels,
            kind=KIND,
            settings=ANILSettings(2, 0.3),
        )
        expected = expected + flatten(
            gradient(tiny_conv, adapted, task.target_inputs, task.target_labels, KIND)
        )
    expected = expected / len(tiny_batch)
    assert torch.allclose(flatten(first.gradients), expected, rtol=1e-10, atol=1e-12)
    second = meta_gradient(tiny_conv, params, tiny_batch, KIND, ANILSettings(2, 0.3))
    for name in ("features.0.0.weight", "head.weight"):
        difference = (second.gradients[name] - first.gradients[name]).norm()
        assert difference > 1e-3 * second.gradients[name].norm(), name


@pytest.mark.parametrize("first_order", [False, True])
def test_chunks_equal_the_per_task_loop_with_batchnorm(tiny_conv, tiny_batch, first_order):
    params = parameters_of(tiny_conv)
    results = [
        meta_gradient(tiny_conv, params, tiny_batch, KIND, ANILSettings(2, 0.3, first_order, chunk))
        for chunk in (1, 2, None)
    ]
    reference = flatten(results[0].gradients)
    for other in results[1:]:
        assert (flatten(other.gradients) - reference).norm() <= 1e-10 * reference.norm()
        assert other.target_loss == pytest.approx(results[0].target_loss, rel=1e-12)


def test_evaluation_adapts_the_head_only(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    task = tiny_batch[0]
    settings = ANILSettings(3, 0.3)
    adapted, trajectory = adapt_for_evaluation(
        tiny_conv,
        params,
        task.support_inputs,
        task.support_labels,
        kind=KIND,
        settings=settings,
        return_trajectory=True,
    )
    assert len(trajectory) == 4
    for name, value in params.items():
        if name.startswith(HEAD_PREFIX):
            assert not torch.equal(adapted[name], value), name
        else:
            assert all(torch.equal(point[name], value) for point in trajectory), name
    reference = head_adapted(
        tiny_conv,
        {n: p.requires_grad_(True) for n, p in parameters_of(tiny_conv).items()},
        task.support_inputs,
        task.support_labels,
        3,
        0.3,
    )
    assert torch.allclose(flatten(adapted), flatten(reference).detach(), rtol=1e-12)
    assert all(not p.requires_grad for p in adapted.values())
    batched = adapt_for_evaluation(
        tiny_conv,
        {n: p.expand(len(tiny_batch), *p.shape) for n, p in params.items()},
        tiny_batch.support_inputs,
        tiny_batch.support_labels,
        kind=KIND,
        settings=settings,
        batched=True,
    )
    assert torch.allclose(
        flatten({n: v[0] for n, v in batched.items()}), flatten(adapted), rtol=1e-10
    )


def test_learner_step_lowers_the_target_loss_and_saves_theta(tiny_conv, tiny_batch):
    learner = ANILLearner(
        tiny_conv, parameters_of(tiny_conv), KIND, ANILSettings(1, 0.3, task_chunk_size=None), 0.01
    )
    losses = [learner.step(tiny_batch).target_loss for _ in range(15)]
    assert losses[-1] < losses[0]
    saved = learner.parameters_to_save()
    assert saved.keys() == dict(tiny_conv.named_parameters()).keys()
    assert not torch.equal(flatten(saved), flatten(parameters_of(tiny_conv)))


def test_a_model_without_head_is_refused(tiny_batch):
    params = {"body.weight": torch.zeros(2, 2)}
    with pytest.raises(KeyError, match="head"):
        ANILLearner(torch.nn.Linear(2, 2), params, KIND, ANILSettings(1, 0.1), 0.01)


def test_learns_sinusoids_and_adaptation_helps():
    """300 meta-iterations lower the meta-test MSE after head adaptation, below the MSE at θ."""
    torch.manual_seed(0)
    model = SinusoidMLP()
    source = SinusoidSource(10, 10, train_phase=(0.0, math.pi), test_phase=(0.0, math.pi))
    sampler = TaskSampler(source, seed=0)
    test_tasks = sampler.batch("test", range(100))
    settings = ANILSettings(1, 0.1, task_chunk_size=None)  # one head step of 0.01 barely moves
    learner = ANILLearner(model, parameters_of(model), "regression", settings, 1e-3)

    def meta_test_mse(adapted: bool) -> float:
        saved = {n: p.expand(100, *p.shape) for n, p in learner.parameters_to_save().items()}
        params = (
            adapt_for_evaluation(
                model,
                saved,
                test_tasks.support_inputs,
                test_tasks.support_labels,
                kind="regression",
                settings=settings,
                batched=True,
            )
            if adapted
            else {n: p for n, p in saved.items() if n in dict(model.named_parameters())}
        )
        outputs = torch.func.vmap(lambda p, x: forward(model, p, x))(
            params, test_tasks.target_inputs
        )
        return float(((outputs - test_tasks.target_labels) ** 2).mean())

    before = meta_test_mse(adapted=True)
    for iteration in range(300):
        learner.step(sampler.meta_batch("train", iteration, 25))
    after = meta_test_mse(adapted=True)
    assert after < 0.6 * before, (before, after)
    assert after < 0.9 * meta_test_mse(adapted=False)
