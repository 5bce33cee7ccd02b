"""The paper's regularized MAML: MAML on θ̄ᵢ, the adaptations pulled toward their mean direction."""

from metalandscape.algorithms.maml import MetaAlgorithm

ALGORITHM = MetaAlgorithm(regularized=True)
