"""Correctness of the meta-gradients: finite differences, first order, regularizer, batching."""

from __future__ import annotations

import math

import pytest
import torch

from metalandscape.algorithms.finetune import replace_head
from metalandscape.algorithms.maml import MetaSettings, meta_gradient
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskSampler
from metalandscape.functional import (
    adapt,
    coherence_corrected,
    flatten,
    gradient,
    parameters_of,
    task_loss,
    unflatten,
    unit_direction,
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


def mean_target_loss(model, params, batch, steps, step_size):
    total = 0.0
    for task in batch:
        adapted = adapt(
            model,
            params,
            task.support_inputs,
            task.support_labels,
            kind=KIND,
            steps=steps,
            step_size=step_size,
        )
        total = total + task_loss(model, adapted, task.target_inputs, task.target_labels, KIND)
    return total / len(batch)


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_finite_differences(tiny_conv, tiny_batch, steps):
    params = parameters_of(tiny_conv)
    settings = MetaSettings("maml", steps, 0.3)
    meta = flatten(meta_gradient(tiny_conv, params, tiny_batch, KIND, settings).gradients)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        direction = torch.randn(meta.shape, dtype=torch.float64, generator=generator)
        direction /= direction.norm()
        eps = 1e-5

        def shifted(sign: float, eps=eps, direction=direction):
            step = unflatten(sign * eps * direction, params)
            return {name: value + step[name] for name, value in params.items()}

        finite_difference = (
            mean_target_loss(tiny_conv, shifted(1), tiny_batch, steps, 0.3)
            - mean_target_loss(tiny_conv, shifted(-1), tiny_batch, steps, 0.3)
        ) / (2 * eps)
        analytic = meta @ direction
        assert abs(float(analytic - finite_difference)) <= 1e-4 * max(abs(float(analytic)), 1e-3)


def test_first_order_is_the_target_gradient_at_the_adapted_parameters(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    settings = MetaSettings("fomaml", 2, 0.3)
    result = flatten(meta_gradient(tiny_conv, params, tiny_batch, KIND, settings).gradients)
    expected = 0.0
    for task in tiny_batch:
        adapted = adapt(
            tiny_conv,
            params,
            task.support_inputs,
            task.support_labels,
            kind=KIND,
            steps=2,
            step_size=0.3,
            create_graph=False,
        )
        expected = expected + flatten(
            gradient(tiny_conv, adapted, task.target_inputs, task.target_labels, KIND)
        )
    expected = expected / len(tiny_batch)
    assert torch.allclose(result, expected, rtol=1e-10, atol=1e-12)
    second = flatten(
        meta_gradient(tiny_conv, params, tiny_batch, KIND, MetaSettings("maml", 2, 0.3)).gradients
    )
    assert (second - result).norm() > 1e-3 * second.norm()


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "regmaml"])
@pytest.mark.parametrize("steps", [1, 3])
def test_batched_paths_equal_the_per_task_loop_with_batchnorm(
    tiny_conv, tiny_batch, algorithm, steps
):
    """vmap(grad(·)) over chunks must equal the loop exactly (BatchNorm included)."""
    params = parameters_of(tiny_conv)
    results = [
        meta_gradient(
            tiny_conv,
            params,
            tiny_batch,
            KIND,
            MetaSettings(algorithm, steps, 0.3, task_chunk_size=chunk),
        )
        for chunk in (1, 2, None)
    ]
    reference = flatten(results[0].gradients)
    for other in results[1:]:
        assert (flatten(other.gradients) - reference).norm() <= 1e-10 * reference.norm()
        assert other.target_loss == pytest.approx(results[0].target_loss, rel=1e-12)


def test_coherence_correction_matches_autograd():
    generator = torch.Generator().manual_seed(3)
    start = {"a": torch.randn(4, 3, dtype=torch.float64, generator=generator)}
    adapted = {"a": start["a"] + torch.randn(4, 3, dtype=torch.float64, generator=generator)}
    mean_direction = torch.randn(12, dtype=torch.float64, generator=generator)
    mean_direction /= mean_direction.norm()
    gamma = 0.5
    corrected = coherence_corrected(adapted, start, mean_direction, gamma)

    leaf = adapted["a"].clone().requires_grad_(True)
    omega = -(unit_direction({"a": leaf}, start) @ mean_direction)
    (grad_omega,) = torch.autograd.grad(omega, leaf)
    expected = adapted["a"] - gamma * grad_omega
    assert torch.allclose(corrected["a"], expected, rtol=1e-12, atol=1e-14)
    # The correction raises the alignment of the step with the mean direction.
    before = unit_direction(adapted, start) @ mean_direction
    after = unit_direction(corrected, start) @ mean_direction
    assert after > before


def test_regularized_maml_with_zero_gamma_is_maml(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    plain = meta_gradient(tiny_conv, params, tiny_batch, KIND, MetaSettings("maml", 2, 0.3))
    zero = meta_gradient(
        tiny_conv,
        params,
        tiny_batch,
        KIND,
        MetaSettings("regmaml", 2, 0.3, regularizer_gamma=0.0),
    )
    assert torch.allclose(flatten(plain.gradients), flatten(zero.gradients), rtol=1e-12)
    gamma = meta_gradient(
        tiny_conv,
        params,
        tiny_batch,
        KIND,
        MetaSettings("regmaml", 2, 0.3, regularizer_gamma=0.5),
    )
    assert not torch.allclose(flatten(plain.gradients), flatten(gamma.gradients))


def test_finetune_head_is_replaced_with_seeded_xavier():
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 40)
    params = parameters_of(model)
    first = replace_head(params, 5, seed=7)
    again = replace_head(params, 5, seed=7)
    other = replace_head(params, 5, seed=8)
    assert first["head.weight"].shape == (5, 64) and first["head.bias"].shape == (5,)
    assert torch.equal(first["head.weight"], again["head.weight"])
    assert not torch.equal(first["head.weight"], other["head.weight"])
    bound = (6 / (64 + 5)) ** 0.5
    assert float(first["head.weight"].abs().max()) <= bound
    assert float(first["head.weight"].std()) > bound / 3
    assert torch.count_nonzero(first["head.bias"]) == 0
    for name, value in params.items():
        if not name.startswith("head."):
            assert torch.equal(first[name], value)
    outputs = torch.func.functional_call(model, first, (torch.rand(2, 1, 28, 28),))
    assert outputs.shape == (2, 5)


def test_maml_learns_sinusoids():
    """A few hundred meta-iterations lower the meta-test MSE well below the untrained model's."""
    torch.manual_seed(0)
    model = SinusoidMLP()
    # Finn's same-distribution setting: amplitude U[0.1, 5], phase U[0, π] for every split.
    source = SinusoidSource(
        k_shot=10,
        target_points=10,
        train_phase=(0.0, math.pi),
        test_phase=(0.0, math.pi),
    )
    sampler = TaskSampler(source, seed=0)
    test_tasks = sampler.batch("test", range(100))
    from metalandscape.algorithms.maml import MetaLearner

    learner = MetaLearner(
        model, parameters_of(model), "regression", MetaSettings("maml", 1, 0.01, None), 0.001
    )

    def meta_test_mse() -> float:
        settings = MetaSettings("maml", 1, 0.01, None)
        return meta_gradient(model, learner.params, test_tasks, "regression", settings).target_score

    before = meta_test_mse()
    for iteration in range(700):
        learner.step(sampler.meta_batch("train", iteration, 25))
    after = meta_test_mse()
    assert after < 0.6 * before, (before, after)
