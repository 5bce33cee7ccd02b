"""Seconds, HVPs and accuracy of the top-Hessian-eigenvalue backends on fontglot Conv-4 tasks.

The flatness metric is λmax, the largest eigenvalue of the support-loss Hessian at each task's
adapted parameters θ̃ᵢ. On 60 meta-test tasks of a 5-way 1-shot fontglot Conv-4 checkpoint this
times, in one run and on the same adapted tasks:

* ``pyhessian``: PyHessian's power iteration at its default tol 1e-3 (largest *magnitude*);
* ``lanczos``: scipy's ARPACK ``eigsh``, one task at a time (tol 1e-4);
* ``lanczos_batched``: our lockstep Lanczos with one vmap-batched HVP per step for up to
  ``chunk`` tasks (tol 1e-4), at several chunk sizes (default marked ``*``).

Each is compared with a tight float64 reference per task (ARPACK, tol 1e-10, largest algebraic
and largest magnitude: the latter says where PyHessian's answer has the wrong sign, |λmin| >
λmax). A dense check on tiny float64 networks (BatchNorm conv and MLP, several parameter draws)
says which backends agree with ``eigvalsh`` of the full Hessian to 1e-4; the recommended default
is the fastest backend that passes it and stays within 1e-4 of the reference here.

Timing: one thread (torch, OpenBLAS, MKL, OpenMP), a warm-up on two tasks per configuration, then
``--repeats`` passes over all configurations in turn; the table gives the least process CPU time
and the least wall time over the passes (CPU time is barely moved by other jobs, the wall time
is). Without ``--checkpoint`` a small checkpoint is trained first: MAML, T = 1, 20 meta-iterations
on fontglot (an existing ``results/data/fontglot.npz`` or ``/tmp/fg/fontglot.npz``, else a
200-class one built into ``--work-dir``); both are cached there for the next run.

Usage: ``python benchmarks/bench_hessian_backends.py [--quick] [--checkpoint RUN.h5 --epoch K]
[--walk-epochs N] [--device cuda]``. ``--walk-epochs N``: over N consecutive epochs, PyHessian at
tolerances 1e-3..1e-6 against lanczos_batched cold and warm (the previous epoch's Ritz vector
plus the cold start) under both stopping rules (``eigenvalue``, the default, and ``residual``),
each case's process CPU time in a rotated order per epoch; after the first epoch the default is
compared with PyHessian at the tolerance that meets ≤1e-4 on the most tasks (equal accuracy), and
the squared overlap of consecutive epochs' top Ritz vectors says how much a warm start can save.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalandscape.checkpoints import read_run_info
from metalandscape.config import resolve_run_config
from metalandscape.functional import loss_from_outputs
from metalandscape.metrics.builtin import Hessian
from metalandscape.metrics.eigen import (
    BACKENDS,
    DEFAULT_BATCHED_CHUNK_SIZE,
    DEFAULT_LANCZOS_TOL,
    DEFAULT_PYHESSIAN_TOL,
    STOPPING_RULES,
    EigenResult,
    Params,
    dense_hessian_eigenvalues,
    top_eigenvalue,
    top_eigenvalues,
)
from metalandscape.metrics.evaluate import make_context

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DATA_CANDIDATES = (Path("results/data/fontglot.npz"), Path("/tmp/fg/fontglot.npz"))
BUILT_CLASSES = 200
RUN_CONFIG = {
    "dataset": "fontglot",
    "algorithm": "maml",
    "n_way": 5,
    "k_shot": 1,
    "inner_steps": 1,
    "epochs": 1,
    "iterations_per_epoch": 20,
    "seed": 0,
}
REFERENCE_TOL = 1e-10
REFERENCE_MAX_HVPS = 5000
GOAL_SPEEDUP = 3.0
GOAL_ERROR = 1e-4
GOAL_WARM_MEDIAN_HVPS = 8
DENSE_SEEDS = (0, 1, 2)
DENSE_TASKS = 3
DEVICE = "cpu"  # --device: where tasks, parameters and products live


@dataclass
class Configuration:
    """One timed backend setting and what its passes measured."""

    backend: str
    chunk_size: int | None = None
    cpu_seconds: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    results: list[EigenResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.chunk_size is None:
            return self.backend
        mark = "*" if self.chunk_size == DEFAULT_BATCHED_CHUNK_SIZE else ""
        return f"{self.backend} chunk={self.chunk_size}{mark}"

    @property
    def tol(self) -> float:
        return DEFAULT_PYHESSIAN_TOL if self.backend == "pyhessian" else DEFAULT_LANCZOS_TOL


@dataclass(frozen=True)
class Tasks:
    """The benchmark's adapted tasks: model, θ̃ᵢ, support sets, criterion."""

    model: nn.Module
    params: list[Params]
    inputs: Tensor
    labels: Tensor
    criterion: Callable[[Tensor, Tensor], Tensor]

    def __len__(self) -> int:
        return len(self.params)

    def head(self, count: int) -> Tasks:
        return Tasks(
            self.model,
            self.params[:count],
            self.inputs[:count],
            self.labels[:count],
            self.criterion,
        )

    def double(self) -> Tasks:
        return Tasks(
            copy.deepcopy(self.model).double(),
            [{name: value.double() for name, value in p.items()} for p in self.params],
            self.inputs.double(),
            self.labels,
            self.criterion,
        )


