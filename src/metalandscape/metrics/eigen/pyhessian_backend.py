"""The ``"pyhessian"`` backend: the PyHessian package's power iteration, HVPs counted."""

from __future__ import annotations

import copy
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from metalandscape.functional import Params
from metalandscape.metrics.eigen.result import EigenResult, batch_norms_with_running_statistics

DEFAULT_PYHESSIAN_TOL = 1e-3
DEFAULT_PYHESSIAN_MAX_ITERATIONS = 100


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
    tracking = batch_norms_with_running_statistics(model)
    if tracking:
        raise ValueError(
            f"PyHessian evaluates the model in eval mode, so BatchNorm {tracking[0]!r} would use "
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
