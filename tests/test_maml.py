"""Correctness of the meta-gradients: finite differences, first order, regularizer, batching."""

from __future__ import annotations

import math

import pytest
import torch

from metalandscape.algorithms import algorithm_names, load_algorithm
from metalandscape.algorithms._shared import task_chunks
from metalandscape.algorithms.finetune import replace_head, task_head_seed
from metalandscape.algorithms.maml import MetaAlgorithm, MetaSettings, meta_gradient
from metalandscape.config import RunConfig, resolve_run_config
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
from metalandscape.metrics.base import EvaluationContext
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


def mean_target_loss(model, params, batch, steps, step_size, sam_radius=0.0):
    """mean_i L(D'ᵢ; θ̃ᵢ), task by task (``sam_radius``: Sharp-MAML's inner step)."""
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
            sam_radius=sam_radius,
        )
        total = total + task_loss(model, adapted, task.target_inputs, task.target_labels, KIND)
    return total / len(batch)


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_finite_differences(tiny_conv, tiny_batch, steps):
    params = parameters_of(tiny_conv)
    settings = MetaSettings(steps, 0.3)
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
    settings = MetaSettings(2, 0.3, second_order=False)
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
        meta_gradient(tiny_conv, params, tiny_batch, KIND, MetaSettings(2, 0.3)).gradients
    )
    assert (second - result).norm() > 1e-3 * second.norm()


# The registered MetaAlgorithm variants (Reptile, ANIL, Meta-SGD test their own batching).
MAML_FAMILY = tuple(
    name
    for name in algorithm_names("meta-learner")
    if isinstance(load_algorithm(name), MetaAlgorithm)
)


@pytest.mark.parametrize("algorithm", MAML_FAMILY)
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
            MetaSettings(
                steps,
                0.3,
                task_chunk_size=chunk,
                second_order=load_algorithm(algorithm).second_order,
                regularized=load_algorithm(algorithm).regularized,
            ),
        )
        for chunk in (1, 2, None)
    ]
    reference = flatten(results[0].gradients)
    for other in results[1:]:
        assert (flatten(other.gradients) - reference).norm() <= 1e-10 * reference.norm()
        assert other.target_loss == pytest.approx(results[0].target_loss, rel=1e-12)


def test_one_step_size_per_parameter_generalises_the_single_step_size(tiny_conv, tiny_batch):
    params = parameters_of(tiny_conv)
    task = tiny_batch[0]
    inputs = (tiny_conv, params, task.support_inputs, task.support_labels)
    trajectory: list = []
    single = adapt(*inputs, kind=KIND, steps=2, step_size=0.3, trajectory=trajectory)
    mapped = adapt(*inputs, kind=KIND, steps=2, step_size=dict.fromkeys(params, 0.3))
    assert all(torch.equal(single[name], mapped[name]) for name in params)
    assert len(trajectory) == 3 and all(torch.equal(trajectory[-1][n], single[n]) for n in params)
    head = {name: 0.3 for name in params if name.startswith(HEAD_PREFIX)}
    head_only = adapt(*inputs, kind=KIND, steps=2, step_size=head)
    assert all(torch.equal(head_only[n], params[n]) == (n not in head) for n in params)
    with pytest.raises(ValueError, match="names none of the parameters"):
        adapt(*inputs, kind=KIND, steps=1, step_size={"no such parameter": 0.3})


def test_task_chunks_drop_the_task_axis_of_single_tasks_only(tiny_batch):
    chunks = list(task_chunks(tiny_batch, 2))
    assert [(chunk.tasks, chunk.batched) for chunk in chunks] == [(2, True), (1, False)]
    assert torch.equal(chunks[1].support_inputs, tiny_batch[2].support_inputs)
    kept = list(task_chunks(tiny_batch, 2, keep_task_axis=True))
    assert [chunk.support_inputs.shape[0] for chunk in kept] == [2, 1]
    assert [len(list(task_chunks(tiny_batch, size))) for size in (None, 1, 3)] == [1, 3, 1]


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
    plain = meta_gradient(tiny_conv, params, tiny_batch, KIND, MetaSettings(2, 0.3))
    zero = meta_gradient(
        tiny_conv,
        params,
        tiny_batch,
        KIND,
        MetaSettings(2, 0.3, regularizer_gamma=0.0, regularized=True),
    )
    assert torch.allclose(flatten(plain.gradients), flatten(zero.gradients), rtol=1e-12)
    gamma = meta_gradient(
        tiny_conv,
        params,
        tiny_batch,
        KIND,
        MetaSettings(2, 0.3, regularizer_gamma=0.5, regularized=True),
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
        model, parameters_of(model), "regression", MetaSettings(1, 0.01, None), 0.001
    )

    def meta_test_mse() -> float:
        settings = MetaSettings(1, 0.01, None)
        return meta_gradient(model, learner.params, test_tasks, "regression", settings).target_score

    before = meta_test_mse()
    for iteration in range(450):  # MSE ratio 0.535 here (0.43 at 700): deterministic on CPU
        learner.step(sampler.meta_batch("train", iteration, 25))
    after = meta_test_mse()
    assert after < 0.6 * before, (before, after)


