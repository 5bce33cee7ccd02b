"""Cost of issue 14's measures per task on a fontglot 5-way 1-shot Conv-4 (64 filters), CPU.

Trains nothing: measures a briefly meta-trained MAML run (``--iterations``) at its last epoch,
with the measures' default settings and the cheap settings proposed for the default run.
Prints, per measure and setting, Hessian-vector products and CPU seconds per task, measured in
this run. Usage: ``python benchmarks/bench_measures.py [--tasks 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metalandscape.config import resolve_run_config
from metalandscape.data.fontglot import build_fontglot
from metalandscape.metrics.base import make_metric
from metalandscape.metrics.evaluate import make_context
from metalandscape.training import train_run

HVP_VARIABLES = {
    "hessian_trace": "hessian_trace_hessian_vector_products",
    "spectral_density": "spectral_hessian_vector_products",
    "layer_curvature": "layer_hessian_vector_products",
    "function_coherence": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = args.tasks
    cases = [
        ("hessian_trace", "default (10 probes)", {"tasks": tasks}),
        ("hessian_trace", "cheap (5 probes)", {"tasks": tasks, "probes": 5}),
        ("spectral_density", "default (4 x 40)", {"tasks": tasks}),
        ("spectral_density", "small (2 x 30)", {"tasks": tasks, "starts": 2, "lanczos_steps": 30}),
        ("layer_curvature", "default (all 9 layers)", {"tasks": tasks}),
        ("function_coherence", "default (4 probe tasks)", {"tasks": max(tasks, 2)}),
    ]
    with tempfile.TemporaryDirectory() as directory:
        data = build_fontglot(
            Path(directory) / "glyphs.npz", classes=200, workers=1, progress=False
        )
        config = resolve_run_config(
            {
                "dataset": "fontglot",
                "data_path": str(data),
                "algorithm": "maml",
                "n_way": 5,
                "k_shot": 1,
                "epochs": 1,
                "iterations_per_epoch": args.iterations,
            }
        )
        run = train_run(config, Path(directory) / "run.h5", progress=False)
        print(f"fontglot {config.n_way}-way {config.k_shot}-shot Conv-4, {args.threads} thread(s)")
        print(
            f"{'measure':20} {'settings':26} {'HVPs/task':>10} {'CPU s/task':>11} {'wall s/task':>12}"
        )
        for name, label, settings in cases:
            _, context = make_context(run, 1)
            context.adapted("test", settings["tasks"])  # adaptation is shared, not this cost
            metric = make_metric(name, settings)
            cpu, wall = time.process_time(), time.perf_counter()
            out = metric.compute(context)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            variable = HVP_VARIABLES[name]
            hvps = (
                0.0 if variable is None else float(np.sum(out[variable].values)) / settings["tasks"]
            )
            per = settings["tasks"]
            print(f"{name:20} {label:26} {hvps:10.0f} {cpu / per:11.2f} {wall / per:12.2f}")


if __name__ == "__main__":
    main()
