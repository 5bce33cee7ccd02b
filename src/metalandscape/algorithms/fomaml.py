"""First-Order MAML: MAML's meta-update without gradients through the inner loop."""

from metalandscape.algorithms.maml import MetaAlgorithm

ALGORITHM = MetaAlgorithm(second_order=False)