# ------------------------------------------------------------------------------------- set-up


def find_or_build_data(work_dir: Path, data: Path | None) -> Path:
    """A fontglot file: ``data``, a known one, or a small one built (and cached) in ``work_dir``."""
    if data is not None:
        return data
    for candidate in DATA_CANDIDATES:
        if candidate.exists():
            return candidate
    built = work_dir / f"fontglot-{BUILT_CLASSES}.npz"
    if not built.exists():
        from metalandscape.data.fontglot import build_fontglot

        print(f"building a {BUILT_CLASSES}-class fontglot at {built} ...", flush=True)
        build_fontglot(built, classes=BUILT_CLASSES, workers=2, progress=False)
    return built


def train_checkpoint(
    work_dir: Path, data: Path, overrides: dict[str, int] | None = None
) -> tuple[Path, int]:
    """A short MAML run (cached by its config in ``work_dir``) and its last epoch."""
    from metalandscape.training import train_run

    config = resolve_run_config(
        {**RUN_CONFIG, **(overrides or {}), "data_path": str(data.resolve())}
    )
    digest = hashlib.sha256(config.to_json().encode()).hexdigest()[:12]
    run_path = work_dir / f"conv4-maml-{digest}.h5"
    if not (run_path.exists() and read_run_info(run_path).finished):
        print(
            f"training {run_path} ({config.iterations_per_epoch} meta-iterations) ...", flush=True
        )
        train_run(config, run_path, progress=False)
    return run_path, config.epochs


def load_tasks(run_path: Path, epoch: int, count: int) -> Tasks:
    """The first ``count`` meta-test tasks of ``run_path`` at ``epoch``, adapted."""
    config, context = make_context(run_path, epoch, device=DEVICE)
    batch = context.tasks("test", count)
    adapted = context.adapted("test", count)
    print(
        f"checkpoint {run_path} epoch {epoch}: {config.dataset} {config.n_way}-way "
        f"{config.k_shot}-shot {config.algorithm}, T={config.inner_steps}, "
        f"{sum(v.numel() for v in adapted[0].values())} parameters, support "
        f"{tuple(batch.support_inputs.shape[1:])}, {count} tasks",
        flush=True,
    )
    return Tasks(
        context.model,
        adapted,
        batch.support_inputs,
        batch.support_labels,
        partial(loss_from_outputs, kind=context.kind),
    )


# ---------------------------------------------------------------------------------- measuring


def solve(configuration: Configuration, tasks: Tasks) -> list[EigenResult]:
    return top_eigenvalues(
        configuration.backend,
        tasks.model,
        tasks.params,
        tasks.inputs,
        tasks.labels,
        tasks.criterion,
        chunk_size=configuration.chunk_size,
    )


