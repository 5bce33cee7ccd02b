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
  all running tasks; same ``"LA"``/``"LM"`` and the same residual stopping rule as ``"lanczos"``.
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

import copy
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from torch import Tensor, nn

from metalandscape.functional import Params, flatten, unflatten

LossOfParams = Callable[[Params], Tensor]

BACKENDS: tuple[str, ...] = ("lanczos", "lanczos_batched", "pyhessian")
LANCZOS_WHICH: tuple[str, ...] = ("LA", "LM")

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
# Batched Lanczos (benchmarks/bench_hessian_backends.py, 60 fontglot Conv-4 tasks, one CPU thread):
# chunks of 4-16 tasks were within noise of each other (~6.2 ms per task-HVP against 7.5-8.5 ms
# alone); 8 bounds memory to 8 graphs and 8 Krylov bases (≤ 100 × 112k floats each). Unrestarted,
# the residual rule at tol 1e-4 took 20 HVPs per task (max 32), with errors ~1e-7 (float32).
DEFAULT_BATCHED_MAX_ITERATIONS = 100
DEFAULT_BATCHED_CHUNK_SIZE = 8
_REBUILD_WHEN_IDLE = 4  # rebuild the batched graph once 1/_REBUILD_WHEN_IDLE of its tasks finished
_REORTHOGONALISE_BELOW = 2**-0.5  # DGKS: another pass if one pass shrank ‖r‖ below this factor
_INVARIANT_RTOL = 1e-12  # β_k ≤ this × max|Ritz value|: the Krylov space is invariant
DEFAULT_PYHESSIAN_TOL = 1e-3
DEFAULT_PYHESSIAN_MAX_ITERATIONS = 100


@dataclass(frozen=True)
class EigenResult:
    """One top-eigenvalue estimate and what it cost."""

    value: float  # top (largest algebraic) eigenvalue; largest-magnitude for pyhessian / "LM"
    hessian_vector_products: int
    converged: bool


# --------------------------------------------------------------------------- flatten / unflatten


def _leaf_params(params: Mapping[str, Tensor]) -> Params:
    """Leaves sharing storage with ``params``: the caller's tensors and graph stay untouched."""
    return {name: tensor.detach().requires_grad_(True) for name, tensor in params.items()}


class _HessianVectorProduct:
    """``v ↦ H v`` on float64 numpy vectors, from one gradient graph built once.

    The gradient is computed once with ``create_graph=True``; each product is one more backward
    pass through it (``retain_graph=True``), which is faster than rebuilding the graph each time.
    Products are computed in the parameters' dtype and device and returned as float64 numpy.
    """

    def __init__(self, loss_of_params: LossOfParams, params: Mapping[str, Tensor]) -> None:
        leaves = _leaf_params(params)
        self.leaves = leaves
        self.params = list(leaves.values())
        if not self.params:
            raise ValueError("params is empty: there is no Hessian to take")
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.size = sum(tensor.numel() for tensor in self.params)
        self.count = 0
        with torch.enable_grad():
            loss = loss_of_params(leaves)
            if loss.numel() != 1:
                raise ValueError(f"loss_of_params must return a scalar, got shape {loss.shape}")
            grads = torch.autograd.grad(
                loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True
            )
        # A gradient without a graph is constant in the parameters: its Hessian block is zero.
        self._differentiable = [i for i, grad in enumerate(grads) if grad.requires_grad]
        self._grads = [grads[i] for i in self._differentiable]

    def tensor_product(self, vector: Tensor) -> Tensor:
        """``H v`` for a flat tensor ``v`` in the parameters' dtype; counts one HVP."""
        self.count += 1
        if not self._grads:
            return torch.zeros_like(vector)
        parts = list(unflatten(vector, self.leaves).values())
        with torch.enable_grad():
            products = torch.autograd.grad(
                self._grads,
                self.params,
                grad_outputs=[parts[i] for i in self._differentiable],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return flatten(products).detach()

    def __call__(self, vector: np.ndarray) -> np.ndarray:
        flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64).reshape(-1))
        product = self.tensor_product(flat.to(device=self.device, dtype=self.dtype))
        return product.to(device="cpu", dtype=torch.float64).numpy()


