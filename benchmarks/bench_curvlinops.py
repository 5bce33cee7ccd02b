"""Our curvature measures against curvlinops at equal accuracy on the study's Conv-4, CPU.

Issue 27 item 6. One 5-way 1-shot support set (five random 28×28 images, labels 0..4) on a
Conv-4 with 16 filters (7,269 parameters; BatchNorm with batch statistics) at its seed-0
initialisation, float32, cross-entropy. Per measure both sides do the same work:

* Hessian trace: Hutchinson with ``--probes`` Rademacher probes (10, the metric's default, and
  100). Ours: ``task_trace``. curvlinops: ``hutchinson_trace`` on its ``HessianLinearOperator``.
* spectral density: SLQ with 4 starts × 40 Lanczos steps (the metric's defaults). Ours:
  ``lanczos_quadrature`` (full reorthogonalisation). curvlinops: ``lanczos_approximate_spectrum``
  (``ncv=40, num_repeats=4``), which first finds the spectrum's ends with ARPACK (tol 1e-2). A
  second row, ``fast_lanczos`` alone (4 × 40 products, no reorthogonalisation), is the
  equal-product comparison.
* per-layer λmax: ARPACK ``eigsh`` (k = 1, largest algebraic, tol 1e-4, ncv 8, ≤ 200
  products, the same start vector) on each of the nine layers' Hessian blocks. Ours:
  ``top_eigenvalue_lanczos`` (what ``layer_curvature`` runs). curvlinops: a
  ``HessianLinearOperator`` over the layer's parameters, ``to_scipy(float64)``.

Timing: one thread. Each side runs once untimed first: torch's forward-mode decompositions and
``torch._dynamo`` load on first use. Then ``--repeats`` runs of each side; the table gives
the median process CPU time (wall time moves with other jobs, CPU time barely does). curvlinops'
operators are built inside the timed region with ``check_deterministic=False``; the check costs
two more loss/gradient passes and two products.

Agreement. Trace: each estimate ± its standard error, and its distance from the exact trace
(from curvlinops' products with all identity columns) in those standard errors.
Spectrum: the first two moments of each SLQ measure, and their Wasserstein-1 distance as a
fraction of the spectrum's width. λmax: the largest relative difference over layers. Caveat (see
``tests/test_curvlinops_crosscheck.py``): on torch 2.13 curvlinops' forward-over-reverse product
is wrong in the BatchNorm-weight rows. Its trace estimate is still unbiased, since the diagonal
is right, and its layer blocks are right. Its full-Hessian spectrum, though, is that of a
non-symmetric operator.

Usage: ``python benchmarks/bench_curvlinops.py [--probes 10 100] [--repeats 3]``
(``pip install -c constraints.txt curvlinops-for-pytorch``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse.linalg
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from metalandscape.functional import parameters_of
from metalandscape.metrics.eigen import (
    DEFAULT_LANCZOS_MAX_HVPS,
    DEFAULT_LANCZOS_NCV,
    DEFAULT_LANCZOS_TOL,
    top_eigenvalue_lanczos,
)
from metalandscape.metrics.layer_curvature import parameter_layers
from metalandscape.metrics.spectral_density import lanczos_quadrature
from metalandscape.metrics.trace import block_loss, task_hessian, task_trace
from metalandscape.models import Conv4

STARTS, STEPS = 4, 40  # SpectralDensity's defaults


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median process CPU seconds of ``repeats`` calls after one untimed call; the last result."""
    result = function()
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        result = function()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds), result


class Problem:
    def __init__(self) -> None:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        self.model = Conv4((1, 28, 28), 5, filters=16)
        self.inputs = torch.rand(5, 1, 28, 28, generator=generator)
        self.labels = torch.arange(5)
        self.params = parameters_of(self.model)
        self.size = sum(value.numel() for value in self.params.values())

    def curvlinops_hessian(self, params: list[nn.Parameter]):
        import curvlinops

        return curvlinops.HessianLinearOperator(
            self.model,
            nn.CrossEntropyLoss(),
            params,
            [(self.inputs, self.labels)],
            check_deterministic=False,
        )


def exact_trace(problem: Problem, chunk: int = 512) -> float:
    """tr H from curvlinops' products with identity columns (its diagonal is right), float64."""
    operator = problem.curvlinops_hessian(list(problem.model.parameters()))
    total = 0.0
    for start in range(0, problem.size, chunk):
        columns = torch.eye(problem.size)[:, start : start + chunk]
        total += float((columns * (operator @ columns)).sum(dtype=torch.float64))
    return total


def measure_trace(
    problem: Problem, probes: int, repeats: int, exact: float
) -> tuple[float, float, str]:
    import curvlinops

    operator = problem.curvlinops_hessian(list(problem.model.parameters()))

    def ours():
        return task_trace(
            problem.model,
            problem.params,
            problem.inputs,
            problem.labels,
            F.cross_entropy,
            probes=probes,
        )

    def theirs() -> float:
        operator = problem.curvlinops_hessian(list(problem.model.parameters()))
        return float(curvlinops.hutchinson_trace(operator, num_matvecs=probes))

    torch.manual_seed(0)
    ours_seconds, estimate = timed(ours, repeats)
    theirs_seconds, value = timed(theirs, repeats)
    # curvlinops returns no standard error: take it from the forms of another probe draw.
    draw = torch.randint(0, 2, (problem.size, probes)).float() * 2 - 1
    forms = (draw * (operator @ draw)).sum(0).double().numpy()
    their_error = forms.std(ddof=1) / np.sqrt(probes)
    agreement = (
        f"{estimate.value:.1f} ± {estimate.standard_error:.1f} "
        f"({(estimate.value - exact) / estimate.standard_error:+.1f} SE) vs "
        f"{value:.1f} ± {their_error:.1f} ({(value - exact) / their_error:+.1f} SE)"
    )
    return ours_seconds, theirs_seconds, agreement


