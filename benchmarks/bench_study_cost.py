"""CPU seconds per meta-iteration of the study preset's run shapes, measured in one process.

Usage: PYTHONPATH=src python benchmarks/bench_study_cost.py FONTGLOT.npz [ITERATIONS]

Prints one table row per shape: process CPU seconds per meta-iteration (one torch thread), the
figure the study preset's cost estimate (workflow/presets/study.yaml) is built from.
"""

from __future__ import annotations

import sys
import time

import torch

from metalandscape.algorithms import load_algorithm
from metalandscape.config import resolve_run_config
from metalandscape.experiment import initial_params, make_model, make_task_source

SHAPES = {
    "1-shot T5 f32 B16": {"k_shot": 1, "filters": 32, "meta_batch_size": 16},
    "1-shot T5 f16 B8": {"k_shot": 1, "filters": 16, "meta_batch_size": 8},
    "1-shot T5 f16 B4": {"k_shot": 1, "filters": 16, "meta_batch_size": 4},
    "5-shot T5 f16 B4": {"k_shot": 5, "filters": 16, "meta_batch_size": 4},
    "1-shot T1 f16 B8": {"k_shot": 1, "filters": 16, "meta_batch_size": 8, "inner_steps": 1},
    "1-shot T5 f16 B8 fomaml": {
        "k_shot": 1,
        "filters": 16,
        "meta_batch_size": 8,
        "algorithm": "fomaml",
    },
    "1-shot finetune f16": {"k_shot": 1, "filters": 16, "algorithm": "finetune"},
}


def seconds_per_iteration(data: str, shape: dict, iterations: int) -> float:
    """Process CPU seconds per training step of one run shape (after one warm-up step)."""
    config = resolve_run_config(
        {"dataset": "fontglot", "data_path": data, "algorithm": "maml", "n_way": 5, **shape}
    )
    source = make_task_source(config)
    model = make_model(config, source)
    params = initial_params(model)
    learner = load_algorithm(config.algorithm).learner(config, model, params, source, "cpu")
    learner.train_step(0)
    start = time.process_time()
    for iteration in range(1, iterations + 1):
        learner.train_step(iteration)
    return (time.process_time() - start) / iterations


def main() -> None:
    torch.set_num_threads(1)
    data = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    print(f"{'shape':28s} CPU s / meta-iteration ({iterations} iterations)")
    for name, shape in SHAPES.items():
        print(f"{name:28s} {seconds_per_iteration(data, shape, iterations):.4f}", flush=True)


if __name__ == "__main__":
    main()
