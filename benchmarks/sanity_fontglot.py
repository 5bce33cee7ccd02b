"""Sanity check: the registered meta-learners on fontglot 5-way 1-shot, through the real pipeline.

Each algorithm trains with ``metalandscape.training.train_run`` from the same run config (same
seed, θ0 and meta-batches; only ``algorithm`` differs) and is measured with the ``accuracy``
metric, i.e. after its own evaluation adaptation (ANIL: head only; Meta-SGD: learned α), on the
same meta-test tasks of the evaluation seed. A tiny budget by design (a few hundred meta-
iterations, small Conv-4): the point is the ordering the papers report, e.g. ANIL ≈ MAML, not
their absolute accuracies. Training CPU seconds are measured in the same run.

Usage: ``python benchmarks/sanity_fontglot.py --data results/data/fontglot.npz
[--algorithms maml anil metasgd reptile] [--iterations 300] [--filters 16] [--inner-steps 5]
[--inner-step-size 0.1] [--tasks 200] [--out-dir DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from metalandscape.algorithms import ALGORITHMS
from metalandscape.config import resolve_run_config
from metalandscape.metrics.base import make_metric
from metalandscape.metrics.evaluate import evaluate
from metalandscape.training import train_run

EPOCHS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a fontglot .npz (metalandscape data)")
    parser.add_argument("--algorithms", nargs="+", default=["maml", "anil", "metasgd", "reptile"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-step-size", type=float, default=0.1)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="sanity_fontglot_"))
    per_epoch = max(1, args.iterations // EPOCHS)
    accuracy = make_metric("accuracy", {"tasks": args.tasks, "splits": ["test"]})
    rows = []
    for name in args.algorithms:
        config = resolve_run_config(
            {
                "dataset": "fontglot",
                "algorithm": name,
                "seed": args.seed,
                "n_way": 5,
                "k_shot": 1,
                "data_path": args.data,
                "filters": args.filters,
                "epochs": EPOCHS,
                "iterations_per_epoch": per_epoch,
                "inner_steps": args.inner_steps,
                "inner_step_size": args.inner_step_size,
                "meta_batch_size": args.meta_batch,
            }
        )
        started = time.process_time()
        path = train_run(config, out_dir / f"{name}.h5", progress=False)
        seconds = time.process_time() - started
        measured = evaluate(path, [0, EPOCHS], [accuracy])["accuracy"]
        values = measured["test_target_accuracy_mean"].values.reshape(-1)
        interval = measured["test_target_accuracy_ci95"].values.reshape(-1)
        rows.append((ALGORITHMS[name].title, values[0], values[-1], interval[-1], seconds))
    print(
        f"fontglot 5-way 1-shot, {EPOCHS * per_epoch} meta-iterations, meta-batch "
        f"{args.meta_batch}, {args.filters} filters, T={args.inner_steps}, "
        f"α={args.inner_step_size}, seed {args.seed}; accuracy on {args.tasks} meta-test tasks"
    )
    print(f"{'algorithm':<18} {'acc θ0':>8} {'acc final':>10} {'± 95%':>7} {'train CPU s':>12}")
    for title, first, last, ci, seconds in rows:
        print(f"{title:<18} {first:>8.3f} {last:>10.3f} {ci:>7.3f} {seconds:>12.1f}")


if __name__ == "__main__":
    main()
