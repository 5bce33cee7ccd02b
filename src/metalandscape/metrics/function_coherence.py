"""Function-space coherence: do adaptations to different tasks change the network's outputs alike?

For task i, Δfᵢ = f(θ̃ᵢ; X) − f(θs; X) is the change adaptation makes to the network's outputs on
a fixed probe set X; the measure is the mean cosine of Δfᵢ and Δfⱼ over task pairs i ≠ j, the
function-space counterpart of trajectory coherence (the mean cosine of θ̃ᵢ − θs). Unlike that one
it does not change under reparametrisations that leave the function alone — e.g. rescaling a
convolution in front of a BatchNorm, which the paper (§4.3) warns makes parameter-space geometry
misleading.

Probe set: the target inputs of ``probe_tasks`` tasks of ``probe_split``, numbered from
:data:`PROBE_TASK_OFFSET` so they are never one of the measured tasks; they come from the
evaluation seed, so every task, epoch and run is probed on the same inputs. Each probe task's
target set is one forward batch (BatchNorm uses batch statistics, as in an episode), so the
outputs are a fixed function of the parameters.

Output representation: classification logits centred per input (the mean over classes removed;
softmax ignores it), regression outputs as they are; flattened over probe inputs and outputs.
Cost: forward passes only — (tasks + 1) × probe_tasks batches; no Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalandscape.data.tasks import TaskKind
from metalandscape.functional import Params, forward
from metalandscape.metrics.base import EvaluationContext, Metric, Quantity, mean_and_ci95, setting
from metalandscape.metrics.builtin import SPLITS, PairSettings, off_diagonal_mean

PROBE_TASK_OFFSET = 1 << 30  # probe tasks are numbered from here: never a measured task


def probe_outputs(
    model: nn.Module, params: Params, probe_batches: Sequence[Tensor], kind: TaskKind
) -> Tensor:
    """The network's outputs on every probe batch, flattened; logits centred per input."""
    with torch.no_grad():
        outputs = [forward(model, params, inputs) for inputs in probe_batches]
    if kind == "classification":
        outputs = [logits - logits.mean(dim=-1, keepdim=True) for logits in outputs]
    return torch.cat([output.reshape(-1) for output in outputs])


def output_changes(
    model: nn.Module,
    start: Params,
    adapted: Sequence[Params],
    probe_batches: Sequence[Tensor],
    kind: TaskKind,
) -> Tensor:
    """``[tasks, outputs]``: Δfᵢ = f(θ̃ᵢ) − f(θs) on the probe batches."""
    reference = probe_outputs(model, start, probe_batches, kind)
    return torch.stack(
        [probe_outputs(model, params, probe_batches, kind) - reference for params in adapted]
    )


def mean_pairwise_cosine(vectors: Tensor) -> float:
    """Mean cosine of rows i ≠ j (a zero row counts as cosine 0)."""
    vectors = vectors.double()
    norms = vectors.norm(dim=1).clamp_min(torch.finfo(vectors.dtype).tiny)
    units = vectors / norms[:, None]
    return off_diagonal_mean(units @ units.T)


class FunctionCoherence(Metric):
    """E[cos(Δfᵢ, Δfⱼ)] over task pairs i ≠ j: coherence of adaptations in function space."""

    name = "function_coherence"
    description = "mean cosine between the output changes that adaptation makes, task pairs i != j"

    @dataclass(frozen=True)
    class Settings(PairSettings):
        """``tasks`` tasks of ``split``; probe set: targets of ``probe_tasks`` ``probe_split`` tasks."""

        probe_tasks: int = setting(
            4, minimum=1, description="tasks whose target inputs form the shared probe set"
        )
        probe_split: str = setting("test", choices=SPLITS)

    def compute(self, context: EvaluationContext) -> Mapping[str, Quantity]:
        settings = self.settings
        probes = [
            context.sampler.task(settings.probe_split, PROBE_TASK_OFFSET + index)
            .to(context.device, context.dtype)
            .target_inputs
            for index in range(settings.probe_tasks)
        ]
        changes = output_changes(
            context.model,
            context.start_params,
            context.adapted(settings.split, settings.tasks),
            probes,
            context.kind,
        )
        norms = changes.double().norm(dim=1).cpu().numpy()
        mean, ci95 = mean_and_ci95(norms)
        long_name = "L2 norm of the adaptation's output change on the probe set"
        return {
            "function_coherence": Quantity(
                mean_pairwise_cosine(changes),
                "mean cosine of adaptation output changes on the probe set, task pairs i != j",
                "1",
            ),
            "function_change_norm": Quantity(norms, long_name, "1", per_task=True),
            "function_change_norm_mean": Quantity(mean, f"mean {long_name}", "1"),
            "function_change_norm_ci95": Quantity(ci95, f"95% half-width of mean {long_name}", "1"),
        }
