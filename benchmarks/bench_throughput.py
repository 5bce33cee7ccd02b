"""Training throughput: meta-iterations per core-second of the code before issue 24 against
seeds in lockstep with the networks' batched forward passes and kept freed memory, on the
study's and the paper's training shapes.

Usage: python benchmarks/bench_throughput.py [--data FONTGLOT.npz] [--seeds 3] [--iterations 20]
       [--min-seconds 3] [--repeats 3] [--device cpu|cuda] [--settings NAME ...]

Each (setting, path) runs in a fresh process on one thread (``torch.set_num_threads(1)``): the
learners are built, one warm-up step is taken, then timed meta-iterations, at least
``--iterations`` and until ``--min-seconds`` have passed (process CPU time; wall time after a
synchronize on CUDA). Paths:

- ``before``: the code before issue 24: each seed's ``train_step`` in turn with the run's own task
  chunk size, forward passes and per-task losses mapped with ``vmap``
  (:func:`metalandscape.functional.vmapped_forward_only`), image tasks drawn one by one and stacked (``make_task`` is now a batch
  of one, 0.04 ms per task slower than the old per-task draw: about 1% of this path at T = 1),
  glibc's default ``malloc`` settings.
- ``solo``: one seed at a time as today: the networks' ``forward_batched`` and
  :func:`metalandscape.devices.keep_freed_memory` (what a run that cannot train in lockstep gets).
- ``lockstep``: the same seeds in one batched pass (:func:`metalandscape.lockstep.
  lockstep_train_step`), as ``solo`` otherwise.

Printed per row: seed meta-iterations per core-second (per GPU-second on CUDA), counted GFLOP per
meta-iteration (``torch.utils.flop_counter`` on one meta-step of the per-task loop: convolutions
and matrix products, forward and all backward passes), GFLOP/s, the process's peak resident
memory, its minor page faults per seed meta-iteration, and the speed-up over ``before`` measured
in the same run. Each path runs ``--repeats`` times, the paths interleaved, and the run of median
throughput is printed: on a shared 2-core machine one process can run 20% slow. Without ``--data`` a 200-class fontglot is built under ``$TMPDIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

PATHS = ("before", "solo", "lockstep")

SETTINGS: dict[str, dict] = {
    "fontglot 1-shot T1 B8 16f": {
        "k_shot": 1,
        "filters": 16,
        "meta_batch_size": 8,
        "inner_steps": 1,
        "inner_step_size": 0.4,
        "task_chunk_size": 8,
    },
    "fontglot 1-shot T5 B4 16f": {
        "k_shot": 1,
        "filters": 16,
        "meta_batch_size": 4,
        "inner_steps": 5,
        "inner_step_size": 0.1,
        "task_chunk_size": 4,
    },
    "fontglot 5-shot T5 B4 16f": {
        "k_shot": 5,
        "filters": 16,
        "meta_batch_size": 4,
        "inner_steps": 5,
        "inner_step_size": 0.1,
        "task_chunk_size": 4,
    },
    "fontglot 1-shot T1 B32 64f": {
        "k_shot": 1,
        "filters": 64,
        "meta_batch_size": 32,
        "inner_steps": 1,
        "inner_step_size": 0.4,
        "task_chunk_size": 16,
    },
    "sinusoid k=10 T1 B25": {
        "dataset": "sinusoid",
        "k_shot": 10,
        "meta_batch_size": 25,
        "task_chunk_size": 25,
    },
}


def _config(setting: dict, seed: int, data: str):
    from metalandscape.config import resolve_run_config

    values = {
        "dataset": "fontglot",
        "algorithm": "maml",
        "n_way": 5,
        "seed": seed,
        "initialization": "xavier",
        **setting,
    }
    if values["dataset"] == "fontglot":
        values["data_path"] = data
    else:
        values["n_way"] = 1
    return resolve_run_config(values)


def measure(
    name: str, path: str, seeds: int, iterations: int, min_seconds: float, data: str, device: str
) -> dict:
    """One row, in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from metalandscape.algorithms import load_algorithm
    from metalandscape.experiment import initial_params, make_model, make_task_source
    from metalandscape.lockstep import lockstep_train_step

    torch.set_num_threads(1)
    configs = [_config(SETTINGS[name], seed, data) for seed in range(seeds)]
    source = make_task_source(configs[0])
    learners = []
    for config in configs:
        model = make_model(config, source).to(device)
        learners.append(
            load_algorithm("maml").learner(
                config, model, initial_params(model), source, torch.device(device)
            )
        )

    def step(iteration: int) -> None:
        if path == "lockstep":
            lockstep_train_step(learners, iteration)
        else:
            for learner in learners:
                learner.train_step(iteration)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    step(0)  # warm-up
    # Counted on the per-task loop (task chunk size 1): under vmap a convolution becomes a
    # grouped one, which the counter would count once per group.
    counting = load_algorithm("maml").learner(
        replace(configs[0], task_chunk_size=1),
        learners[0].model,
        initial_params(learners[0].model),
        source,
        torch.device(device),
    )
    counter = FlopCounterMode(display=False)
    with counter:
        counting.train_step(1)
    synchronize()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started_cpu, started_wall = time.process_time(), time.perf_counter()

    def elapsed() -> float:
        if device == "cuda":
            synchronize()
            return time.perf_counter() - started_wall
        return time.process_time() - started_cpu

    done = 0
    while done < iterations or elapsed() < min_seconds:
        step(2 + done)
        done += 1
    seconds = elapsed()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    per_seed_iteration = seconds / (done * seeds)
    gflop = counter.get_total_flops() / 1e9
    return {
        "setting": name,
        "path": path,
        "seconds_per_seed_iteration": per_seed_iteration,
        "iterations_per_core_second": 1 / per_seed_iteration,
        "gflop": gflop,
        "gflops": gflop / per_seed_iteration,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "faults_per_seed_iteration": faults / (done * seeds),
    }


