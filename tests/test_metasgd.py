"""Meta-SGD: meta-gradient w.r.t. θ and α against finite differences, against MAML, batching, α."""

from __future__ import annotations

import math

import pytest
import torch

from metalandscape.algorithms.maml import MetaSettings
from metalandscape.algorithms.maml import meta_gradient as maml_meta_gradient
from metalandscape.algorithms.metasgd import (
    STEP_SIZE_PREFIX,
    MetaSGDLearner,
    MetaSGDSettings,
    adapt_for_evaluation,
    initial_step_sizes,
    meta_gradient,
    split_step_sizes,
)
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskSampler
from metalandscape.functional import flatten, forward, gradient, parameters_of, task_loss, unflatten
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


def mean_target_loss(model, params, alphas, batch, steps):
    """Reference written out: θ ← θ − α ⊙ ∇L(support), then the mean target loss."""
    params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    total = 0.0
    for task in batch:
        adapted = params
        for _ in range(steps):
            loss = task_loss(model, adapted, task.support_inputs, task.support_labels, KIND)
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=True)
            adapted = {
                n: p - alphas[n] * g for (n, p), g in zip(adapted.items(), grads, strict=True)
            }
        total = total + task_loss(model, adapted, task.target_inputs, task.target_labels, KIND)
    return float(total.detach() / len(batch))


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_in_theta_and_alpha_matches_finite_differences(tiny_conv, tiny_batch, steps):
    params = parameters_of(tiny_conv)
    settings = MetaSGDSettings(steps)
    alphas = initial_step_sizes(params, settings, seed=3)
    result = meta_gradient(tiny_conv, params, alphas, tiny_batch, KIND, settings)
    joint = torch.cat([flatten(result.gradients), flatten(result.step_size_gradients)])
    size = flatten(params).numel()
    generator = torch.Generator().manual_seed(2)
    for part in ("theta", "alpha", "both"):
        direction = torch.randn(joint.shape, dtype=torch.float64, generator=generator)
        if part == "theta":
            direction[size:] = 0
        elif part == "alpha":
            direction[:size] = 0
        direction /= direction.norm()
        eps = 1e-5

        def shifted(sign, eps=eps, direction=direction):
            theta_step = unflatten(sign * eps * direction[:size], params)
            alpha_step = unflatten(sign * eps * direction[size:], alphas)
            return (
                {n: v + theta_step[n] for n, v in params.items()},
                {n: v + alpha_step[n] for n, v in alphas.items()},
            )

        finite_difference = (
            mean_target_loss(tiny_conv, *shifted(1), tiny_batch, steps)
            - mean_target_loss(tiny_conv, *shifted(-1), tiny_batch, steps)
        ) / (2 * eps)
        analytic = float(joint @ direction)
        assert abs(analytic - finite_difference) <= 1e-4 * max(abs(analytic), 1e-3), part


