"""Issue 14's measures against dense Hessians and exact reparametrisations of tiny float64 nets."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskSampler
from metalandscape.functional import Params, adapt, flatten, parameters_of
from metalandscape.metrics.base import (
    EvaluationContext,
    MetricError,
    available_metrics,
    make_metric,
)
from metalandscape.metrics.eigen import TaskHessianVectorProduct
from metalandscape.metrics.function_coherence import mean_pairwise_cosine, output_changes
from metalandscape.metrics.layer_curvature import parameter_layers
from metalandscape.metrics.spectral_density import (
    eigenvalue_grid,
    gaussian_density,
    lanczos_quadrature,
)
from metalandscape.metrics.trace import block_loss, task_trace
from metalandscape.models import SinusoidMLP

DTYPE = torch.float64
NEW_METRICS = {"hessian_trace", "spectral_density", "layer_curvature", "function_coherence"}


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3))


def tiny_conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False),
        nn.BatchNorm2d(3, track_running_stats=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 3),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (tiny_mlp, (2,)),
    "conv_batchnorm": (tiny_conv_net, (1, 5, 5)),
}


class Problem:
    """A tiny model, random data and cross-entropy at perturbed parameters, with its dense H."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        make_model, input_shape = MODELS[kind]
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.model = make_model().to(DTYPE)
        self.inputs = torch.randn(9, *input_shape, generator=generator, dtype=DTYPE)
        self.labels = torch.randint(0, 3, (9,), generator=generator)
        self.params: Params = {
            name: value.detach() + 0.5 * torch.randn(value.shape, generator=generator, dtype=DTYPE)
            for name, value in self.model.named_parameters()
        }
        self.loss = block_loss(self.model, self.params, self.inputs, self.labels, F.cross_entropy)
        self.hessian = dense_hessian(self.loss, self.params)
        self.eigenvalues = np.linalg.eigvalsh(self.hessian)


def dense_hessian(loss: Callable[[Params], Tensor], params: Params) -> np.ndarray:
    hvp = TaskHessianVectorProduct(loss, params)
    identity = torch.eye(hvp.size, dtype=DTYPE)
    hessian = torch.stack([hvp.tensor_product(column) for column in identity]).numpy()
    return (hessian + hessian.T) / 2


@pytest.fixture(scope="module", params=sorted(MODELS))
def problem(request: pytest.FixtureRequest) -> Problem:
    return Problem(request.param)


# ------------------------------------------------------------------------------------- trace


def test_hutchinson_trace_contains_the_dense_trace_in_its_interval(problem: Problem) -> None:
    exact = float(np.trace(problem.hessian))
    estimate = task_trace(
        problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy, probes=200
    )
    assert estimate.hessian_vector_products == 200
    # 3.29 standard errors: the two-sided 99.9% normal interval of a 200-probe mean.
    assert abs(estimate.value - exact) <= 3.29 * estimate.standard_error
    # The standard error estimates the true one, √(2 Σ_{i≠j} H_ij² / probes) for Rademacher.
    off_diagonal = problem.hessian - np.diag(np.diag(problem.hessian))
    true_error = math.sqrt(2 * float((off_diagonal**2).sum()) / 200)
    assert estimate.standard_error == pytest.approx(true_error, rel=0.3)


def test_hutchinson_probes_are_seeded_per_task(problem: Problem) -> None:
    def run(seed: int, task: int) -> float:
        return task_trace(
            problem.model,
            problem.params,
            problem.inputs,
            problem.labels,
            F.cross_entropy,
            probes=4,
            seed=seed,
            task=task,
        ).value

    assert run(0, 1) == run(0, 1)
    assert run(0, 1) != run(0, 2)


# ------------------------------------------------------------------------------- SLQ density


def wasserstein_bound(eigenvalues: np.ndarray, steps: int, starts: int) -> float:
    """A bound on W1(SLQ measure, spectral measure) in two terms (docs/measures.md):

    quadrature: Gauss quadrature with ``steps`` nodes is exact for polynomials of degree
    2·steps − 1 and, by Jackson's theorem, a 1-Lipschitz function on [λmin, λmax] is within
    π(λmax − λmin)/(8·steps) of one, so each start is within W1 ≤ π(λmax − λmin)/(4·steps) of
    its v-weighted spectral measure Σᵢ (vᵀuᵢ)² δ(λ − λᵢ); weighting: for Gaussian v the weight
    of the j smallest eigenvalues is Beta(j/2, (n − j)/2), variance 2F(1 − F)/(n + 2) at
    F = j/n, so the start-averaged measure has E W1 = E∫|F_v − F| ≤ ∫√(2F(1 − F)/((n + 2)·starts))
    dλ; we allow three times that expectation (Markov: a random seed fails with p ≤ 1/3; the
    seeds here are fixed).
    """
    size = len(eigenvalues)
    spread = float(eigenvalues[-1] - eigenvalues[0])
    fractions = np.arange(1, size) / size  # F between consecutive eigenvalues
    gaps = np.diff(eigenvalues)
    weighting = float(gaps @ np.sqrt(2 * fractions * (1 - fractions) / ((size + 2) * starts)))
    return math.pi * spread / (4 * steps) + 3 * weighting