def time_configurations(
    configurations: Sequence[Configuration], tasks: Tasks, repeats: int
) -> None:
    """Warm each configuration up on two tasks, then time ``repeats`` passes over all of them."""
    for configuration in configurations:
        solve(configuration, tasks.head(2))
    for repeat in range(repeats):
        for configuration in configurations:
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            results = solve(configuration, tasks)
            configuration.cpu_seconds.append(time.process_time() - cpu)
            configuration.wall_seconds.append(time.perf_counter() - wall)
            configuration.results = results
            print(
                f"  pass {repeat + 1}/{repeats} {configuration.label:<26} "
                f"{configuration.cpu_seconds[-1]:6.1f} s CPU {configuration.wall_seconds[-1]:6.1f} s",
                flush=True,
            )


def references(tasks: Tasks) -> tuple[np.ndarray, np.ndarray]:
    """Per task, λmax and the largest-magnitude eigenvalue, float64, ARPACK at tol 1e-10."""
    tight = tasks.double()
    largest, magnitude = [], []
    for index in range(len(tight)):
        for which, out in (("LA", largest), ("LM", magnitude)):
            result = top_eigenvalue(
                "lanczos",
                tight.model,
                tight.params[index],
                tight.inputs[index],
                tight.labels[index],
                tight.criterion,
                tol=REFERENCE_TOL,
                max_hvps=REFERENCE_MAX_HVPS,
                seed=index,
                which=which,
            )
            if not result.converged:
                raise RuntimeError(f"the reference did not converge on task {index} ({which})")
            out.append(result.value)
    return np.asarray(largest), np.asarray(magnitude)


def dense_top_eigenvalue(model: nn.Module, params: Params, inputs: Tensor, labels: Tensor) -> float:
    """λmax of the full cross-entropy Hessian (one HVP per parameter)."""

    def loss(candidate: Params) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, candidate, (inputs,)), labels)

    return float(dense_hessian_eigenvalues(loss, params)[-1])


def dense_agreement() -> dict[str, float]:
    """Per backend, the largest relative error against dense λmax on tiny float64 networks."""
    worst = dict.fromkeys(BACKENDS, 0.0)
    for seed in DENSE_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, bias=False),
            nn.BatchNorm2d(2, track_running_stats=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2, 3),
        ).double()
        params = [
            {
                name: value.detach() + 0.5 * torch.randn(value.shape, generator=generator).double()
                for name, value in model.named_parameters()
            }
            for _ in range(DENSE_TASKS)
        ]
        inputs = torch.randn(DENSE_TASKS, 8, 1, 5, 5, generator=generator).double()
        labels = torch.randint(0, 3, (DENSE_TASKS, 8), generator=generator)
        dense = [
            dense_top_eigenvalue(model, params[task], inputs[task], labels[task])
            for task in range(DENSE_TASKS)
        ]
        for backend in BACKENDS:
            results = top_eigenvalues(backend, model, params, inputs, labels, F.cross_entropy)
            for result, top in zip(results, dense, strict=True):
                worst[backend] = max(worst[backend], abs(result.value - top) / abs(top))
    return worst


# ------------------------------------------------------------------------------------ report


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), "
        + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES)
    )


