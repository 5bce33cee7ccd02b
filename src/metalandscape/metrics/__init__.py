"""Metric plugins, the evaluation context they share, and the layout of metric files.

Importing this package is cheap (no torch): :data:`GRID_DIMS` is read by aggregation too.
"""

from metalandscape.runs import RUN_DIMS

#: The leading dimensions of every metric file and aggregate: the run's six, then ``epoch``.
GRID_DIMS: tuple[str, ...] = (*RUN_DIMS, "epoch")
