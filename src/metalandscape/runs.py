"""A run's identity: one :class:`RunKey` (dataset, variant, way, shot, algorithm, seed).

The grid, checkpoint file names, metric-file coordinates, aggregation, figures and claims all
use this one type; nothing else spells the run dimensions or the run id format. Importing this
module is cheap (no torch).
"""

from __future__ import annotations

import re
from dataclasses import astuple, dataclass, fields
from typing import Any

#: The run dimensions, in the order of every aggregated Dataset's leading axes.
RUN_DIMS: tuple[str, ...] = ("dataset", "variant", "way", "shot", "algorithm", "seed")

#: A run id, as in ``results/runs/<run id>.h5``: ``fontglot-default-5way1shot-maml-seed0``.
RUN_ID_PATTERN = r"[a-z]+-[A-Za-z0-9]+-\d+way\d+shot-[a-z]+-seed\d+"
_RUN_ID = re.compile(
    r"(?P<dataset>[a-z]+)-(?P<variant>[A-Za-z0-9]+)-(?P<way>\d+)way(?P<shot>\d+)shot-"
    r"(?P<algorithm>[a-z]+)-seed(?P<seed>\d+)"
)


@dataclass(frozen=True, order=True)
class RunKey:
    """Where one training run sits in the experiment grid."""

    dataset: str
    variant: str
    way: int
    shot: int
    algorithm: str
    seed: int

    @property
    def id(self) -> str:
        """The run id used in file names and Snakemake wildcards."""
        return (
            f"{self.dataset}-{self.variant}-{self.way}way{self.shot}shot-"
            f"{self.algorithm}-seed{self.seed}"
        )

    @classmethod
    def parse(cls, run_id: str) -> RunKey:
        """The key of a run id; ``ValueError`` naming the id when it is malformed."""
        match = _RUN_ID.fullmatch(run_id)
        if match is None:
            raise ValueError(
                f"{run_id!r} is not a run id like 'fontglot-default-5way1shot-maml-seed0'"
            )
        parts = match.groupdict()
        return cls(
            dataset=parts["dataset"],
            variant=parts["variant"],
            way=int(parts["way"]),
            shot=int(parts["shot"]),
            algorithm=parts["algorithm"],
            seed=int(parts["seed"]),
        )

    @classmethod
    def of(cls, config: Any) -> RunKey:
        """The key of a resolved run config (anything with the RunConfig attributes)."""
        return cls(
            dataset=config.dataset,
            variant=config.variant,
            way=int(config.n_way),
            shot=int(config.k_shot),
            algorithm=config.algorithm,
            seed=int(config.seed),
        )

    def coordinates(self) -> dict[str, Any]:
        """``{dimension: value}`` in :data:`RUN_DIMS` order."""
        return dict(zip(RUN_DIMS, astuple(self)))


assert tuple(field.name for field in fields(RunKey)) == RUN_DIMS
