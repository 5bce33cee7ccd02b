"""Seconds per meta-iteration and peak memory of one MAML meta-gradient, three implementations.

Compared on the same tasks and in the same run:

* ``ours``: :func:`metalandscape.algorithms.maml.meta_gradient` at task chunk sizes 1, 4, 8 and
  "all" (``None``), the configured default marked ``*`` (``None`` for the sinusoid MLP, 1 for
  Conv-4);
* ``loop``: the plain per-task autograd loop written below (:func:`per_task_loop_meta_gradient`);
* ``higher``: facebookresearch's ``higher`` (the optional ``bench`` extra), the usual MAML recipe.

Before timing, the three are checked to give the same meta-gradient (float64, small case). Every
configuration then runs in a fresh process (forked from a server that has only imported the
libraries) on one thread: a two-task run pays lazy set-up, then one warm-up iteration and the
median process CPU time of at least 5 timed ones (3 with ``--quick``). Its peak memory is the
high-water mark of the resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after
``malloc_trim``) minus the resident set once the model and the tasks exist. See README.md.

Usage: ``python benchmarks/bench_maml.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch

from metalandscape.algorithms.maml import MetaSettings, meta_gradient
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskKind, TaskSampler
from metalandscape.functional import Params, flatten, loss_from_outputs, task_loss
from metalandscape.models import Conv4, SinusoidMLP

ModelName = Literal["conv4", "sinusoid"]
Method = Literal["ours", "loop", "higher"]

HIGHER_AVAILABLE = importlib.util.find_spec("higher") is not None
CHUNK_SIZES: tuple[int | None, ...] = (1, 4, 8, None)
DEFAULT_CHUNK_SIZE: dict[ModelName, int | None] = {"conv4": 1, "sinusoid": None}
INNER_STEP_SIZE: dict[ModelName, float] = {"conv4": 0.1, "sinusoid": 0.01}
TASK_KIND: dict[ModelName, TaskKind] = {"conv4": "classification", "sinusoid": "regression"}
N_WAY = 5
SINUSOID_POINTS = 10
SINUSOID_SPEEDUP_GOAL = 8.0
CONV_MEMORY_GOAL = 1.2


@dataclass(frozen=True)
class Case:
    """One meta-learning problem: network, meta-batch size, inner steps T, MAML or FOMAML."""

    model: ModelName
    meta_batch: int
    inner_steps: int
    second_order: bool

    @property
    def label(self) -> str:
        order = "2nd" if self.second_order else "1st"
        return f"{self.model:<8} B={self.meta_batch:<2} T={self.inner_steps} {order}"


@dataclass(frozen=True)
class Implementation:
    """How the meta-gradient is computed; ``chunk_size`` only matters for ``ours``."""

    method: Method
    chunk_size: int | None = None

    @property
    def label(self) -> str:
        if self.method != "ours":
            return self.method
        return f"ours c={'all' if self.chunk_size is None else self.chunk_size}"

    def is_default_for(self, model: ModelName) -> bool:
        return self.method == "ours" and self.chunk_size == DEFAULT_CHUNK_SIZE[model]


@dataclass(frozen=True)
class Measurement:
    """Timed iterations (warm-up excluded) and peak resident-set increase (MiB).

    ``cpu_seconds`` is the process's CPU time: with one thread it equals the wall time on an idle
    machine and, unlike the wall time, hardly moves when other jobs compete for the cores.
    """

    cpu_seconds: list[float]
    wall_seconds: list[float]
    peak_mib: float

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def median_wall_seconds(self) -> float:
        return statistics.median(self.wall_seconds)


# --- problems -------------------------------------------------------------------------------


DEVICE = "cpu"  # --device; memory columns measure host memory only


def build_model(model_name: ModelName, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """Conv-4 for 5-way 28×28 Omniglot-like images (64 filters) or the 1-40-40-1 sinusoid MLP."""
    torch.manual_seed(seed)
    model = Conv4((1, 28, 28), N_WAY) if model_name == "conv4" else SinusoidMLP()
    return model.to(DEVICE, dtype)


def build_batch(model_name: ModelName, meta_batch: int, dtype: torch.dtype) -> TaskBatch:
    """5-way 1-shot tasks of random images (5 support, 5 target), or sinusoid tasks (10 + 10)."""
    if model_name == "sinusoid":
        source = SinusoidSource(k_shot=SINUSOID_POINTS, target_points=SINUSOID_POINTS)
        return TaskSampler(source, seed=0).meta_batch("train", 0, meta_batch).to(DEVICE, dtype)
    generator = torch.Generator().manual_seed(0)
    shape = (meta_batch, N_WAY, 1, 28, 28)
    labels = torch.arange(N_WAY).repeat(meta_batch, 1)
    return TaskBatch(
        support_inputs=torch.rand(shape, generator=generator, dtype=dtype),
        support_labels=labels,
        target_inputs=torch.rand(shape, generator=generator, dtype=dtype),
        target_labels=labels.clone(),
    )


# --- the three implementations --------------------------------------------------------------


def ours_meta_gradient(
    model: torch.nn.Module, batch: TaskBatch, case: Case, chunk_size: int | None
) -> Params:
    """metalandscape's meta-gradient at task chunk size ``chunk_size``."""
    settings = MetaSettings(
        second_order=case.second_order,
        inner_steps=case.inner_steps,
        inner_step_size=INNER_STEP_SIZE[case.model],
        task_chunk_size=chunk_size,
    )
    params = {name: p.detach() for name, p in model.named_parameters()}
    return meta_gradient(model, params, batch, TASK_KIND[case.model], settings).gradients


