"""What every eigen-solver backend returns, the Lanczos backends' eigenvalue choices, and the
argument checks the backends share."""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field

from torch import Tensor, nn

LANCZOS_WHICH: tuple[str, ...] = ("LA", "LM")


@dataclass(frozen=True)
class EigenResult:
    """One top-eigenvalue estimate and what it cost."""

    value: float  # top (largest algebraic) eigenvalue; largest-magnitude for pyhessian / "LM"
    hessian_vector_products: int
    converged: bool
    # The unit Ritz vector of ``value`` where the backend gives it (``"lanczos_batched"``): the
    # warm start of the next solve of a nearby Hessian.
    vector: Tensor | None = field(default=None, compare=False, repr=False)


def check_which(which: str) -> None:
    """``ValueError`` unless ``which`` is one of :data:`LANCZOS_WHICH`."""
    if which not in LANCZOS_WHICH:
        raise ValueError(f"which must be one of {LANCZOS_WHICH}, got {which!r}")


def check_one_per_task(count: int, inputs: Sized, labels: Sized) -> None:
    """``ValueError`` unless there are ``count`` inputs and ``count`` labels, one per task."""
    if len(inputs) != count or len(labels) != count:
        raise ValueError(
            f"{count} params but {len(inputs)} inputs and {len(labels)} labels: give one per task"
        )


def batch_norms_with_running_statistics(model: nn.Module) -> list[str]:
    """Names of ``model``'s BatchNorm modules that track running statistics."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]