def measure_spectrum(problem: Problem, repeats: int) -> list[tuple[str, float, float, str]]:
    import curvlinops
    from curvlinops.papyan2020traces.spectrum import fast_lanczos

    def ours():
        hvp = task_hessian(
            problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy
        )
        like = next(iter(problem.params.values()))
        return lanczos_quadrature(hvp.tensor_product, hvp.size, like, starts=STARTS, steps=STEPS)

    def theirs_density():
        operator = problem.curvlinops_hessian(list(problem.model.parameters()))
        return curvlinops.lanczos_approximate_spectrum(operator, STEPS, num_repeats=STARTS)

    def theirs_lanczos():
        operator = problem.curvlinops_hessian(list(problem.model.parameters()))
        return [fast_lanczos(operator, STEPS) for _ in range(STARTS)]

    torch.manual_seed(0)
    ours_seconds, quadrature = timed(ours, repeats)
    density_seconds, _ = timed(theirs_density, repeats)
    lanczos_seconds, runs = timed(theirs_lanczos, repeats)
    nodes, weights = quadrature.measure()
    their_nodes = np.concatenate([values.double().numpy() for values, _ in runs])
    their_weights = np.concatenate([v[0].double().numpy() ** 2 for _, v in runs]) / STARTS
    width = max(nodes.max(), their_nodes.max()) - min(nodes.min(), their_nodes.min())
    distance = scipy.stats.wasserstein_distance(nodes, their_nodes, weights, their_weights)
    moments = "; ".join(
        f"m{j} {weights @ nodes**j:.3g} vs {their_weights @ their_nodes**j:.3g}" for j in (1, 2)
    )
    agreement = f"W1 = {distance / width:.1%} of width; {moments}"
    return [
        ("spectral density (SLQ 4 × 40)", ours_seconds, density_seconds, agreement),
        ("  curvlinops fast_lanczos only", ours_seconds, lanczos_seconds, "same runs as above"),
    ]


def measure_layers(problem: Problem, repeats: int) -> tuple[float, float, str]:
    layers = parameter_layers(list(problem.params))
    owned = dict(problem.model.named_parameters())
    loss = block_loss(
        problem.model, problem.params, problem.inputs, problem.labels, F.cross_entropy
    )
    settings = {"tol": DEFAULT_LANCZOS_TOL, "max_hvps": DEFAULT_LANCZOS_MAX_HVPS}

    def ours() -> list[float]:
        tops = []
        for members in layers.values():
            block = {name: problem.params[name] for name in members}
            tops.append(top_eigenvalue_lanczos(loss, block, seed=0, **settings).value)
        return tops

    def theirs() -> list[float]:
        tops = []
        for members in layers.values():
            operator = problem.curvlinops_hessian([owned[name] for name in members])
            size = operator.shape[0]
            (top,) = scipy.sparse.linalg.eigsh(
                operator.to_scipy(np.float64),
                k=1,
                which="LA",
                ncv=min(DEFAULT_LANCZOS_NCV, size),
                v0=np.random.default_rng(0).standard_normal(size),
                tol=settings["tol"],
                maxiter=settings["max_hvps"],
                return_eigenvectors=False,
            )
            tops.append(float(top))
        return tops

    ours_seconds, ours_tops = timed(ours, repeats)
    theirs_seconds, their_tops = timed(theirs, repeats)
    relative = max(abs(a - b) / abs(b) for a, b in zip(ours_tops, their_tops, strict=True))
    return ours_seconds, theirs_seconds, f"max rel. diff {relative:.1e} over {len(layers)} layers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    problem = Problem()
    start = time.process_time()
    exact = exact_trace(problem)
    exact_seconds = time.process_time() - start
    rows = [
        *(
            (
                f"Hessian trace (Hutchinson, {probes} probes)",
                *measure_trace(problem, probes, args.repeats, exact),
            )
            for probes in args.probes
        ),
        *measure_spectrum(problem, args.repeats),
        ("per-layer λmax (ARPACK, tol 1e-4)", *measure_layers(problem, args.repeats)),
    ]
    print(
        f"Conv-4, 16 filters, 28×28, 5-way 1-shot support set: {problem.size:,} parameters, "
        f"float32, 1 thread; median CPU s of {args.repeats}; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"exact tr H = {exact:.1f} ({problem.size:,} products, {exact_seconds:.1f} CPU s)\n")
    print("| measure | ours (s) | curvlinops (s) | agreement |")
    print("| --- | ---: | ---: | --- |")
    for name, ours, theirs, agreement in rows:
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {agreement} |")


if __name__ == "__main__":
    main()
