"""Figures from synthetic aggregates: each renders a PDF and a PNG; missing settings raise."""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import PolyCollection

from metalandscape.aggregate import write_aggregate
from metalandscape.figures import (
    FIGURE_NAMES,
    FIGURES,
    FigureError,
    add_figure_parser,
    render_figure,
)
from metalandscape.figures.common import Setting, new_figure, plot_mean_band
from metalandscape.metrics import GRID_DIMS as RUN_DIMS

CLASSIFICATION = [("fontglot", 5, 1), ("fontglot", 20, 1), ("miniimagenet", 5, 5)]
SINUSOID = [("sinusoid", 1, 5), ("sinusoid", 1, 10), ("sinusoid", 1, 20)]
ALGORITHMS = ("fomaml", "finetune", "maml")


def synthetic_aggregate(
    settings=CLASSIFICATION + SINUSOID,
    *,
    seeds=(0, 1, 2),
    epochs=6,
    algorithms=ALGORITHMS,
    variants=("default",),
) -> xr.Dataset:
    """An aggregate shaped like ``metalandscape aggregate`` output, with plausible curves."""
    rng = np.random.default_rng(0)
    coords = {
        "dataset": sorted({s[0] for s in settings}),
        "variant": sorted(variants),
        "way": sorted({s[1] for s in settings}),
        "shot": sorted({s[2] for s in settings}),
        "algorithm": sorted(algorithms),
        "seed": list(seeds),
        "epoch": list(range(epochs)),
    }
    shape = tuple(len(coords[d]) for d in RUN_DIMS)
    names = [
        "hessian_top_eigenvalue_mean",
        "trajectory_coherence",
        "gradient_coherence",
        "test_target_accuracy_mean",
        "test_target_mse_mean",
        "train_target_accuracy_mean",
        "support_loss_mean",
        "trajectory_norm_mean",
    ]
    values = {name: np.full(shape, np.nan) for name in names}
    progress = np.linspace(0.0, 1.0, epochs)
    for (dataset, way, shot), variant in itertools.product(settings, variants):
        for algorithm in algorithms:
            for seed in seeds:
                index = (
                    coords["dataset"].index(dataset),
                    coords["variant"].index(variant),
                    coords["way"].index(way),
                    coords["shot"].index(shot),
                    coords["algorithm"].index(algorithm),
                    coords["seed"].index(seed),
                )
                noise = rng.normal(scale=0.02, size=(len(names), epochs))
                scale = 1.0 + 0.3 * (algorithm == "fomaml")
                if algorithm != "finetune":
                    values["hessian_top_eigenvalue_mean"][index] = scale * (
                        5 - 3 * progress + 4 * progress**2 + noise[0] * 10
                    )
                values["trajectory_coherence"][index] = 0.1 + 0.3 * progress + noise[1]
                values["gradient_coherence"][index] = (0.5 + 2 * progress) * shot / 10 + noise[
                    2
                ] * 5
                values["support_loss_mean"][index] = 1.5 * np.exp(-3 * progress) + noise[5]
                values["trajectory_norm_mean"][index] = (
                    2.0 + progress * (1 + (algorithm == "finetune")) + noise[6]
                )
                if dataset == "sinusoid":
                    values["test_target_mse_mean"][index] = (
                        3.0 / (1 + 3 * progress) / shot**0.5 + (noise[4])
                    )
                else:
                    values["test_target_accuracy_mean"][index] = (
                        0.4 + (0.5 + 0.05 * (algorithm == "regmaml")) * progress / way**0.3
                    ) + noise[3]
                    values["train_target_accuracy_mean"][index] = (
                        0.45 + 0.5 * progress / way**0.2 + noise[7]
                    )
    aggregate = xr.Dataset(
        {name: (RUN_DIMS, data) for name, data in values.items()},
        coords={dim: np.asarray(levels) for dim, levels in coords.items()},
    )
    aggregate["test_target_accuracy"] = (
        (*RUN_DIMS, "task_accuracy"),
        np.repeat(values["test_target_accuracy_mean"][..., None], 4, axis=-1),
    )
    return with_landscape_measures(aggregate)


def with_landscape_measures(aggregate: xr.Dataset) -> xr.Dataset:
    """Issue 14's variables, derived from the others: every registered figure gets its data."""
    flatness = aggregate["hessian_top_eigenvalue_mean"]
    grid = np.linspace(-10.0, 30.0, 81)
    bulk = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
    outlier = np.exp(-0.5 * (grid - flatness.values[..., None]) ** 2) / np.sqrt(2 * np.pi)
    layers = np.array([0.3, 1.0, 0.6])
    return aggregate.assign(
        function_coherence=0.2 + 0.5 * aggregate["trajectory_coherence"],
        spectral_density_mean=((*RUN_DIMS, "eigenvalue"), 0.9 * bulk + 0.1 * outlier),
        layer_top_eigenvalue_mean=((*RUN_DIMS, "layer"), flatness.values[..., None] * layers),
    ).assign_coords(eigenvalue=grid, layer=["features.0.0", "features.1.0", "head"])


