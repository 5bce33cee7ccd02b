"""The ``"lanczos_batched"`` backend: Lanczos for many tasks in lockstep, warm-startable.

Each step is one batched Hessian-vector product for all running tasks
(:class:`~metalandscape.metrics.eigen.hvp.BatchedHessianVectorProduct`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from metalandscape.metrics.eigen.hvp import BatchedHessianVectorProduct
from metalandscape.metrics.eigen.lanczos import DEFAULT_LANCZOS_TOL
from metalandscape.metrics.eigen.result import (
    EigenResult,
    batch_norms_with_running_statistics,
    check_one_per_task,
    check_which,
)

# Batched Lanczos (benchmarks/bench_hessian_backends.py, 60 fontglot Conv-4 tasks, one CPU thread):
# chunks of 4-16 tasks were within noise of each other (~6.2 ms per task-HVP against 7.5-8.5 ms
# alone); 8 bounds memory to 8 graphs and 8 Krylov bases (≤ 100 × 112k floats each). Unrestarted,
# the residual rule at tol 1e-4 took 20 HVPs per task (max 32), with errors ~1e-7 (float32).
DEFAULT_BATCHED_MAX_ITERATIONS = 100
DEFAULT_BATCHED_CHUNK_SIZE = 8
# When a run stops: "eigenvalue" (the default) once the Ritz value's own error is ≤ tol·|θ|,
# "residual" once the Ritz residual is (ARPACK's rule, "lanczos"); see _LanczosRun.
STOPPING_RULES: tuple[str, ...] = ("eigenvalue", "residual")
DEFAULT_STOPPING_RULE = "eigenvalue"
_REBUILD_WHEN_IDLE = 4  # rebuild the batched graph once 1/_REBUILD_WHEN_IDLE of its tasks finished
_REORTHOGONALISE_BELOW = 2**-0.5  # DGKS: another pass if one pass shrank ‖r‖ below this factor
_INVARIANT_RTOL = 1e-12
# The eigenvalue rule also asks r ≤ this × tol·|θ|: where the Ritz gap overstates the true one
# (an eigenvalue near θ that the Krylov space has not resolved yet), the error is up to ~r. On 12
# fontglot Conv-4 tasks warm-started from the previous epoch (tol 1e-4, float32), the median HVPs
# per task were 20 (residual rule), 18 (this guard, max error 7.6e-7) and 16.5 (no guard, 9.5e-6);
# without it a tiny net with a top pair 1% apart stopped on the lower one (tests/test_eigen.py).
_LOOSE_RESIDUAL = 10.0
# A warm start x (unit norm) runs from x + WARM_START_RANDOM_WEIGHT · z, z the task's cold start
# (unit norm). Without z, a warm start close to an eigenvector that is no longer the top one
# converges to that eigenvalue (tests/test_eigen.py); z gives the top eigenvector the share a
# cold start gives it.
WARM_START_RANDOM_WEIGHT = 1.0  # β_k ≤ this × max|Ritz value|: the Krylov space is invariant


def _check_no_running_statistics_update(model: nn.Module) -> None:
    tracking = batch_norms_with_running_statistics(model) if model.training else []
    if tracking:
        raise ValueError(
            f"BatchNorm {tracking[0]!r} would update its running statistics in train mode, which "
            "cannot be batched over tasks; use track_running_stats=False or eval mode"
        )


class _LanczosRun:
    """One task's Lanczos iteration with full reorthogonalisation, advanced one product at a time.

    After k products the Ritz values are the eigenvalues of the k×k tridiagonal T_k; the chosen
    one, θ, has residual r = ‖Hx − θx‖ = β_k·|s_k| (s_k: last entry of its eigenvector of T_k).
    The run stops when the Krylov space is invariant (β_k ≈ 0 or k = n: θ is exact), after
    ``max_iterations`` products (not converged; for ``"LA"`` θ is then a lower bound on λmax), or
    when θ is accurate by the ``stopping`` rule:

    - ``"residual"``: r ≤ ``tol``·|θ|. Some eigenvalue of H lies within r of θ.
    - ``"eigenvalue"``: the residual rule, or both (a) r²/δ ≤ ``tol``·|θ| with δ = max(gap,
      ``tol``·|θ|), gap the distance from θ to the nearest other Ritz value, and (b) θ moved by
      ≤ ``tol``·|θ| since the previous product. (a) is the Kato–Temple bound (Parlett, *The
      Symmetric Eigenvalue Problem*; Saad, *Numerical Methods for Large Eigenvalue Problems*):
      for symmetric H and a Rayleigh quotient θ with residual r, the eigenvalue λ nearest θ has
      |θ − λ| ≤ r²/δ, δ the distance from θ to the rest of the spectrum.
      The Ritz gap stands in for δ; it is too large while the Krylov space has not yet resolved
      an eigenvalue close to λ (a near-degenerate top pair), when θ still rises from product to
      product: (b) guards that case. With δ floored at ``tol``·|θ|, (a) never asks more than the
      residual rule; the residual rule asks r ≤ ``tol``·|θ|, (a) only r ≤ √(``tol``·|θ|·gap).
    """

    def __init__(
        self, start: Tensor, *, tol: float, max_iterations: int, which: str, stopping: str
    ) -> None:
        self.size = start.numel()
        self.tol = tol
        self.max_iterations = min(max_iterations, self.size)
        self.which = which
        self.stopping = stopping
        self.previous_value: float | None = None  # θ after the previous product
        self.bounded = False  # whether r²/δ ≤ tol·|θ| held after the previous product
        self.basis = start.new_empty(min(16, self.max_iterations), self.size)
        self.basis[0] = start / start.norm()
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.result: EigenResult | None = None

    @property
    def vector(self) -> Tensor:
        """The Lanczos vector whose product comes next."""
        return self.basis[len(self.alphas)]

    def _accurate(self, value: float, residual_norm: float, others: np.ndarray) -> bool:
        """Whether Ritz value ``value`` with residual ``residual_norm`` is accurate to ``tol``."""
        scale = self.tol * abs(value)
        bounded_before, self.bounded = self.bounded, False
        if residual_norm <= scale:
            return True
        if self.stopping == "residual" or others.size == 0:
            return False
        if residual_norm > _LOOSE_RESIDUAL * scale:
            return False
        gap = max(float(np.abs(others - value).min()), scale)
        self.bounded = residual_norm**2 / gap <= scale
        settled = self.previous_value is not None and abs(value - self.previous_value) <= scale
        return self.bounded and bounded_before and settled

    def step(self, product: Tensor) -> None:
        """Take ``H @ self.vector`` and advance; sets ``self.result`` when the run stops."""
        k = len(self.alphas)
        basis = self.basis[: k + 1]
        # The three-term recurrence, then full reorthogonalisation against every Lanczos vector;
        # a second pass only if the first removed most of what was left (the Daniel–Gragg–
        # Kaufman–Stewart test; twice is enough, Kahan–Parlett).
        alpha = float(basis[k] @ product)
        residual = product - alpha * basis[k]
        if k > 0:
            residual -= self.betas[-1] * basis[k - 1]
        norm = float(residual.norm())
        for _ in range(2):
            coefficients = basis @ residual
            residual -= basis.T @ coefficients
            alpha += float(coefficients[k])
            previous, norm = norm, float(residual.norm())
            if norm >= _REORTHOGONALISE_BELOW * previous:
                break
        beta = norm
        self.alphas.append(alpha)
        values, vectors = scipy.linalg.eigh_tridiagonal(
            np.asarray(self.alphas), np.asarray(self.betas)
        )
        chosen = int(np.argmax(np.abs(values))) if self.which == "LM" else len(values) - 1
        value = float(values[chosen])
        residual_norm = beta * abs(float(vectors[-1, chosen]))
        invariant = k + 1 >= self.size or beta <= _INVARIANT_RTOL * float(np.abs(values).max())
        converged = invariant or self._accurate(value, residual_norm, np.delete(values, chosen))
        self.previous_value = value
        if converged or k + 1 >= self.max_iterations:
            coefficients = torch.as_tensor(vectors[:, chosen]).to(basis.device, basis.dtype)
            ritz = coefficients @ basis
            self.result = EigenResult(
                value=value,
                hessian_vector_products=k + 1,
                converged=bool(converged),
                vector=ritz / ritz.norm(),
            )
        else:
            self.betas.append(beta)
            if k + 1 == self.basis.shape[0]:
                grown = self.basis.new_empty(min(2 * (k + 1), self.max_iterations), self.size)
                grown[: k + 1] = self.basis
                self.basis = grown
            self.basis[k + 1] = residual / beta


def _tasks_of(values: Tensor | Sequence[Tensor], indices: Sequence[int]) -> Tensor:
    if isinstance(values, Tensor):
        return values[list(indices)]
    return torch.stack([values[i] for i in indices])


def _start_vector(
    start_vectors: Sequence[Tensor | None] | None, index: int, size: int, seed: int
) -> Tensor:
    given = None if start_vectors is None else start_vectors[index]
    if given is not None and given.numel() != size:
        raise ValueError(f"start vector {index} has {given.numel()} entries, its parameters {size}")
    random = torch.as_tensor(np.random.default_rng(seed + index).standard_normal(size))
    if given is None or not bool(torch.isfinite(given).all()) or float(given.norm()) == 0:
        return random
    warm = given.reshape(-1).to(random.dtype)
    return warm / warm.norm() + WARM_START_RANDOM_WEIGHT * random / random.norm()


def top_eigenvalues_batched(
    model: nn.Module,
    params_list: Sequence[Mapping[str, Tensor]],
    inputs: Tensor | Sequence[Tensor],
    labels: Tensor | Sequence[Tensor],
    criterion: Callable[[Tensor, Tensor], Tensor],
    *,
    tol: float = DEFAULT_LANCZOS_TOL,
    max_iterations: int = DEFAULT_BATCHED_MAX_ITERATIONS,
    seed: int = 0,
    chunk_size: int = DEFAULT_BATCHED_CHUNK_SIZE,
    which: str = "LA",
    start_vectors: Sequence[Tensor | None] | None = None,
    stopping: str = DEFAULT_STOPPING_RULE,
) -> list[EigenResult]:
    """Top Hessian eigenvalue of ``criterion(model(inputs[i]), labels[i])`` at ``params_list[i]``.

    Independent Lanczos iterations (full reorthogonalisation, no restarts) for many tasks in
    lockstep: each step is one batched Hessian-vector product for all running tasks, a
    ``torch.func.vmap`` over tasks (:class:`BatchedHessianVectorProduct`). Hand-written because
    ``scipy.sparse.linalg.eigsh`` solves one problem per call and so cannot share the products.
    Task i stops when its Ritz value θ is accurate to ``tol``·|θ| by the ``stopping`` rule
    (``"eigenvalue"``: its Kato–Temple error bound r²/gap, guarded; ``"residual"``: its residual
    r, the bound ARPACK uses in ``"lanczos"``; see :class:`_LanczosRun`) or after
    ``max_iterations`` products (``converged=False``; for ``"LA"`` a lower bound). Its
    start vector is drawn from ``numpy.random.default_rng(seed + i)`` (a cold start) or, where
    ``start_vectors[i]`` is given (a warm start: e.g. the task's Ritz vector,
    :attr:`EigenResult.vector`, at a nearby point), is that vector plus the cold start, both of
    unit norm (:data:`WARM_START_RANDOM_WEIGHT`). At most ``chunk_size``
    tasks share a product (memory: graphs and Krylov bases); once a quarter of them have finished,
    the graph is rebuilt for the rest and tasks from the queue. ``which``: ``"LA"`` (largest
    algebraic, λmax) or ``"LM"`` (largest magnitude). ``model`` runs in its current train/eval
    mode via ``functional_call``; all tasks' inputs must share one shape.
    """
    _check_arguments(
        model,
        params_list,
        inputs,
        labels,
        which,
        stopping,
        max_iterations,
        chunk_size,
        start_vectors,
    )
    new_run = partial(
        _start_run,
        params_list,
        start_vectors,
        seed,
        tol=tol,
        max_iterations=max_iterations,
        which=which,
        stopping=stopping,
    )
    problem = _Problem(model, params_list, inputs, labels, criterion)
    return _run_in_lockstep(problem, new_run, chunk_size)


def _check_arguments(
    model: nn.Module,
    params_list: Sequence[Mapping[str, Tensor]],
    inputs: Tensor | Sequence[Tensor],
    labels: Tensor | Sequence[Tensor],
    which: str,
    stopping: str,
    max_iterations: int,
    chunk_size: int,
    start_vectors: Sequence[Tensor | None] | None,
) -> None:
    """``ValueError`` naming the first argument of :func:`top_eigenvalues_batched` that is bad."""
    check_which(which)
    if stopping not in STOPPING_RULES:
        raise ValueError(f"stopping must be one of {STOPPING_RULES}, got {stopping!r}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    count = len(params_list)
    check_one_per_task(count, inputs, labels)
    if start_vectors is not None and len(start_vectors) != count:
        raise ValueError(f"{count} params but {len(start_vectors)} start vectors")
    if any(not params for params in params_list):
        raise ValueError("params is empty: there is no Hessian to take")
    _check_no_running_statistics_update(model)


def _start_run(
    params_list: Sequence[Mapping[str, Tensor]],
    start_vectors: Sequence[Tensor | None] | None,
    seed: int,
    index: int,
    **options: Any,
) -> _LanczosRun:
    """Task ``index``'s Lanczos run from its start vector, on its parameters' device and dtype."""
    params = params_list[index]
    size = sum(tensor.numel() for tensor in params.values())
    like = next(iter(params.values()))
    start = _start_vector(start_vectors, index, size, seed).to(like.device, like.dtype)
    return _LanczosRun(start, **options)


@dataclass(frozen=True)
class _Problem:
    """The tasks whose Hessians are solved: one model, each task's parameters and data."""

    model: nn.Module
    params_list: Sequence[Mapping[str, Tensor]]
    inputs: Tensor | Sequence[Tensor]
    labels: Tensor | Sequence[Tensor]
    criterion: Callable[[Tensor, Tensor], Tensor]

    def graph(self, rows: list[int]) -> BatchedHessianVectorProduct:
        """One batched Hessian-vector product for tasks ``rows``, in that row order."""
        return BatchedHessianVectorProduct(
            self.model,
            [self.params_list[i] for i in rows],
            _tasks_of(self.inputs, rows),
            _tasks_of(self.labels, rows),
            self.criterion,
        )


