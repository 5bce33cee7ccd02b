"""Sanity check: MAML, Reptile, ANIL, Meta-SGD and Sharp-MAML on sinusoid regression, meta-test MSE.

Finn et al.'s same-distribution setting: y = a·sin(x − φ), a ~ U[0.1, 5], φ ~ U[0, π] for every
split, x ~ U[−5, 5], the 1-40-40-1 ReLU MLP, K = 10 support points, meta-batch 25, meta-Adam at
1e-3. All four learners start from the same θ and see the same meta-batches. Per algorithm:

* MAML: 1 step of α = 0.01 (Finn et al. 2017, §5.1), second order.
* ANIL: the same inner loop on the head only; a second ANIL with a head step of 0.1 (one step
  of 0.01 barely moves a 41-parameter head).
* Meta-SGD: 1 step with learned α, initialised U[0.005, 0.1] (Li et al. 2017).
* Reptile: 5 SGD steps of 0.02 on the support set (0.02 is the inner step size of the Reptile
  paper's sinusoid example), ε = 1 annealed linearly to 0 over the run.
* Sharp-MAML: MAML's inner loop with sharpness-aware minimization in the meta-update (upper),
  the inner step (lower) or both, radius ``--sharp-radius`` (0.05, the public code's default);
  evaluation adapts with the lower-level step where that level is on.

Meta-test: ``--test-tasks`` test tasks, K support points, 100 target points; the table gives the
MSE at θ (no adaptation), after the algorithm's own evaluation adaptation (its
``adapt_for_evaluation``), and after 10 plain gradient steps of 0.01 on all parameters (Finn's
fine-tuning protocol, the same for all). Training CPU seconds are measured in the same run.

Usage: ``python benchmarks/sanity_algorithms.py [--iterations N] [--shots K] [--seed S]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

import torch

from metalandscape.algorithms import anil, metasgd, reptile
from metalandscape.algorithms.maml import MetaLearner, MetaSettings
from metalandscape.algorithms.sharpmaml import SharpLearner, SharpSettings
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskBatch, TaskSampler
from metalandscape.functional import Params, adapt, forward, parameters_of
from metalandscape.models import SinusoidMLP

KIND = "regression"
META_BATCH = 25
META_LEARNING_RATE = 1e-3
TEST_TARGET_POINTS = 100


def batch_mse(model: torch.nn.Module, params: Params, inputs: torch.Tensor, labels: torch.Tensor):
    """Mean over tasks of the target MSE; ``params`` carry a task axis."""
    with torch.no_grad():
        outputs = torch.func.vmap(lambda p, x: forward(model, p, x))(params, inputs)
        return float(((outputs - labels) ** 2).mean())


def number(value: float) -> str:
    """Three decimals, or scientific notation for a diverged value."""
    return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.1e}"


def expand(params: Params, tasks: int) -> Params:
    return {name: p.detach().expand(tasks, *p.shape) for name, p in params.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--test-tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sharp-radius", type=float, default=0.05)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    ranges = {"train_phase": (0.0, math.pi), "test_phase": (0.0, math.pi)}
    train = TaskSampler(SinusoidSource(args.shots, args.shots, **ranges), seed=args.seed)
    test_tasks: TaskBatch = TaskSampler(
        SinusoidSource(args.shots, TEST_TARGET_POINTS, **ranges), seed=args.seed
    ).batch("test", range(args.test_tasks))

    model = SinusoidMLP()
    start = parameters_of(model)
    maml_settings = MetaSettings(1, 0.01, task_chunk_size=None)
    anil_settings = anil.ANILSettings(1, 0.01, task_chunk_size=None)
    anil_large_settings = anil.ANILSettings(1, 0.1, task_chunk_size=None)
    metasgd_settings = metasgd.MetaSGDSettings(1, task_chunk_size=None)
    reptile_settings = reptile.ReptileSettings(
        5, 0.02, outer_step_size=1.0, anneal_iterations=args.iterations, task_chunk_size=None
    )
    radius = args.sharp_radius
    sharp_settings = {
        level: SharpSettings(
            1,
            0.01,
            task_chunk_size=None,
            upper_radius=radius if level in ("upper", "both") else 0.0,
            lower_radius=radius if level in ("lower", "both") else 0.0,
        )
        for level in ("upper", "lower", "both")
    }
    learners = {
        "MAML": MetaLearner(model, start, KIND, maml_settings, META_LEARNING_RATE),
        **{
            f"Sharp {level}": SharpLearner(model, start, KIND, settings, META_LEARNING_RATE)
            for level, settings in sharp_settings.items()
        },
        "Reptile": reptile.ReptileLearner(model, start, KIND, reptile_settings),
        "ANIL": anil.ANILLearner(model, start, KIND, anil_settings, META_LEARNING_RATE),
        "ANIL 0.1": anil.ANILLearner(model, start, KIND, anil_large_settings, META_LEARNING_RATE),
        "Meta-SGD": metasgd.MetaSGDLearner(
            model, start, KIND, metasgd_settings, META_LEARNING_RATE, seed=args.seed
        ),
    }

    def maml_evaluation(saved: Params, inputs, labels, *, batched: bool) -> Params:
        return adapt(
            model, saved, inputs, labels, kind=KIND, steps=1, step_size=0.01, batched=batched
        )

    def sharp_evaluation(level: str) -> Callable[..., Params]:
        def evaluation(saved: Params, inputs, labels, *, batched: bool) -> Params:
            return adapt(
                model,
                saved,
                inputs,
                labels,
                kind=KIND,
                steps=1,
                step_size=0.01,
                batched=batched,
                sam_radius=sharp_settings[level].lower_radius,
            )

        return evaluation

    evaluations: dict[str, Callable[..., Params]] = {
        "MAML": maml_evaluation,
        **{f"Sharp {level}": sharp_evaluation(level) for level in sharp_settings},
        "Reptile": lambda saved, x, y, *, batched: reptile.adapt_for_evaluation(
            model, saved, x, y, kind=KIND, settings=reptile_settings, batched=batched
        ),
        "ANIL": lambda saved, x, y, *, batched: anil.adapt_for_evaluation(
            model, saved, x, y, kind=KIND, settings=anil_settings, batched=batched
        ),
        "ANIL 0.1": lambda saved, x, y, *, batched: anil.adapt_for_evaluation(
            model, saved, x, y, kind=KIND, settings=anil_large_settings, batched=batched
        ),
        "Meta-SGD": lambda saved, x, y, *, batched: metasgd.adapt_for_evaluation(
            model, saved, x, y, kind=KIND, settings=metasgd_settings, batched=batched
        ),
    }
    protocol = {
        "MAML": "1 GD step, α=0.01",
        "Sharp upper": "1 GD step, α=0.01",
        "Sharp lower": f"1 SAM step ρ={radius:g}",
        "Sharp both": f"1 SAM step ρ={radius:g}",
        "Reptile": "5 GD steps, 0.02",
        "ANIL": "1 head step, α=0.01",
        "ANIL 0.1": "1 head step, α=0.1",
        "Meta-SGD": "1 step, learned α",
    }

    print(
        f"torch {torch.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"sinusoid a~U[0.1,5], φ~U[0,π], K={args.shots}, meta-batch {META_BATCH}, "
        f"{args.iterations} meta-iterations, {args.test_tasks} test tasks × "
        f"{TEST_TARGET_POINTS} target points, seed {args.seed}\n",
        flush=True,
    )
    cpu = dict.fromkeys(learners, 0.0)
    for iteration in range(args.iterations):
        batch = train.meta_batch("train", iteration, META_BATCH)
        for name, learner in learners.items():
            began = time.process_time()
            learner.step(batch)
            cpu[name] += time.process_time() - began

    tasks = len(test_tasks)
    x, y = test_tasks.support_inputs, test_tasks.support_labels
    tx, ty = test_tasks.target_inputs, test_tasks.target_labels
    header = (
        f"{'algorithm':<12}{'evaluation adaptation':<22}{'MSE at θ':>10}"
        f"{'MSE own':>10}{'MSE 10 GD':>11}{'train CPU s':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, learner in learners.items():
        # maml.MetaLearner predates parameters_to_save(); its θ is .params.
        saved = (
            learner.parameters_to_save()
            if hasattr(learner, "parameters_to_save")
            else {n: p.detach() for n, p in learner.params.items()}
        )
        theta = {n: v for n, v in saved.items() if not n.startswith(metasgd.STEP_SIZE_PREFIX)}
        batched_saved = expand(saved, tasks)
        at_theta = batch_mse(model, expand(theta, tasks), tx, ty)
        own = batch_mse(model, evaluations[name](batched_saved, x, y, batched=True), tx, ty)
        ten_steps = adapt(
            model, expand(theta, tasks), x, y, kind=KIND, steps=10, step_size=0.01, batched=True
        )
        print(
            f"{name:<12}{protocol[name]:<22}{number(at_theta):>10}{number(own):>10}"
            f"{number(batch_mse(model, ten_steps, tx, ty)):>11}{cpu[name]:>13.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
