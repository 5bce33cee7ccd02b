"""Shared figure plumbing: settings, seed statistics, styling, atomic PDF + PNG output.

Figures are drawn only from an aggregated Dataset (see :mod:`metalandscape.aggregate`). Lines
are means over seeds with the band of :mod:`metalandscape.statistics` (Student-t 95% interval,
only with ≥ 3 seeds; below that each seed is drawn as a thin line). Algorithm names, roles and
legend titles come from the registry (:mod:`metalandscape.algorithms`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.algorithms import ALGORITHMS, algorithm_names
from metalandscape.atomic import atomic_output
from metalandscape.data import DATASET_REGISTRY
from metalandscape.figures import FigureError
from metalandscape.figures.spec import lazy_import
from metalandscape.runs import RUN_DIMS, RunKey
from metalandscape.statistics import mean_interval

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

mpl = lazy_import("matplotlib")
sns = lazy_import("seaborn")
stats = lazy_import("scipy.stats")

META_LEARNERS = algorithm_names("meta-learner")
BASELINES = algorithm_names("baseline")
ALGORITHM_ORDER = algorithm_names()
#: The run dimensions a figure panel fixes (a run key without algorithm and seed).
SETTING_DIMS = RUN_DIMS[:4]
PNG_DPI = 150

#: Aggregate variables that several figures draw.
TEST_ACCURACY = "test_target_accuracy_mean"
TRAIN_ACCURACY = "train_target_accuracy_mean"
TEST_MSE = "test_target_mse_mean"
FLATNESS = "hessian_top_eigenvalue_mean"
TRAJECTORY_COHERENCE = "trajectory_coherence"
GRADIENT_COHERENCE = "gradient_coherence"
#: Their axis and legend labels.
TEST_ACCURACY_LABEL = "meta-test target accuracy"
TRAJECTORY_COHERENCE_LABEL = r"trajectory coherence E[$\hat\theta_i^\top\hat\theta_j$]"
GRADIENT_COHERENCE_LABEL = r"gradient coherence E[$g_i^\top g_j$]"
#: The meta-test score of a setting's kind: accuracy, or MSE on sinusoid regression.
SCORES = {
    "classification": (TEST_ACCURACY, TEST_ACCURACY_LABEL),
    "regression": (TEST_MSE, "meta-test target MSE"),
}
#: Fewest finite epochs a seed needs for a Pearson R over epochs (as
#: :func:`~metalandscape.statistics.per_seed_correlation` requires).
MIN_EPOCHS_FOR_CORRELATION = 3


@dataclass(frozen=True, order=True)
class Setting:
    """One experimental setting: a panel of a figure."""

    dataset: str
    variant: str
    way: int
    shot: int

    @property
    def title(self) -> str:
        """Panel title, e.g. ``Omniglot`` over ``5-way 1-shot`` (two lines) or ``sinusoid, K=10``."""
        spec = DATASET_REGISTRY.get(self.dataset)
        name = spec.title if spec is not None else self.dataset
        if self.dataset == "sinusoid":
            text = f"{name}, K={self.shot}"
        else:
            text = f"{name}\n{self.way}-way {self.shot}-shot"
        return text if self.variant == "default" else f"{text} [{self.variant}]"

    def select(self) -> dict[str, object]:
        """``Dataset.sel`` keys of this setting."""
        return {dim: getattr(self, dim) for dim in SETTING_DIMS}

    @classmethod
    def of(cls, key: RunKey) -> Setting:
        """The setting (panel) a run belongs to."""
        return cls(**{dim: getattr(key, dim) for dim in SETTING_DIMS})

    def run(self, algorithm: str, seed: int) -> RunKey:
        """The run of ``algorithm`` and ``seed`` in this setting."""
        return RunKey(**self.select(), algorithm=algorithm, seed=seed)  # type: ignore[arg-type]

    def score(self) -> tuple[str, str]:
        """(variable, label) of this setting's meta-test score (see :data:`SCORES`)."""
        return SCORES["regression" if self.dataset == "sinusoid" else "classification"]


def algorithm_label(algorithm: str) -> str:
    """Legend name of an algorithm (its registered title)."""
    spec = ALGORITHMS.get(algorithm)
    return spec.title if spec is not None else algorithm


#: Colours of seaborn's colorblind palette in registry order (MAML, First-Order MAML,
#: regularized MAML, finetune, Reptile, ANIL, Meta-SGD, then others): blue, green, purple,
#: vermillion, grey, brown, pink, sky blue, yellow, orange. Orange comes last: next to the
#: finetune baseline's vermillion it read as the same colour; sky blue next to MAML's blue too.
PALETTE_ORDER = (0, 2, 4, 3, 7, 5, 6, 9, 8, 1)