def per_task_loop_meta_gradient(model: torch.nn.Module, batch: TaskBatch, case: Case) -> Params:
    """Reference: adapt each task with ``torch.autograd.grad``, backward its target loss."""
    kind, step_size = TASK_KIND[case.model], INNER_STEP_SIZE[case.model]
    start = {name: p.detach().requires_grad_(True) for name, p in model.named_parameters()}
    tasks = len(batch)
    for task in batch:
        adapted = start
        for _ in range(case.inner_steps):
            support_loss = task_loss(model, adapted, task.support_inputs, task.support_labels, kind)
            grads = torch.autograd.grad(
                support_loss, list(adapted.values()), create_graph=case.second_order
            )
            adapted = {
                name: p - step_size * g for (name, p), g in zip(adapted.items(), grads, strict=True)
            }
        target_loss = task_loss(model, adapted, task.target_inputs, task.target_labels, kind)
        (target_loss / tasks).backward()
    return {name: p.grad for name, p in start.items()}


def higher_meta_gradient(model: torch.nn.Module, batch: TaskBatch, case: Case) -> Params:
    """The usual ``higher`` MAML recipe; first order takes the target gradient at θ̃ (FOMAML)."""
    import higher

    kind, tasks = TASK_KIND[case.model], len(batch)
    inner_optimizer = torch.optim.SGD(model.parameters(), lr=INNER_STEP_SIZE[case.model])
    model.zero_grad(set_to_none=True)
    for task in batch:
        with higher.innerloop_ctx(
            model,
            inner_optimizer,
            copy_initial_weights=False,
            track_higher_grads=case.second_order,
        ) as (adapted_model, differentiable_optimizer):
            for _ in range(case.inner_steps):
                support_outputs = adapted_model(task.support_inputs)
                differentiable_optimizer.step(
                    loss_from_outputs(support_outputs, task.support_labels, kind)
                )
            target_outputs = adapted_model(task.target_inputs)
            target_loss = loss_from_outputs(target_outputs, task.target_labels, kind) / tasks
            if case.second_order:
                target_loss.backward()
            else:  # the adapted weights are detached leaves: move their gradient onto θ
                grads = torch.autograd.grad(target_loss, list(adapted_model.parameters()))
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
    return {name: p.grad for name, p in model.named_parameters()}


def meta_gradient_function(
    implementation: Implementation, model: torch.nn.Module, batch: TaskBatch, case: Case
) -> Callable[[], Params]:
    """A no-argument function computing the meta-gradient of ``batch`` with ``implementation``."""
    if implementation.method == "ours":
        return lambda: ours_meta_gradient(model, batch, case, implementation.chunk_size)
    if implementation.method == "loop":
        return lambda: per_task_loop_meta_gradient(model, batch, case)
    return lambda: higher_meta_gradient(model, batch, case)


# --- agreement check ------------------------------------------------------------------------


