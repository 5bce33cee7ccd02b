"""The paper's claims as statistics with bootstrap confidence intervals and verdicts.

Every claim is checked per setting (dataset, variant, way, shot, algorithm) on an aggregated
Dataset (dims ``dataset, variant, way, shot, algorithm, seed, epoch``). A statistic is computed
per seed from the epoch series; the row reports its mean over seeds, a 95% percentile bootstrap
interval over seeds, the threshold (from the config), and the verdict: ``holds`` when the mean
passes the threshold, ``does not hold`` otherwise; ``ci_excludes_threshold`` says whether the
interval lies wholly on the mean's side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

SETTING_DIMS = ("dataset", "variant", "way", "shot", "algorithm")
MAML_FAMILY = ("maml", "fomaml", "regmaml")
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
    overtraining_variants: tuple[str, ...] = ("long",)
    gradient_coherence_variants: tuple[str, ...] = ()
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0

    @staticmethod
    def from_mapping(values: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from a config mapping, naming unknown keys."""
        values = dict(values or {})
        known = {f.name for f in fields(Thresholds)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClaimsError(f"unknown claims threshold(s) {unknown}; known: {sorted(known)}")
        for key in ("overtraining_variants", "gradient_coherence_variants"):
            if key in values:
                values[key] = tuple(values[key])
        return Thresholds(**values)


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
        if passes:
            bound = self.ci_low if above else self.ci_high
            self.ci_excludes_threshold = bool(
                bound >= self.threshold if above else bound <= self.threshold
            )
        else:
            bound = self.ci_high if above else self.ci_low
            self.ci_excludes_threshold = bool(
                bound < self.threshold if above else bound > self.threshold
            )


def bootstrap_mean_ci(
    values: Sequence[float], resamples: int, seed: int
) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% percentile bootstrap interval (resampling seeds)."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan, math.nan
    if array.size == 1:
        return float(array[0]), float(array[0]), float(array[0])
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(resamples, array.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(array.mean()), float(low), float(high)


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


def _series_per_seed(series: xr.DataArray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for seed_index in range(series.sizes["seed"]):
        row = series.isel(seed=seed_index)
        mask = np.isfinite(row.values)
        yield row["epoch"].values[mask].astype(np.float64), row.values[mask].astype(np.float64)


def _correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    if kind == "pearson":
        return float(stats.pearsonr(x, y).statistic)
    return float(stats.spearmanr(x, y).statistic)


def _aligned(a: xr.DataArray, b: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    a, b = xr.align(a, b, join="inner")
    return a, b


class ClaimChecker:
    """Builds the claims table from aggregated Datasets."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.rows: list[ClaimRow] = []

    def _row(
        self,
        claim: int,
        title: str,
        key: Mapping[str, Any],
        statistic: str,
        per_seed: Sequence[float],
        threshold: float,
        direction: str,
    ) -> None:
        t = self.thresholds
        mean, low, high = bootstrap_mean_ci(per_seed, t.bootstrap_resamples, t.bootstrap_seed)
        self.rows.append(
            ClaimRow(
                claim=claim,
                title=title,
                data=DATA_LABELS.get(key["dataset"], key["dataset"]),
                statistic=statistic,
                value=mean,
                ci_low=low,
                ci_high=high,
                threshold=threshold,
                direction=direction,
                seeds=sum(math.isfinite(v) for v in per_seed),
                **key,
            )
        )

    def check(self, dataset: xr.Dataset) -> None:
        """Add the rows of every claim that ``dataset`` has the variables for."""
        for claim in (
            self.claim_flatness_peak,
            self.claim_support_loss,
            self.claim_overtraining,
            self.claim_trajectory_coherence,
            self.claim_gradient_coherence,
            self.claim_finetune_coherence,
        ):
            claim(dataset)

    def claim_flatness_peak(self, dataset: xr.Dataset) -> None:
        """1: E[λmax] rises to an interior peak, then falls (MAML, First-Order MAML)."""
        t = self.thresholds
        for key, series in _settings(dataset, "hessian_top_eigenvalue_mean"):
            if key["algorithm"] not in ("maml", "fomaml"):
                continue
            rises, drops = [], []
            for _, values in _series_per_seed(series):
                if values.size < 3:
                    rises.append(math.nan)
                    drops.append(math.nan)
                    continue
                peak = int(np.argmax(values))
                rises.append((values[peak] - values[0]) / abs(values[peak]))
                drops.append((values[peak] - values[-1]) / abs(values[peak]))
            title = "solutions get sharper, peak, then flatter"
            self._row(
                1, title, key, "relative rise θ0→peak of E[λmax]", rises, t.flatness_rise, ">="
            )
            self._row(
                1, title, key, "relative drop peak→last of E[λmax]", drops, t.flatness_drop, ">="
            )

    def claim_support_loss(self, dataset: xr.Dataset) -> None:
        """2: support loss at θ̃ᵢ decreases over epochs (MAML family)."""
        t = self.thresholds
        for key, series in _settings(dataset, "support_loss_mean"):
            if key["algorithm"] not in MAML_FAMILY:
                continue
            rhos, fractions = [], []
            for epochs, values in _series_per_seed(series):
                rhos.append(_correlation(epochs, values, "spearman"))
                fractions.append(
                    float(np.mean(np.diff(values) < 0)) if values.size > 1 else math.nan
                )
            title = "support loss at adapted solutions decreases"
            self._row(
                2,
                title,
                key,
                "Spearman ρ(epoch, support loss)",
                rhos,
                t.support_loss_spearman,
                "<=",
            )
            self._row(
                2,
                title,
                key,
                "fraction of epoch-to-epoch decreases",
                fractions,
                t.support_loss_decrease_fraction,
                ">=",
            )

    def claim_overtraining(self, dataset: xr.Dataset) -> None:
        """3: after the accuracy peak, curvature and accuracy fall together."""
        t = self.thresholds
        accuracy_name = "test_target_accuracy_mean"
        if accuracy_name not in dataset or "hessian_top_eigenvalue_mean" not in dataset:
            return
        for key, curvature in _settings(dataset, "hessian_top_eigenvalue_mean"):
            if key["variant"] not in t.overtraining_variants:
                continue
            accuracy = dataset[accuracy_name].sel({d: key[d] for d in SETTING_DIMS})
            curvature, accuracy = _aligned(curvature, accuracy)
            correlations = []
            for seed in curvature["seed"].values:
                acc = accuracy.sel(seed=seed).values
                curv = curvature.sel(seed=seed).values
                mask = np.isfinite(acc) & np.isfinite(curv)
                acc, curv = acc[mask], curv[mask]
                if acc.size == 0:
                    continue
                after = slice(int(np.argmax(acc)), None)
                if acc[after].size < t.overtraining_min_epochs_after_peak:
                    correlations.append(math.nan)
                    continue
                correlations.append(_correlation(curv[after], acc[after], "pearson"))
            self._row(
                3,
                "after the generalization peak, solutions keep getting flatter as accuracy degrades",
                key,
                "Pearson r(E[λmax], accuracy) after the accuracy peak",
                correlations,
                t.overtraining_correlation,
                ">=",
            )

    def _score(
        self, dataset: xr.Dataset
    ) -> tuple[str, Callable[[xr.DataArray], xr.DataArray]] | None:
        if "test_target_accuracy_mean" in dataset:
            return "test_target_accuracy_mean", lambda a: a
        if "test_target_mse_mean" in dataset:
            return "test_target_mse_mean", lambda a: -a
        return None

    def _correlation_rows(
        self,
        dataset: xr.Dataset,
        variable: str,
        claim: int,
        title: str,
        threshold: float,
        variants: tuple[str, ...] = (),
    ) -> None:
        score = self._score(dataset)
        if score is None:
            return
        score_name, transform = score
        label = "accuracy" if score_name.endswith("accuracy_mean") else "−MSE"
        for key, coherence in _settings(dataset, variable):
            if key["algorithm"] not in MAML_FAMILY or (variants and key["variant"] not in variants):
                continue
            target = transform(dataset[score_name].sel({d: key[d] for d in SETTING_DIMS}))
            coherence, target = _aligned(coherence, target)
            for kind in ("pearson", "spearman"):
                values = []
                for seed in coherence["seed"].values:
                    x = coherence.sel(seed=seed).values
                    y = target.sel(seed=seed).values
                    mask = np.isfinite(x) & np.isfinite(y)
                    values.append(_correlation(x[mask], y[mask], kind))
                name = "Pearson R" if kind == "pearson" else "Spearman ρ"
                statistic = f"{name}({variable.replace('_', ' ')}, {label}) over epochs"
                self._row(claim, title, key, statistic, values, threshold, ">=")

    def claim_trajectory_coherence(self, dataset: xr.Dataset) -> None:
        """4: trajectory coherence correlates with target accuracy over epochs."""
        self._correlation_rows(
            dataset,
            "trajectory_coherence",
            4,
            "trajectory coherence correlates with target accuracy",
            self.thresholds.trajectory_coherence_correlation,
        )

    def claim_gradient_coherence(self, dataset: xr.Dataset) -> None:
        """5: gradient coherence at θs correlates with generalization, over epochs and across k."""
        t = self.thresholds
        self._correlation_rows(
            dataset,
            "gradient_coherence",
            5,
            "gradient coherence at θs correlates with generalization",
            t.gradient_coherence_correlation,
            t.gradient_coherence_variants,
        )
        if "gradient_coherence" not in dataset or "test_target_mse_mean" not in dataset:
            return
        # Across k (sinusoid): final-epoch coherence vs −MSE over the shots, per algorithm.
        for dataset_name in dataset["dataset"].values:
            if dataset_name != "sinusoid":
                continue
            for algorithm in dataset["algorithm"].values:
                if algorithm not in MAML_FAMILY:
                    continue
                for variant in dataset["variant"].values:
                    selection = {
                        "dataset": dataset_name,
                        "algorithm": algorithm,
                        "variant": variant,
                    }
                    coherence = dataset["gradient_coherence"].sel(selection)
                    mse = dataset["test_target_mse_mean"].sel(selection)
                    if not np.isfinite(coherence.values).any():
                        continue
                    last = int(coherence["epoch"].max())
                    values = []
                    for seed in coherence["seed"].values:
                        x = coherence.sel(seed=seed, epoch=last).squeeze().values.ravel()
                        y = -mse.sel(seed=seed, epoch=last).squeeze().values.ravel()
                        mask = np.isfinite(x) & np.isfinite(y)
                        values.append(_correlation(x[mask], y[mask], "pearson"))
                    key = {
                        "dataset": str(dataset_name),
                        "variant": str(variant),
                        "way": int(dataset["way"].values[0]),
                        "shot": -1,
                        "algorithm": str(algorithm),
                    }
                    self._row(
                        5,
                        "gradient coherence at θs correlates with generalization",
                        key,
                        f"Pearson R(gradient coherence, −MSE) across k at epoch {last}",
                        values,
                        t.gradient_coherence_correlation,
                        ">=",
                    )

    def claim_finetune_coherence(self, dataset: xr.Dataset) -> None:
        """6: the finetune baseline's coherences stay near zero relative to MAML's."""
        t = self.thresholds
        if (
            "finetune" not in dataset["algorithm"].values
            or "maml" not in dataset["algorithm"].values
        ):
            return
        for variable in ("trajectory_coherence", "gradient_coherence"):
            if variable not in dataset:
                continue
            for key, finetune in _settings(dataset, variable):
                if key["algorithm"] != "finetune":
                    continue
                maml = dataset[variable].sel(
                    {**{d: key[d] for d in SETTING_DIMS}, "algorithm": "maml"}
                )
                ratios = []
                for seed in finetune["seed"].values:
                    f = np.nanmean(np.abs(finetune.sel(seed=seed).values))
                    m_values = maml.sel(seed=seed).values if seed in maml["seed"].values else []
                    m = np.nanmean(np.abs(m_values)) if len(m_values) else math.nan
                    ratios.append(float(f / m) if m and math.isfinite(m) else math.nan)
                self._row(
                    6,
                    "finetune coherence stays near zero relative to MAML's",
                    key,
                    f"mean abs({variable.replace('_', ' ')}) finetune / MAML",
                    ratios,
                    t.finetune_coherence_ratio,
                    "<=",
                )


def check_claims(datasets: Sequence[xr.Dataset], thresholds: Thresholds) -> pd.DataFrame:
    """The claims table (one row per claim × setting × statistic) of the aggregated Datasets."""
    checker = ClaimChecker(thresholds)
    for dataset in datasets:
        missing = [d for d in (*SETTING_DIMS, "seed", "epoch") if d not in dataset.dims]
        if missing:
            raise ClaimsError(f"aggregated Dataset lacks dims {missing}")
        checker.check(dataset)
    table = pd.DataFrame([asdict(row) for row in checker.rows])
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
        "Each statistic is computed per seed over the measured epochs; *value* is its mean over "
        "seeds with a 95% bootstrap interval over seeds. *holds* means the mean passes the "
        "threshold; *CI clear* says whether the whole interval does too.",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No claim could be checked: the inputs lack the metrics.", ""])
    for claim, rows in table.groupby("claim", sort=True):
        lines += [f"## Claim {claim}: {rows['title'].iloc[0]}", ""]
        lines += [
            "| data | setting | algorithm | statistic | value [95% CI] | threshold | verdict | CI clear |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows.itertuples():
            shot = "all k" if row.shot == -1 else f"{row.shot}-shot"
            setting = f"{row.way}-way {shot}, {row.variant}"
            value = f"{row.value:.3g} [{row.ci_low:.3g}, {row.ci_high:.3g}]"
            lines.append(
                f"| {_cell(row.data)} | {setting} | {row.algorithm} | {_cell(row.statistic)} | {value} "
                f"| {row.direction} {row.threshold:g} | {row.verdict} | "
                f"{'yes' if row.ci_excludes_threshold else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)