def algorithm_color(algorithm: str) -> tuple[float, float, float]:
    """One colour per algorithm, the same in every figure (by registry position)."""
    palette = sns.color_palette("colorblind", 10)
    if algorithm in ALGORITHM_ORDER:
        position = ALGORITHM_ORDER.index(algorithm)
    else:
        position = len(ALGORITHM_ORDER) + sum(map(ord, algorithm)) % 3
    return palette[PALETTE_ORDER[position % len(PALETTE_ORDER)]]


def ordered_algorithms(algorithms: Sequence[str]) -> list[str]:
    """``algorithms`` in the figures' fixed order (MAML first)."""
    known = [a for a in ALGORITHM_ORDER if a in algorithms]
    return known + sorted(set(algorithms) - set(known))


def has_values(data: xr.DataArray) -> bool:
    """Whether ``data`` holds at least one finite value."""
    return bool(np.isfinite(data.values).any())


def missing_variables(dataset: xr.Dataset, variables: Sequence[str]) -> list[str]:
    """Those of ``variables`` that ``dataset`` lacks."""
    return [name for name in variables if name not in dataset.data_vars]


def settings_with_data(
    dataset: xr.Dataset,
    variables: Sequence[str],
    *,
    algorithms: Sequence[str] = META_LEARNERS,
    datasets: Sequence[str] | None = None,
) -> list[Setting]:
    """Settings where some algorithm of ``algorithms`` has finite values of every variable."""
    if missing_variables(dataset, variables):
        return []
    present = [a for a in dataset["algorithm"].values.tolist() if a in algorithms]
    if not present:
        return []
    found = []
    for name in dataset["dataset"].values.tolist():
        if datasets is not None and name not in datasets:
            continue
        for variant in dataset["variant"].values.tolist():
            for way in dataset["way"].values.tolist():
                for shot in dataset["shot"].values.tolist():
                    setting = Setting(name, variant, int(way), int(shot))
                    if algorithms_with_data(dataset, setting, variables, algorithms):
                        found.append(setting)
    return sorted(found)


def algorithms_with_data(
    dataset: xr.Dataset,
    setting: Setting,
    variables: Sequence[str],
    algorithms: Sequence[str] = META_LEARNERS,
) -> list[str]:
    """Algorithms of ``algorithms`` with finite values of every variable in ``setting``."""
    present = [a for a in dataset["algorithm"].values.tolist() if a in algorithms]
    chosen = dataset[list(variables)].sel(setting.select())
    return ordered_algorithms(
        [
            algorithm
            for algorithm in present
            if all(has_values(chosen[name].sel(algorithm=algorithm)) for name in variables)
        ]
    )


def seed_by_epoch(
    dataset: xr.Dataset, variable: str, setting: Setting, algorithm: str
) -> xr.DataArray:
    """``variable`` of one setting and algorithm as (seed, epoch), unmeasured epochs dropped."""
    data = dataset[variable].sel(setting.select()).sel(algorithm=algorithm)
    data = data.transpose("seed", "epoch")
    return data.dropna("epoch", how="all").dropna("seed", how="all")


def plot_mean_band(
    axes: Axes,
    x: np.ndarray,
    samples: np.ndarray,
    *,
    color: tuple[float, float, float] | str,
    label: str | None = None,
    marker: str = "o",
    linestyle: str = "-",
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> None:
    """Mean over seeds (axis 0 of ``samples``) with its 95% band (≥ 3 seeds), else thin seeds.

    ``bounds``: the range of the quantity (accuracy: (0, 1)); the band is clipped to it.
    """
    samples = np.asarray(samples, dtype=np.float64)
    interval = mean_interval(samples, bounds)
    mean = interval.mean
    shown = np.isfinite(mean)
    x = np.asarray(x, dtype=np.float64)
    axes.plot(
        x[shown],
        mean[shown],
        color=color,
        label=label,
        marker=marker,
        markersize=3.5,
        linestyle=linestyle,
        linewidth=1.6,
    )
    banded = shown & np.isfinite(interval.low)
    if banded.any():
        axes.fill_between(
            x[banded], interval.low[banded], interval.high[banded], color=color, alpha=0.2, lw=0
        )
    if samples.ndim == 2 and samples.shape[0] > 1 and not banded.any():
        for seed in samples:
            drawn = np.isfinite(seed)
            axes.plot(x[drawn], seed[drawn], color=color, linewidth=0.6, alpha=0.45)


def variable_bounds(variable: str) -> tuple[float, float]:
    """The range a measured variable lives in (accuracy [0, 1]; eigenvalue, MSE, norm ≥ 0)."""
    if "accuracy" in variable:
        return (0.0, 1.0)
    if any(part in variable for part in ("eigenvalue", "mse", "norm")):
        return (0.0, np.inf)
    return (-np.inf, np.inf)


def plot_seed_band(
    axes: Axes,
    dataset: xr.Dataset,
    variable: str,
    setting: Setting,
    algorithm: str,
    **style: object,
) -> None:
    """``variable`` of one setting and algorithm over epochs: mean, band or seeds, in range."""
    data = seed_by_epoch(dataset, variable, setting, algorithm)
    plot_mean_band(
        axes,
        checkpoint_x(data),
        data.values,
        bounds=variable_bounds(variable),
        **style,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn's paper style, applied only inside the block."""
    with (
        mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": "medium"}),
        sns.axes_style("whitegrid"),
        sns.plotting_context("paper", font_scale=1.15),
    ):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def integer_ticks(axes: Axes) -> None:
    """Integer-only ticks on the x axis (epochs)."""
    axes.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, nbins=6))


