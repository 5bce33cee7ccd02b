"""Figures from synthetic aggregates: each renders a PDF and a PNG; missing settings raise."""

from __future__ import annotations

import argparse
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
from metalandscape.figures.common import Setting, mean_and_ci95
from metalandscape.metrics.evaluate import RUN_DIMS

CLASSIFICATION = [("fontglot", 5, 1), ("fontglot", 20, 1), ("miniimagenet", 5, 5)]
SINUSOID = [("sinusoid", 1, 5), ("sinusoid", 1, 10), ("sinusoid", 1, 20)]
ALGORITHMS = ("fomaml", "finetune", "maml")


def synthetic_aggregate(
    settings=CLASSIFICATION + SINUSOID, *, seeds=(0, 1, 2), epochs=6, algorithms=ALGORITHMS
) -> xr.Dataset:
    """An aggregate shaped like ``metalandscape aggregate`` output, with plausible curves."""
    rng = np.random.default_rng(0)
    coords = {
        "dataset": sorted({s[0] for s in settings}),
        "variant": ["default"],
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
    ]
    values = {name: np.full(shape, np.nan) for name in names}
    progress = np.linspace(0.0, 1.0, epochs)
    for dataset, way, shot in settings:
        for algorithm in algorithms:
            for seed in seeds:
                index = (
                    coords["dataset"].index(dataset),
                    0,
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
                if dataset == "sinusoid":
                    values["test_target_mse_mean"][index] = (
                        3.0 / (1 + 3 * progress) / shot**0.5 + (noise[4])
                    )
                else:
                    values["test_target_accuracy_mean"][index] = (
                        0.4 + 0.5 * progress / way**0.3 + noise[3]
                    )
    aggregate = xr.Dataset(
        {name: (RUN_DIMS, data) for name, data in values.items()},
        coords={dim: np.asarray(levels) for dim, levels in coords.items()},
    )
    aggregate["test_target_accuracy"] = (
        (*RUN_DIMS, "task_accuracy"),
        np.repeat(values["test_target_accuracy_mean"][..., None], 4, axis=-1),
    )
    return aggregate


@pytest.fixture(scope="module")
def aggregate_dataset() -> xr.Dataset:
    return synthetic_aggregate()


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_renders_pdf_and_png(tmp_path, aggregate_dataset, name):
    assert FIGURES[name].is_drawable(aggregate_dataset)
    pdf, png = render_figure(name, aggregate_dataset, tmp_path / "out" / f"{name}.pdf")
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
    assert "fontglot (Omniglot stand-in), 5-way 1-shot" in titles
    assert "MiniImagenet, 5-way 5-shot" in titles and "sinusoid, K=10" in titles
    assert (
        Setting("fontglot", "wide", 20, 5).title
        == "fontglot (Omniglot stand-in), 20-way 5-shot [wide]"
    )


def test_fig2_and_fig5_show_maml_family_only(aggregate_dataset):
    fig2 = FIGURES["fig2"].draw(aggregate_dataset)
    labels = {t.get_text() for legend in fig2.legends for t in legend.get_texts()}
    assert labels == {"MAML", "First-Order MAML"}
    titles = panel_titles(FIGURES["fig5"].draw(aggregate_dataset))
    assert not any("Finetune" in title for title in titles)
    assert sum("fontglot (Omniglot stand-in), 20-way 1-shot" in t for t in titles) == 2


def test_bands_need_two_seeds():
    assert bands(FIGURES["fig2"].draw(synthetic_aggregate())) > 0
    one_seed = synthetic_aggregate(seeds=(4,))
    for name in FIGURES:
        assert bands(FIGURES[name].draw(one_seed)) == 0


def test_mean_and_ci95_is_student_t_over_seeds():
    mean, half_width = mean_and_ci95(np.array([[1.0, 5.0], [2.0, np.nan], [3.0, np.nan]]))
    np.testing.assert_allclose(mean, [2.0, 5.0])
    assert half_width[0] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(half_width[1])


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
        ("fig9", synthetic_aggregate(), "unknown figure 'fig9'"),
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
