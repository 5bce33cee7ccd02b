"""Metric plugins, the evaluation context they share, and the layout of metric files.

Importing this package is cheap (no torch): :data:`GRID_DIMS` is read by aggregation too.
"""

from importlib.metadata import EntryPoint, entry_points

from metalandscape.runs import RUN_DIMS

#: The entry-point group metric plugins register under (pyproject.toml).
ENTRY_POINT_GROUP = "metalandscape.metrics"


def metric_entry_points() -> dict[str, EntryPoint]:
    """Every entry point of the ``metalandscape.metrics`` group by name, none of them loaded."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


#: The leading dimensions of every metric file and aggregate: the run's six, then ``epoch``.
GRID_DIMS: tuple[str, ...] = (*RUN_DIMS, "epoch")
