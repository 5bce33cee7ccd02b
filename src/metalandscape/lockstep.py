"""Several seeds of one MAML-family setting trained in lockstep: one batched pass a meta-iteration.

Runs that differ only by seed do the same small operations on different numbers. Trained one
by one, each pays the per-operation overhead of hundreds of tiny kernels and autograd nodes; in
lockstep the seeds' meta-batches go through the inner loop together, so each kernel works on
``seeds × tasks`` tasks at once.

How it stays exact: θs of the seeds are stacked into one leaf ``[seeds, ...]``; each task of a
chunk starts from its own seed's row (``index_select``), adapts with the algorithm's own inner
loop, and the seeds' mean target losses are summed. Seeds share no parameter, so the gradient of
that sum with respect to row ``s`` is seed ``s``'s meta-gradient, exactly as it would be alone
(to round-off: kernels see bigger batches). Each seed then takes its own optimizer step, keeps
its own data stream (its sampler), and writes its own run file (:func:`metalandscape.training.
train_runs_in_lockstep`).

Covered: the algorithms whose registry line says ``lockstep=True`` (MAML-family learners without
the coherence regularizer: MAML, First-Order MAML). :func:`lockstep_refusal` says why any other
group of runs trains one run at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalandscape.algorithms import ALGORITHMS

if TYPE_CHECKING:  # torch is imported by the functions that compute: planning stays light
    from torch import Tensor, nn

    from metalandscape.algorithms._shared import MetaGradient, TaskChunk
    from metalandscape.algorithms.maml import MetaLearner, MetaSettings
    from metalandscape.config import RunConfig
    from metalandscape.data.tasks import TaskBatch, TaskKind
    from metalandscape.functional import Params


#: On a CPU, Conv-4s wider than this gain nothing in lockstep: their kernels are
#: arithmetic-bound already (benchmarks/bench_throughput.py, 64 filters, meta-batch 32, 3 seeds:
#: 0.80–1.00× of one seed at a time over four runs), and one job per run schedules more freely.
LOCKSTEP_CPU_MAX_FILTERS = 32


def lockstep_refusal(configs: Sequence[RunConfig], device: str = "cpu") -> str | None:
    """Why ``configs`` should not train in lockstep on ``device`` (None when they should): at
    least two runs, of one covered algorithm and a built-in model (conv4, mlp), equal in every
    setting but a distinct ``seed``; on a CPU, a Conv-4 no wider than
    :data:`LOCKSTEP_CPU_MAX_FILTERS` filters."""
    if len(configs) < 2:
        return "lockstep needs at least two runs"
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        return f"lockstep runs need distinct seeds, got {seeds}"
    first = {**configs[0].to_dict(), "seed": None}
    for config in configs[1:]:
        other = {**config.to_dict(), "seed": None}
        if other != first:
            differing = sorted(key for key in first if first[key] != other.get(key))
            return f"lockstep runs may differ only by seed; they differ in {differing}"
    if not ALGORITHMS[configs[0].algorithm].lockstep:
        return (
            f"algorithm {configs[0].algorithm!r} has no lockstep path (covered: MAML-family "
            "learners without the coherence regularizer)"
        )
    model = configs[0].model_name
    if model not in ("conv4", "mlp"):
        return f"lockstep was measured on the built-in models only, not on {model!r}"
    filters = configs[0].model_settings.get("filters") or configs[0].filters or 64
    wide = model == "conv4" and filters > LOCKSTEP_CPU_MAX_FILTERS
    if device != "cuda" and wide:
        return (
            f"on a CPU a {filters}-filter network trains faster one seed at a time "
            f"(lockstep pays up to {LOCKSTEP_CPU_MAX_FILTERS} filters)"
        )
    return None


def _seed_rows(batches: Sequence[TaskBatch], chunk_size: int) -> list[tuple[TaskChunk, Tensor]]:
    """The seeds' meta-batches, seed after seed, in chunks of ``chunk_size`` tasks, each with
    the seed index of its tasks."""
    import torch

    from metalandscape.algorithms._shared import TaskChunk

    joined = [torch.cat(parts) for parts in zip(*(batch._fields() for batch in batches))]
    owners = torch.cat(
        [torch.full((len(batch),), seed, dtype=torch.long) for seed, batch in enumerate(batches)]
    ).to(joined[0].device)
    total = owners.numel()
    chunks = []
    for start in range(0, total, chunk_size):
        stop = min(start + chunk_size, total)
        parts = [part[start:stop] for part in joined]
        chunks.append((TaskChunk(*parts, tasks=stop - start, batched=True), owners[start:stop]))
    return chunks


def lockstep_meta_gradients(
    model: nn.Module,
    params: Sequence[Params],
    batches: Sequence[TaskBatch],
    kind: TaskKind,
    settings: MetaSettings,
) -> list[MetaGradient]:
    """Each seed's meta-gradient ∇θs mean_i L(D'ᵢ; θ̃ᵢ) of its own meta-batch, in one pass.

    ``params[s]`` is seed ``s``'s θs and ``batches[s]`` its meta-batch (equal sizes). Chunks hold
    ``task_chunk_size × seeds`` tasks (all of them when ``task_chunk_size`` is None).
    """
    import torch

    from metalandscape.algorithms._shared import MetaGradient, target_losses

    if settings.regularized:
        raise ValueError("the coherence-regularized update has no lockstep path")
    seeds = len(params)
    sizes = {len(batch) for batch in batches}
    if len(batches) != seeds or len(sizes) != 1:
        raise ValueError("lockstep needs one meta-batch of equal size per seed")
    tasks_per_seed = sizes.pop()
    stacked = {
        name: torch.stack([p[name].detach() for p in params]).requires_grad_(True)
        for name in params[0]
    }
    per_chunk = tasks_per_seed * seeds
    if settings.task_chunk_size is not None:
        per_chunk = min(per_chunk, settings.task_chunk_size * seeds)
    adapt_chunk = settings.adaptation(model, kind, create_graph=settings.second_order)
    loss_sums = torch.zeros(seeds, dtype=torch.float64)
    score_sums = torch.zeros(seeds, dtype=torch.float64)
    with torch.enable_grad():
        for chunk, owners in _seed_rows(batches, per_chunk):
            starts = {name: leaf.index_select(0, owners) for name, leaf in stacked.items()}
            adapted = adapt_chunk(starts, chunk)
            losses, scores = target_losses(model, adapted, chunk, kind)
            (losses.sum() / tasks_per_seed).backward()
            loss_sums.index_add_(0, owners.cpu(), losses.detach().double().cpu())
            score_sums.index_add_(0, owners.cpu(), scores.double().cpu())
    return [
        MetaGradient(
            gradients={name: leaf.grad[seed].clone() for name, leaf in stacked.items()},  # type: ignore[index]
            target_loss=float(loss_sums[seed]) / tasks_per_seed,
            target_score=float(score_sums[seed]) / tasks_per_seed,
        )
        for seed in range(seeds)
    ]


def lockstep_train_step(
    learners: Sequence[MetaLearner], iteration: int
) -> list[tuple[float, float]]:
    """One meta-update of every learner on its own meta-train batch ``iteration``, the
    meta-gradients computed in one lockstep pass; each learner's (target loss, score)."""
    first = learners[0]
    batches = []
    for learner in learners:
        if learner.sampler is None or learner.meta_batch_size is None:
            raise ValueError("lockstep training needs each learner's sampler and meta_batch_size")
        batch = learner.sampler.meta_batch("train", iteration, learner.meta_batch_size)
        batches.append(batch.to(learner.device))
    results = lockstep_meta_gradients(
        first.model, [learner.params for learner in learners], batches, first.kind, first.settings
    )
    for learner, result in zip(learners, results, strict=True):
        learner.descend(result.gradients)
    return [(result.target_loss, result.target_score) for result in results]
