"""Top Hessian eigenvalue backends against dense Hessians of tiny float64 models."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pyhessian
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskSampler
from metalandscape.functional import parameters_of
from metalandscape.metrics.base import EvaluationContext, make_metric
from metalandscape.metrics.builtin import Hessian
from metalandscape.metrics.eigen import (
    BACKENDS,
    BatchedHessianVectorProduct,
    EigenResult,
    Params,
    TaskHessianVectorProduct,
    dense_hessian_eigenvalues,
    top_eigenvalue,
    top_eigenvalue_lanczos,
    top_eigenvalue_pyhessian,
    top_eigenvalues,
    top_eigenvalues_batched,
)
from metalandscape.models import Conv4, SinusoidMLP

DTYPE = torch.float64


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3))


def tiny_conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False),
        nn.BatchNorm2d(2, track_running_stats=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 3),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (tiny_mlp, (2,)),
    "conv": (tiny_conv_net, (1, 5, 5)),
}


class Problem:
    """A tiny model, random data and cross-entropy, at perturbed parameters."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        make_model, input_shape = MODELS[kind]
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.model = make_model().to(DTYPE)
        self.inputs = torch.randn(8, *input_shape, generator=generator, dtype=DTYPE)
        self.labels = torch.randint(0, 3, (8,), generator=generator)
        self.params: Params = {
            name: (value + 0.5 * torch.randn(value.shape, generator=generator, dtype=DTYPE))
            .detach()
            .requires_grad_(True)
            for name, value in self.model.named_parameters()
        }
        self.dense = dense_hessian_eigenvalues(self.loss_of_params, self.params)

    def loss_of_params(self, params: Params) -> Tensor:
        outputs = torch.func.functional_call(self.model, params, (self.inputs,))
        return F.cross_entropy(outputs, self.labels)

    def pyhessian(self, **kwargs: object) -> EigenResult:
        return top_eigenvalue_pyhessian(
            self.model, self.params, self.inputs, self.labels, F.cross_entropy, **kwargs
        )


@pytest.fixture(scope="module", params=sorted(MODELS))
def problem(request: pytest.FixtureRequest) -> Problem:
    return Problem(request.param)


def largest_magnitude(eigenvalues: Tensor) -> float:
    return float(eigenvalues[torch.argmax(eigenvalues.abs())])


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


# ------------------------------------------------------------------------------ quadratic