FULL_SETTINGS = [("fontglot", 5, 1), ("fontglot", 5, 5), ("sinusoid", 1, 5), ("sinusoid", 1, 10)]
FULL_VARIANTS = ("T1", "long")
FULL_ALGORITHMS = ("finetune", "maml", "regmaml")


def full_aggregate(**options) -> xr.Dataset:
    """Every variable, the variants long and T1, and regularized MAML: what every figure needs."""
    options = {"algorithms": FULL_ALGORITHMS, "variants": FULL_VARIANTS, **options}
    return synthetic_aggregate(FULL_SETTINGS, **options)


@pytest.fixture(scope="module")
def aggregate_dataset() -> xr.Dataset:
    return synthetic_aggregate()


@pytest.fixture(scope="module")
def full_dataset() -> xr.Dataset:
    return full_aggregate()


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_renders_pdf_and_png(tmp_path, full_dataset, name):
    dataset = full_dataset
    if name == "comparison":  # two rows of panels per setting: 96 panels (2.5 min) for all 8
        dataset = full_dataset.sel(variant=["T1"], shot=[1, 10])
    assert FIGURES[name].is_drawable(dataset)
    pdf, png = render_figure(name, dataset, tmp_path / "out" / f"{name}.pdf")
    assert pdf == tmp_path / "out" / f"{name}.pdf" and png == pdf.with_suffix(".png")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    assert sorted(p.name for p in pdf.parent.iterdir()) == [pdf.name, png.name]


def panel_titles(figure) -> list[str]:
    return [axes.get_title() for axes in figure.get_axes() if axes.get_title()]


def bands(figure) -> int:
    return sum(
        isinstance(artist, PolyCollection)
        for axes in figure.get_axes()
        for artist in axes.collections
    )


def test_fontglot_is_named_as_the_omniglot_stand_in(aggregate_dataset):
    titles = panel_titles(FIGURES["fig2"].draw(aggregate_dataset))
    assert "fontglot (Omniglot stand-in)\n5-way 1-shot" in titles
    assert "MiniImagenet\n5-way 5-shot" in titles and "sinusoid, K=10" in titles
    assert (
        Setting("fontglot", "wide", 20, 5).title
        == "fontglot (Omniglot stand-in)\n20-way 5-shot [wide]"
    )


def test_fig2_and_fig5_show_maml_family_only(aggregate_dataset):
    fig2 = FIGURES["fig2"].draw(aggregate_dataset)
    labels = {t.get_text() for legend in fig2.legends for t in legend.get_texts()}
    assert labels == {"MAML", "First-Order MAML"}
    titles = panel_titles(FIGURES["fig5"].draw(aggregate_dataset))
    assert not any("Finetune" in title for title in titles)
    assert sum("fontglot (Omniglot stand-in)\n20-way 1-shot" in t for t in titles) == 2


def test_bands_need_three_seeds():
    assert bands(FIGURES["fig2"].draw(synthetic_aggregate())) > 0
    for seeds in ((4,), (4, 5)):
        few = full_aggregate(seeds=seeds)
        for name in FIGURES:
            data = few.sel(variant=["T1"], shot=[1, 10]) if name == "comparison" else few
            assert bands(FIGURES[name].draw(data)) == 0, (name, seeds)


def test_band_stays_in_the_quantity_range_and_few_seeds_are_thin_lines():
    axes = new_figure(3, 3).subplots()
    accuracy = np.array([[0.99, 0.5], [0.6, 0.6], [1.0, 0.7]])
    plot_mean_band(axes, np.arange(2), accuracy, color="k", bounds=(0.0, 1.0))
    (band,) = [c for c in axes.collections if isinstance(c, PolyCollection)]
    y = band.get_paths()[0].vertices[:, 1]
    assert y.max() <= 1.0 and y.min() >= 0.0
    two_seeds = new_figure(3, 3).subplots()
    plot_mean_band(two_seeds, np.arange(2), accuracy[:2], color="k")
    assert len(two_seeds.lines) == 3 and not two_seeds.collections  # mean + one line per seed


def test_fig8_with_too_few_epochs_for_a_correlation_still_renders(tmp_path):
    short = synthetic_aggregate(SINUSOID, epochs=2)
    pdf, png = render_figure("fig8", short, tmp_path / "fig8.pdf")
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0


