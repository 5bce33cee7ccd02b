"""Sharp-MAML: meta-gradients against finite differences at each level, MAML at radius 0,
its own evaluation adaptation, and the config keys."""

from __future__ import annotations

import pytest
import torch
from test_maml import mean_target_loss

from metalandscape.algorithms import ALGORITHMS, load_algorithm
from metalandscape.algorithms.maml import MetaSettings, meta_gradient
from metalandscape.algorithms.sharpmaml import SharpSettings, sharp_meta_gradient
from metalandscape.checkpoints import load_epoch_params
from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.data.tasks import TaskBatch
from metalandscape.functional import adapt, flatten, parameters_of, unflatten
from metalandscape.metrics.evaluate import make_context
from metalandscape.models import Conv4
from metalandscape.training import train_run

KIND = "classification"
ALPHA = 0.3


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    return Conv4((1, 8, 8), 3, filters=4).double()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(2).repeat(2, 1)
    return TaskBatch(
        torch.randn(2, 6, 1, 8, 8, dtype=torch.float64, generator=generator),
        labels,
        torch.randn(2, 6, 1, 8, 8, dtype=torch.float64, generator=generator),
        labels,
    )


def directional_difference(model, params, batch, steps, lower_radius, direction, eps=1e-6):
    flat = flatten(params)

    def at(shift):
        point = unflatten(flat + shift * direction, params)
        return float(mean_target_loss(model, point, batch, steps, ALPHA, lower_radius))

    return (at(eps) - at(-eps)) / (2 * eps)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("level", ["upper", "lower", "both"])
def test_meta_gradient_matches_finite_differences(conv, batch, steps, level):
    """Lower level: ∇F_ρ(θ) of the sharpness-aware inner loop. Upper level: SAM's gradient,
    ∇F(θ') at θ' = θ + ρ_u·∇F(θ)/‖∇F(θ)‖ (the perturbation not differentiated)."""
    params = parameters_of(conv)
    upper = 0.05 if level in ("upper", "both") else 0.0
    lower = 0.04 if level in ("lower", "both") else 0.0
    settings = SharpSettings(steps, ALPHA, upper_radius=upper, lower_radius=lower)
    got = flatten(sharp_meta_gradient(conv, params, batch, KIND, settings).gradients)
    point = params
    if upper:
        plain = flatten(meta_gradient(conv, params, batch, KIND, settings).gradients)
        point = unflatten(flatten(params) + upper * plain / plain.norm(), params)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        direction = torch.randn(got.shape, dtype=torch.float64, generator=generator)
        direction /= direction.norm()
        expected = directional_difference(conv, point, batch, steps, lower, direction)
        assert float(got @ direction) == pytest.approx(expected, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("steps", [1, 2])
def test_radius_zero_is_maml(conv, batch, steps):
    params = parameters_of(conv)
    maml = flatten(meta_gradient(conv, params, batch, KIND, MetaSettings(steps, ALPHA)).gradients)
    sharp = sharp_meta_gradient(conv, params, batch, KIND, SharpSettings(steps, ALPHA))
    assert torch.allclose(flatten(sharp.gradients), maml, rtol=1e-12, atol=1e-15)


def test_the_lower_level_moves_the_inner_step_and_zero_radius_does_not(conv, batch):
    params = parameters_of(conv)
    task = batch[0]
    options = dict(kind=KIND, steps=1, step_size=ALPHA, create_graph=False)
    plain = adapt(conv, params, task.support_inputs, task.support_labels, **options)
    zero = adapt(conv, params, task.support_inputs, task.support_labels, sam_radius=0.0, **options)
    sharp = adapt(conv, params, task.support_inputs, task.support_labels, sam_radius=0.1, **options)
    assert torch.equal(flatten(plain), flatten(zero))
    assert not torch.allclose(flatten(plain), flatten(sharp))
    # batched: each task normalised on its own, equal to adapting it alone
    batched = adapt(
        conv,
        {n: p.expand(2, *p.shape) for n, p in params.items()},
        batch.support_inputs,
        batch.support_labels,
        batched=True,
        sam_radius=0.1,
        **options,
    )
    for index in range(2):
        alone = adapt(
            conv,
            params,
            batch.support_inputs[index],
            batch.support_labels[index],
            sam_radius=0.1,
            **options,
        )
        assert torch.allclose(flatten({n: v[index] for n, v in batched.items()}), flatten(alone))


def test_level_and_radii_come_from_the_run_config():
    base = {"dataset": "sinusoid", "algorithm": "sharpmaml"}
    algorithm = load_algorithm("sharpmaml")
    for level, upper, lower in (("upper", 0.05, 0.0), ("lower", 0.0, 0.02), ("both", 0.05, 0.02)):
        config = resolve_run_config({**base, "sharp_level": level, "sharp_lower_radius": 0.02})
        settings = algorithm.settings(config)  # type: ignore[attr-defined]
        assert (settings.upper_radius, settings.lower_radius) == (upper, lower)
        options = algorithm.evaluation_adaptation_options(config)
        assert options == ({"sam_radius": lower} if lower else {})
    assert ALGORITHMS["sharpmaml"].role == "meta-learner"
    with pytest.raises(ConfigError, match="'sharp_level' must be one of upper, lower, both"):
        resolve_run_config({**base, "sharp_level": "middle"})
    with pytest.raises(ConfigError, match="'sharp_upper_radius'"):
        resolve_run_config({**base, "sharp_upper_radius": -0.1})


def test_metrics_adapt_with_the_sharpness_aware_inner_step(tmp_path):
    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "sharpmaml", "epochs": 1, "iterations_per_epoch": 3}
    )
    run = train_run(config, tmp_path / "sharp.h5", progress=False)
    _, context = make_context(run, 1, evaluation_seed=3)
    assert context.adaptation_options == {"sam_radius": config.sharp_lower_radius}
    saved = load_epoch_params(run, 1)
    batch = context.tasks("test", 2)
    adapted = context.adapted("test", 2)
    for index in range(2):
        expected = adapt(
            context.model,
            saved,
            batch.support_inputs[index],
            batch.support_labels[index],
            kind=context.kind,
            steps=config.inner_steps,
            step_size=config.inner_step_size,
            create_graph=False,
            sam_radius=config.sharp_lower_radius,
        )
        assert torch.allclose(flatten(adapted[index]), flatten(expected), atol=1e-6)
    # the start gradients are computed, not taken from the (sharpness-aware) first step
    plain = adapt(
        context.model,
        saved,
        batch.support_inputs[0],
        batch.support_labels[0],
        kind=context.kind,
        steps=config.inner_steps,
        step_size=config.inner_step_size,
        create_graph=False,
    )
    assert not torch.allclose(flatten(plain), flatten(adapted[0]))