def check_agreement(implementations: Sequence[Implementation]) -> bool:
    """Print ‖g − g_loop‖/‖g_loop‖ over all parameters (float64, 5 tasks, T = 2)."""
    print("Agreement with the per-task loop (float64, 5 tasks, T=2; relative error of the flat")
    print("meta-gradient; Conv-4's convolutions have no bias, so all three see the same tensors):")
    tolerance = 1e-10
    all_agree = True
    for model_name in ("conv4", "sinusoid"):
        for second_order in (True, False):
            case = Case(model_name, meta_batch=5, inner_steps=2, second_order=second_order)
            model = build_model(model_name, torch.float64)
            batch = build_batch(model_name, case.meta_batch, torch.float64)
            names = [name for name, _ in model.named_parameters()]
            reference = flatten([per_task_loop_meta_gradient(model, batch, case)[n] for n in names])
            errors = []
            for implementation in implementations:
                if implementation.method == "loop":
                    continue
                grads = meta_gradient_function(implementation, model, batch, case)()
                error = float((flatten([grads[n] for n in names]) - reference).norm())
                error /= float(reference.norm())
                all_agree &= error < tolerance
                errors.append(f"{implementation.label} {error:.1e}")
            print(f"  {case.label}: " + ", ".join(errors))
    print(
        f"  → {'all agree' if all_agree else 'DISAGREEMENT'} (tolerance {tolerance:.0e})\n",
        flush=True,
    )
    return all_agree


# --- measurement in a fresh process ---------------------------------------------------------


def _resident_kib(field: Literal["VmRSS", "VmHWM"]) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap() -> None:
    """Hand glibc's cached free memory back to the OS, so that reusing it shows as growth."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_resident() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux ≥ 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def measure(
    case: Case, implementation: Implementation, min_repetitions: int, min_seconds: float
) -> Measurement:
    """Run in a fresh worker process: one warm-up, then ≥ ``min_repetitions`` timed iterations."""
    torch.set_num_threads(1)
    model = build_model(case.model, torch.float32)
    # Lazy imports and one-time kernel set-up are not the method's memory: pay them on 2 tasks.
    meta_gradient_function(implementation, model, build_batch(case.model, 2, torch.float32), case)()
    batch = build_batch(case.model, case.meta_batch, torch.float32)
    compute = meta_gradient_function(implementation, model, batch, case)
    gc.collect()
    _release_free_heap()
    if _reset_peak_resident():
        baseline_kib = _resident_kib("VmRSS") or 0

        def peak_kib() -> int:
            return _resident_kib("VmHWM") or 0
    else:  # no /proc: the lifetime peak, in KiB on Linux and bytes on macOS
        scale = 1024 if platform.system() == "Darwin" else 1
        baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale

        def peak_kib() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale

    compute()  # warm-up
    cpu_seconds: list[float] = []
    wall_seconds: list[float] = []
    while len(cpu_seconds) < min_repetitions or sum(cpu_seconds) < min_seconds:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        compute()
        cpu_seconds.append(time.process_time() - cpu_start)
        wall_seconds.append(time.perf_counter() - wall_start)
    return Measurement(cpu_seconds, wall_seconds, peak_mib=(peak_kib() - baseline_kib) / 1024)


def fresh_process_pool() -> ProcessPoolExecutor:
    """One worker at a time, a new one per configuration, forked from a pre-importing server."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo (~800 modules, ~2 s): torch.func.grad/jvp and torch.optim import it.
    preload = ["torch", "torch._dynamo", "metalandscape.algorithms.maml", "metalandscape.models"]
    context.set_forkserver_preload(preload + (["higher"] if HIGHER_AVAILABLE else []))
    return ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1)


# --- report ---------------------------------------------------------------------------------