def report(
    configurations: Sequence[Configuration],
    largest: np.ndarray,
    magnitude: np.ndarray,
    dense: dict[str, float],
    repeats: int,
) -> None:
    count = len(largest)
    baseline = next(c for c in configurations if c.backend == "pyhessian")
    base_cpu, base_wall = min(baseline.cpu_seconds), min(baseline.wall_seconds)
    header = (
        f"{'backend':<26} {'tol':>6} {'CPU s':>7} {'wall s':>7} {'CPU ms/task':>11} "
        f"{'HVPs/task':>9} {'max':>4} {'rel.err mean':>12} {'max':>8} {'conv':>5} "
        f"{'speed-up CPU':>12} {'wall':>5}"
    )
    print(f"\n{count} tasks; least of {repeats} pass(es); relative error against float64 λmax")
    print(header)
    print("-" * len(header))
    summary: dict[str, tuple[float, float]] = {}
    for configuration in configurations:
        values = np.asarray([r.value for r in configuration.results])
        products = np.asarray([r.hessian_vector_products for r in configuration.results])
        converged = sum(r.converged for r in configuration.results)
        errors = np.abs(values - largest) / np.abs(largest)
        cpu, wall = min(configuration.cpu_seconds), min(configuration.wall_seconds)
        speedup = base_cpu / cpu
        summary[configuration.label] = (speedup, float(errors.max()))
        print(
            f"{configuration.label:<26} {configuration.tol:>6.0e} {cpu:>7.1f} {wall:>7.1f} "
            f"{1e3 * cpu / count:>11.0f} {products.mean():>9.1f} {products.max():>4d} "
            f"{errors.mean():>12.1e} {errors.max():>8.1e} {converged:>5d} "
            f"{speedup:>11.2f}x {base_wall / wall:>4.2f}x"
        )

    wrong_sign = magnitude < 0
    pyhessian = np.asarray([r.value for r in baseline.results])
    right = ~wrong_sign
    print(
        f"\nPyHessian wrong sign (|λmin| > λmax in the reference): {int(wrong_sign.sum())}/{count} "
        f"tasks; negative PyHessian values: {int((pyhessian < 0).sum())}/{count}"
    )
    if right.any():
        errors = np.abs(pyhessian[right] - largest[right]) / np.abs(largest[right])
        print(
            f"PyHessian on the other tasks: relative error mean {errors.mean():.1e}, "
            f"max {errors.max():.1e}"
        )
    print(
        "dense check (tiny float64 BatchNorm conv, "
        f"{len(DENSE_SEEDS) * DENSE_TASKS} parameter draws), worst relative error vs eigvalsh λmax: "
        + ", ".join(f"{backend} {error:.1e}" for backend, error in dense.items())
    )

    default_label = f"lanczos_batched chunk={DEFAULT_BATCHED_CHUNK_SIZE}*"
    speedup, error = summary[default_label]
    met = speedup >= GOAL_SPEEDUP and error <= GOAL_ERROR
    print(
        f"goal (≥{GOAL_SPEEDUP:g}x PyHessian's CPU time at ≤{GOAL_ERROR:g} relative error): "
        f"{'MET' if met else 'NOT MET'} by {default_label} ({speedup:.2f}x, max error {error:.1e})"
    )
    eligible = [
        c
        for c in configurations
        if dense[c.backend] <= GOAL_ERROR
        and summary[c.label][1] <= GOAL_ERROR
        and (c.chunk_size is None or c.chunk_size == DEFAULT_BATCHED_CHUNK_SIZE)
    ]
    fastest = min(eligible, key=lambda c: min(c.cpu_seconds)) if eligible else None
    chosen = Hessian.Settings().backend
    print(
        f"fastest backend within {GOAL_ERROR:g} of the reference and of dense λmax: "
        f"{fastest.backend if fastest else 'none'}; the hessian metric's default: {chosen}"
        + ("" if fastest is None or fastest.backend == chosen else "  <-- differs")
    )


# ------------------------------------------------------------------------------ warm starts


PYHESSIAN_TOLS = (1e-3, 1e-4, 1e-5, 1e-6)
OVERLAP_CASE = "batched eigenvalue cold"  # its converged vectors: how far λmax's vector moves


@dataclass(frozen=True)
class WalkCase:
    """One solver setting of the epoch walk: PyHessian at a tolerance, or lanczos_batched."""

    label: str
    backend: str
    tol: float | None = None
    stopping: str = "eigenvalue"
    warm: bool = False


WALK_CASES = (
    *(WalkCase(f"pyhessian tol={tol:g}", "pyhessian", tol) for tol in PYHESSIAN_TOLS),
    *(
        WalkCase(
            f"batched {stopping} {'warm' if warm else 'cold'}",
            "lanczos_batched",
            None,
            stopping,
            warm,
        )
        for stopping in STOPPING_RULES
        for warm in (False, True)
    ),
)


