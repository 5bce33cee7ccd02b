"""What every eigen-solver backend returns, and the eigenvalue choices of the Lanczos backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

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