def goal_verdict(
    case: Case, results: dict[Implementation, Measurement], default: Implementation
) -> tuple[str, bool]:
    """The goals for ``case``, their numbers, and whether all are met."""
    ours = results[default]
    loop = results[Implementation("loop")]
    speedup = loop.median_seconds / ours.median_seconds
    parts = [f"{speedup:4.1f}× loop"]
    met = True
    if case.model == "sinusoid":
        met &= speedup >= SINUSOID_SPEEDUP_GOAL
        parts[0] += f" (≥{SINUSOID_SPEEDUP_GOAL:g})"
    else:
        memory_ratio = ours.peak_mib / max(loop.peak_mib, 1e-9)
        met &= speedup >= 1.0 and memory_ratio <= CONV_MEMORY_GOAL
        parts[0] += " (≥1)"
        parts.append(f"mem {memory_ratio:.2f}× (≤{CONV_MEMORY_GOAL:g})")
    higher = results.get(Implementation("higher"))
    if higher is not None:
        higher_speedup = higher.median_seconds / ours.median_seconds
        met &= higher_speedup > 1.0
        parts.append(f"{higher_speedup:4.1f}× higher (>1)")
    return ", ".join(parts), met


def print_tables(
    cases: Sequence[Case],
    implementations: Sequence[Implementation],
    results: dict[tuple[Case, Implementation], Measurement],
) -> None:
    header = f"{'case':<24}" + "".join(f"{i.label:>12}" for i in implementations)

    def table(title: str, cell: Callable[[Measurement], str]) -> None:
        print(title)
        print(header)
        for case in cases:
            row = f"{case.label:<24}"
            for implementation in implementations:
                measurement = results.get((case, implementation))
                mark = "*" if implementation.is_default_for(case.model) else " "
                row += f"{cell(measurement) + mark:>12}" if measurement else f"{'-':>12}"
            print(row)
        print()

    table(
        "CPU seconds per meta-iteration (median; * = our default; goals use these):",
        lambda m: f"{m.median_seconds:.4f}",
    )
    table(
        "Wall seconds per meta-iteration (median; noisier on a shared machine):",
        lambda m: f"{m.median_wall_seconds:.4f}",
    )
    table("Peak resident-memory increase, MiB (* = our default):", lambda m: f"{m.peak_mib:.1f}")
    print("Fastest chunk size of ours per case:")
    for case in cases:
        ours = {i: results[case, i] for i in implementations if i.method == "ours"}
        fastest = min(ours, key=lambda i: ours[i].median_seconds)
        print(f"  {case.label}: {fastest.label} ({ours[fastest].median_seconds:.4f} CPU s)")
    print()

    print("Goals (our default vs the per-task loop and higher):")
    goals_met = 0
    for case in cases:
        default = Implementation("ours", DEFAULT_CHUNK_SIZE[case.model])
        per_case = {i: results[case, i] for i in implementations if (case, i) in results}
        text, met = goal_verdict(case, per_case, default)
        goals_met += met
        print(f"  {case.label}: {text:<52} goal met? {'yes' if met else 'NO'}")
    print(f"  → goals met in {goals_met} of {len(cases)} cases")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="T = 1 and sinusoid B = 25 only, fewer repetitions"
    )
    parser.add_argument("--device", default="cpu", help="where models and tasks live (cpu)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(1)

    implementations = [Implementation("ours", size) for size in CHUNK_SIZES]
    implementations.append(Implementation("loop"))
    if HIGHER_AVAILABLE:
        implementations.append(Implementation("higher"))
    else:
        print(
            "NOTE: `higher` is not installed, so its column is skipped; install it with\n"
            "      pip install --no-deps 'higher>=0.2.1'   (or the project's `bench` extra)\n"
        )

    inner_steps = (1,) if args.quick else (1, 5)
    cases = [
        Case(model, meta_batch, steps, second_order)
        for model, meta_batches in (
            ("conv4", (32,)),
            ("sinusoid", (25,) if args.quick else (25, 32)),
        )
        for meta_batch in meta_batches
        for steps in inner_steps
        for second_order in (True, False)
    ]
    min_repetitions, min_seconds = (3, 0.2) if args.quick else (5, 2.0)

    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n", flush=True)
    if not check_agreement(implementations):
        return 1

    results: dict[tuple[Case, Implementation], Measurement] = {}
    with fresh_process_pool() as pool:
        for case in cases:
            for implementation in implementations:
                future = pool.submit(measure, case, implementation, min_repetitions, min_seconds)
                results[case, implementation] = future.result()
            print(f"  measured {case.label}", file=sys.stderr, flush=True)

    print(
        f"One thread, one warm-up, median of ≥{min_repetitions} iterations"
        + (f" (and ≥{min_seconds:g} CPU s)" if min_seconds else "")
        + f"; load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print_tables(cases, implementations, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