class Quadratic(nn.Module):
    """``loss = ½ wᵀ A w`` with ``A`` passed as the input: its Hessian is ``A``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=DTYPE))

    def forward(self, matrix: Tensor) -> Tensor:
        return 0.5 * self.weight @ matrix @ self.weight


def output_as_loss(outputs: Tensor, labels: Tensor) -> Tensor:
    return outputs


def indefinite_matrix(size: int = 20) -> tuple[Tensor, Tensor]:
    """A symmetric matrix with eigenvalues -10 (largest magnitude) and 0.1·k up to 3 (largest)."""
    generator = torch.Generator().manual_seed(3)
    rotation, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=DTYPE))
    eigenvalues = torch.linspace(0.1, 3.0, size, dtype=DTYPE)
    eigenvalues[0] = -10.0
    return rotation @ torch.diag(eigenvalues) @ rotation.T, eigenvalues


def quadratic_loss(matrix: Tensor) -> Callable[[Params], Tensor]:
    return lambda params: 0.5 * params["weight"] @ matrix @ params["weight"]


# ------------------------------------------------------------------------------ dense


def test_dense_eigenvalues_of_a_quadratic_are_its_matrix_eigenvalues() -> None:
    matrix, eigenvalues = indefinite_matrix()
    params = {"weight": torch.randn(20, dtype=DTYPE)}
    dense = dense_hessian_eigenvalues(quadratic_loss(matrix), params)
    torch.testing.assert_close(dense, torch.sort(eigenvalues).values)


def test_dense_eigenvalues_are_ascending(problem: Problem) -> None:
    size = sum(value.numel() for value in problem.params.values())
    assert problem.dense.shape == (size,)
    assert torch.all(problem.dense[1:] >= problem.dense[:-1])


# ------------------------------------------------------------------------------ lanczos


def test_lanczos_matches_dense_top_eigenvalue(problem: Problem) -> None:
    result = top_eigenvalue_lanczos(problem.loss_of_params, problem.params)
    assert result.converged
    assert result.hessian_vector_products > 0
    assert relative_error(result.value, float(problem.dense[-1])) < 1e-4


def test_lanczos_largest_magnitude_matches_dense(problem: Problem) -> None:
    result = top_eigenvalue_lanczos(problem.loss_of_params, problem.params, which="LM")
    assert relative_error(result.value, largest_magnitude(problem.dense)) < 1e-4


def test_lanczos_distinguishes_largest_algebraic_from_largest_magnitude() -> None:
    matrix, _ = indefinite_matrix()
    params = {"weight": torch.randn(20, dtype=DTYPE)}
    largest = top_eigenvalue_lanczos(quadratic_loss(matrix), params, which="LA")
    magnitude = top_eigenvalue_lanczos(quadratic_loss(matrix), params, which="LM")
    assert largest.value == pytest.approx(3.0, rel=1e-4)
    assert magnitude.value == pytest.approx(-10.0, rel=1e-4)


def test_lanczos_rejects_unknown_which(problem: Problem) -> None:
    with pytest.raises(ValueError, match="which"):
        top_eigenvalue_lanczos(problem.loss_of_params, problem.params, which="SA")


def test_lanczos_is_deterministic_by_seed(problem: Problem) -> None:
    first = top_eigenvalue_lanczos(problem.loss_of_params, problem.params, seed=7)
    second = top_eigenvalue_lanczos(problem.loss_of_params, problem.params, seed=7)
    assert first == second


def test_lanczos_out_of_budget_returns_improving_lower_bounds_unconverged(
    problem: Problem,
) -> None:
    top = float(problem.dense[-1])
    estimates = []
    for budget in (4, 8, 12):
        result = top_eigenvalue_lanczos(
            problem.loss_of_params, problem.params, tol=1e-14, max_hvps=budget
        )
        assert not result.converged
        assert result.hessian_vector_products == budget
        assert problem.dense[0] - 1e-9 <= result.value <= top + 1e-9 * abs(top)
        estimates.append(result.value)
    assert estimates == sorted(estimates)
    assert relative_error(estimates[-1], top) < 1e-2


def test_lanczos_handles_a_hessian_smaller_than_the_krylov_basis() -> None:
    matrix = torch.tensor([[2.0, 1.0, 0.0], [1.0, -5.0, 0.0], [0.0, 0.0, 1.0]], dtype=DTYPE)
    params = {"weight": torch.zeros(3, dtype=DTYPE)}
    expected = torch.linalg.eigvalsh(matrix)
    largest = top_eigenvalue_lanczos(quadratic_loss(matrix), params)
    magnitude = top_eigenvalue_lanczos(quadratic_loss(matrix), params, which="LM")
    assert largest == EigenResult(float(expected[-1]), 3, True)
    assert magnitude.value == pytest.approx(float(expected[0]))


def test_lanczos_differentiates_only_the_given_params() -> None:
    problem = Problem("mlp")
    head = {name: value for name, value in problem.params.items() if name.startswith("2.")}

    def loss_of_head(params: Params) -> Tensor:
        return problem.loss_of_params({**problem.params, **params})

    dense = dense_hessian_eigenvalues(loss_of_head, head)
    assert dense.shape == (18,)
    result = top_eigenvalue_lanczos(loss_of_head, head)
    assert relative_error(result.value, float(dense[-1])) < 1e-4


def test_lanczos_accepts_params_that_are_part_of_a_graph() -> None:
    problem = Problem("mlp")
    base = {name: value.detach().requires_grad_(True) for name, value in problem.params.items()}
    gradients = torch.autograd.grad(
        problem.loss_of_params(base), list(base.values()), create_graph=True
    )
    adapted = {
        name: value - 0.1 * gradient
        for (name, value), gradient in zip(base.items(), gradients, strict=True)
    }
    detached = {name: value.detach() for name, value in adapted.items()}
    result = top_eigenvalue_lanczos(problem.loss_of_params, adapted)
    reference = top_eigenvalue_lanczos(problem.loss_of_params, detached)
    assert result == reference
    assert all(value.grad is None for value in base.values())


def test_lanczos_leaves_params_untouched(problem: Problem) -> None:
    before = {name: value.detach().clone() for name, value in problem.params.items()}
    top_eigenvalue_lanczos(problem.loss_of_params, problem.params)
    for name, value in problem.params.items():
        torch.testing.assert_close(value.detach(), before[name], rtol=0, atol=0)
        assert value.grad is None


# ------------------------------------------------------------------------------ pyhessian


def test_pyhessian_matches_dense_largest_magnitude(problem: Problem) -> None:
    result = problem.pyhessian()
    assert result.hessian_vector_products > 0
    assert relative_error(result.value, largest_magnitude(problem.dense)) < 2e-2


def test_pyhessian_tight_tolerance_matches_dense_closely(problem: Problem) -> None:
    result = problem.pyhessian(tol=1e-8, max_iterations=2000)
    assert result.converged
    assert relative_error(result.value, largest_magnitude(problem.dense)) < 1e-4


def test_pyhessian_finds_the_largest_magnitude_eigenvalue() -> None:
    matrix, _ = indefinite_matrix()
    model = Quadratic(20)
    result = top_eigenvalue_pyhessian(
        model,
        {"weight": torch.randn(20, dtype=DTYPE)},
        matrix,
        torch.zeros(1),
        output_as_loss,
        tol=1e-8,
        max_iterations=1000,
    )
    assert result.value == pytest.approx(-10.0, rel=1e-4)


def test_pyhessian_ignores_stale_gradients() -> None:
    problem = Problem("conv")
    model = problem.model
    with torch.no_grad():
        for name, value in model.named_parameters():
            value.copy_(problem.params[name])
    clean = problem.pyhessian()

    def pyhessian_directly() -> float:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            computer = pyhessian.hessian(
                model, F.cross_entropy, data=(problem.inputs, problem.labels), cuda=False
            )
            return computer.eigenvalues(tol=1e-3)[0][0]

    try:
        assert pyhessian_directly() == pytest.approx(clean.value)

        # A stale gradient that carries a graph, as PyHessian itself leaves behind: used
        # directly, PyHessian adds it to the new gradient and doubles the eigenvalue.
        def leave_stale_gradients() -> dict[str, Tensor | None]:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(problem.inputs), problem.labels).backward(create_graph=True)
            return {name: value.grad for name, value in model.named_parameters()}

        leave_stale_gradients()
        assert pyhessian_directly() == pytest.approx(2 * clean.value)
        stale = leave_stale_gradients()
        assert problem.pyhessian() == clean
        for name, value in model.named_parameters():
            assert value.grad is stale[name]
    finally:
        model.zero_grad(set_to_none=True)


def test_pyhessian_leaves_the_model_untouched(problem: Problem) -> None:
    problem.model.train()
    before = {name: value.detach().clone() for name, value in problem.model.state_dict().items()}
    problem.pyhessian()
    assert problem.model.training
    for name, value in problem.model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert all(value.grad is None for value in problem.model.parameters())
    assert all(value.grad is None for value in problem.params.values())


def test_pyhessian_is_deterministic_by_seed_and_keeps_global_rng(problem: Problem) -> None:
    rng_state = torch.get_rng_state()
    first = problem.pyhessian(seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    second = problem.pyhessian(seed=3)
    assert first == second


def test_pyhessian_differentiates_only_the_given_params() -> None:
    problem = Problem("mlp")
    head = {name: value for name, value in problem.params.items() if name.startswith("2.")}
    body = {name: value for name, value in problem.params.items() if not name.startswith("2.")}
    problem.model.load_state_dict({name: value.detach() for name, value in body.items()}, False)

    def loss_of_head(params: Params) -> Tensor:
        return problem.loss_of_params({**problem.params, **params})

    dense = dense_hessian_eigenvalues(loss_of_head, head)
    result = top_eigenvalue_pyhessian(
        problem.model,
        head,
        problem.inputs,
        problem.labels,
        F.cross_entropy,
        tol=1e-8,
        max_iterations=2000,
    )
    assert relative_error(result.value, largest_magnitude(dense)) < 1e-4


def test_pyhessian_unconverged_is_reported() -> None:
    problem = Problem("mlp")
    result = problem.pyhessian(tol=1e-12, max_iterations=3)
    assert result.hessian_vector_products == 3
    assert not result.converged


def test_pyhessian_rejects_running_statistics() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).to(DTYPE)
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="track_running_stats"):
        top_eigenvalue_pyhessian(
            model,
            params,
            torch.randn(4, 2, dtype=DTYPE),
            torch.zeros(4, dtype=torch.long),
            F.cross_entropy,
        )


def test_pyhessian_rejects_unknown_param_names() -> None:
    problem = Problem("mlp")
    with pytest.raises(KeyError, match="nope"):
        top_eigenvalue_pyhessian(
            problem.model, {"nope": torch.zeros(1)}, problem.inputs, problem.labels, F.cross_entropy
        )


# ------------------------------------------------------------------------------ dispatcher


@pytest.mark.parametrize("backend", ["lanczos", "pyhessian"])
def test_dispatcher_runs_each_backend(problem: Problem, backend: str) -> None:
    result = top_eigenvalue(
        backend, problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy
    )
    reference = (
        float(problem.dense[-1]) if backend == "lanczos" else largest_magnitude(problem.dense)
    )
    tolerance = 1e-4 if backend == "lanczos" else 2e-2
    assert relative_error(result.value, reference) < tolerance
    assert result.hessian_vector_products > 0


def test_dispatcher_lanczos_largest_magnitude_on_a_quadratic() -> None:
    matrix, _ = indefinite_matrix()
    model = Quadratic(20)
    params = {"weight": torch.randn(20, dtype=DTYPE)}
    labels = torch.zeros(1)
    largest = top_eigenvalue("lanczos", model, params, matrix, labels, output_as_loss)
    magnitude = top_eigenvalue("lanczos", model, params, matrix, labels, output_as_loss, which="LM")
    assert largest.value == pytest.approx(3.0, rel=1e-4)
    assert magnitude.value == pytest.approx(-10.0, rel=1e-4)


def test_dispatcher_refuses_largest_algebraic_from_pyhessian(problem: Problem) -> None:
    with pytest.raises(ValueError, match="largest-magnitude"):
        top_eigenvalue(
            "pyhessian",
            problem.model,
            problem.params,
            problem.inputs,
            problem.labels,
            F.cross_entropy,
            which="LA",
        )


def test_dispatcher_rejects_unknown_backend(problem: Problem) -> None:
    with pytest.raises(ValueError, match="unknown"):
        top_eigenvalue(
            "power", problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy
        )


# ------------------------------------------------------------------------------ batched lanczos

TASKS = 4


class Tasks:
    """Several problems of one kind: one architecture, different data and parameters per task."""

    def __init__(self, kind: str, count: int = TASKS) -> None:
        self.problems = [Problem(kind, seed) for seed in range(count)]
        self.model = self.problems[0].model
        self.params = [problem.params for problem in self.problems]
        self.inputs = torch.stack([problem.inputs for problem in self.problems])
        self.labels = torch.stack([problem.labels for problem in self.problems])

    def batched(self, **kwargs: object) -> list[EigenResult]:
        return top_eigenvalues_batched(
            self.model, self.params, self.inputs, self.labels, F.cross_entropy, **kwargs
        )


@pytest.fixture(scope="module", params=sorted(MODELS))
def tasks(request: pytest.FixtureRequest) -> Tasks:
    return Tasks(request.param)


def assert_same_results(first: list[EigenResult], second: list[EigenResult]) -> None:
    assert [r.hessian_vector_products for r in first] == [r.hessian_vector_products for r in second]
    assert [r.converged for r in first] == [r.converged for r in second]
    for a, b in zip(first, second, strict=True):
        assert a.value == pytest.approx(b.value, rel=1e-10)


def test_batched_hvp_equals_per_task_hvp(tasks: Tasks) -> None:
    products = BatchedHessianVectorProduct(
        tasks.model, tasks.params, tasks.inputs, tasks.labels, F.cross_entropy
    )
    size = sum(value.numel() for value in tasks.params[0].values())
    generator = torch.Generator().manual_seed(5)
    vectors = torch.randn(TASKS, size, generator=generator, dtype=DTYPE)
    batched = products(vectors)
    for index, problem in enumerate(tasks.problems):
        expected = TaskHessianVectorProduct(problem.loss_of_params, problem.params).tensor_product(
            vectors[index]
        )
        assert float((batched[index] - expected).norm() / expected.norm()) < 1e-12


def test_batched_hvp_equals_per_task_hvp_on_a_tiny_conv4() -> None:
    torch.manual_seed(0)
    model = Conv4((1, 8, 8), 3, filters=2).to(DTYPE)
    generator = torch.Generator().manual_seed(1)
    params = [
        {
            name: value.detach() + 0.3 * torch.randn(value.shape, generator=generator, dtype=DTYPE)
            for name, value in model.named_parameters()
        }
        for _ in range(3)
    ]
    inputs = torch.randn(3, 3, 1, 8, 8, generator=generator, dtype=DTYPE)
    labels = torch.arange(3).repeat(3, 1)
    size = sum(value.numel() for value in params[0].values())
    vectors = torch.randn(3, size, generator=generator, dtype=DTYPE)
    batched = BatchedHessianVectorProduct(model, params, inputs, labels, F.cross_entropy)(vectors)
    for index in range(3):

        def loss(candidate: Params, index: int = index) -> Tensor:
            outputs = torch.func.functional_call(model, candidate, (inputs[index],))
            return F.cross_entropy(outputs, labels[index])

        expected = TaskHessianVectorProduct(loss, params[index]).tensor_product(vectors[index])
        assert float((batched[index] - expected).norm() / expected.norm()) < 1e-12


def test_batched_matches_dense_top_eigenvalues(tasks: Tasks) -> None:
    results = tasks.batched()
    tops = [float(problem.dense[-1]) for problem in tasks.problems]
    assert len(set(tops)) == TASKS  # the tasks really differ
    for result, top in zip(results, tops, strict=True):
        assert result.converged
        assert result.hessian_vector_products > 0
        assert relative_error(result.value, top) < 1e-4


def test_batched_largest_magnitude_matches_dense(tasks: Tasks) -> None:
    for result, problem in zip(tasks.batched(which="LM"), tasks.problems, strict=True):
        assert relative_error(result.value, largest_magnitude(problem.dense)) < 1e-4


def test_batched_is_deterministic_by_seed(tasks: Tasks) -> None:
    first = tasks.batched(seed=7)
    assert tasks.batched(seed=7) == first
    # Task i draws its start vector from seed + i, whatever else is in the batch.
    later = top_eigenvalues_batched(
        tasks.model, tasks.params[1:], tasks.inputs[1:], tasks.labels[1:], F.cross_entropy, seed=8
    )
    assert_same_results(later, first[1:])
    other = tasks.batched(seed=8)
    assert [r.value for r in other] != [r.value for r in first]


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_batched_chunking_gives_the_same_results(tasks: Tasks, chunk_size: int) -> None:
    assert_same_results(tasks.batched(chunk_size=chunk_size), tasks.batched(chunk_size=TASKS))


def test_batched_out_of_budget_returns_improving_lower_bounds_unconverged(tasks: Tasks) -> None:
    estimates = []
    for budget in (3, 6, 9):
        results = tasks.batched(tol=1e-14, max_iterations=budget)
        for result, problem in zip(results, tasks.problems, strict=True):
            assert not result.converged
            assert result.hessian_vector_products == budget
            top = float(problem.dense[-1])
            assert problem.dense[0] - 1e-9 <= result.value <= top + 1e-9 * abs(top)
        estimates.append([result.value for result in results])
    assert all(a <= b + 1e-12 for a, b in zip(estimates[0], estimates[1], strict=True))
    assert all(a <= b + 1e-12 for a, b in zip(estimates[1], estimates[2], strict=True))


def test_batched_convergence_depends_on_each_tasks_own_residual() -> None:
    problems = Tasks("mlp")
    results = problems.batched()
    loose = problems.batched(tol=1e-2)
    assert all(result.converged for result in results + loose)
    for tight, early in zip(results, loose, strict=True):
        assert early.hessian_vector_products < tight.hessian_vector_products
    assert len({r.hessian_vector_products for r in results}) > 1  # tasks stop at their own step


def test_batched_distinguishes_largest_algebraic_from_largest_magnitude() -> None:
    matrix, _ = indefinite_matrix()
    matrices = torch.stack([matrix, 2 * matrix])
    params = [{"weight": torch.randn(20, dtype=DTYPE)} for _ in range(2)]
    labels = torch.zeros(2, 1)
    model = Quadratic(20)
    largest = top_eigenvalues_batched(model, params, matrices, labels, output_as_loss)
    magnitude = top_eigenvalues_batched(model, params, matrices, labels, output_as_loss, which="LM")
    assert [r.value for r in largest] == pytest.approx([3.0, 6.0], rel=1e-4)
    assert [r.value for r in magnitude] == pytest.approx([-10.0, -20.0], rel=1e-4)


def test_batched_handles_a_hessian_smaller_than_the_krylov_basis() -> None:
    matrix = torch.tensor([[2.0, 1.0, 0.0], [1.0, -5.0, 0.0], [0.0, 0.0, 1.0]], dtype=DTYPE)
    params = [{"weight": torch.zeros(3, dtype=DTYPE)}]
    expected = torch.linalg.eigvalsh(matrix)
    model = Quadratic(3)
    (largest,) = top_eigenvalues_batched(
        model, params, matrix[None], torch.zeros(1, 1), output_as_loss, tol=1e-14
    )
    assert largest.converged
    assert largest.hessian_vector_products <= 3
    assert largest.value == pytest.approx(float(expected[-1]), rel=1e-12)


def test_batched_of_a_zero_hessian_is_zero_and_converged() -> None:
    params = [{"weight": torch.ones(4, dtype=DTYPE)}]
    (result,) = top_eigenvalues_batched(
        Quadratic(4), params, torch.zeros(1, 4, 4, dtype=DTYPE), torch.zeros(1, 1), output_as_loss
    )
    assert result == EigenResult(0.0, 1, True)


def partial_batched(problems: Tasks) -> Callable[[list[Params]], list[EigenResult]]:
    def run(params: list[Params]) -> list[EigenResult]:
        return top_eigenvalues_batched(
            problems.model, params, problems.inputs, problems.labels, F.cross_entropy
        )

    return run


def test_batched_accepts_params_that_are_part_of_a_graph_and_leaves_them_untouched() -> None:
    problems = Tasks("conv", count=2)
    base = [
        {name: value.detach().requires_grad_(True) for name, value in params.items()}
        for params in problems.params
    ]
    adapted = []
    for params, problem in zip(base, problems.problems, strict=True):
        gradients = torch.autograd.grad(
            problem.loss_of_params(params), list(params.values()), create_graph=True
        )
        adapted.append(
            {
                name: value - 0.1 * gradient
                for (name, value), gradient in zip(params.items(), gradients, strict=True)
            }
        )
    detached = [{name: value.detach() for name, value in params.items()} for params in adapted]
    before = [{name: value.clone() for name, value in params.items()} for params in detached]
    run = partial_batched(problems)
    assert run(adapted) == run(detached)
    assert all(value.grad is None for params in base for value in params.values())
    for params, saved in zip(detached, before, strict=True):
        for name, value in params.items():
            torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


def test_batched_rejects_running_statistics_in_train_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).to(DTYPE)
    params = [dict(model.named_parameters())]
    inputs = torch.randn(1, 4, 2, dtype=DTYPE)
    labels = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="track_running_stats"):
        top_eigenvalues_batched(model, params, inputs, labels, F.cross_entropy)
    model.eval()  # running statistics are only read: fine
    (result,) = top_eigenvalues_batched(model, params, inputs, labels, F.cross_entropy)
    assert result.converged


def test_batched_rejects_bad_arguments(tasks: Tasks) -> None:
    with pytest.raises(ValueError, match="which"):
        tasks.batched(which="SA")
    with pytest.raises(ValueError, match="chunk_size"):
        tasks.batched(chunk_size=0)
    with pytest.raises(ValueError, match="max_iterations"):
        tasks.batched(max_iterations=0)
    with pytest.raises(ValueError, match="one per task"):
        top_eigenvalues_batched(
            tasks.model, tasks.params, tasks.inputs[:2], tasks.labels, F.cross_entropy
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatcher_for_many_tasks_runs_each_backend(tasks: Tasks, backend: str) -> None:
    results = top_eigenvalues(
        backend, tasks.model, tasks.params, tasks.inputs, tasks.labels, F.cross_entropy, seed=3
    )
    for index, (result, problem) in enumerate(zip(results, tasks.problems, strict=True)):
        if backend == "pyhessian":  # tol 1e-3 power iteration: 5% short when λ₂ ≈ 0.94 λ₁
            assert relative_error(result.value, largest_magnitude(problem.dense)) < 1e-1
        else:
            assert relative_error(result.value, float(problem.dense[-1])) < 1e-4
        single = top_eigenvalue(
            backend,
            tasks.model,
            tasks.params[index],
            tasks.inputs[index],
            tasks.labels[index],
            F.cross_entropy,
            seed=3 + index,
        )
        assert single.hessian_vector_products == result.hessian_vector_products
        assert single.value == pytest.approx(result.value, rel=1e-10)


def test_default_backend_agrees_with_dense(problem: Problem) -> None:
    backend = Hessian.Settings().backend
    assert backend == "lanczos_batched"
    result = top_eigenvalue(
        backend, problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy
    )
    assert relative_error(result.value, float(problem.dense[-1])) < 1e-4


def test_hessian_metric_backends_agree() -> None:
    torch.manual_seed(0)
    model = SinusoidMLP(hidden=(8, 8)).double()
    context = EvaluationContext(
        model,
        parameters_of(model),
        TaskSampler(SinusoidSource(k_shot=5, target_points=5), seed=0),
        "regression",
        inner_steps=1,
        inner_step_size=0.05,
    )
    out = {
        backend: make_metric("hessian", {"tasks": 5, "backend": backend}).compute(context)
        for backend in ("lanczos", "lanczos_batched")
    }
    values = {
        backend: quantities["hessian_top_eigenvalue"].values for backend, quantities in out.items()
    }
    np.testing.assert_allclose(values["lanczos_batched"], values["lanczos"], rtol=1e-6)
    assert np.all(out["lanczos_batched"]["hessian_converged"].values == 1)
    with pytest.raises(ValueError, match="lanczos_batched"):
        make_metric("hessian", {"backend": "power"})


# ------------------------------------------------------------------------------ warm starts


def test_warm_start_equals_cold_start_along_consecutive_parameters() -> None:
    """Each step warm-starts from the previous step's Ritz vector, as a job walking epochs does."""
    tasks = Tasks("mlp", count=3)
    generator = torch.Generator().manual_seed(11)
    directions = [
        {name: torch.randn(v.shape, generator=generator, dtype=DTYPE) for name, v in p.items()}
        for p in tasks.params
    ]
    previous: list[EigenResult] | None = None
    cold_products = warm_products = 0
    for step in range(5):
        params = [
            {name: (value + 0.02 * step * direction[name]).detach() for name, value in p.items()}
            for p, direction in zip(tasks.params, directions, strict=True)
        ]
        arguments = (tasks.model, params, tasks.inputs, tasks.labels, F.cross_entropy)
        cold = top_eigenvalues_batched(*arguments, tol=1e-6)
        starts = None if previous is None else [result.vector for result in previous]
        warm = top_eigenvalues_batched(*arguments, tol=1e-6, start_vectors=starts)
        for index, (cold_result, warm_result) in enumerate(zip(cold, warm, strict=True)):
            problem = tasks.problems[index]

            def loss(candidate: Params, problem: Problem = problem) -> Tensor:
                outputs = torch.func.functional_call(problem.model, candidate, (problem.inputs,))
                return F.cross_entropy(outputs, problem.labels)

            top = float(dense_hessian_eigenvalues(loss, params[index])[-1])
            assert warm_result.converged and cold_result.converged
            assert relative_error(warm_result.value, top) < 1e-6
            assert relative_error(cold_result.value, top) < 1e-6
            assert warm_result.vector is not None
            assert float(warm_result.vector.norm()) == pytest.approx(1.0, rel=1e-12)
        if step:
            cold_products += sum(r.hessian_vector_products for r in cold)
            warm_products += sum(r.hessian_vector_products for r in warm)
        previous = warm
    assert warm_products < cold_products