@pytest.mark.parametrize(
    ("name", "dataset", "message"),
    [
        ("fig8", synthetic_aggregate(CLASSIFICATION), "fig8 needs sinusoid runs"),
        ("fig5", synthetic_aggregate(SINUSOID), "fig5 needs classification runs"),
        ("fig5", synthetic_aggregate(algorithms=("finetune",)), "fig5 needs"),
        (
            "fig2",
            synthetic_aggregate().drop_vars("hessian_top_eigenvalue_mean"),
            "lacks it",
        ),
        ("fig13", synthetic_aggregate(), "unknown figure 'fig13'"),
        ("fig3", synthetic_aggregate(), "fig3 needs an overtraining run"),
        ("fig4", full_aggregate(algorithms=("maml", "regmaml")), "fig4 needs a finetune"),
        (
            "fig6",
            full_aggregate().drop_vars(
                ["trajectory_coherence", "gradient_coherence", "trajectory_norm_mean"]
            ),
            "fig6 needs finetune",
        ),
        ("fig6", synthetic_aggregate(SINUSOID), "fig6 needs finetune"),
        ("fig7", full_aggregate().drop_vars("gradient_coherence"), "fig7 needs variables"),
        ("fig7", synthetic_aggregate(SINUSOID), "fig7 needs classification runs"),
        ("fig9", synthetic_aggregate(), "fig9 needs maml and regmaml"),
        ("fig10", synthetic_aggregate().drop_vars("train_target_accuracy_mean"), "fig10 needs"),
        ("fig10", synthetic_aggregate(algorithms=("finetune",)), "fig10 needs meta-learner"),
        ("fig11", synthetic_aggregate(SINUSOID), "fig11 needs classification runs"),
        ("fig12", synthetic_aggregate(algorithms=("finetune",)), "fig12 needs classification"),
    ],
)
def test_missing_settings_raise_and_write_nothing(tmp_path, name, dataset, message):
    if name in FIGURES:
        assert not FIGURES[name].is_drawable(dataset)
    with pytest.raises(FigureError, match=message):
        render_figure(name, dataset, tmp_path / f"{name}.pdf")
    assert list(tmp_path.iterdir()) == []