def test_constant_alpha_gives_maml_and_the_closed_form_alpha_gradient(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    settings = MetaSGDSettings(1, 0.3, step_size_init="constant")
    alphas = initial_step_sizes(params, settings, seed=0)
    result = meta_gradient(tiny_conv, params, alphas, tiny_batch, KIND, settings)
    maml = maml_meta_gradient(tiny_conv, params, tiny_batch, KIND, MetaSettings(1, 0.3))
    assert torch.allclose(flatten(result.gradients), flatten(maml.gradients), rtol=1e-10)
    assert result.target_loss == pytest.approx(maml.target_loss, rel=1e-12)
    # One step: ∂L'/∂α = −∇L(D; θ) ⊙ ∇L(D'; θ̃), averaged over tasks.
    expected = 0.0
    for task in tiny_batch:
        support = flatten(
            gradient(tiny_conv, params, task.support_inputs, task.support_labels, KIND)
        )
        adapted = unflatten(flatten(params) - 0.3 * support, params)
        target = flatten(gradient(tiny_conv, adapted, task.target_inputs, task.target_labels, KIND))
        expected = expected - support * target
    expected = expected / len(tiny_batch)
    assert torch.allclose(flatten(result.step_size_gradients), expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("first_order", [False, True])
def test_chunks_equal_the_per_task_loop_with_batchnorm(tiny_conv, tiny_batch, first_order):
    params = parameters_of(tiny_conv)
    alphas = initial_step_sizes(params, MetaSGDSettings(), seed=4)
    results = [
        meta_gradient(
            tiny_conv,
            params,
            alphas,
            tiny_batch,
            KIND,
            MetaSGDSettings(2, first_order=first_order, task_chunk_size=chunk),
        )
        for chunk in (1, 2, None)
    ]
    reference = torch.cat([flatten(results[0].gradients), flatten(results[0].step_size_gradients)])
    for other in results[1:]:
        joint = torch.cat([flatten(other.gradients), flatten(other.step_size_gradients)])
        assert (joint - reference).norm() <= 1e-10 * reference.norm()


def test_initial_step_sizes_are_seeded_uniform_or_constant(tiny_conv):
    params = parameters_of(tiny_conv)
    uniform = initial_step_sizes(params, MetaSGDSettings(), seed=5)
    assert all(uniform[n].shape == p.shape for n, p in params.items())
    values = flatten(uniform)
    assert float(values.min()) >= 0.005 and float(values.max()) <= 0.1
    assert float(values.std()) > 0.01
    assert torch.equal(values, flatten(initial_step_sizes(params, MetaSGDSettings(), seed=5)))
    assert not torch.equal(values, flatten(initial_step_sizes(params, MetaSGDSettings(), seed=6)))
    constant = initial_step_sizes(params, MetaSGDSettings(1, 0.02, "constant"), seed=5)
    assert torch.all(flatten(constant) == 0.02)


def test_learner_saves_alpha_and_evaluation_adapts_with_it(tiny_conv, tiny_batch):
    settings = MetaSGDSettings(1, task_chunk_size=None)
    learner = MetaSGDLearner(tiny_conv, parameters_of(tiny_conv), KIND, settings, 0.01, seed=7)
    before = flatten(learner.step_sizes).clone()
    losses = [learner.step(tiny_batch).target_loss for _ in range(15)]
    assert losses[-1] < losses[0]
    assert not torch.equal(flatten(learner.step_sizes).detach(), before)

    saved = learner.parameters_to_save()
    names = list(dict(tiny_conv.named_parameters()))
    assert list(saved) == names + [STEP_SIZE_PREFIX + n for n in names]
    theta, alphas = split_step_sizes(saved)
    resumed = MetaSGDLearner.from_saved(tiny_conv, saved, KIND, settings, 0.01)
    assert torch.equal(flatten(resumed.parameters_to_save()), flatten(saved))

    task = tiny_batch[0]
    adapted = adapt_for_evaluation(
        tiny_conv, saved, task.support_inputs, task.support_labels, kind=KIND, settings=settings
    )
    assert list(adapted) == names
    support = gradient(tiny_conv, theta, task.support_inputs, task.support_labels, KIND)
    for name in names:
        expected = theta[name] - alphas[name] * support[name]
        assert torch.allclose(adapted[name], expected, rtol=1e-12, atol=1e-15), name

    with pytest.raises(KeyError, match="step sizes"):
        split_step_sizes(theta)


def test_learns_sinusoids_and_adaptation_helps():
    """300 meta-iterations lower the meta-test MSE after adaptation, below the MSE at θ."""
    torch.manual_seed(0)
    model = SinusoidMLP()
    source = SinusoidSource(10, 10, train_phase=(0.0, math.pi), test_phase=(0.0, math.pi))
    sampler = TaskSampler(source, seed=0)
    test_tasks = sampler.batch("test", range(100))
    settings = MetaSGDSettings(1, task_chunk_size=None)
    learner = MetaSGDLearner(model, parameters_of(model), "regression", settings, 1e-3, seed=0)

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
