"""Drafts (issue #14 item 5): the landscape measures over meta-training, from the aggregate.

Pure drawing functions ``xarray.Dataset -> matplotlib Figure``; registration (needs, captions)
is the figure registry's. A *setting* is one (dataset, variant, way, shot, algorithm); seeds are
averaged. Variables with extra dimensions (``eigenvalue``, ``layer``) are expected in the
aggregate with those dimensions after the run dimensions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SETTING_DIMS = ("dataset", "variant", "way", "shot", "algorithm")
SPECTRAL_DENSITY = "spectral_density_mean"
LAYER_TOP_EIGENVALUE = "layer_top_eigenvalue_mean"
FUNCTION_COHERENCE = "function_coherence"
TRAJECTORY_COHERENCE = "trajectory_coherence"
TEST_ACCURACY = "test_target_accuracy_mean"
DENSITY_FLOOR = 1e-6  # log10 density below this is drawn as the floor


def _settings(data: xr.DataArray) -> Iterator[tuple[str, xr.DataArray]]:
    """(label, data of one setting with seeds kept) for each setting with any finite value."""
    stacked = data.stack(setting=SETTING_DIMS)
    for index in range(stacked.sizes["setting"]):
        one = stacked.isel(setting=index)
        if not bool(np.isfinite(one.values).any()):
            continue
        dataset, variant, way, shot, algorithm = one["setting"].item()
        variant_label = "" if variant in ("", "default", "none") else f" {variant}"
        yield (
            f"{dataset}{variant_label} {way}-way {shot}-shot, {algorithm}",
            one.drop_vars(["setting", *SETTING_DIMS], errors="ignore"),
        )


def _grid(count: int) -> tuple[int, int]:
    columns = min(count, 3)
    return max(1, -(-count // columns)), max(1, columns)


def _require(dataset: xr.Dataset, names: tuple[str, ...], figure: str) -> None:
    lacking = [name for name in names if name not in dataset]
    if lacking:
        raise ValueError(f"{figure} needs variables {list(names)}; the aggregate lacks {lacking}")


def draw_spectral_density(dataset: xr.Dataset) -> Figure:
    """Heat map per setting: epoch × eigenvalue, colour = log10 of the seed-mean SLQ density."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    _require(dataset, (SPECTRAL_DENSITY,), "the spectral density figure")
    panels = list(_settings(dataset[SPECTRAL_DENSITY]))
    if not panels:
        raise ValueError(f"the aggregate has no finite {SPECTRAL_DENSITY}")
    rows, columns = _grid(len(panels))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False, layout="constrained"
    )
    norm = Normalize(vmin=np.log10(DENSITY_FLOOR), vmax=None)
    logs = []
    for axis, (label, data) in zip(axes.flat, panels, strict=False):
        mean = data.mean("seed", skipna=True).dropna("epoch", how="all")
        log_density = np.log10(
            np.maximum(mean.transpose("epoch", "eigenvalue").values, DENSITY_FLOOR)
        )
        logs.append(log_density)
        mesh = axis.pcolormesh(
            mean["eigenvalue"].values,
            mean["epoch"].values,
            log_density,
            shading="nearest",
            norm=norm,
        )
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("Hessian eigenvalue λ")
        axis.set_ylabel("epoch")
    norm.vmax = max(float(np.max(log)) for log in logs)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.colorbar(mesh, ax=axes, label="log₁₀ spectral density", shrink=0.9)
    figure.suptitle("Hessian spectral density of the support loss at θ̃ over meta-training")
    return figure


