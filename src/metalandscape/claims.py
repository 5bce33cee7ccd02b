"""The paper's claims as a declared table of (claim, statistic, threshold) and one small engine.

Every claim is checked per setting (dataset, variant, way, shot, algorithm: the run key without
the seed) on an aggregated Dataset (dims ``dataset, variant, way, shot, algorithm, seed,
epoch``). :data:`CLAIMS` lists each claim with the function that measures its statistics per
seed; :func:`check_claims` turns every measurement into a row: its mean over seeds and 95%
interval (:mod:`metalandscape.statistics`: Student-t with ≥ 3 seeds, none below; correlations in
Fisher z), the threshold (from the config), and the verdict: ``holds`` when the mean passes the
threshold, ``does not hold`` otherwise; ``ci_excludes_threshold`` says whether the interval lies
wholly on the mean's side (false without an interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from metalandscape.algorithms import ALGORITHMS, algorithm_names
from metalandscape.runs import RUN_DIMS
from metalandscape.statistics import INTERVAL_DESCRIPTION, per_seed_correlation, scalar_interval

SETTING_DIMS = tuple(dim for dim in RUN_DIMS if dim != "seed")
DATA_LABELS = {
    "fontglot": "fontglot (embedded Omniglot stand-in, not the paper's data)",
    "sinusoid": "sinusoid regression",
    "omniglot": "Omniglot",
    "miniimagenet": "MiniImagenet",
}


class ClaimsError(ValueError):
    """Bad thresholds or an input that is not an aggregated Dataset."""


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of every claim; the workflow's config sets them (``claims:``)."""

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

    @staticmethod
    def from_mapping(values: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from a config mapping; every value typed, finite and in range."""
        values = dict(values or {})
        known = {f.name for f in fields(Thresholds)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClaimsError(f"unknown claims threshold(s) {unknown}; known: {sorted(known)}")
        for key, value in values.items():
            values[key] = _checked_threshold(key, value)
        return Thresholds(**values)


#: (low, high) of each numeric threshold, both inclusive.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
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
    verdict: str = field(init=False)
    ci_excludes_threshold: bool = field(init=False)

    def __post_init__(self) -> None:
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
    """1: E[λmax] rises from θ0 to an interior peak, then falls (meta-learners)."""
    for key, series in _settings(dataset, "hessian_top_eigenvalue_mean"):
        if key["algorithm"] not in META_LEARNERS:
            continue
        rises, drops = [], []
        for _, values in _per_seed(series):
            peak = int(np.argmax(values)) if values.size >= 3 else 0
            scale = abs(values[peak]) if values.size >= 3 else math.nan
            rises.append((values[peak] - values[0]) / scale if values.size >= 3 else math.nan)
            drops.append((values[peak] - values[-1]) / scale if values.size >= 3 else math.nan)
        rise, drop = "relative rise θ0→peak of E[λmax]", "relative drop peak→last of E[λmax]"
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
            yield Measurement(key, statistic, values, threshold, ">=", correlation=True)


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
            if not np.isfinite(coherence.values).any():
                continue
            last = int(coherence["epoch"].max())
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
                key, statistic, values, "gradient_coherence_correlation", ">=", correlation=True
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
)


def _row(claim: Claim, measurement: Measurement, thresholds: Thresholds) -> ClaimRow:
    mean, low, high, seeds = scalar_interval(
        np.asarray(measurement.per_seed, dtype=np.float64),
        correlation=measurement.correlation,
        bounds=measurement.bounds,
    )
    key = measurement.key
    return ClaimRow(
        claim=claim.number,
        title=claim.shown_title,
        data=DATA_LABELS.get(key["dataset"], key["dataset"]),
        statistic=measurement.statistic,
        value=mean,
        ci_low=low,
        ci_high=high,
        threshold=getattr(thresholds, measurement.threshold),
        direction=measurement.direction,
        seeds=seeds,
        **key,
    )


def check_claims(datasets: Sequence[xr.Dataset], thresholds: Thresholds) -> pd.DataFrame:
    """The claims table (one row per claim × setting × statistic) of the aggregated Datasets."""
    rows = []
    for dataset in datasets:
        missing = [d for d in (*SETTING_DIMS, "seed", "epoch") if d not in dataset.dims]
        if missing:
            raise ClaimsError(f"aggregated Dataset lacks dims {missing}")
        for claim in CLAIMS:
            rows += [_row(claim, m, thresholds) for m in claim.measure(dataset, thresholds)]
    table = pd.DataFrame([asdict(row) for row in rows])
    if table.empty:
        return pd.DataFrame(columns=[f.name for f in fields(ClaimRow)])
    return table.sort_values(["claim", *SETTING_DIMS, "statistic"], kind="stable").reset_index(
        drop=True
    )


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def claims_markdown(table: pd.DataFrame, config_name: str = "") -> str:
    """The claims table as Markdown, grouped by claim, saying which data each row used."""
    lines = ["# Claims of Guiroy, Verma & Pal (arXiv 1907.07287), checked", ""]
    if config_name:
        lines += [f"Config: `{config_name}`.", ""]
    lines += [
        "Each statistic is computed per seed over the measured epochs; *value* is the "
        f"{INTERVAL_DESCRIPTION}; *seeds* says over how many. *holds* means the mean passes the "
        "threshold; *CI clear* says whether the whole interval does too (— without an interval).",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No claim could be checked: the inputs lack the metrics.", ""])
    for claim, rows in table.groupby("claim", sort=True):
        lines += [f"## Claim {claim}: {rows['title'].iloc[0]}", ""]
        lines += [
            "| data | setting | algorithm | statistic | value [95% CI] | seeds | threshold "
            "| verdict | CI clear |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows.itertuples():
            shot = "all k" if row.shot == -1 else f"{row.shot}-shot"
            setting = f"{row.way}-way {shot}, {row.variant}"
            banded = math.isfinite(row.ci_low) and math.isfinite(row.ci_high)
            value = f"{row.value:.3g}" + (
                f" [{row.ci_low:.3g}, {row.ci_high:.3g}]" if banded else ""
            )
            clear = ("yes" if row.ci_excludes_threshold else "no") if banded else "—"
            lines.append(
                f"| {_cell(row.data)} | {setting} | {row.algorithm} | {_cell(row.statistic)} "
                f"| {value} | {row.seeds} | {row.direction} {row.threshold:g} | {row.verdict} "
                f"| {clear} |"
            )
        lines.append("")
    return "\n".join(lines)
