"""The paper's claims as a declared table of (claim, statistic, threshold) and one small engine.

Every claim is checked per setting (dataset, variant, way, shot, algorithm: the run key without
the seed) on an aggregated Dataset (dims ``dataset, variant, way, shot, algorithm, seed,
epoch``). :data:`CLAIMS` lists each claim with the function that measures its statistics per
seed; :func:`check_claims` turns every measurement into a row: its mean over seeds and 95%
interval (:mod:`metalandscape.statistics`: Student-t with ≥ 3 seeds, none below; correlations in
Fisher z), the threshold (from the config), and the verdict: ``holds`` when the mean passes the
threshold, ``does not hold`` otherwise; ``ci_excludes_threshold`` says whether the interval lies
wholly on the mean's side (false without an interval).

Windows: the paper plots epochs 1-100 of 500 meta-iterations each, never θ0. Every over-epochs
statistic is computed over a declared window of meta-iterations (:class:`Window`, the config's
``claims.window``; by default from iteration 500, the paper's first plotted point), read from
the aggregate's ``iteration`` coordinate. A setting with fewer than ``min_window_checkpoints``
checkpoints in the window gets the verdict ``too few checkpoints in the window``, never a
number. What comes before the window is reported in rows of its own, phase ``early phase
(extension)``. :func:`window_sensitivity` recomputes every statistic with the window starting at
each of :data:`WINDOW_STARTS`, so a reader sees where a verdict flips.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from metalandscape.aggregate import INNER_STEP_SIZE, INNER_STEPS, ITERATION, normalized_sharpness
from metalandscape.algorithms import ALGORITHMS, algorithm_names
from metalandscape.data import DATASET_REGISTRY
from metalandscape.runs import RUN_DIMS
from metalandscape.statistics import INTERVAL_DESCRIPTION, per_seed_correlation, scalar_interval

SETTING_DIMS = tuple(dim for dim in RUN_DIMS if dim != "seed")


def _data_label(dataset: str) -> str:
    """The data set as the claims table names it (its registry title)."""
    spec = DATASET_REGISTRY.get(dataset)
    if spec is None:
        return dataset
    return spec.claims_title or spec.title


class ClaimsError(ValueError):
    """Bad thresholds or an input that is not an aggregated Dataset."""


@dataclass(frozen=True)
class Window:
    """Meta-iterations ``from_iteration`` to ``to_iteration`` (both inclusive; None: the end)."""

    from_iteration: int = 500
    to_iteration: int | None = None

    def contains(self, iterations: np.ndarray) -> np.ndarray:
        """Which of ``iterations`` lie in the window (NaN: none)."""
        iterations = np.asarray(iterations, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            inside = iterations >= self.from_iteration
            if self.to_iteration is not None:
                inside &= iterations <= self.to_iteration
        return inside & np.isfinite(iterations)

    @staticmethod
    def from_mapping(value: Any) -> Window:
        """The window of a config mapping ``{from_iteration: N, to_iteration: M or null}``."""
        if not isinstance(value, Mapping):
            raise ClaimsError(
                f"claims.window must be a mapping like {{from_iteration: 500}}, got {value!r}"
            )
        unknown = sorted(set(value) - {"from_iteration", "to_iteration"})
        if unknown:
            raise ClaimsError(
                f"claims.window has unknown key(s) {unknown}; use from_iteration, to_iteration"
            )
        start, stop = value.get("from_iteration", 500), value.get("to_iteration")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ClaimsError(
                f"claims.window.from_iteration must be an integer >= 0, got {start!r}"
            )
        if stop is not None and (
            isinstance(stop, bool) or not isinstance(stop, int) or stop <= start
        ):
            raise ClaimsError(
                f"claims.window.to_iteration must be null or an integer above from_iteration "
                f"({start}), got {stop!r}"
            )
        return Window(start, stop)

    def describe(self) -> str:
        """The window in words: ``iterations ≥ 500`` or ``iterations 500–5,000``."""
        if self.to_iteration is None:
            return f"iterations ≥ {self.from_iteration:,}"
        return f"iterations {self.from_iteration:,}–{self.to_iteration:,}"


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of every claim and the window they are judged on; the workflow's config sets
    them (``claims:``)."""

    window: Window = Window()
    min_window_checkpoints: int = 5
    flatness_rise: float = 0.05
    flatness_drop: float = 0.05
    support_loss_spearman: float = -0.5
    support_loss_decrease_fraction: float = 0.6
    overtraining_correlation: float = 0.3
    overtraining_min_epochs_after_peak: int = 3
    trajectory_coherence_correlation: float = 0.5
    gradient_coherence_correlation: float = 0.5
    finetune_coherence_ratio: float = 0.25
    function_coherence_margin: float = -0.1
    overtraining_variants: tuple[str, ...] = ("long",)
    gradient_coherence_variants: tuple[str, ...] = ()
    edge_of_stability_support_loss: float = 0.3
    edge_of_stability_distance: float = 0.2
    intervention_min_relative_change: float = 0.05

    @property
    def edge_of_stability_low(self) -> float:
        """Least E[α·λmax(θ̃)/2] that counts as "at 2/α" (claim 8)."""
        return 1.0 - self.edge_of_stability_distance

    @property
    def edge_of_stability_high(self) -> float:
        """Largest E[α·λmax(θ̃)/2] that counts as "at 2/α" (claim 8)."""
        return 1.0 + self.edge_of_stability_distance

    @property
    def early_window(self) -> Window | None:
        """The early phase: iterations before the window (None when the window starts at 0)."""
        start = self.window.from_iteration
        return Window(0, start - 1) if start > 0 else None

    @staticmethod
    def from_mapping(values: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from a config mapping; every value typed, finite and in range."""
        values = dict(values or {})
        known = {f.name for f in fields(Thresholds)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClaimsError(f"unknown claims threshold(s) {unknown}; known: {sorted(known)}")
        for key, value in values.items():
            if key == "window":
                values[key] = Window.from_mapping(value)
            else:
                values[key] = _checked_threshold(key, value)
        return Thresholds(**values)


#: (low, high) of each numeric threshold, both inclusive.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    "min_window_checkpoints": (2, math.inf),
    "edge_of_stability_support_loss": (0.0, math.inf),
    "edge_of_stability_distance": (0.0, math.inf),
    "intervention_min_relative_change": (0.0, math.inf),
    "flatness_rise": (0.0, math.inf),
    "flatness_drop": (0.0, math.inf),
    "support_loss_spearman": (-1.0, 1.0),
    "support_loss_decrease_fraction": (0.0, 1.0),
    "overtraining_correlation": (-1.0, 1.0),
    "overtraining_min_epochs_after_peak": (3, math.inf),
    "trajectory_coherence_correlation": (-1.0, 1.0),
    "gradient_coherence_correlation": (-1.0, 1.0),
    "finetune_coherence_ratio": (0.0, math.inf),
    "function_coherence_margin": (-2.0, 2.0),
}


def _checked_threshold(key: str, value: Any) -> Any:
    """``value`` of threshold ``key`` if typed, finite and in range, else a ClaimsError."""
    if key not in THRESHOLD_RANGES:  # the variant lists
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ClaimsError(f"claims.{key} must be a list of variant names, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise ClaimsError(f"claims.{key} must list variant names (strings), got {value!r}")
        return tuple(value)
    low, high = THRESHOLD_RANGES[key]
    integer = isinstance(Thresholds.__dataclass_fields__[key].default, int)
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ClaimsError(f"claims.{key} must be {kind} in [{low:g}, {high:g}], got {value!r}")
    if not low <= value <= high:
        raise ClaimsError(f"claims.{key} = {value!r} is out of range; use [{low:g}, {high:g}]")
    return value


#: The phase of a row judged in the configured window (where the paper looked).
PAPER_WINDOW = "paper window"
#: The phase of a row over the iterations before the window: θ0 and the transient.
EARLY_PHASE = "early phase (extension)"
#: The phase of a claim judged over every checkpoint (an extension's own selection).
ALL_CHECKPOINTS = "all checkpoints (extension)"
#: The verdict of a setting with fewer checkpoints in its window than the config's minimum.
TOO_FEW = "too few checkpoints in the window"
#: Starts of the windows :func:`window_sensitivity` tries (each kept where ≥ the minimum
#: checkpoints remain).
WINDOW_STARTS: tuple[int, ...] = (0, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)


@dataclass
class ClaimRow:
    """One claim checked on one setting."""

    claim: int
    title: str
    data: str
    dataset: str
    variant: str
    way: int
    shot: int
    algorithm: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    threshold: float
    direction: str
    seeds: int
    phase: str = PAPER_WINDOW
    window: str = ""
    checkpoints: int = 0
    primary: bool = True
    too_few: bool = False
    verdict: str = field(init=False)
    ci_excludes_threshold: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.too_few:
            self.value = self.ci_low = self.ci_high = math.nan
            self.verdict, self.ci_excludes_threshold = TOO_FEW, False
            return
        if not math.isfinite(self.value):
            self.verdict, self.ci_excludes_threshold = "not measurable", False
            return
        above = self.direction == ">="
        passes = self.value >= self.threshold if above else self.value <= self.threshold
        self.verdict = "holds" if passes else "does not hold"
        bound = self.ci_low if above == passes else self.ci_high
        if not math.isfinite(bound):
            self.ci_excludes_threshold = False
        elif passes:
            self.ci_excludes_threshold = bool(
                bound >= self.threshold if above else bound <= self.threshold
            )
        else:
            self.ci_excludes_threshold = bool(
                bound < self.threshold if above else bound > self.threshold
            )


@dataclass(frozen=True)
class Measurement:
    """One statistic of one setting, per seed, with the threshold it is held to."""

    key: Mapping[str, Any]
    statistic: str
    per_seed: Sequence[float]
    threshold: str  # a Thresholds field
    direction: str  # ">=" or "<="
    correlation: bool = False  # summarise in Fisher z
    bounds: tuple[float, float] = (-math.inf, math.inf)  # the range the statistic lives in
    over_epochs: bool = True  # a statistic over checkpoints (False: of one checkpoint)
    primary: bool = True  # False: a second view of a claim another statistic already gives


Measure = Callable[[xr.Dataset, Thresholds], Iterator[Measurement]]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: its number, title and the function measuring its statistics.

    ``extension``: a statistic this project adds, not a claim of the paper; its title says so
    in every table.
    """

    number: int
    title: str
    measure: Measure
    extension: bool = False
    windowed: bool = True  # judged in the window (and its early phase), else on all checkpoints

    @property
    def shown_title(self) -> str:
        """The title as tables show it (extensions marked)."""
        return (
            f"[extension, not a claim of the paper] {self.title}" if self.extension else self.title
        )


#: The range of a ratio of absolute values, or of a relative rise/drop from a maximum.
NON_NEGATIVE = (0.0, math.inf)
META_LEARNERS = algorithm_names("meta-learner")
BASELINES = algorithm_names("baseline")
#: The meta-learner baselines are compared with (the first registered: MAML).
REFERENCE = META_LEARNERS[0]


def _settings(dataset: xr.Dataset, variable: str) -> Iterator[tuple[dict[str, Any], xr.DataArray]]:
    """Each setting with a measured series of ``variable``: array (seed, epoch)."""
    if variable not in dataset:
        return
    data = dataset[variable]
    extra = [d for d in data.dims if d not in (*SETTING_DIMS, "seed", "epoch")]
    if extra:
        raise ClaimsError(f"{variable} has per-task dims {extra}; use its _mean variable")
    stacked = data.stack(setting=SETTING_DIMS)
    for index in range(stacked.sizes["setting"]):
        series = stacked.isel(setting=index).transpose("seed", "epoch")
        if not np.isfinite(series.values).any():
            continue
        key = {dim: _plain(series[dim].item()) for dim in SETTING_DIMS}
        yield key, series.dropna("seed", how="all").dropna("epoch", how="all")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _per_seed(series: xr.DataArray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(epochs, values) of each seed, finite values only."""
    for seed_index in range(series.sizes["seed"]):
        row = series.isel(seed=seed_index)
        mask = np.isfinite(row.values)
        yield row["epoch"].values[mask].astype(np.float64), row.values[mask].astype(np.float64)


def _paired(a: xr.DataArray, b: xr.DataArray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(a, b) over epochs of each seed of ``a``, aligned, pairs where both are finite."""
    a, b = xr.align(a, b, join="inner")
    for seed in a["seed"].values:
        x, y = a.sel(seed=seed).values, b.sel(seed=seed).values
        mask = np.isfinite(x) & np.isfinite(y)
        yield x[mask], y[mask]


def _of_setting(dataset: xr.Dataset, variable: str, key: Mapping[str, Any]) -> xr.DataArray:
    return dataset[variable].sel({d: key[d] for d in SETTING_DIMS})


def measure_flatness_peak(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """1: E[λmax] rises from the first checkpoint (θ0 in the early phase) to an interior peak,
    then falls (meta-learners)."""
    for key, series in _settings(dataset, "hessian_top_eigenvalue_mean"):
        if key["algorithm"] not in META_LEARNERS:
            continue
        rises, drops = [], []
        for _, values in _per_seed(series):
            peak = int(np.argmax(values)) if values.size >= 3 else 0
            scale = abs(values[peak]) if values.size >= 3 else math.nan
            rises.append((values[peak] - values[0]) / scale if values.size >= 3 else math.nan)
            drops.append((values[peak] - values[-1]) / scale if values.size >= 3 else math.nan)
        rise, drop = "relative rise first→peak of E[λmax]", "relative drop peak→last of E[λmax]"
        yield Measurement(key, rise, rises, "flatness_rise", ">=", bounds=NON_NEGATIVE)
        yield Measurement(key, drop, drops, "flatness_drop", ">=", bounds=NON_NEGATIVE)


def measure_support_loss(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """2: support loss at θ̃ᵢ decreases over epochs (meta-learners)."""
    for key, series in _settings(dataset, "support_loss_mean"):
        if key["algorithm"] not in META_LEARNERS:
            continue
        seeds = list(_per_seed(series))
        rhos = [per_seed_correlation(epochs, values, "spearman") for epochs, values in seeds]
        fractions = [
            float(np.mean(np.diff(values) < 0)) if values.size > 1 else math.nan
            for _, values in seeds
        ]
        yield Measurement(
            key,
            "Spearman ρ(epoch, support loss)",
            rhos,
            "support_loss_spearman",
            "<=",
            correlation=True,
        )
        yield Measurement(
            key,
            "fraction of epoch-to-epoch decreases",
            fractions,
            "support_loss_decrease_fraction",
            ">=",
            bounds=(0.0, 1.0),
            primary=False,
        )


def measure_overtraining(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """3: after the accuracy peak, curvature and accuracy fall together."""
    if "test_target_accuracy_mean" not in dataset:
        return
    for key, curvature in _settings(dataset, "hessian_top_eigenvalue_mean"):
        if key["variant"] not in t.overtraining_variants:
            continue
        accuracy = _of_setting(dataset, "test_target_accuracy_mean", key)
        correlations = []
        for curv, acc in _paired(curvature, accuracy):
            if acc.size == 0:
                continue
            after = slice(int(np.argmax(acc)), None)
            enough = acc[after].size >= t.overtraining_min_epochs_after_peak
            correlations.append(
                per_seed_correlation(curv[after], acc[after]) if enough else math.nan
            )
        yield Measurement(
            key,
            "Pearson r(E[λmax], accuracy) after the accuracy peak",
            correlations,
            "overtraining_correlation",
            ">=",
            correlation=True,
        )


def _score(dataset: xr.Dataset) -> tuple[str, str, float] | None:
    """(variable, label, sign) of the generalization score: accuracy, or −MSE."""
    if "test_target_accuracy_mean" in dataset:
        return "test_target_accuracy_mean", "accuracy", 1.0
    if "test_target_mse_mean" in dataset:
        return "test_target_mse_mean", "−MSE", -1.0
    return None


def _coherence_correlations(
    dataset: xr.Dataset, variable: str, threshold: str, variants: tuple[str, ...] = ()
) -> Iterator[Measurement]:
    """Pearson R and Spearman ρ of ``variable`` with the score over epochs, per seed."""
    score = _score(dataset)
    if score is None:
        return
    score_name, label, sign = score
    for key, coherence in _settings(dataset, variable):
        if key["algorithm"] not in META_LEARNERS or (variants and key["variant"] not in variants):
            continue
        target = sign * _of_setting(dataset, score_name, key)
        pairs = list(_paired(coherence, target))
        for kind, name in (("pearson", "Pearson R"), ("spearman", "Spearman ρ")):
            values = [per_seed_correlation(x, y, kind) for x, y in pairs]
            statistic = f"{name}({variable.replace('_', ' ')}, {label}) over epochs"
            yield Measurement(
                key,
                statistic,
                values,
                threshold,
                ">=",
                correlation=True,
                primary=kind == "pearson",
            )


def measure_trajectory_coherence(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """4: trajectory coherence correlates with target accuracy over epochs."""
    yield from _coherence_correlations(
        dataset, "trajectory_coherence", "trajectory_coherence_correlation"
    )


def measure_gradient_coherence(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """5: gradient coherence at θs correlates with generalization, over epochs and across k."""
    yield from _coherence_correlations(
        dataset,
        "gradient_coherence",
        "gradient_coherence_correlation",
        t.gradient_coherence_variants,
    )
    if "gradient_coherence" in dataset and "test_target_mse_mean" in dataset:
        yield from _gradient_coherence_across_shots(dataset)


def _gradient_coherence_across_shots(dataset: xr.Dataset) -> Iterator[Measurement]:
    """Sinusoid: final-epoch coherence vs −MSE over the shots, per meta-learner and variant."""
    if "sinusoid" not in dataset["dataset"].values:
        return
    for algorithm in dataset["algorithm"].values:
        for variant in dataset["variant"].values:
            if algorithm not in META_LEARNERS:
                continue
            selection = {"dataset": "sinusoid", "algorithm": algorithm, "variant": variant}
            coherence = dataset["gradient_coherence"].sel(selection)
            measured = np.isfinite(coherence.values).reshape(-1, coherence.sizes["epoch"])
            if not measured.any():
                continue
            last = int(coherence["epoch"].values[np.flatnonzero(measured.any(axis=0))[-1]])
            mse = dataset["test_target_mse_mean"].sel(selection)
            values = [
                per_seed_correlation(
                    coherence.sel(seed=seed, epoch=last).values,
                    -mse.sel(seed=seed, epoch=last).values,
                )
                for seed in coherence["seed"].values
            ]
            key = {
                "dataset": "sinusoid",
                "variant": str(variant),
                "way": int(dataset["way"].values[0]),
                "shot": -1,
                "algorithm": str(algorithm),
            }
            statistic = f"Pearson R(gradient coherence, −MSE) across k at epoch {last}"
            yield Measurement(
                key,
                statistic,
                values,
                "gradient_coherence_correlation",
                ">=",
                correlation=True,
                over_epochs=False,
            )


def measure_baseline_coherence(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """6: each baseline's coherences stay near zero relative to the reference meta-learner's."""
    if REFERENCE not in dataset["algorithm"].values:
        return
    for variable in ("trajectory_coherence", "gradient_coherence"):
        for key, baseline in _settings(dataset, variable):
            if key["algorithm"] not in BASELINES:
                continue
            reference = _of_setting(dataset, variable, {**key, "algorithm": REFERENCE})
            ratios = []
            for seed in baseline["seed"].values:
                b = np.nanmean(np.abs(baseline.sel(seed=seed).values))
                r_values = reference.sel(seed=seed).values if seed in reference["seed"] else []
                r = np.nanmean(np.abs(r_values)) if len(r_values) else math.nan
                ratios.append(float(b / r) if r and math.isfinite(r) else math.nan)
            statistic = (
                f"mean abs({variable.replace('_', ' ')}) {key['algorithm']} / "
                f"{ALGORITHMS[REFERENCE].title}"
            )
            yield Measurement(
                key, statistic, ratios, "finetune_coherence_ratio", "<=", bounds=NON_NEGATIVE
            )


def measure_function_coherence(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """Extension (issue 14): function-space coherence tracks the score at least as well as
    trajectory coherence: per seed, Pearson R(function coherence, score) − Pearson R(trajectory
    coherence, score) over epochs, at least ``function_coherence_margin`` (a non-inferiority
    margin: a negative margin allows function coherence to be slightly worse)."""
    score = _score(dataset)
    if score is None or "trajectory_coherence" not in dataset:
        return
    score_name, label, sign = score
    for key, function in _settings(dataset, "function_coherence"):
        if key["algorithm"] not in META_LEARNERS:
            continue
        target = sign * _of_setting(dataset, score_name, key)
        trajectory = _of_setting(dataset, "trajectory_coherence", key)
        differences = []
        for seed in function["seed"].values:
            if seed not in trajectory["seed"] or seed not in target["seed"]:
                differences.append(math.nan)
                continue
            y = target.sel(seed=seed)
            r_function = per_seed_correlation(*xr.align(function.sel(seed=seed), y))
            r_trajectory = per_seed_correlation(*xr.align(trajectory.sel(seed=seed), y))
            differences.append(r_function - r_trajectory)
        statistic = (
            f"Pearson R(function coherence, {label}) − Pearson R(trajectory coherence, {label}) "
            "over epochs"
        )
        yield Measurement(
            key, statistic, differences, "function_coherence_margin", ">=", bounds=(-2.0, 2.0)
        )


def measure_edge_of_stability(dataset: xr.Dataset, t: Thresholds) -> Iterator[Measurement]:
    """Extension (claim 8): while adaptation still leaves a support loss above
    ``edge_of_stability_support_loss``, E[λmax(θ̃)] sits on the 2/α line: per seed, the mean of
    α·E[λmax(θ̃)]/2 over those checkpoints lies within ``edge_of_stability_distance`` of 1."""
    normalized = normalized_sharpness(dataset)
    if normalized is None or "support_loss_mean" not in dataset:
        return
    level = t.edge_of_stability_support_loss
    dataset = dataset.assign(normalized_sharpness=normalized)
    for key, series in _settings(dataset, "normalized_sharpness"):
        if key["algorithm"] not in META_LEARNERS:
            continue
        loss = _of_setting(dataset, "support_loss_mean", key)
        means = []
        for sharpness, support_loss in _paired(series, loss):
            above = support_loss > level
            means.append(float(np.mean(sharpness[above])) if above.any() else math.nan)
        statistic = f"E[α·λmax(θ̃)/2] while support loss > {level:g}"
        for threshold, direction in (
            ("edge_of_stability_low", ">="),
            ("edge_of_stability_high", "<="),
        ):
            yield Measurement(key, statistic, means, threshold, direction, bounds=NON_NEGATIVE)


#: The declared claims table: every claim of the paper and what measures it.
CLAIMS: tuple[Claim, ...] = (
    Claim(1, "solutions get sharper, peak, then flatter", measure_flatness_peak),
    Claim(2, "support loss at adapted solutions decreases", measure_support_loss),
    Claim(
        3,
        "after the generalization peak, solutions keep getting flatter as accuracy degrades",
        measure_overtraining,
    ),
    Claim(4, "trajectory coherence correlates with target accuracy", measure_trajectory_coherence),
    Claim(5, "gradient coherence at θs correlates with generalization", measure_gradient_coherence),
    Claim(
        6,
        "baseline coherence stays near zero relative to the meta-learner's",
        measure_baseline_coherence,
    ),
    Claim(
        7,
        "function-space coherence tracks accuracy at least as well as trajectory coherence",
        measure_function_coherence,
        extension=True,
    ),
    Claim(
        8,
        "adapted solutions sit at the inner step's stability limit 2/α while the support loss "
        "is high",
        measure_edge_of_stability,
        extension=True,
        windowed=False,
    ),
)


@dataclass(frozen=True)
class _Phase:
    """Where rows are judged: a phase name and its window (None: every checkpoint)."""

    name: str
    window: Window | None


def _phases(claim: Claim, thresholds: Thresholds) -> list[_Phase]:
    if not claim.windowed:
        return [_Phase(ALL_CHECKPOINTS, None)]
    phases = [_Phase(PAPER_WINDOW, thresholds.window)]
    if thresholds.early_window is not None:
        phases.append(_Phase(EARLY_PHASE, thresholds.early_window))
    return phases


def _scalar_variables(dataset: xr.Dataset) -> xr.Dataset:
    """The variables over exactly the run dims and epoch (what claims read), with ``iteration``."""
    if ITERATION not in dataset.coords:
        raise ClaimsError(
            "aggregated Dataset lacks the 'iteration' coordinate (each checkpoint's "
            "meta-iterations) that claim windows need; re-run metalandscape aggregate"
        )
    grid = {*SETTING_DIMS, "seed", "epoch"}
    keep = [name for name, data in dataset.data_vars.items() if set(data.dims) == grid]
    return dataset[keep]


def restrict_to_window(dataset: xr.Dataset, window: Window) -> xr.Dataset:
    """``dataset`` with every value at a checkpoint outside ``window`` set to NaN."""
    inside = xr.DataArray(window.contains(dataset[ITERATION].values), dims=dataset[ITERATION].dims)
    return dataset.where(inside)


def _checkpoints_in(
    dataset: xr.Dataset, key: Mapping[str, Any], window: Window | None
) -> tuple[int, str]:
    """How many checkpoints of setting ``key`` lie in ``window`` (the most any seed has), and
    the window in words with the iterations they span."""
    selection = {
        dim: key[dim] for dim in SETTING_DIMS if key[dim] in dataset[dim].values
    }  # the across-k row (shot -1) spans every shot
    iterations = dataset[ITERATION].sel(selection).values
    inside = (np.isfinite(iterations) if window is None else window.contains(iterations)).reshape(
        -1, iterations.shape[-1]
    )
    count = int(inside.sum(axis=1).max()) if inside.size else 0
    flat = iterations.reshape(inside.shape)[inside]
    words = "all checkpoints" if window is None else window.describe()
    if count == 0:
        return 0, f"{words}: no checkpoint"
    low, high = int(flat.min()), int(flat.max())
    plural = "checkpoint" if count == 1 else "checkpoints"
    return count, f"iterations {low:,}–{high:,}, {count} {plural}"


def _row(
    claim: Claim,
    measurement: Measurement,
    thresholds: Thresholds,
    phase: str,
    checkpoints: tuple[int, str],
) -> ClaimRow:
    mean, low, high, seeds = scalar_interval(
        np.asarray(measurement.per_seed, dtype=np.float64),
        correlation=measurement.correlation,
        bounds=measurement.bounds,
    )
    count, window = checkpoints
    needed = thresholds.min_window_checkpoints if measurement.over_epochs else 1
    key = measurement.key
    return ClaimRow(
        claim=claim.number,
        title=claim.shown_title,
        data=_data_label(key["dataset"]),
        statistic=measurement.statistic,
        value=mean,
        ci_low=low,
        ci_high=high,
        threshold=getattr(thresholds, measurement.threshold),
        direction=measurement.direction,
        seeds=seeds,
        phase=phase,
        window=window,
        checkpoints=count,
        primary=measurement.primary,
        too_few=count < needed,
        **key,
    )


def _identity(measurement: Measurement) -> tuple[Any, ...]:
    """What names one measurement whichever checkpoints it saw (its statistic without the
    epoch an across-k statistic names)."""
    statistic = re.sub(r" at epoch \d+", "", measurement.statistic)
    key = tuple(sorted(measurement.key.items()))
    return (statistic, key, measurement.threshold, measurement.direction)


def _claim_rows(
    dataset: xr.Dataset,
    claim: Claim,
    thresholds: Thresholds,
    phase: str,
    window: Window | None,
    everywhere: Sequence[Measurement] = (),
) -> list[ClaimRow]:
    """The rows of ``claim`` on ``dataset`` (scalar variables only) judged over ``window``;
    ``everywhere`` (its measurements over all checkpoints) adds a "too few checkpoints" row for
    each setting the window leaves without data, so that no setting disappears silently."""
    view = dataset if window is None else restrict_to_window(dataset, window)
    measured = list(claim.measure(view, thresholds))
    seen = {_identity(m) for m in measured}
    measured += [
        replace(m, per_seed=[math.nan] * len(m.per_seed))  # no value from outside the window
        for m in everywhere
        if _identity(m) not in seen
    ]
    return [
        _row(claim, m, thresholds, phase, _checkpoints_in(dataset, m.key, window)) for m in measured
    ]


def _checked(dataset: xr.Dataset) -> xr.Dataset:
    missing = [d for d in (*SETTING_DIMS, "seed", "epoch") if d not in dataset.dims]
    if missing:
        raise ClaimsError(f"aggregated Dataset lacks dims {missing}")
    return _scalar_variables(dataset)


def _table(rows: list[ClaimRow], order: Sequence[str]) -> pd.DataFrame:
    table = pd.DataFrame([asdict(row) for row in rows])
    if table.empty:
        return pd.DataFrame(columns=[f.name for f in fields(ClaimRow)])
    return table.sort_values(list(order), kind="stable").reset_index(drop=True)


def check_claims(datasets: Sequence[xr.Dataset], thresholds: Thresholds) -> pd.DataFrame:
    """The claims table (one row per claim × setting × statistic × phase) of the aggregated
    Datasets: each windowed claim judged in ``thresholds.window`` and, in rows of their own, in
    the early phase before it."""
    rows = []
    for dataset in datasets:
        dataset = _checked(dataset)
        for claim in CLAIMS:
            everywhere = list(claim.measure(dataset, thresholds)) if claim.windowed else []
            for phase in _phases(claim, thresholds):
                rows += _claim_rows(
                    dataset, claim, thresholds, phase.name, phase.window, everywhere
                )
    phase_order = {PAPER_WINDOW: 0, ALL_CHECKPOINTS: 1, EARLY_PHASE: 2}
    table = _table(rows, ["claim", *SETTING_DIMS, "statistic"])
    if table.empty:
        return table
    table = table.assign(_phase=table["phase"].map(phase_order))
    table = table.sort_values(["_phase", "claim"], kind="stable").drop(columns="_phase")
    return table.reset_index(drop=True)


def window_sensitivity(datasets: Sequence[xr.Dataset], thresholds: Thresholds) -> pd.DataFrame:
    """Every windowed claim's statistics with the window starting at each of
    :data:`WINDOW_STARTS` (its end as configured), one row per start that leaves at least
    ``min_window_checkpoints`` checkpoints in the setting's window; column ``start``."""
    frames = []
    for dataset in datasets:
        dataset = _checked(dataset)
        for start in WINDOW_STARTS:
            stop = thresholds.window.to_iteration
            if stop is not None and start >= stop:
                continue
            window = Window(start, stop)
            for claim in CLAIMS:
                if not claim.windowed:
                    continue
                rows = [
                    row
                    for row in _claim_rows(dataset, claim, thresholds, PAPER_WINDOW, window)
                    if not row.too_few
                ]
                if rows:
                    frames.append(_table(rows, ["claim"]).assign(start=start))
    if not frames:
        return pd.DataFrame(columns=[*(f.name for f in fields(ClaimRow)), "start"])
    table = pd.concat(frames, ignore_index=True).drop(columns="phase")
    return table.sort_values(
        ["claim", "statistic", *SETTING_DIMS, "start"], kind="stable"
    ).reset_index(drop=True)


def sharpness_table(datasets: Sequence[xr.Dataset]) -> pd.DataFrame:
    """λmax at θs and at θ̃ against 2/α per setting, at θ0 and at the last checkpoint: the mean
    over seeds of each task-mean (columns ``*_first``/``*_last``), α, T and the seeds."""
    rows = []
    wanted = ("hessian_start_top_eigenvalue_mean", "hessian_top_eigenvalue_mean")
    for dataset in datasets:
        if not all(name in dataset for name in (*wanted, INNER_STEP_SIZE, "support_loss_mean")):
            continue
        for key, adapted in _settings(dataset, "hessian_top_eigenvalue_mean"):
            values: dict[str, Any] = dict(key)
            alpha = float(np.nanmean(_of_setting(dataset, INNER_STEP_SIZE, key).values))
            steps = float(np.nanmean(_of_setting(dataset, INNER_STEPS, key).values))
            values.update(alpha=alpha, steps=int(steps), two_over_alpha=2 / alpha)
            series = {
                "lambda_start": _of_setting(dataset, wanted[0], key),
                "lambda_adapted": adapted,
                "support_loss": _of_setting(dataset, "support_loss_mean", key),
            }
            for name, data in series.items():
                data = data.sel(epoch=adapted["epoch"]).values  # (seed, epoch)
                for end, index in (("first", 0), ("last", -1)):
                    column = [row[np.isfinite(row)] for row in data]
                    picked = [row[index] for row in column if row.size]
                    values[f"{name}_{end}"] = float(np.mean(picked)) if picked else math.nan
            iterations = _of_setting(dataset, ITERATION, key).sel(epoch=adapted["epoch"])
            values["last_iteration"] = int(np.nanmax(iterations.values))
            values["seeds"] = int(adapted.sizes["seed"])
            rows.append(values)
    return pd.DataFrame(rows)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def _value_cell(value: float, low: float, high: float) -> tuple[str, bool]:
    """``value [low, high]`` (or ``—`` for no value) and whether there is an interval."""
    if not math.isfinite(value):
        return "—", False
    banded = math.isfinite(low) and math.isfinite(high)
    return f"{value:.3g}" + (f" [{low:.3g}, {high:.3g}]" if banded else ""), banded


def _setting_cell(row: Any) -> str:
    shot = "all k" if row.shot == -1 else f"{row.shot}-shot"
    return f"{row.way}-way {shot}, {row.variant}"


PHASE_HEADINGS = {
    PAPER_WINDOW: "Where the paper looked",
    ALL_CHECKPOINTS: "Extensions judged on every checkpoint",
    EARLY_PHASE: "Early phase (extension): before the window",
}


def claims_markdown(
    table: pd.DataFrame,
    config_name: str = "",
    thresholds: Thresholds | None = None,
    sharpness: pd.DataFrame | None = None,
) -> str:
    """The claims table as Markdown: by phase, then claim, each row naming its window and data;
    ``sharpness`` (:func:`sharpness_table`) appended when given and not empty."""
    thresholds = thresholds or Thresholds()
    lines = ["# Claims of Guiroy, Verma & Pal (arXiv 1907.07287), checked", ""]
    if config_name:
        lines += [f"Config: `{config_name}`.", ""]
    lines += [
        "Each statistic is computed per seed over the checkpoints in its window; *value* is the "
        f"{INTERVAL_DESCRIPTION}; *seeds* says over how many. *holds* means the mean passes the "
        "threshold; *CI clear* says whether the whole interval does too (— without an interval). "
        f"The paper plots from meta-iteration 500 on, never θ0: claims are judged in the window "
        f"{thresholds.window.describe()} (config claims.window), on settings with at least "
        f"{thresholds.min_window_checkpoints} checkpoints in it (claims.min_window_checkpoints); "
        "the iterations before it are reported apart, as the early phase: an extension, not a "
        "verdict on the paper.",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No claim could be checked: the inputs lack the metrics.", ""])
    for phase in PHASE_HEADINGS:
        rows_of_phase = table[table["phase"] == phase]
        if rows_of_phase.empty:
            continue
        lines += [f"## {PHASE_HEADINGS[phase]}", ""]
        for claim, rows in rows_of_phase.groupby("claim", sort=True):
            lines += [f"### Claim {claim}: {rows['title'].iloc[0]}", ""]
            lines += [
                "| data | setting | algorithm | statistic | window | value [95% CI] | seeds "
                "| threshold | verdict | CI clear |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in rows.itertuples():
                value, banded = _value_cell(row.value, row.ci_low, row.ci_high)
                clear = ("yes" if row.ci_excludes_threshold else "no") if banded else "—"
                lines.append(
                    f"| {_cell(row.data)} | {_setting_cell(row)} | {row.algorithm} "
                    f"| {_cell(row.statistic)} | {row.window} | {value} | {row.seeds} "
                    f"| {row.direction} {row.threshold:g} | {row.verdict} | {clear} |"
                )
            lines.append("")
    if sharpness is not None and not sharpness.empty:
        lines += sharpness_markdown(sharpness)
    return "\n".join(lines)


def sharpness_markdown(sharpness: pd.DataFrame) -> list[str]:
    """The lines of :func:`sharpness_table` as a Markdown section."""
    lines = [
        "## Sharpness against the inner step's 2/α",
        "",
        "Gradient descent with step α cannot settle where the curvature exceeds 2/α, so λmax at "
        "the adapted θ̃ is read against 2/α. Means over seeds of each checkpoint's task-mean, at "
        "θ0 and at the run's last checkpoint.",
        "",
        "| data | setting | algorithm | α | T | 2/α | λmax(θs) θ0 → last | λmax(θ̃) θ0 → last "
        "| α·λmax(θ̃)/2 θ0 → last | support loss θ0 → last | last iteration | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sharpness.itertuples():
        ratio_first = row.alpha * row.lambda_adapted_first / 2
        ratio_last = row.alpha * row.lambda_adapted_last / 2
        lines.append(
            f"| {row.dataset} | {_setting_cell(row)} | {row.algorithm} | {row.alpha:g} "
            f"| {row.steps} | {row.two_over_alpha:.3g} "
            f"| {row.lambda_start_first:.3g} → {row.lambda_start_last:.3g} "
            f"| {row.lambda_adapted_first:.3g} → {row.lambda_adapted_last:.3g} "
            f"| {ratio_first:.3g} → {ratio_last:.3g} "
            f"| {row.support_loss_first:.3g} → {row.support_loss_last:.3g} "
            f"| {row.last_iteration:,} | {row.seeds} |"
        )
    return [*lines, ""]


def windows_markdown(table: pd.DataFrame, thresholds: Thresholds | None = None) -> str:
    """The window-sensitivity table (:func:`window_sensitivity`) as Markdown: one row per
    statistic and setting, one column per window start."""
    thresholds = thresholds or Thresholds()
    lines = [
        "# Claims by window start",
        "",
        "Each statistic recomputed with its window starting at the iteration in the column "
        f"header (to {'the end' if thresholds.window.to_iteration is None else thresholds.window.to_iteration}); "
        f"a cell is left empty where fewer than {thresholds.min_window_checkpoints} checkpoints "
        f"remain. Cells: {INTERVAL_DESCRIPTION}, and ✓ where the mean passes the threshold.",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No window left enough checkpoints.", ""])
    starts = sorted(set(table["start"]))
    lines += [
        "| claim | statistic (threshold) | data | setting | algorithm | seeds | "
        + " | ".join(f"from {start:,}" for start in starts)
        + " |",
        "|---" * (6 + len(starts)) + "|",
    ]
    keys = ["claim", "statistic", *SETTING_DIMS]
    for _, group in table.groupby(keys, sort=False):
        first = group.iloc[0]
        cells = {}
        for row in group.itertuples():
            value, _ = _value_cell(row.value, row.ci_low, row.ci_high)
            cells[row.start] = value + (" ✓" if row.verdict == "holds" else "")
        lines.append(
            f"| {first['claim']} | {_cell(first['statistic'])} ({first['direction']} "
            f"{first['threshold']:g}) | {first['dataset']} | {_setting_cell(first)} "
            f"| {first['algorithm']} | {int(group['seeds'].max())} | "
            + " | ".join(cells.get(start, "") for start in starts)
            + " |"
        )
    return "\n".join([*lines, ""])