def test_missing_warm_starts_start_at_random_and_wrong_sizes_are_refused(tasks: Tasks) -> None:
    assert_same_results(tasks.batched(), tasks.batched(start_vectors=[None] * TASKS))
    with pytest.raises(ValueError, match="start vectors"):
        tasks.batched(start_vectors=[None])
    with pytest.raises(ValueError, match="entries"):
        tasks.batched(start_vectors=[torch.ones(3, dtype=DTYPE)] * TASKS)


# ------------------------------------------------------------------------------ stopping rules


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_eigenvalue_rule_meets_the_tolerance_with_fewer_products(tasks: Tasks, tol: float) -> None:
    by_eigenvalue = tasks.batched(tol=tol)
    by_residual = tasks.batched(tol=tol, stopping="residual")
    for eigenvalue, residual, problem in zip(
        by_eigenvalue, by_residual, tasks.problems, strict=True
    ):
        top = float(problem.dense[-1])
        assert eigenvalue.converged and residual.converged
        assert relative_error(eigenvalue.value, top) <= tol
        assert relative_error(residual.value, top) <= tol
        assert eigenvalue.hessian_vector_products <= residual.hessian_vector_products


def test_eigenvalue_rule_saves_products_where_the_top_eigenvalue_is_separated() -> None:
    problems = Tasks("mlp")
    by_eigenvalue, by_residual = problems.batched(), problems.batched(stopping="residual")
    products = [sum(r.hessian_vector_products for r in rs) for rs in (by_eigenvalue, by_residual)]
    assert products[0] < products[1]