# --------------------------------------------------------------------------------------- lanczos


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
    if which not in LANCZOS_WHICH:
        raise ValueError(f"which must be one of {LANCZOS_WHICH}, got {which!r}")
    if max_hvps < 1:
        raise ValueError(f"max_hvps must be positive, got {max_hvps}")
    if ncv < 3:
        raise ValueError(f"ncv must be at least 3, got {ncv}")
    hvp = _HessianVectorProduct(loss_of_params, params)
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
    hvp: _HessianVectorProduct, which: str, max_hvps: int
) -> EigenResult:
    if hvp.size > max_hvps:
        raise ValueError(f"{hvp.size} parameters need more than max_hvps={max_hvps} HVPs")
    eigenvalues = _dense_eigenvalues(hvp)
    value = eigenvalues[torch.argmax(eigenvalues.abs())] if which == "LM" else eigenvalues[-1]
    return EigenResult(value=float(value), hessian_vector_products=hvp.count, converged=True)


# ----------------------------------------------------------------------------------------- dense


def dense_hessian_eigenvalues(loss_of_params: LossOfParams, params: Params) -> Tensor:
    """All eigenvalues of the full Hessian, ascending (one HVP per parameter: tiny models only)."""
    return _dense_eigenvalues(_HessianVectorProduct(loss_of_params, params))


def _dense_eigenvalues(hvp: _HessianVectorProduct) -> Tensor:
    identity = torch.eye(hvp.size, dtype=hvp.dtype, device=hvp.device)
    hessian = torch.stack([hvp.tensor_product(column) for column in identity])
    return torch.linalg.eigvalsh((hessian + hessian.T) / 2)


# ------------------------------------------------------------------------------------- pyhessian

_PYHESSIAN_PATCH_LOCK = threading.Lock()


@contextmanager
def _counting_pyhessian_hvps() -> Iterator[list[float]]:
    """Count PyHessian's HVPs by wrapping the ``hessian_vector_product`` its loop looks up.

    Yields the list of Rayleigh quotients vᵀHv, one per HVP (PyHessian's per-iteration eigenvalue
    estimates). The patch is on a module global, so calls are serialised by a lock.
    """
    import pyhessian.hessian  # noqa: F401  (registers the module; the package name is the class)

    module = sys.modules["pyhessian.hessian"]
    original = module.hessian_vector_product
    rayleigh_quotients: list[float] = []

    def counting(grads: Any, params: Any, vector: list[Tensor]) -> Any:
        products = original(grads, params, vector)
        quotient = sum(torch.sum(p * v) for p, v in zip(products, vector, strict=True))
        rayleigh_quotients.append(float(quotient))
        return products

    with _PYHESSIAN_PATCH_LOCK:
        module.hessian_vector_product = counting
        try:
            yield rayleigh_quotients
        finally:
            module.hessian_vector_product = original