def _run_in_lockstep(
    problem: _Problem, new_run: Callable[[int], _LanczosRun], chunk_size: int
) -> list[EigenResult]:
    """Every task's result: runs of ≤ ``chunk_size`` tasks share each batched product.

    Once 1/:data:`_REBUILD_WHEN_IDLE` of a graph's tasks finished, the graph is rebuilt for the
    rest and tasks from the queue (task 0 first).
    """
    count = len(problem.params_list)
    results: list[EigenResult | None] = [None] * count
    waiting = list(range(count - 1, -1, -1))  # popped from the end: task 0 first
    running: dict[int, _LanczosRun] = {}
    rows: list[int] = []  # the tasks of the current graph, in its row order
    graph: BatchedHessianVectorProduct | None = None
    while waiting or running:
        if graph is None or _REBUILD_WHEN_IDLE * (len(rows) - len(running)) >= len(rows):
            while waiting and len(running) < chunk_size:
                index = waiting.pop()
                running[index] = new_run(index)
            rows = list(running)
            graph = None  # free the old graph before building the new one
            graph = problem.graph(rows)
        _advance(graph, rows, running, results)
    return [result for result in results if result is not None]


def _advance(
    graph: BatchedHessianVectorProduct,
    rows: list[int],
    running: dict[int, _LanczosRun],
    results: list[EigenResult | None],
) -> None:
    """One batched product for the running tasks of ``rows``; a run that stops moves to results."""
    with torch.no_grad():
        zero = torch.zeros_like(next(iter(running.values())).vector)
        products = graph(torch.stack([running[i].vector if i in running else zero for i in rows]))
        for row, index in enumerate(rows):
            run = running.get(index)
            if run is None:
                continue
            run.step(products[row])
            if run.result is not None:
                results[index] = run.result
                del running[index]
