"""Top Hessian eigenvalue of a loss at given parameters, with interchangeable backends.

Flatness is measured as λmax, the largest eigenvalue of the support-loss Hessian at each task's
adapted parameters θ̃ᵢ. Parameters are a dict ``Params = dict[str, Tensor]`` used with
``torch.func.functional_call``; the Hessian is taken with respect to the tensors in that dict only.

Backends:

- ``"lanczos"`` (:func:`top_eigenvalue_lanczos`): implicitly restarted Lanczos (ARPACK, via
  ``scipy.sparse.linalg.eigsh``) on Hessian-vector products. Returns the largest *algebraic*
  eigenvalue by default (``which="LA"``), which is the paper's λmax; ``which="LM"`` gives the
  largest-magnitude one. About 20–30 HVPs for ≤ 1e-4 relative error (~1e-8 in practice).
- ``"lanczos_batched"`` (:func:`top_eigenvalues_batched`): Lanczos with full reorthogonalisation
  for many tasks in lockstep, one ``torch.func.vmap``-batched Hessian-vector product per step for
  all running tasks; same ``"LA"``/``"LM"``. It stops by default when the Ritz value's
  Kato–Temple error bound residual²/gap is ≤ tol·|θ| (``stopping="eigenvalue"``), or by the
  residual rule of ``"lanczos"`` (``stopping="residual"``).
- ``"pyhessian"`` (:func:`top_eigenvalue_pyhessian`): the PyHessian package's power iteration. It
  returns the largest-*magnitude* eigenvalue (with its sign), and with its default tolerance 1e-3 it
  can stop up to ~2% short of it; when λmax ≈ −λmin it oscillates and does not converge. At a
  random Conv-4 init, λmin was the larger in magnitude on 3 of 5 tasks, so this is not λmax
  there. Kept for comparison with the literature that used it.

:func:`dense_hessian_eigenvalues` builds the full Hessian for tiny models (tests and references);
:func:`top_eigenvalue` (one task) and :func:`top_eigenvalues` (many) dispatch by backend name from
a model, parameters, data and criterion. ``benchmarks/bench_hessian_backends.py`` compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from metalandscape.functional import Params
from metalandscape.metrics.eigen.hvp import (
    BatchedHessianVectorProduct,
    HessianVectorProduct,
    LossOfParams,
    TaskHessianVectorProduct,
    dense_hessian_eigenvalues,
)
from metalandscape.metrics.eigen.lanczos import (
    DEFAULT_LANCZOS_MAX_HVPS,
    DEFAULT_LANCZOS_NCV,
    DEFAULT_LANCZOS_TOL,
    top_eigenvalue_lanczos,
)
from metalandscape.metrics.eigen.lanczos_batched import (
    DEFAULT_BATCHED_CHUNK_SIZE,
    DEFAULT_BATCHED_MAX_ITERATIONS,
    DEFAULT_STOPPING_RULE,
    STOPPING_RULES,
    top_eigenvalues_batched,
)
from metalandscape.metrics.eigen.pyhessian_backend import (
    DEFAULT_PYHESSIAN_MAX_ITERATIONS,
    DEFAULT_PYHESSIAN_TOL,
    top_eigenvalue_pyhessian,
)
from metalandscape.metrics.eigen.result import LANCZOS_WHICH, EigenResult, check_one_per_task

BACKENDS: tuple[str, ...] = ("lanczos", "lanczos_batched", "pyhessian")

# ------------------------------------------------------------------------------------ dispatcher


def top_eigenvalue(
    backend: str,
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    criterion: Callable[[Tensor, Tensor], Tensor],
    *,
    tol: float | None = None,
    max_hvps: int | None = None,
    seed: int = 0,
    which: str | None = None,
) -> EigenResult:
    """Top Hessian eigenvalue of ``criterion(model(inputs), labels)`` at ``params`` by ``backend``.

    ``tol``/``max_hvps`` default to the backend's own defaults. ``which`` defaults to ``"LA"`` for
    the Lanczos backends; ``"pyhessian"`` only does ``"LM"``. The Lanczos backends evaluate
    ``model`` in its current train/eval mode via ``functional_call``; pyhessian in eval mode.
    ``"lanczos_batched"`` runs as a batch of one task; for many tasks use :func:`top_eigenvalues`.
    """
    if backend == "lanczos_batched":
        limits = {"tol": tol, "max_hvps": max_hvps, "seed": seed, "which": which}
        (result,) = top_eigenvalues(
            backend, model, [params], inputs[None], labels[None], criterion, **limits
        )
        return result
    if backend == "lanczos":
        return top_eigenvalue_lanczos(
            _loss_of_params(model, inputs, labels, criterion),
            params,
            tol=DEFAULT_LANCZOS_TOL if tol is None else tol,
            max_hvps=DEFAULT_LANCZOS_MAX_HVPS if max_hvps is None else max_hvps,
            seed=seed,
            which="LA" if which is None else which,
        )
    if backend == "pyhessian":
        if which not in (None, "LM"):
            raise ValueError(
                f"the pyhessian backend only finds the largest-magnitude eigenvalue "
                f"(which='LM'), got which={which!r}"
            )
        options = {
            "tol": DEFAULT_PYHESSIAN_TOL if tol is None else tol,
            "max_iterations": DEFAULT_PYHESSIAN_MAX_ITERATIONS if max_hvps is None else max_hvps,
            "seed": seed,
        }
        return top_eigenvalue_pyhessian(model, params, inputs, labels, criterion, **options)
    raise ValueError(f"unknown eigenvalue backend {backend!r}; choose one of {BACKENDS}")


def _loss_of_params(
    model: nn.Module, inputs: Tensor, labels: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]
) -> Callable[[Params], Tensor]:
    """``criterion(model(inputs), labels)`` as a function of the parameters."""

    def loss_of_params(candidate: Params) -> Tensor:
        outputs = torch.func.functional_call(model, candidate, (inputs,))
        return criterion(outputs, labels)

    return loss_of_params


def top_eigenvalues(
    backend: str,
    model: nn.Module,
    params_list: Sequence[Params],
    inputs: Tensor | Sequence[Tensor],
    labels: Tensor | Sequence[Tensor],
    criterion: Callable[[Tensor, Tensor], Tensor],
    *,
    tol: float | None = None,
    max_hvps: int | None = None,
    seed: int = 0,
    which: str | None = None,
    chunk_size: int | None = None,
    start_vectors: Sequence[Tensor | None] | None = None,
    stopping: str = DEFAULT_STOPPING_RULE,
) -> list[EigenResult]:
    """Per task i, the top Hessian eigenvalue of ``criterion(model(inputs[i]), labels[i])``.

    The Hessian is taken at ``params_list[i]``; task i is seeded with ``seed + i``.
    ``"lanczos_batched"`` solves all tasks together (:func:`top_eigenvalues_batched`; ``max_hvps``
    caps each task's products, ``chunk_size`` the tasks per batched product); the other backends
    loop over :func:`top_eigenvalue` and ignore ``chunk_size``. ``start_vectors`` (warm starts,
    ``"lanczos_batched"`` only; ``None`` entries start at random) and ``stopping`` (its stopping
    rule) as in :func:`top_eigenvalues_batched`. Other arguments as there.
    """
    if backend == "lanczos_batched":
        return top_eigenvalues_batched(
            model,
            params_list,
            inputs,
            labels,
            criterion,
            tol=DEFAULT_LANCZOS_TOL if tol is None else tol,
            max_iterations=DEFAULT_BATCHED_MAX_ITERATIONS if max_hvps is None else max_hvps,
            seed=seed,
            chunk_size=DEFAULT_BATCHED_CHUNK_SIZE if chunk_size is None else chunk_size,
            which="LA" if which is None else which,
            start_vectors=start_vectors,
            stopping=stopping,
        )
    if backend not in BACKENDS:
        raise ValueError(f"unknown eigenvalue backend {backend!r}; choose one of {BACKENDS}")
    check_one_per_task(len(params_list), inputs, labels)
    limits = {"tol": tol, "max_hvps": max_hvps, "which": which}
    return [
        top_eigenvalue(
            backend, model, params, inputs[i], labels[i], criterion, seed=seed + i, **limits
        )
        for i, params in enumerate(params_list)
    ]


__all__ = [
    "BACKENDS",
    "DEFAULT_BATCHED_CHUNK_SIZE",
    "DEFAULT_BATCHED_MAX_ITERATIONS",
    "DEFAULT_LANCZOS_MAX_HVPS",
    "DEFAULT_LANCZOS_NCV",
    "DEFAULT_LANCZOS_TOL",
    "DEFAULT_PYHESSIAN_MAX_ITERATIONS",
    "DEFAULT_PYHESSIAN_TOL",
    "DEFAULT_STOPPING_RULE",
    "LANCZOS_WHICH",
    "STOPPING_RULES",
    "BatchedHessianVectorProduct",
    "EigenResult",
    "HessianVectorProduct",
    "LossOfParams",
    "Params",
    "TaskHessianVectorProduct",
    "dense_hessian_eigenvalues",
    "top_eigenvalue",
    "top_eigenvalue_lanczos",
    "top_eigenvalue_pyhessian",
    "top_eigenvalues",
    "top_eigenvalues_batched",
]