def _module_with_params(model: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    """A deep copy of ``model`` holding ``params``; other parameters frozen, gradients cleared."""
    copied = copy.deepcopy(model)
    named = dict(copied.named_parameters())
    unknown = sorted(set(params) - set(named))
    if unknown:
        raise KeyError(f"params names that are not parameters of the model: {unknown}")
    with torch.no_grad():
        for name, parameter in named.items():
            parameter.grad = None  # PyHessian adds any existing .grad to the new gradient
            if name in params:
                value = params[name]
                if value.shape != parameter.shape:
                    raise ValueError(
                        f"params[{name!r}] has shape {tuple(value.shape)}, "
                        f"the model's parameter {tuple(parameter.shape)}"
                    )
                parameter.copy_(value.detach())
            parameter.requires_grad_(name in params)
    return copied


def _check_batch_statistics(model: nn.Module) -> None:
    for name, module in model.named_modules():
        is_batch_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_batch_norm and module.track_running_stats:
            raise ValueError(
                f"PyHessian evaluates the model in eval mode, so BatchNorm {name!r} would use "
                "running statistics instead of the batch's; use track_running_stats=False"
            )


def top_eigenvalue_pyhessian(
    model: nn.Module,
    params: Params,
    inputs: Tensor,
    labels: Tensor,
    criterion: Callable[[Tensor, Tensor], Tensor],
    *,
    tol: float = DEFAULT_PYHESSIAN_TOL,
    max_iterations: int = DEFAULT_PYHESSIAN_MAX_ITERATIONS,
    seed: int = 0,
) -> EigenResult:
    """Top Hessian eigenvalue of ``criterion(model(inputs), labels)`` by PyHessian power iteration.

    Returns the largest-MAGNITUDE eigenvalue (with its sign), not the largest algebraic one. The
    power iteration stops when two successive estimates differ by less than ``tol`` (relative),
    which can be ~2% short at 1e-3. ``params`` is loaded into a deep copy of ``model`` (``model``
    itself, its gradients and its train/eval mode are untouched); parameters not in ``params`` are
    frozen. The whole batch is passed as one ``data`` batch, so batch statistics are those of the
    full support set. The start vector is seeded by ``seed`` without disturbing the global RNG.
    """
    from pyhessian import hessian as PyHessian  # the package names its class lowercase

    if max_iterations < 1:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    _check_batch_statistics(model)
    copied = _module_with_params(model, params)
    use_cuda = inputs.is_cuda
    devices = [inputs.device] if use_cuda else []
    cuda_device = torch.cuda.device(inputs.device) if use_cuda else nullcontext()
    try:
        with (
            torch.random.fork_rng(devices=devices),
            cuda_device,
            _counting_pyhessian_hvps() as rayleigh_quotients,
            warnings.catch_warnings(),
            torch.enable_grad(),
        ):
            # PyHessian calls loss.backward(create_graph=True); we break the cycle below.
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            torch.manual_seed(seed)
            computer = PyHessian(copied, criterion, data=(inputs, labels), cuda=use_cuda)
            eigenvalues, _ = computer.eigenvalues(maxIter=max_iterations, tol=tol, top_n=1)
    finally:
        for parameter in copied.parameters():
            parameter.grad = None
    count = len(rayleigh_quotients)
    converged = count < max_iterations or (
        count >= 2
        and abs(rayleigh_quotients[-2] - rayleigh_quotients[-1])
        / (abs(rayleigh_quotients[-2]) + 1e-6)
        < tol
    )
    return EigenResult(
        value=float(eigenvalues[0]), hessian_vector_products=count, converged=converged
    )


# ------------------------------------------------------------------------------- batched lanczos


def _check_no_running_statistics_update(model: nn.Module) -> None:
    if not model.training:
        return
    for name, module in model.named_modules():
        is_batch_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_batch_norm and module.track_running_stats:
            raise ValueError(
                f"BatchNorm {name!r} would update its running statistics in train mode, which "
                "cannot be batched over tasks; use track_running_stats=False or eval mode"
            )


class _BatchedHessianVectorProduct:
    """``[v₁, …, v_B] ↦ [H₁v₁, …, H_Bv_B]`` for B tasks at once, from one gradient graph.

    Each task has its own parameters and its own data. The B losses come from one
    ``torch.func.vmap`` over tasks; their sum is differentiated once with ``create_graph=True``
    (task i's gradient depends on task i's parameters only), and each product is one backward pass
    through that graph for all B tasks (reverse-over-reverse). Checked exact in float64 against
    per-task products, BatchNorm with batch statistics included; differentiating
    ``vmap(grad(loss))`` with autograd instead is not (torch 2.13: ~10% error).
    """

    def __init__(
        self,
        model: nn.Module,
        params_list: Sequence[Mapping[str, Tensor]],
        inputs: Tensor,
        labels: Tensor,
        criterion: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        names = list(params_list[0])
        if any(list(params) != names for params in params_list):
            raise ValueError("every task's params must have the same names, in the same order")
        self.tasks = len(params_list)
        self.leaves = [
            torch.stack([params[name].detach() for params in params_list]).requires_grad_(True)
            for name in names
        ]
        self.shapes = [leaf.shape[1:] for leaf in self.leaves]
        self.sizes = [shape.numel() for shape in self.shapes]

        def loss_of_task(params: Params, task_inputs: Tensor, task_labels: Tensor) -> Tensor:
            outputs = torch.func.functional_call(model, params, (task_inputs,))
            return criterion(outputs, task_labels)

        with torch.enable_grad():
            losses = torch.func.vmap(loss_of_task)(
                dict(zip(names, self.leaves, strict=True)), inputs, labels
            )
            if losses.shape != (self.tasks,):
                raise ValueError(
                    f"criterion must return a scalar per task, got shape {tuple(losses.shape[1:])}"
                )
            grads = torch.autograd.grad(
                losses.sum(),
                self.leaves,
                create_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        # A gradient without a graph is constant in the parameters: its Hessian block is zero.
        self._differentiable = [i for i, grad in enumerate(grads) if grad.requires_grad]
        self._grads = [grads[i] for i in self._differentiable]

    def __call__(self, vectors: Tensor) -> Tensor:
        """``[B, n]`` products of the ``[B, n]`` flat ``vectors`` (row i: task i's Hessian)."""
        if not self._grads:
            return torch.zeros_like(vectors)
        parts = [
            part.reshape(self.tasks, *shape)
            for part, shape in zip(
                torch.split(vectors, self.sizes, dim=1), self.shapes, strict=True
            )
        ]
        with torch.enable_grad():
            products = torch.autograd.grad(
                self._grads,
                self.leaves,
                grad_outputs=[parts[i] for i in self._differentiable],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return torch.cat([product.reshape(self.tasks, -1) for product in products], dim=1)


class _LanczosRun:
    """One task's Lanczos iteration with full reorthogonalisation, advanced one product at a time.

    After k products the Ritz values are the eigenvalues of the k×k tridiagonal T_k; the chosen
    one, θ, has residual ‖Hx − θx‖ = β_k·|s_k| (s_k: last entry of its eigenvector of T_k), so an
    eigenvalue of H lies within that distance of θ. The run stops when the residual is ≤
    ``tol``·|θ|, when the Krylov space is invariant (β_k ≈ 0 or k = n: θ is exact), or after
    ``max_iterations`` products (not converged; for ``"LA"`` θ is then a lower bound on λmax).
    """

    def __init__(self, start: Tensor, *, tol: float, max_iterations: int, which: str) -> None:
        self.size = start.numel()
        self.tol = tol
        self.max_iterations = min(max_iterations, self.size)
        self.which = which
        self.basis = start.new_empty(min(16, self.max_iterations), self.size)
        self.basis[0] = start / start.norm()
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.result: EigenResult | None = None

    @property
    def vector(self) -> Tensor:
        """The Lanczos vector whose product comes next."""
        return self.basis[len(self.alphas)]

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
        bound = beta * abs(float(vectors[-1, chosen]))
        invariant = k + 1 >= self.size or beta <= _INVARIANT_RTOL * float(np.abs(values).max())
        if invariant or bound <= self.tol * abs(value):
            self.result = EigenResult(value=value, hessian_vector_products=k + 1, converged=True)
        elif k + 1 >= self.max_iterations:
            self.result = EigenResult(value=value, hessian_vector_products=k + 1, converged=False)
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
) -> list[EigenResult]:
    """Top Hessian eigenvalue of ``criterion(model(inputs[i]), labels[i])`` at ``params_list[i]``.

    Independent Lanczos iterations (full reorthogonalisation, no restarts) for many tasks in
    lockstep: each step is one batched Hessian-vector product for all running tasks, a
    ``torch.func.vmap`` over tasks (:class:`_BatchedHessianVectorProduct`). Hand-written because
    ``scipy.sparse.linalg.eigsh`` solves one problem per call and so cannot share the products.
    Task i stops when its Ritz residual is ≤ ``tol``·|θ| (the bound ARPACK uses in ``"lanczos"``)
    or after ``max_iterations`` products (``converged=False``; for ``"LA"`` a lower bound). Its
    start vector is drawn from ``numpy.random.default_rng(seed + i)``. At most ``chunk_size``
    tasks share a product (memory: graphs and Krylov bases); once a quarter of them have finished,
    the graph is rebuilt for the rest and tasks from the queue. ``which``: ``"LA"`` (largest
    algebraic, λmax) or ``"LM"`` (largest magnitude). ``model`` runs in its current train/eval
    mode via ``functional_call``; all tasks' inputs must share one shape.
    """
    if which not in LANCZOS_WHICH:
        raise ValueError(f"which must be one of {LANCZOS_WHICH}, got {which!r}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    count = len(params_list)
    if len(inputs) != count or len(labels) != count:
        raise ValueError(
            f"{count} params but {len(inputs)} inputs and {len(labels)} labels: give one per task"
        )
    if any(not params for params in params_list):
        raise ValueError("params is empty: there is no Hessian to take")
    _check_no_running_statistics_update(model)
    results: list[EigenResult | None] = [None] * count
    waiting = list(range(count - 1, -1, -1))  # popped from the end: task 0 first
    running: dict[int, _LanczosRun] = {}
    rows: list[int] = []  # the tasks of the current graph, in its row order
    graph: _BatchedHessianVectorProduct | None = None
    while waiting or running:
        if graph is None or _REBUILD_WHEN_IDLE * (len(rows) - len(running)) >= len(rows):
            while waiting and len(running) < chunk_size:
                index = waiting.pop()
                params = params_list[index]
                size = sum(tensor.numel() for tensor in params.values())
                like = next(iter(params.values()))
                start = np.random.default_rng(seed + index).standard_normal(size)
                running[index] = _LanczosRun(
                    torch.as_tensor(start).to(device=like.device, dtype=like.dtype),
                    tol=tol,
                    max_iterations=max_iterations,
                    which=which,
                )
            rows = list(running)
            graph = None  # free the old graph before building the new one
            graph = _BatchedHessianVectorProduct(
                model,
                [params_list[i] for i in rows],
                _tasks_of(inputs, rows),
                _tasks_of(labels, rows),
                criterion,
            )
        with torch.no_grad():
            zero = torch.zeros_like(next(iter(running.values())).vector)
            products = graph(
                torch.stack([running[i].vector if i in running else zero for i in rows])
            )
            for row, index in enumerate(rows):
                run = running.get(index)
                if run is None:
                    continue
                run.step(products[row])
                if run.result is not None:
                    results[index] = run.result
                    del running[index]
    return [result for result in results if result is not None]


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
        (result,) = top_eigenvalues(
            backend,
            model,
            [params],
            inputs[None],
            labels[None],
            criterion,
            tol=tol,
            max_hvps=max_hvps,
            seed=seed,
            which=which,
        )
        return result
    if backend == "lanczos":

        def loss_of_params(candidate: Params) -> Tensor:
            outputs = torch.func.functional_call(model, candidate, (inputs,))
            return criterion(outputs, labels)

        return top_eigenvalue_lanczos(
            loss_of_params,
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
        return top_eigenvalue_pyhessian(
            model,
            params,
            inputs,
            labels,
            criterion,
            tol=DEFAULT_PYHESSIAN_TOL if tol is None else tol,
            max_iterations=DEFAULT_PYHESSIAN_MAX_ITERATIONS if max_hvps is None else max_hvps,
            seed=seed,
        )
    raise ValueError(f"unknown eigenvalue backend {backend!r}; choose one of {BACKENDS}")


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
) -> list[EigenResult]:
    """Per task i, the top Hessian eigenvalue of ``criterion(model(inputs[i]), labels[i])``.

    The Hessian is taken at ``params_list[i]``; task i is seeded with ``seed + i``.
    ``"lanczos_batched"`` solves all tasks together (:func:`top_eigenvalues_batched`; ``max_hvps``
    caps each task's products, ``chunk_size`` the tasks per batched product); the other backends
    loop over :func:`top_eigenvalue` and ignore ``chunk_size``. Other arguments as there.
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
        )
    if backend not in BACKENDS:
        raise ValueError(f"unknown eigenvalue backend {backend!r}; choose one of {BACKENDS}")
    if len(inputs) != len(params_list) or len(labels) != len(params_list):
        raise ValueError(
            f"{len(params_list)} params but {len(inputs)} inputs and {len(labels)} labels: "
            "give one per task"
        )
    return [
        top_eigenvalue(
            backend,
            model,
            params,
            inputs[index],
            labels[index],
            criterion,
            tol=tol,
            max_hvps=max_hvps,
            seed=seed + index,
            which=which,
        )
        for index, params in enumerate(params_list)
    ]