class Twin(nn.Module):
    """Two copies of a tiny MLP on the same inputs; :func:`twin_loss` weighs them 1 and 1 + ε."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))
        self.second = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, inputs: Tensor) -> Tensor:
        return torch.stack([self.first(inputs), self.second(inputs)])


def twin_problem(epsilon: float, seed: int) -> tuple[Twin, Params, Tensor, Tensor, Callable]:
    """Equal parameters in both copies: the Hessian is diag(H, (1 + ε)H), every eigenvalue of H
    paired with one (1 + ε) times it, so the top pair is ε apart (relative)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Twin().to(DTYPE)
    first = {
        name: (value + 0.5 * torch.randn(value.shape, generator=generator, dtype=DTYPE)).detach()
        for name, value in model.first.named_parameters()
    }
    params = {
        **{f"first.{name}": value for name, value in first.items()},
        **{f"second.{name}": value.clone() for name, value in first.items()},
    }
    inputs = torch.randn(8, 2, generator=generator, dtype=DTYPE)
    labels = torch.randint(0, 3, (8,), generator=generator)

    def twin_loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs[0], targets) + (1 + epsilon) * F.cross_entropy(
            outputs[1], targets
        )

    return model, params, inputs, labels, twin_loss


@pytest.mark.parametrize("epsilon", [1e-2, 1e-6])
@pytest.mark.parametrize("seed", range(6))
def test_eigenvalue_rule_on_a_near_degenerate_top_pair(epsilon: float, seed: int) -> None:
    """A near-degenerate top pair (ε = 1e-2) does not stop the guarded rule on the lower one (an
    unguarded r²/gap ≤ tol·|θ| test stops at 9.6e-3 relative error for seed 4); a pair closer
    than the tolerance (ε = 1e-6) may give either."""
    model, params, inputs, labels, loss = twin_problem(epsilon, seed)

    def loss_of_params(candidate: Params) -> Tensor:
        return loss(torch.func.functional_call(model, candidate, (inputs,)), labels)

    dense = dense_hessian_eigenvalues(loss_of_params, params)
    top = float(dense[-1])
    assert relative_error(float(dense[-2]), top) == pytest.approx(epsilon / (1 + epsilon), rel=1e-3)
    (result,) = top_eigenvalues_batched(
        model, [params], inputs[None], labels[None], loss, seed=seed
    )
    assert result.converged
    assert relative_error(result.value, top) <= 1e-4