def _draw_image_tasks_one_by_one() -> None:
    """Meta-batches of image tasks stacked from tasks drawn one by one, as before issue 24."""
    from metalandscape.data.tasks import ImageClassificationSource, TaskBatch, TaskSampler

    batch = TaskSampler.batch

    def one_by_one(self: TaskSampler, split, indices):
        if isinstance(self.source, ImageClassificationSource):
            return TaskBatch.stack([self.task(split, index) for index in indices])
        return batch(self, split, indices)

    TaskSampler.batch = one_by_one  # type: ignore[method-assign]


def _median_row(rows: list[dict]) -> dict:
    """The run of median throughput (the lower middle one of an even count)."""
    ordered = sorted(rows, key=lambda row: row["iterations_per_core_second"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="fontglot .npz (default: build a 200-class one)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20, help="timed, at least")
    parser.add_argument(
        "--min-seconds", type=float, default=3.0, help="timed meta-iterations last at least this"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="fresh processes per path, interleaved; the median run is printed",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from metalandscape.devices import keep_freed_memory
        from metalandscape.functional import vmapped_forward_only

        before = args.child[1] == "before"
        if before:
            _draw_image_tasks_one_by_one()
        else:
            keep_freed_memory()
        with vmapped_forward_only() if before else contextlib.nullcontext():
            row = measure(
                *args.child,
                args.seeds,
                args.iterations,
                args.min_seconds,
                args.data,
                args.device,
            )
        print(json.dumps(row))
        return
    data = args.data
    if data is None:
        data = str(Path(tempfile.gettempdir()) / "metalandscape-bench-throughput" / "fontglot.npz")
        if not Path(data).is_file():
            from metalandscape.data.fontglot import build_fontglot

            build_fontglot(data, classes=200, workers=1, progress=False)
    print(
        f"# load average {os.getloadavg()[0]:.2f}; {args.seeds} seeds, at least "
        f"{args.iterations} timed meta-iterations and {args.min_seconds:g} s each, one thread, "
        f"device {args.device}; median of "
        f"{args.repeats} interleaved processes per path"
    )
    print(
        "| setting | path | seed meta-iterations / core-s | GFLOP / meta-iteration | GFLOP/s "
        "| peak MiB | page faults / meta-iteration | speed-up over before |"
    )
    print("|---|---|---|---|---|---|---|---|")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in args.settings:
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for _repeat, path in itertools.product(range(args.repeats), PATHS):
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                path,
                "--data",
                data,
                "--seeds",
                str(args.seeds),
                "--iterations",
                str(args.iterations),
                "--min-seconds",
                str(args.min_seconds),
                "--device",
                args.device,
            ]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            runs[path].append(json.loads(done.stdout.strip().splitlines()[-1]))
        rows = {path: _median_row(measured) for path, measured in runs.items()}
        for path, row in rows.items():
            speed_up = (
                row["iterations_per_core_second"] / rows["before"]["iterations_per_core_second"]
            )
            print(
                f"| {name} | {path} | {row['iterations_per_core_second']:.1f} | "
                f"{row['gflop']:.3f} | {row['gflops']:.1f} | {row['peak_mib']:.0f} | "
                f"{row['faults_per_seed_iteration']:.0f} | {speed_up:.2f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