def _finetune_config() -> RunConfig:
    return resolve_run_config(
        {"dataset": "fontglot", "algorithm": "finetune", "n_way": 5, "data_path": "unused.npz"}
    )


def test_finetune_evaluation_gives_each_task_its_own_seeded_head():
    """Per task (default): head i depends on (evaluation seed, i) only; shared: one head."""
    torch.manual_seed(0)
    params = parameters_of(Conv4((1, 28, 28), 40))
    finetune = load_algorithm("finetune")
    config = _finetune_config()
    start = finetune.evaluation_start(config, params, 3, "per_task")
    assert start.per_task is not None
    heads = [start.per_task(i)["head.weight"] for i in range(4)]
    again = finetune.evaluation_start(config, params, 3, "per_task").per_task
    assert again is not None and torch.equal(again(2)["head.weight"], heads[2])
    assert all(not torch.equal(heads[0], other) for other in heads[1:])
    expected = replace_head(params, 5, seed=task_head_seed(3, 2))["head.weight"]
    assert torch.equal(heads[2], expected)
    other_seed = finetune.evaluation_start(config, params, 4, "per_task").per_task
    assert other_seed is not None and not torch.equal(other_seed(2)["head.weight"], heads[2])
    assert start.per_task(1)["head.weight"].shape == (5, 64)
    assert torch.count_nonzero(start.per_task(1)["head.bias"]) == 0
    shared = finetune.evaluation_start(config, params, 3, "shared")
    assert shared.per_task is None
    assert torch.equal(shared.shared["head.weight"], replace_head(params, 5, 3)["head.weight"])


def test_task_head_seeds_differ_across_tasks_and_seeds():
    seeds = {task_head_seed(s, i) for s in range(5) for i in range(50)}
    assert len(seeds) == 250
    assert task_head_seed(0, 1) == task_head_seed(0, 1)


def test_meta_learners_evaluate_from_theta_s_with_their_inner_loop():
    config = resolve_run_config({"dataset": "sinusoid", "algorithm": "maml"})
    params = parameters_of(SinusoidMLP())
    for name in (*MAML_FAMILY, "reptile"):
        algorithm = load_algorithm(name)
        start = algorithm.evaluation_start(config, params, 0, "per_task")
        assert start.shared is params and start.per_task is None
        assert algorithm.evaluation_adaptation(config, params) == (1, 0.01)


def test_context_adapts_each_task_from_its_own_start(tiny_conv, tiny_batch):
    """Per-task starts: chunked and per-task adaptation agree, each from its task's start."""
    torch.manual_seed(1)
    params = parameters_of(tiny_conv)
    shifted = {i: {n: p + 0.01 * (i + 1) for n, p in params.items()} for i in range(3)}

    class Fixed:
        def task(self, split, index):
            return tiny_batch[index]

    results = []
    for chunk in (1, 2, None):
        context = EvaluationContext(
            tiny_conv,
            params,
            Fixed(),  # type: ignore[arg-type]
            KIND,
            inner_steps=1,
            inner_step_size=0.3,
            task_chunk_size=chunk,
            task_start=shifted.__getitem__,
        )
        results.append(context.displacements("test", 3))
        gradients = context.start_gradients("test", 3)
    for i in range(3):
        task = tiny_batch[i]
        expected = adapt(
            tiny_conv,
            shifted[i],
            task.support_inputs,
            task.support_labels,
            kind=KIND,
            steps=1,
            step_size=0.3,
        )
        step = flatten(expected) - flatten(shifted[i])
        for result in results:
            assert torch.allclose(result[i], step, atol=1e-6)
        g = gradient(tiny_conv, shifted[i], task.support_inputs, task.support_labels, KIND)
        assert torch.allclose(gradients[i], flatten(g), atol=1e-6)


@pytest.mark.parametrize(("device", "expected"), [("cpu", 5), ("cuda", None)])
def test_meta_learner_chunks_tasks_by_device(device: str, expected: int | None) -> None:
    """Training takes the task chunk of devices.task_chunk_size: configured on CPU, whole on CUDA."""
    config = resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "task_chunk_size": 5})
    model = SinusoidMLP()
    learner = load_algorithm("maml").learner(
        config, model, parameters_of(model), SinusoidSource(k_shot=5), torch.device(device)
    )
    assert learner.settings.task_chunk_size == expected
    assert learner.settings.inner_steps == config.inner_steps