def slq(problem: Problem, *, starts: int, steps: int, seed: int = 0):
    hvp = TaskHessianVectorProduct(problem.loss, problem.params)
    like = next(iter(problem.params.values()))
    return lanczos_quadrature(
        hvp.tensor_product, hvp.size, like, starts=starts, steps=steps, seed=seed
    )


def test_slq_measure_is_close_to_the_dense_spectrum_in_wasserstein_distance(
    problem: Problem,
) -> None:
    starts, steps = 16, 12
    quadrature = slq(problem, starts=starts, steps=steps)
    assert quadrature.hessian_vector_products == starts * steps
    nodes, weights = quadrature.measure()
    assert weights.sum() == pytest.approx(1.0)
    distance = scipy.stats.wasserstein_distance(nodes, problem.eigenvalues, u_weights=weights)
    bound = wasserstein_bound(problem.eigenvalues, steps, starts)
    assert distance <= bound
    # Not vacuous: the bound is well inside the spectrum's spread, and the measure without the
    # quadrature weights (Ritz values counted equally, a plausible bug) lies beyond it.
    assert bound < 0.15 * (problem.eigenvalues[-1] - problem.eigenvalues[0])
    assert scipy.stats.wasserstein_distance(nodes, problem.eigenvalues) > bound


def test_slq_top_ritz_value_is_lambda_max(problem: Problem) -> None:
    quadrature = slq(problem, starts=4, steps=20)
    assert np.nanmax(quadrature.nodes) == pytest.approx(problem.eigenvalues[-1], rel=1e-6)
    assert np.nanmin(quadrature.nodes) >= problem.eigenvalues[0] - 1e-9


def test_slq_with_as_many_steps_as_parameters_is_exact(problem: Problem) -> None:
    # With n steps the Krylov space is invariant: Ritz values are eigenvalues (a repeated
    # eigenvalue, e.g. the zeros of softmax's shift symmetry, appears once) and each distinct
    # eigenvalue is found.
    size = len(problem.eigenvalues)
    quadrature = slq(problem, starts=2, steps=size)
    for row, weights in zip(quadrature.nodes, quadrature.weights, strict=True):
        keep = np.isfinite(row)
        gaps = np.abs(row[keep, None] - problem.eigenvalues[None, :])
        # Where Lanczos runs on past a numerically invariant space it adds Ritz values of no
        # weight; the weighted measure sits on eigenvalues.
        assert weights[keep] @ gaps.min(axis=1) < 1e-8
        assert gaps.min(axis=0).max() < 1e-8
    np.testing.assert_allclose(np.nansum(quadrature.weights, axis=1), 1.0)


def test_smoothed_density_integrates_to_the_mass_inside_the_grid() -> None:
    nodes, weights = np.array([0.0, 3.0, 50.0]), np.array([0.5, 0.3, 0.2])
    grid = eigenvalue_grid(-5.0, 10.0, 3001)
    density = gaussian_density(nodes, weights, grid, sigma=0.5)
    assert np.trapezoid(density, grid) == pytest.approx(0.8, abs=1e-6)


# ------------------------------------------------------------------------------- per layer


def test_layer_blocks_match_the_dense_diagonal_blocks() -> None:
    problem = Problem("conv_batchnorm")
    layers = parameter_layers(list(problem.params))
    assert list(layers) == ["0", "1", "5"]
    sizes = [p.numel() for p in problem.params.values()]
    offsets = dict(zip(problem.params, np.cumsum([0, *sizes[:-1]]), strict=True))
    context = context_of(problem)
    out = make_metric("layer_curvature", {"tasks": 1, "probes": 400}).compute(context)
    for column, members in enumerate(layers.values()):
        index = np.concatenate(
            [np.arange(offsets[n], offsets[n] + problem.params[n].numel()) for n in members]
        )
        block = problem.hessian[np.ix_(index, index)]
        top = out["layer_top_eigenvalue"].values[0, column]
        assert top == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-4)
        trace = out["layer_trace"].values[0, column]
        error = out["layer_trace_standard_error"].values[0, column]
        assert abs(trace - np.trace(block)) <= 3.29 * error + 1e-12
    assert out["layer_top_eigenvalue"].extra_dims["layer"].tolist() == list(layers)