def walk_epochs(run_path: Path, epochs: Sequence[int], count: int) -> None:
    """PyHessian at several tolerances and cold/warm lanczos_batched under both stopping rules.

    Warm: each task starts from its Ritz vector at the previous epoch (as the hessian metric does
    when a job walks epochs); cold: a random start. The cases run in a rotated order at each epoch
    so that changing machine load hits them alike; process CPU time. Errors against the float64
    reference; PyHessian is compared at the tolerance that meets ≤1e-4 on the most tasks.
    """
    rows = []
    previous: dict[str, list[EigenResult]] = {}
    overlaps: list[float] = []  # (previous epoch's top Ritz vector · this epoch's)², per task
    for position, epoch in enumerate(epochs):
        tasks = load_tasks(run_path, epoch, count)
        largest, _ = references(tasks)
        arguments = (tasks.model, tasks.params, tasks.inputs, tasks.labels, tasks.criterion)
        shift = position % len(WALK_CASES)
        for case in WALK_CASES[shift:] + WALK_CASES[:shift]:
            extra: dict[str, object] = {}
            if case.backend == "lanczos_batched":
                before = previous.get(case.label)
                starts = None
                if case.warm and before is not None:
                    starts = [r.vector if r.converged else None for r in before]
                extra = {"stopping": case.stopping, "start_vectors": starts}
            gc.collect()
            cpu = time.process_time()
            results = top_eigenvalues(case.backend, *arguments, tol=case.tol, **extra)
            seconds = time.process_time() - cpu
            if case.label == OVERLAP_CASE and case.label in previous:
                overlaps.extend(
                    float(before.vector @ after.vector) ** 2
                    for before, after in zip(previous[case.label], results, strict=True)
                    if before.vector is not None and after.vector is not None
                )
            previous[case.label] = results
            values = np.asarray([r.value for r in results])
            products = np.asarray([r.hessian_vector_products for r in results])
            errors = np.abs(values - largest) / np.abs(largest)
            rows.append((epoch, case.label, seconds, products, errors))
            print(
                f"  epoch {epoch} {case.label:<28} {seconds:6.2f} s CPU, HVPs median "
                f"{np.median(products):g} mean {products.mean():.1f} max {products.max()}, "
                f"error max {errors.max():.1e}, ≤1e-4 on {int((errors <= GOAL_ERROR).sum())}",
                flush=True,
            )
    header = (
        f"{'epoch':>5} {'case':<28} {'CPU s':>7} {'HVPs median':>11} {'mean':>6} {'max':>4} "
        f"{'rel.err max':>11} {'≤1e-4':>6}"
    )
    print(f"\nwarm starts over epochs {list(epochs)}, {count} tasks, one pass each")
    print(header)
    print("-" * len(header))
    for epoch, label, cpu, products, errors in sorted(rows, key=lambda row: row[0]):
        print(
            f"{epoch:>5} {label:<28} {cpu:>7.2f} {np.median(products):>11.1f} "
            f"{products.mean():>6.1f} {products.max():>4d} {errors.max():>11.1e} "
            f"{int((errors <= GOAL_ERROR).sum()):>6d}"
        )
    later = [row for row in rows if row[0] != epochs[0]]

    def pooled(label: str) -> tuple[float, np.ndarray, np.ndarray]:
        mine = [row for row in later if row[1] == label]
        return (
            sum(row[2] for row in mine),
            np.concatenate([row[3] for row in mine]),
            np.concatenate([row[4] for row in mine]),
        )

    print(f"\nafter epoch {epochs[0]} ({len(epochs) - 1} epochs × {count} tasks pooled)")
    header = (
        f"{'case':<28} {'CPU s':>7} {'HVPs median':>11} {'mean':>6} {'max':>4} "
        f"{'rel.err max':>11} {'≤1e-4':>6} {'vs PyHessian':>12}"
    )
    pyhessian = [case.label for case in WALK_CASES if case.backend == "pyhessian"]
    # Equal accuracy: PyHessian at the tolerance meeting ≤1e-4 on the most tasks (then cheapest).
    chosen = max(
        pyhessian,
        key=lambda label: (int((pooled(label)[2] <= GOAL_ERROR).sum()), -pooled(label)[0]),
    )
    base = pooled(chosen)[0]
    print(header)
    print("-" * len(header))
    for case in WALK_CASES:
        cpu, products, errors = pooled(case.label)
        print(
            f"{case.label:<28} {cpu:>7.2f} {np.median(products):>11.1f} {products.mean():>6.1f} "
            f"{products.max():>4d} {errors.max():>11.1e} {int((errors <= GOAL_ERROR).sum()):>6d} "
            f"{base / cpu:>11.2f}x"
        )
    if overlaps:
        print(
            f"(previous epoch's top Ritz vector · this epoch's)², {OVERLAP_CASE}: median "
            f"{np.median(overlaps):.2f}, max {max(overlaps):.2f} (a warm start saves products "
            "only where this is near 1)"
        )
    cpu, products, errors = pooled("batched eigenvalue warm")
    speedup, median, error = base / cpu, float(np.median(products)), float(errors.max())
    met = speedup >= GOAL_SPEEDUP and error <= GOAL_ERROR and median <= GOAL_WARM_MEDIAN_HVPS
    print(
        f"PyHessian at equal accuracy: {chosen}; default (batched eigenvalue warm): "
        f"{speedup:.2f}x its CPU time, median {median:g} HVPs per task, max error {error:.1e}; "
        f"goal (≥{GOAL_SPEEDUP:g}x, ≤{GOAL_WARM_MEDIAN_HVPS} HVPs, ≤{GOAL_ERROR:g}): "
        f"{'MET' if met else 'NOT MET'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 tasks, one pass, chunk 8 only")
    parser.add_argument("--checkpoint", type=Path, help="a run file (default: train a small one)")
    parser.add_argument("--epoch", type=int, help="the checkpoint's epoch (with --checkpoint)")
    parser.add_argument("--data", type=Path, help="fontglot file for the trained checkpoint")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "metalandscape-bench-hessian",
        help="where the built data and trained checkpoint are cached",
    )
    parser.add_argument("--tasks", type=int, help="meta-test tasks (default 60, quick 12)")
    parser.add_argument("--repeats", type=int, help="timed passes (default 3, quick 1)")
    parser.add_argument(
        "--walk-epochs",
        type=int,
        metavar="N",
        help="instead: warm vs cold starts over N consecutive epochs (trains N-1 epochs of 5 "
        "meta-iterations without --checkpoint; with it, epochs --epoch .. --epoch+N-1)",
    )
    parser.add_argument(
        "--device", default="cpu", help="device of the tasks and products (default cpu)"
    )
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != (args.epoch is None):
        parser.error("--checkpoint and --epoch go together")
    if any(variable not in os.environ for variable in THREAD_VARIABLES):
        # BLAS libraries read these once, when they load: restart with them set.
        for variable in THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")
        arguments = sys.argv[1:] if argv is None else list(argv)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *arguments])
    torch.set_num_threads(1)
    count = args.tasks or (12 if args.quick else 60)
    repeats = args.repeats or (1 if args.quick else 3)
    chunk_sizes = (DEFAULT_BATCHED_CHUNK_SIZE,) if args.quick else (1, 4, 8, 16)
    print(machine_line(), flush=True)

    global DEVICE
    DEVICE = args.device
    if args.checkpoint is None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        data = find_or_build_data(args.work_dir, args.data)
        print(f"fontglot data: {data}", flush=True)
        walk = (
            {"epochs": args.walk_epochs - 1, "iterations_per_epoch": 5} if args.walk_epochs else {}
        )
        run_path, epoch = train_checkpoint(args.work_dir, data, walk)
    else:
        run_path, epoch = args.checkpoint, args.epoch
    if args.walk_epochs:
        first = 0 if args.checkpoint is None else epoch
        walk_epochs(run_path, list(range(first, first + args.walk_epochs)), args.tasks or 12)
        print(f"\n{machine_line()}")
        return 0
    tasks = load_tasks(run_path, epoch, count)

    started = time.perf_counter()
    largest, magnitude = references(tasks)
    print(f"float64 references: {time.perf_counter() - started:.0f} s", flush=True)
    dense = dense_agreement()

    configurations = [
        Configuration("pyhessian"),
        Configuration("lanczos"),
        *(Configuration("lanczos_batched", chunk) for chunk in chunk_sizes),
    ]
    time_configurations(configurations, tasks, repeats)
    report(configurations, largest, magnitude, dense, repeats)
    print(f"\n{machine_line()}")
    print(json.dumps({"checkpoint": str(run_path), "epoch": epoch, "tasks": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
