"""Sharp-MAML (Abbas et al., ICML 2022): MAML with sharpness-aware minimization (SAM) in the
meta-update (upper level), in each inner step (lower level), or both.

Choices, after the paper and its public code (mominabbass/Sharp-MAML), which this module follows
without copying:

- Perturbation: SAM's, ε = ρ·g/(‖g‖₂ + 1e-12), the norm over all parameters (per task in the
  inner loop); no adaptive (ASAM) scaling.
- Upper level (radius ``sharp_upper_radius``): the MAML meta-gradient g at θ gives θ' = θ + ε,
  ε not differentiated (SAM's first step under no-grad); the meta-update uses the meta-gradient
  at θ' of the same meta-batch (SAM's second step; Adam as the base optimizer). Training logs
  the target loss at θ.
- Lower level (radius ``sharp_lower_radius``): each inner step is φ ← φ − α·∇L(φ + ε(φ)), ε(φ)
  from ∇L(φ) on the support set; with second order the meta-gradient differentiates through ε
  as well (the public code's inner gradients keep their graph, the perturbation included).
- Evaluation adapts with the lower-level step when the lower level is on (the public code's
  ``adapt`` applies it at meta-test too), so every metric sees Sharp-MAML's own θ̃ᵢ.
- Both radii 0: exactly MAML's meta-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from metalandscape.algorithms._shared import ChunkAdaptation, MetaGradient, support_adaptation
from metalandscape.algorithms.maml import MetaAlgorithm, MetaLearner, MetaSettings, meta_gradient
from metalandscape.data.tasks import TaskBatch, TaskKind
from metalandscape.functional import Params, adapt

if TYPE_CHECKING:
    from metalandscape.config import RunConfig


@dataclass(frozen=True)
class SharpSettings(MetaSettings):
    """MAML's settings with a SAM radius per level (0: that level is plain MAML)."""

    upper_radius: float = 0.0
    lower_radius: float = 0.0

    def adaptation(
        self, model: nn.Module, kind: TaskKind, *, create_graph: bool
    ) -> ChunkAdaptation:
        """The inner loop, each step sharpness-aware with the lower radius."""
        return support_adaptation(
            adapt,
            model,
            kind=kind,
            steps=self.inner_steps,
            step_size=self.inner_step_size,
            create_graph=create_graph,
            sam_radius=self.lower_radius,
        )


def sharp_meta_gradient(
    model: nn.Module, params: Params, batch: TaskBatch, kind: TaskKind, settings: SharpSettings
) -> MetaGradient:
    """Sharp-MAML's meta-gradient of one meta-batch (the module docstring says how)."""
    at_start = meta_gradient(model, params, batch, kind, settings)
    if not settings.upper_radius:
        return at_start
    gradients = at_start.gradients
    norm = torch.sqrt(sum(g.pow(2).sum() for g in gradients.values()))
    scale = settings.upper_radius / (norm + 1e-12)
    perturbed = {name: p.detach() + scale * gradients[name] for name, p in params.items()}
    at_perturbed = meta_gradient(model, perturbed, batch, kind, settings)
    return MetaGradient(at_perturbed.gradients, at_start.target_loss, at_start.target_score)


class SharpLearner(MetaLearner):
    """θs and its Adam optimizer, updated with Sharp-MAML's meta-gradient."""

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """Sharp-MAML's meta-gradient of ``batch`` at θs."""
        return sharp_meta_gradient(self.model, self.params, batch, self.kind, self.settings)


@dataclass(frozen=True)
class SharpAlgorithm(MetaAlgorithm):
    """Sharp-MAML: MAML's algorithm with SAM at the levels the run's ``sharp_level`` names."""

    learner_type = SharpLearner

    def settings(self, config: RunConfig) -> SharpSettings:
        """The run's settings: the radius of a level ``sharp_level`` leaves out is 0."""
        upper = config.sharp_level in ("upper", "both")
        lower = config.sharp_level in ("lower", "both")
        base = super().settings(config)
        return SharpSettings(
            **{field: getattr(base, field) for field in MetaSettings.__dataclass_fields__},
            upper_radius=config.sharp_upper_radius if upper else 0.0,
            lower_radius=config.sharp_lower_radius if lower else 0.0,
        )

    meta_settings = settings

    def learner_settings(self, config: RunConfig, device: torch.device) -> SharpSettings:
        """The run's settings with tasks per ``vmap`` call by device."""
        base = super().learner_settings(config, device)
        return replace(self.settings(config), task_chunk_size=base.task_chunk_size)

    def evaluation_adaptation_options(self, config: RunConfig) -> dict[str, Any]:
        """Evaluation adapts with the lower-level SAM step when that level is on."""
        radius = self.settings(config).lower_radius
        return {"sam_radius": radius} if radius else {}


ALGORITHM = SharpAlgorithm()