def run_subcommand(argv: list[str]) -> int:
    """Parse ``argv`` with the figure subcommand as the CLI registers it, and run it."""
    parser = argparse.ArgumentParser(prog="metalandscape")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true")
    add_figure_parser(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_lists_and_draws_from_an_aggregate_file(tmp_path, capsys):
    assert run_subcommand(["figure", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}:" in listed for name in FIGURES)
    nc_path, _ = write_aggregate(
        synthetic_aggregate(SINUSOID), tmp_path / "agg.nc", tmp_path / "agg.csv"
    )
    out = tmp_path / "figures" / "fig8.pdf"
    assert run_subcommand(["figure", "fig8", "--input", str(nc_path), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    with pytest.raises(FigureError, match="fig5 needs classification runs"):
        run_subcommand(
            ["figure", "fig5", "--input", str(nc_path), "--out", str(tmp_path / "f.pdf")]
        )
    with pytest.raises(FigureError, match=r"must end in \.pdf"):
        run_subcommand(
            ["figure", "fig8", "--input", str(nc_path), "--out", str(tmp_path / "f.txt")]
        )
    with pytest.raises(FigureError, match="needs NAME"):
        run_subcommand(["figure", "fig8"])


def test_registering_the_subcommands_imports_neither_matplotlib_nor_torch():
    code = (
        "import sys, metalandscape.figures, metalandscape.aggregate; "
        "print(sorted(m for m in ('matplotlib', 'seaborn', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert tuple(FIGURES) == FIGURE_NAMES


def test_the_registry_is_every_declared_spec_paper_figures_first_in_order():
    import importlib
    import pkgutil

    import metalandscape.figures as package

    declared = [
        spec.name
        for info in pkgutil.iter_modules(package.__path__)
        for spec in getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "SPECS", ())
    ]
    assert sorted(FIGURES) == sorted(declared)
    assert all(FIGURES[name] is spec for name, spec in zip(FIGURES, package.discover_specs()))
    paper = [name for name in FIGURE_NAMES if name.removeprefix("fig").isdigit()]
    assert paper == [f"fig{number}" for number in range(2, 13)]
    assert list(FIGURE_NAMES[: len(paper)]) == paper  # the extensions come after fig12


def test_fig3_shows_only_the_long_runs_in_three_panels(full_dataset):
    figure = FIGURES["fig3"].draw(full_dataset)
    titles = panel_titles(figure)
    assert titles and all(title.endswith("[long]") for title in titles)
    labels = {axes.get_ylabel() for axes in figure.get_axes() if axes.get_ylabel()}
    assert len(labels) == 3 and "meta-test target accuracy" in labels
    assert len(titles) == 3 * 2  # two long classification settings, three panels each


def test_fig4_is_the_finetune_baseline_without_curvature_when_unmeasured(full_dataset):
    figure = FIGURES["fig4"].draw(full_dataset)
    legend = {t.get_text() for legend in figure.legends for t in legend.get_texts()}
    assert legend == {"Finetune baseline"}
    # finetune has no Hessian values: two panels per setting
    assert len(figure.get_axes()) == 2 * 2 * len(FULL_VARIANTS)


def test_fig6_draws_only_the_panels_with_data(full_dataset):
    titles = panel_titles(FIGURES["fig6"].draw(full_dataset))
    assert sum(t.startswith("(a)") for t in titles) == sum(t.startswith("(b)") for t in titles) == 1
    letters = [t.split(" ")[0] for t in titles]
    assert letters == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]  # one letter per panel
    # trajectory norms: one panel per setting (2 shots x 2 variants), 1-shot first
    assert titles[2].startswith("(c) fontglot (Omniglot stand-in)\n5-way 1-shot")
    assert titles[4].startswith("(e) fontglot (Omniglot stand-in)\n5-way 5-shot")
    only_norms = full_dataset.drop_vars(["trajectory_coherence", "gradient_coherence"])
    titles = panel_titles(FIGURES["fig6"].draw(only_norms))
    assert not any(t.startswith(("(a)", "(b)")) for t in titles)
    assert any(t.startswith("(c)") for t in titles)


def test_fig7_prefers_one_step_models_and_fig12_shows_every_setting(full_dataset):
    fig7 = panel_titles(FIGURES["fig7"].draw(full_dataset))
    assert fig7 and all(title.split("\n")[1].endswith("[T1], MAML") for title in fig7)
    # R goes into the title, never into a box over the data
    assert all(title.split("\n")[-1].startswith("R ") for title in fig7)
    assert not any(axes.texts for axes in FIGURES["fig7"].draw(full_dataset).get_axes())
    fig12 = panel_titles(FIGURES["fig12"].draw(full_dataset))
    assert len(fig12) == 2 * len(FULL_VARIANTS) * 2  # settings x variants x (MAML, reg. MAML)
    without_t1 = full_aggregate(variants=("default",))
    assert len(panel_titles(FIGURES["fig7"].draw(without_t1))) == 2


def test_fig9_prints_the_relative_error_reduction(full_dataset):
    from metalandscape.figures.regularizer import error_reduction

    plain = xr.DataArray([[0.5, 0.6], [0.5, 0.6]], dims=("seed", "epoch"))
    regularized = xr.DataArray([[0.5, 0.7], [0.5, 0.7]], dims=("seed", "epoch"))
    final, best = error_reduction(plain, regularized)
    assert final == pytest.approx(0.25) and best == pytest.approx(0.25)
    figure = FIGURES["fig9"].draw(full_dataset)
    texts = [t.get_text() for axes in figure.get_axes() for t in axes.texts]
    assert texts and all("relative error reduction" in text for text in texts)


def test_fig2_draws_each_runs_two_over_alpha_and_the_start_curvature(aggregate_dataset):
    """With the hessian metric's α and λmax at θs in the aggregate, fig2 draws 2/α dotted per
    setting and λmax(θs) dashed; without them, neither."""
    from metalandscape.figures.flatness import START_FLATNESS, draw_fig2
    from metalandscape.figures.panels import STABILITY_LABEL

    plain = draw_fig2(aggregate_dataset)
    labels = [text.get_text() for legend in plain.legends for text in legend.get_texts()]
    assert STABILITY_LABEL not in labels and not any("at θs" in label for label in labels)
    alpha = xr.full_like(aggregate_dataset["hessian_top_eigenvalue_mean"], 0.1)
    alpha.loc[{"way": 20}] = 0.4
    dataset = aggregate_dataset.assign(
        inner_step_size=alpha,
        **{START_FLATNESS: aggregate_dataset["hessian_top_eigenvalue_mean"] * 3},
    )
    figure = draw_fig2(dataset)
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert STABILITY_LABEL in labels and "MAML at θs" in labels
    lines = {
        round(line.get_ydata()[0], 6)
        for axes in figure.axes
        for line in axes.get_lines()
        if line.get_linestyle() == ":"
    }
    assert {20.0, 5.0} <= lines
