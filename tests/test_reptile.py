"""Reptile: serial and batched updates agree, the inner optimizers, ε's schedule, evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from metalandscape.algorithms.reptile import (
    ReptileLearner,
    ReptileSettings,
    adapt_for_evaluation,
    adapt_task,
    reptile_update,
)
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskSampler
from metalandscape.functional import (
    adapt,
    flatten,
    forward,
    gradient,
    load_parameters,
    parameters_of,
    task_loss,
)
from metalandscape.models import Conv4, SinusoidMLP

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


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_batched_updates_equal_the_serial_loop_with_batchnorm(
    tiny_conv, tiny_batch, inner_optimizer
):
    params = parameters_of(tiny_conv)
    updates = [
        reptile_update(
            tiny_conv,
            params,
            tiny_batch,
            KIND,
            ReptileSettings(3, 0.1, 0.5, inner_optimizer=inner_optimizer, task_chunk_size=chunk),
            iteration=0,
        )
        for chunk in (1, 2, None)
    ]
    reference = flatten(updates[0].mean_displacement)
    assert reference.norm() > 0
    for other in updates[1:]:
        assert (flatten(other.mean_displacement) - reference).norm() <= 1e-10 * reference.norm()
        assert torch.allclose(flatten(other.params), flatten(updates[0].params), rtol=1e-12)
        assert other.target_loss == pytest.approx(updates[0].target_loss, rel=1e-12)


def test_update_moves_theta_by_epsilon_times_the_mean_adapted_displacement(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    settings = ReptileSettings(2, 0.1, outer_step_size=0.4)
    expected_displacement = 0.0
    for task in tiny_batch:
        adapted = adapt(
            tiny_conv,
            params,
            task.support_inputs,
            task.support_labels,
            kind=KIND,
            steps=2,
            step_size=0.1,
        )
        expected_displacement = expected_displacement + flatten(adapted) - flatten(params)
    expected_displacement = expected_displacement / len(tiny_batch)
    update = reptile_update(tiny_conv, params, tiny_batch, KIND, settings, iteration=0)
    assert torch.allclose(flatten(update.mean_displacement), expected_displacement, rtol=1e-12)
    assert torch.allclose(
        flatten(update.params), flatten(params) + 0.4 * expected_displacement, rtol=1e-12
    )
    # One inner step: Reptile's update is −ε·α·(mean support gradient) (joint training).
    one_step = reptile_update(tiny_conv, params, tiny_batch, KIND, ReptileSettings(1, 0.1), 0)
    mean_gradient = sum(
        flatten(gradient(tiny_conv, params, t.support_inputs, t.support_labels, KIND))
        for t in tiny_batch
    ) / len(tiny_batch)
    assert torch.allclose(flatten(one_step.mean_displacement), -0.1 * mean_gradient, rtol=1e-10)


def test_adam_inner_loop_matches_torch_adam_with_beta1_zero(tiny_conv, tiny_batch):
    task = tiny_batch[1]
    params = parameters_of(tiny_conv)
    settings = ReptileSettings(4, 0.01, inner_optimizer="adam")
    ours = adapt_task(
        tiny_conv, params, task.support_inputs, task.support_labels, kind=KIND, settings=settings
    )
    model = Conv4((1, 8, 8), 3, filters=4).double()
    load_parameters(model, params)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        optimizer.zero_grad()
        loss = task_loss(
            model, dict(model.named_parameters()), task.support_inputs, task.support_labels, KIND
        )
        loss.backward()
        optimizer.step()
    assert torch.allclose(flatten(ours), flatten(parameters_of(model)), rtol=1e-10, atol=1e-13)


def test_outer_step_size_is_fixed_or_linearly_annealed():
    fixed = ReptileSettings(1, 0.1, outer_step_size=0.3)
    assert [fixed.outer_step_size_at(t) for t in (0, 10, 10**6)] == [0.3, 0.3, 0.3]
    annealed = ReptileSettings(1, 0.1, outer_step_size=1.0, anneal_iterations=100)
    assert [annealed.outer_step_size_at(t) for t in (0, 25, 100, 150)] == [1.0, 0.75, 0.0, 0.0]
    with pytest.raises(ValueError, match="inner_optimizer"):
        ReptileSettings(1, 0.1, inner_optimizer="rmsprop")  # type: ignore[arg-type]


def test_learner_follows_the_schedule_and_evaluation_is_gradient_descent(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    settings = ReptileSettings(
        2, 0.1, outer_step_size=1.0, anneal_iterations=4, task_chunk_size=None
    )
    learner = ReptileLearner(tiny_conv, params, KIND, settings)
    for iteration in range(5):
        before = flatten(learner.parameters_to_save())
        update = learner.step(tiny_batch)
        moved = flatten(learner.parameters_to_save()) - before
        epsilon = 1.0 - iteration / 4 if iteration < 4 else 0.0
        assert torch.allclose(moved, epsilon * flatten(update.mean_displacement), atol=1e-14)
    assert learner.iteration == 5

    task = tiny_batch[2]
    adapted, trajectory = adapt_for_evaluation(
        tiny_conv,
        params,
        task.support_inputs,
        task.support_labels,
        kind=KIND,
        settings=ReptileSettings(2, 0.1, inner_optimizer="adam"),
        return_trajectory=True,
    )
    expected = adapt(
        tiny_conv,
        params,
        task.support_inputs,
        task.support_labels,
        kind=KIND,
        steps=2,
        step_size=0.1,
    )
    assert len(trajectory) == 3
    assert torch.equal(flatten(adapted), flatten(expected))


def test_reptile_learns_sinusoids():
    """A few hundred meta-iterations lower the meta-test MSE after adaptation well below θ0's."""
    torch.manual_seed(0)
    model = SinusoidMLP()
    source = SinusoidSource(10, 10, train_phase=(0.0, math.pi), test_phase=(0.0, math.pi))
    sampler = TaskSampler(source, seed=0)
    test_tasks = sampler.batch("test", range(100))
    settings = ReptileSettings(5, 0.02, 1.0, anneal_iterations=300, task_chunk_size=None)
    learner = ReptileLearner(model, parameters_of(model), "regression", settings)

    def meta_test_mse() -> float:
        params = {n: p.expand(100, *p.shape) for n, p in learner.parameters_to_save().items()}
        adapted = adapt_for_evaluation(
            model,
            params,
            test_tasks.support_inputs,
            test_tasks.support_labels,
            kind="regression",
            settings=settings,
            batched=True,
        )
        outputs = torch.func.vmap(lambda p, x: forward(model, p, x))(
            adapted, test_tasks.target_inputs
        )
        return float(((outputs - test_tasks.target_labels) ** 2).mean())

    before = meta_test_mse()
    for iteration in range(300):
        learner.step(sampler.meta_batch("train", iteration, 25))
    after = meta_test_mse()
    assert after < 0.6 * before, (before, after)