class OneTask:
    """A sampler stand-in serving one fixed task (the Problem's data as support set)."""

    def __init__(self, problem: Problem) -> None:
        from metalandscape.data.tasks import Task

        self.task_ = Task(problem.inputs, problem.labels, problem.inputs, problem.labels)

    def task(self, split: str, index: int):
        return self.task_


def context_of(problem: Problem) -> EvaluationContext:
    """A context whose task 0 is the Problem and whose adaptation is the identity (0 steps)."""
    return EvaluationContext(
        problem.model,
        problem.params,
        OneTask(problem),
        "classification",
        inner_steps=0,
        inner_step_size=0.0,
    )


def test_unknown_layer_is_named() -> None:
    with pytest.raises(MetricError, match=r"setting 'layers': 'conv9' names no parameters"):
        parameter_layers(["conv.weight", "head.bias"], ["conv9"])


# -------------------------------------------------------------------------- function space


def test_function_coherence_is_invariant_to_rescaling_a_convolution_before_batchnorm() -> None:
    torch.manual_seed(0)
    model = tiny_conv_net().to(DTYPE)
    model[1].eps = 1e-12  # BatchNorm(c·z) = BatchNorm(z) up to eps
    start = parameters_of(model)
    generator = torch.Generator().manual_seed(1)
    tasks = [
        (
            torch.randn(6, 1, 5, 5, generator=generator, dtype=DTYPE),
            torch.randint(0, 3, (6,), generator=generator),
        )
        for _ in range(5)
    ]
    adapted = [
        adapt(model, start, x, y, kind="classification", steps=2, step_size=0.5) for x, y in tasks
    ]
    probes = [torch.randn(7, 1, 5, 5, generator=generator, dtype=DTYPE) for _ in range(2)]

    def rescaled(params: Params) -> Params:  # the same function, another parametrisation
        return {**params, "0.weight": 10.0 * params["0.weight"]}

    def trajectory_coherence(start: Params, adapted: list[Params]) -> float:
        return mean_pairwise_cosine(torch.stack([flatten(p) - flatten(start) for p in adapted]))

    def function_coherence(start: Params, adapted: list[Params]) -> float:
        return mean_pairwise_cosine(output_changes(model, start, adapted, probes, "classification"))

    scaled_start, scaled_adapted = rescaled(start), [rescaled(p) for p in adapted]
    before = trajectory_coherence(start, adapted)
    after = trajectory_coherence(scaled_start, scaled_adapted)
    assert abs(after - before) > 0.05
    assert function_coherence(scaled_start, scaled_adapted) == pytest.approx(
        function_coherence(start, adapted), abs=1e-9
    )


def test_centred_logits_ignore_a_per_input_shift() -> None:
    model = nn.Linear(2, 3).to(DTYPE)
    start = parameters_of(model)
    shifted = {**start, "bias": start["bias"] + 5.0}
    changes = output_changes(
        model, start, [shifted], [torch.ones(4, 2, dtype=DTYPE)], "classification"
    )
    assert changes.abs().max() < 1e-12


# ------------------------------------------------------------------------------- plugins


@pytest.fixture(scope="module")
def sinusoid_context() -> EvaluationContext:
    torch.manual_seed(0)
    model = SinusoidMLP(hidden=(8, 8)).double()
    sampler = TaskSampler(SinusoidSource(k_shot=5, target_points=5), seed=0)
    return EvaluationContext(
        model, parameters_of(model), sampler, "regression", inner_steps=1, inner_step_size=0.05
    )


def test_new_metrics_are_registered() -> None:
    assert set(available_metrics()) >= NEW_METRICS


def test_metrics_run_share_the_adaptation_and_report_their_cost(sinusoid_context) -> None:
    settings = {
        "hessian_trace": {"tasks": 3, "probes": 5},
        "spectral_density": {"tasks": 3, "starts": 2, "lanczos_steps": 6, "grid_points": 11},
        "layer_curvature": {"tasks": 3, "probes": 3},
        "function_coherence": {"tasks": 3, "probe_tasks": 2},
    }
    before = sinusoid_context.adaptations
    out = {
        name: make_metric(name, value).compute(sinusoid_context) for name, value in settings.items()
    }
    assert sinusoid_context.adaptations - before <= 3
    np.testing.assert_array_equal(
        out["hessian_trace"]["hessian_trace_hessian_vector_products"].values, 5
    )
    np.testing.assert_array_equal(
        out["spectral_density"]["spectral_hessian_vector_products"].values, 12
    )
    assert out["spectral_density"]["spectral_density"].values.shape == (3, 11)
    assert out["spectral_density"]["spectral_ritz_values"].values.shape == (3, 2, 6)
    assert out["layer_curvature"]["layer_trace"].values.shape == (3, 3)  # body.0, body.2, head
    # tr H is the sum of the diagonal blocks' traces: both estimates agree within their errors.
    full = out["hessian_trace"]["hessian_trace"].values
    full_error = out["hessian_trace"]["hessian_trace_standard_error"].values
    blocks = out["layer_curvature"]["layer_trace"].values.sum(axis=1)
    block_error = np.sqrt((out["layer_curvature"]["layer_trace_standard_error"].values ** 2).sum(1))
    assert np.all(np.abs(full - blocks) <= 3.29 * np.hypot(full_error, block_error))
    assert -1 <= out["function_coherence"]["function_coherence"].values <= 1