def test_unknown_stopping_rule_is_refused(tasks: Tasks) -> None:
    with pytest.raises(ValueError, match="stopping"):
        tasks.batched(stopping="energy")
    with pytest.raises(ValueError, match="stopping"):
        make_metric("hessian", {"stopping": "energy"})
    assert make_metric("hessian", {"stopping": "residual"}).settings.stopping == "residual"


def prescribed_spectrum(size: int = 60) -> tuple[Tensor, Tensor]:
    """A symmetric matrix with eigenvalues 10, 9 and 0.1·k below 5 (some negative), and its
    eigenvectors as columns (top first)."""
    generator = torch.Generator().manual_seed(5)
    rotation, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=DTYPE))
    eigenvalues = torch.cat(
        [torch.tensor([10.0, 9.0], dtype=DTYPE), torch.linspace(5.0, -2.0, size - 2, dtype=DTYPE)]
    )
    return rotation @ torch.diag(eigenvalues) @ rotation.T, rotation


def warm_started(matrix: Tensor, start: Tensor) -> EigenResult:
    (result,) = top_eigenvalues_batched(
        Quadratic(len(start)),
        [{"weight": torch.zeros(len(start), dtype=DTYPE)}],
        matrix[None],
        torch.zeros(1, 1),
        output_as_loss,
        start_vectors=[start],
    )
    return result


def test_a_warm_start_near_the_top_eigenvector_converges_in_few_products() -> None:
    """Fewer products than a cold start (9 against 11 here; 3 without the random part)."""
    matrix, eigenvectors = prescribed_spectrum()
    noise = torch.randn(len(matrix), generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    cold = warm_started(matrix, noise)
    warm = warm_started(matrix, eigenvectors[:, 0] + 1e-3 * noise / noise.norm())
    for result in (cold, warm):
        assert result.converged
        assert relative_error(result.value, 10.0) <= 1e-4
    assert warm.hessian_vector_products < cold.hessian_vector_products


def test_a_warm_start_near_the_second_eigenvector_still_finds_the_top_one() -> None:
    """From the second eigenvector alone, both rules stop on 9 after 3 products: the random part
    mixed into every warm start (WARM_START_RANDOM_WEIGHT) lets the top one emerge."""
    matrix, eigenvectors = prescribed_spectrum()
    noise = torch.randn(len(matrix), generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    result = warm_started(matrix, eigenvectors[:, 1] + 1e-3 * noise / noise.norm())
    assert result.converged
    assert relative_error(result.value, 10.0) <= 1e-4
