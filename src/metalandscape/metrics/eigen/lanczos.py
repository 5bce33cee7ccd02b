"""The ``"lanczos"`` backend: implicitly restarted Lanczos (ARPACK ``eigsh``) for one task."""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg
import torch

from metalandscape.functional import Params
from metalandscape.metrics.eigen.hvp import (
    LossOfParams,
    TaskHessianVectorProduct,
    dense_eigenvalues,
)
from metalandscape.metrics.eigen.result import EigenResult, check_which

# Lanczos defaults, chosen by sweeping ncv ∈ {4..20} × tol ∈ {1e-3..1e-8} on a 5-way 1-shot
# Conv-4 (112k parameters; two random inits and one adapted point) and the 1-40-40-1 sinusoid MLP,
# against tol=1e-10 references. ARPACK stops when the Ritz residual ‖Hx − θx‖ ≤ tol·|θ|, which
# bounds the relative eigenvalue error by tol; in practice the error is ~residual²/gap, so
# tol=1e-4 gave ≤ 2e-8 (float64) and sat on the float32 round-off floor (≤ 7e-7). tol=1e-4 is the
# loosest tolerance whose *guaranteed* bound meets the 1e-4 target; 1e-3 would save ~4 HVPs per
# task (still ~1e-6 in practice, but only a 1e-3 guarantee) and 1e-6 costs 4–8 more HVPs for
# nothing measurable in float32. With k=1, ncv between 6 and 12 needed the fewest HVPs (±2 of
# each other; ncv ≤ 4 restarts too often, ncv ≥ 16 spends HVPs on a long first cycle); 8 keeps
# the tracked Krylov vectors few. Result: ~21–41 HVPs per Conv-4 task, ~9–13 for the MLP.
# ARPACK's own work per step is BLAS-1/2 on n-vectors (~2 ms at n=112k); a multi-threaded
# OpenBLAS on a busy machine spun that up to ~15 ms, so workers should set OPENBLAS_NUM_THREADS=1.
DEFAULT_LANCZOS_TOL = 1e-4
DEFAULT_LANCZOS_NCV = 8
DEFAULT_LANCZOS_MAX_HVPS = 200


class _HvpBudgetExhausted(Exception):
    """Raised from inside ARPACK's loop when the HVP budget is spent."""


class _RitzTracker:
    """Best eigenpair estimate in the span of every vector ARPACK multiplied, for when it gives up.

    ARPACK exposes no estimate before it converges, so the (v, Hv) pairs are collected and, every
    ``window`` pairs, compressed by Rayleigh–Ritz over {best vector so far} ∪ {new vectors} into
    one new best vector. The estimate never gets worse, and for ``"LA"`` it is a lower bound.
    """

    def __init__(self, window: int, which: str) -> None:
        self.window = window
        self.which = which
        self.vectors: list[np.ndarray] = []
        self.products: list[np.ndarray] = []
        self.best_value = float("nan")

    def add(self, vector: np.ndarray, product: np.ndarray) -> None:
        self.vectors.append(np.array(vector, dtype=np.float64).reshape(-1))
        self.products.append(np.array(product, dtype=np.float64).reshape(-1))
        if len(self.vectors) > self.window:
            self._compress()

    def value(self) -> float:
        """The best Ritz value found (nan before the first product)."""
        self._compress()
        return self.best_value

    def _compress(self) -> None:
        if len(self.vectors) <= 1:
            return
        basis, products = np.stack(self.vectors), np.stack(self.products)  # [m, n]
        gram = basis @ basis.T
        projected = basis @ products.T
        gram_values, gram_vectors = np.linalg.eigh(gram)
        keep = gram_values > gram_values.max() * 1e-12
        whitening = gram_vectors[:, keep] / np.sqrt(gram_values[keep])
        reduced = whitening.T @ projected @ whitening
        ritz_values, ritz_vectors = np.linalg.eigh((reduced + reduced.T) / 2)
        chosen = int(np.argmax(np.abs(ritz_values))) if self.which == "LM" else -1
        coefficients = whitening @ ritz_vectors[:, chosen]
        self.best_value = float(ritz_values[chosen])
        self.vectors = [coefficients @ basis]
        self.products = [coefficients @ products]


def top_eigenvalue_lanczos(
    loss_of_params: LossOfParams,
    params: Params,
    *,
    tol: float = DEFAULT_LANCZOS_TOL,
    max_hvps: int = DEFAULT_LANCZOS_MAX_HVPS,
    seed: int = 0,
    which: str = "LA",
    ncv: int = DEFAULT_LANCZOS_NCV,
) -> EigenResult:
    """Top Hessian eigenvalue of ``loss_of_params`` at ``params`` by Lanczos (ARPACK ``eigsh``).

    ``which="LA"``: largest algebraic eigenvalue (the paper's λmax); ``"LM"``: largest magnitude,
    with its sign. ``tol`` is ARPACK's relative residual tolerance and bounds the relative
    eigenvalue error (float32 HVPs round off at ~1e-7: stay ≥ ~1e-6 there). ``ncv`` Lanczos
    vectors per restart. After ``max_hvps`` Hessian-vector products without convergence, the
    Rayleigh–Ritz value of the last Lanczos vectors is returned with ``converged=False`` (for
    ``"LA"`` a lower bound). The start vector comes from ``numpy.random.default_rng(seed)``.
    """
    check_which(which)
    if max_hvps < 1:
        raise ValueError(f"max_hvps must be positive, got {max_hvps}")
    if ncv < 3:
        raise ValueError(f"ncv must be at least 3, got {ncv}")
    hvp = TaskHessianVectorProduct(loss_of_params, params)
    size = hvp.size
    ncv = min(ncv, size)
    if size <= max(ncv, 2):  # ARPACK needs k < ncv <= n; a tiny Hessian is cheaper to build whole
        return _top_eigenvalue_by_columns(hvp, which, max_hvps)

    tracker = _RitzTracker(window=ncv, which=which)

    def matvec(vector: np.ndarray) -> np.ndarray:
        if hvp.count >= max_hvps:
            raise _HvpBudgetExhausted
        product = hvp(vector)
        tracker.add(vector, product)
        return product

    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(size)
    try:
        values = scipy.sparse.linalg.eigsh(
            operator,
            k=1,
            which=which,
            ncv=ncv,
            v0=start,
            tol=tol,
            maxiter=max_hvps,
            return_eigenvectors=False,
        )
    except (scipy.sparse.linalg.ArpackNoConvergence, _HvpBudgetExhausted) as error:
        partial = getattr(error, "eigenvalues", None)
        value = float(partial[0]) if partial is not None and len(partial) else None
        if value is None:
            value = tracker.value()
        return EigenResult(value=value, hessian_vector_products=hvp.count, converged=False)
    return EigenResult(value=float(values[0]), hessian_vector_products=hvp.count, converged=True)


def _top_eigenvalue_by_columns(
    hvp: TaskHessianVectorProduct, which: str, max_hvps: int
) -> EigenResult:
    if hvp.size > max_hvps:
        raise ValueError(f"{hvp.size} parameters need more than max_hvps={max_hvps} HVPs")
    eigenvalues = dense_eigenvalues(hvp)
    value = eigenvalues[torch.argmax(eigenvalues.abs())] if which == "LM" else eigenvalues[-1]
    return EigenResult(value=float(value), hessian_vector_products=hvp.count, converged=True)