@pytest.mark.parametrize(
    ("name", "settings", "key"),
    [
        ("hessian_trace", {"probes": 0}, "probes"),
        ("spectral_density", {"grid_low": 1.0, "grid_high": 1.0}, "grid_high"),
        ("spectral_density", {"sigma": 0.0}, "sigma"),
        ("spectral_density", {"starts": 0}, "starts"),
        ("layer_curvature", {"probes": 1}, "probes"),
        ("function_coherence", {"probe_tasks": 0}, "probe_tasks"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(name: str, settings: dict, key: str) -> None:
    with pytest.raises(MetricError, match=f"'{key}'") as error:
        make_metric(name, settings)
    assert "\n" not in str(error.value)


def test_unknown_layer_setting_fails_when_measured(sinusoid_context) -> None:
    metric = make_metric("layer_curvature", {"tasks": 2, "layers": ["body.9"]})
    with pytest.raises(MetricError, match=r"setting 'layers'.*body\.0"):
        metric.compute(sinusoid_context)


def test_new_metrics_write_netcdf_files_with_their_extra_dimensions(tmp_path) -> None:
    import xarray as xr

    from metalandscape.aggregate import AggregateError, aggregate
    from metalandscape.config import resolve_run_config
    from metalandscape.metrics.evaluate import evaluate, write_netcdf
    from metalandscape.training import train_run

    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "maml", "epochs": 2, "iterations_per_epoch": 2}
    )
    run = train_run(config, tmp_path / "run.h5", progress=False)
    metrics = [
        make_metric("hessian_trace", {"tasks": 2, "probes": 2}),
        make_metric("spectral_density", {"tasks": 2, "starts": 1, "lanczos_steps": 3}),
        make_metric("layer_curvature", {"tasks": 2, "probes": 2, "max_hvps": 30}),
        make_metric("function_coherence", {"tasks": 2, "probe_tasks": 1}),
    ]
    paths = []
    for name, dataset in evaluate(run, [1, 2], metrics).items():
        paths.append(write_netcdf(dataset, tmp_path / f"{name}.nc"))
        loaded = xr.open_dataset(paths[-1], engine="h5netcdf")
        xr.testing.assert_identical(loaded.load(), dataset)
    density = xr.open_dataset(tmp_path / "spectral_density.nc", engine="h5netcdf")
    assert density["spectral_density"].dims[-3:] == ("epoch", "task", "eigenvalue")
    assert density["spectral_density_mean"].dims[-2:] == ("epoch", "eigenvalue")
    assert density["spectral_ritz_values"].dims[-3:] == ("task", "lanczos_start", "ritz")
    layers = xr.open_dataset(tmp_path / "layer_curvature.nc", engine="h5netcdf")
    assert layers["layer"].values.tolist() == ["body.0", "body.2", "head"]

    combined = aggregate(paths)
    assert combined["spectral_density"].dims[-2:] == ("task_spectral_density", "eigenvalue")
    assert combined["layer_top_eigenvalue_mean"].dims[-1] == "layer"
    assert combined["layer"].values.tolist() == ["body.0", "body.2", "head"]
    np.testing.assert_array_equal(
        combined["spectral_density_mean"].squeeze().values,
        density["spectral_density_mean"].squeeze().values,
    )
    np.testing.assert_array_equal(
        combined["layer_trace"].squeeze().values, layers["layer_trace"].squeeze().values
    )

    # Another grid in another run's file: the eigenvalue coordinates disagree, named.
    other_config = resolve_run_config({**config.to_dict(), "seed": 1})
    other_run = train_run(other_config, tmp_path / "other.h5", progress=False)
    other = make_metric(
        "spectral_density", {"tasks": 2, "starts": 1, "lanczos_steps": 3, "grid_points": 11}
    )
    other_path = write_netcdf(
        evaluate(other_run, 1, [other])["spectral_density"], tmp_path / "other.nc"
    )
    with pytest.raises(AggregateError, match="coordinate 'eigenvalue' differs"):
        aggregate([tmp_path / "spectral_density.nc", other_path])