#: The x-axis label of every curve over checkpoints (the aggregate's ``iteration``).
ITERATION_LABEL = "meta-training iteration"
EPOCH_LABEL = "meta-training epoch"


def checkpoint_x(data: xr.DataArray) -> np.ndarray:
    """The x values of ``data`` (seed, epoch): meta-iterations at each checkpoint, else epochs."""
    if "iteration" in data.coords:
        iterations = np.asarray(data["iteration"].transpose(..., "epoch").values, dtype=float)
        iterations = iterations.reshape(-1, iterations.shape[-1])
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            x = np.nanmax(iterations, axis=0)
        if np.isfinite(x).all():
            return x
    return np.asarray(data["epoch"].values, dtype=float)


def log_spaced(dataset: xr.Dataset) -> bool:
    """Whether some run's checkpoints are not evenly spaced (a log-spaced schedule)."""
    if "iteration" not in dataset.coords:
        return False
    iterations = dataset["iteration"].transpose(..., "epoch")
    epochs = np.asarray(dataset["epoch"].values, dtype=float)
    values = np.asarray(iterations.values, dtype=float).reshape(-1, epochs.size)
    for row in values:
        known = np.isfinite(row) & (epochs > 0)
        if known.sum() >= 2:
            per_epoch = row[known] / epochs[known]
            if not np.allclose(per_epoch, per_epoch[0]):
                return True
    return False


def checkpoint_label(dataset: xr.Dataset) -> str:
    """The x-axis label of curves over checkpoints: meta-training iteration, else epoch."""
    return ITERATION_LABEL if "iteration" in dataset.coords else EPOCH_LABEL


def checkpoint_axis(axes: Axes, dataset: xr.Dataset) -> None:
    """Integer ticks on the x axis, or a symlog scale for log-spaced checkpoint schedules."""
    if log_spaced(dataset):
        axes.set_xscale("symlog", linthresh=1.0)
        axes.set_xlim(left=0)
        axes.xaxis.set_major_locator(mpl.ticker.SymmetricalLogLocator(base=10, linthresh=1.0))
        axes.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        axes.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(_short_count))
    else:
        axes.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, nbins=6))


def _short_count(value: float, _position: object = None) -> str:
    """Compact tick text of an iteration count: 0, 1, 10, 100, 1k, 10k."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """The PDF and PNG paths of ``out`` (same stem, ``.pdf`` and ``.png``)."""
    out = Path(out)
    if out.suffix.lower() not in (".pdf", ".png"):
        raise FigureError(f"figure output {out} must end in .pdf (a .png is written next to it)")
    return out.with_suffix(".pdf"), out.with_suffix(".png")


def save_figure(figure: Figure, out: str | Path) -> tuple[Path, Path]:
    """Write ``figure`` as PDF and PNG next to each other, both whole or neither."""
    pdf_path, png_path = output_paths(out)
    with (
        figure_style(),
        _quiet_font_subsetting(),
        atomic_output(pdf_path) as pdf_temporary,
        atomic_output(png_path) as png_temporary,
    ):
        figure.savefig(pdf_temporary, format="pdf")
        figure.savefig(png_temporary, format="png", dpi=PNG_DPI)
    return pdf_path, png_path


@contextlib.contextmanager
def _quiet_font_subsetting() -> Iterator[None]:
    """Mute fontTools' per-glyph INFO log that PDF font subsetting emits."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