def draw_layer_curvature(dataset: xr.Dataset) -> Figure:
    """Per setting: each layer's seed-mean λmax of its Hessian block against epoch (log scale)."""
    import matplotlib.pyplot as plt

    _require(dataset, (LAYER_TOP_EIGENVALUE,), "the per-layer curvature figure")
    panels = list(_settings(dataset[LAYER_TOP_EIGENVALUE]))
    if not panels:
        raise ValueError(f"the aggregate has no finite {LAYER_TOP_EIGENVALUE}")
    rows, columns = _grid(len(panels))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False, layout="constrained"
    )
    colors = plt.get_cmap("viridis")
    for axis, (label, data) in zip(axes.flat, panels, strict=False):
        layers = data["layer"].values.tolist()
        for position, layer in enumerate(layers):
            series = data.sel(layer=layer)
            mean = series.mean("seed", skipna=True)
            keep = np.isfinite(mean.values)
            epochs = series["epoch"].values[keep]
            axis.plot(
                epochs,
                mean.values[keep],
                color=colors(position / max(1, len(layers) - 1)),
                label=layer,
                marker="o",
                markersize=2.5,
            )
            if series.sizes.get("seed", 1) > 1:
                low = series.min("seed", skipna=True).values[keep]
                high = series.max("seed", skipna=True).values[keep]
                axis.fill_between(epochs, low, high, color=axis.lines[-1].get_color(), alpha=0.15)
        axis.set_yscale("log")
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel("λmax of the layer's Hessian block")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, title="layer", title_fontsize=7)
    figure.suptitle("Per-layer curvature over meta-training (band: seed range)")
    return figure


def draw_coherence_vs_accuracy(dataset: xr.Dataset) -> Figure:
    """Parameter- and function-space coherence against meta-test accuracy, one point per
    (seed, epoch), a row per (dataset, variant, way, shot), colour = algorithm; Pearson r."""
    import matplotlib.pyplot as plt
    from scipy import stats

    names = (TRAJECTORY_COHERENCE, FUNCTION_COHERENCE, TEST_ACCURACY)
    _require(dataset, names, "the coherence-vs-accuracy figure")
    problems = dataset[list(names)].stack(problem=SETTING_DIMS[:-1])
    rows = [
        index
        for index in range(problems.sizes["problem"])
        if bool(np.isfinite(problems[TEST_ACCURACY].isel(problem=index).values).any())
    ]
    if not rows:
        raise ValueError(f"the aggregate has no finite {TEST_ACCURACY}")
    figure, axes = plt.subplots(
        len(rows), 2, figsize=(8.4, 3.3 * len(rows)), squeeze=False, layout="constrained"
    )
    colors = plt.get_cmap("tab10")
    for row, index in zip(axes, rows, strict=True):
        problem = problems.isel(problem=index)
        title = "{} {} {}-way {}-shot".format(*problem["problem"].item())
        for axis, name, label in zip(
            row,
            (TRAJECTORY_COHERENCE, FUNCTION_COHERENCE),
            ("parameter-space (trajectory) coherence", "function-space coherence"),
            strict=True,
        ):
            xs_all, ys_all = [], []
            for position, algorithm in enumerate(problem["algorithm"].values.tolist()):
                xs = problem[name].sel(algorithm=algorithm).values.ravel()
                ys = problem[TEST_ACCURACY].sel(algorithm=algorithm).values.ravel()
                keep = np.isfinite(xs) & np.isfinite(ys)
                if not keep.any():
                    continue
                axis.scatter(xs[keep], ys[keep], s=12, color=colors(position), label=algorithm)
                xs_all.append(xs[keep])
                ys_all.append(ys[keep])
            if xs_all and sum(map(len, xs_all)) >= 3:
                r = stats.pearsonr(np.concatenate(xs_all), np.concatenate(ys_all)).statistic
                axis.text(0.03, 0.95, f"r = {r:.2f}", transform=axis.transAxes, va="top")
            axis.set_xlabel(label)
            axis.set_ylabel("meta-test accuracy")
            axis.set_title(title, fontsize=9)
        row[0].legend(fontsize=7)
    figure.suptitle("Coherence in parameter space and in function space against accuracy")
    return figure


__all__ = ["draw_coherence_vs_accuracy", "draw_layer_curvature", "draw_spectral_density"]
