"""The experiment grid (metalandscape.grid): runs, bundles, epochs, one-line errors, and the figure
schedule checked against the figure code itself on aggregates shaped like the presets'."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml

from metalandscape.figures import FIGURES
from metalandscape.grid import GridError, Run, build_grid, bundle_name, metric_file
from metalandscape.runs import RUN_DIMS, RunKey

REPO = Path(__file__).resolve().parents[1]
PRESETS = (
    None,
    "workflow/presets/tiny.yaml",
    "workflow/presets/paper.yaml",
    "workflow/presets/study.yaml",
)
EPOCHS = 5


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's --configfile merge: mappings merged key by key, lists replaced."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load_config(preset: str | None = None) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if preset is not None:
        config = merged(config, yaml.safe_load((REPO / preset).read_text()))
    return config


# ---- runs, bundles, epochs ------------------------------------------------------------------


def test_default_grid_runs_families_and_bundles() -> None:
    grid = build_grid(load_config())
    assert len(grid.runs) == 14
    assert {family: len(ids) for family, ids in grid.families.items()} == {
        "sinusoid": 6,
        "fontglot": 8,
    }
    run = grid.runs["fontglot-default-5way1shot-maml-seed0"]
    assert run.key == RunKey("fontglot", "default", 5, 1, "maml", 0)
    assert run.kind == "classification" and run.epochs == 8
    assert sorted(run.measured_epochs) == list(range(9))
    assert grid.bundles(run.id) == [
        (
            "accuracy",
            "function_coherence",
            "gradient_coherence",
            "hessian",
            "hessian_trace",
            "support_loss",
            "trajectory_coherence",
        )
    ]
    sinusoid = grid.runs["sinusoid-default-1way5shot-maml-seed1"]
    assert sinusoid.kind == "regression"
    assert sorted(sinusoid.measured_epochs) == list(range(11))
    assert grid.data_inputs(sinusoid.id) == [] and grid.data_inputs(run.id) == [
        "results/data/fontglot.npz"
    ]
    # one metric file per (run, metric), all measured epochs inside
    assert len(grid.metric_files("fontglot")) == 6 * 7 + 2 * 4
    assert metric_file(run.id, "hessian") in grid.metric_files("fontglot")


def test_train_and_epoch_arguments_are_sorted_argument_lists() -> None:
    run = build_grid(load_config()).runs["sinusoid-default-1way2shot-maml-seed0"]
    arguments = run.train_arguments()
    assert arguments[::2] == ["--set"] * (len(arguments) // 2)
    pairs = arguments[1::2]
    assert pairs == sorted(pairs, key=lambda pair: pair.split("=")[0])
    assert "n_way=1" in pairs and "algorithm=maml" in pairs and "epochs=10" in pairs
    assert run.epoch_arguments()[:4] == ["--epoch", "0", "--epoch", "1"]


def test_longer_runs_are_scheduled_first() -> None:
    """The study's 5,000-iteration runs start before its 600-iteration sweep runs; sinusoids
    (seconds each) last."""
    runs = build_grid(load_config("workflow/presets/study.yaml")).runs
    long_run = runs["fontglot-T5-5way1shot-maml-seed0"]
    sinusoid_run = runs["sinusoid-default-1way2shot-maml-seed0"]
    short_run = runs["fontglot-T5a02-5way1shot-maml-seed0"]
    assert (long_run.meta_iterations, sinusoid_run.meta_iterations) == (5000, 3000)
    assert short_run.meta_iterations == 600
    assert (
        long_run.scheduling_priority
        > short_run.scheduling_priority
        > sinusoid_run.scheduling_priority
    )


def test_separate_metrics_get_their_own_bundle() -> None:
    config = load_config()
    config["separate_metrics"] = ["hessian", "accuracy"]
    grid = build_grid(config)
    bundles = grid.bundle_runs()
    assert len(bundles[("hessian",)]) == 6
    assert len(bundles[("accuracy",)]) == 14
    rest = ("gradient_coherence", "support_loss", "trajectory_coherence")
    assert len(bundles[("function_coherence", *rest[:1], "hessian_trace", *rest[1:])]) == 6
    assert len(bundles[rest]) == 2
    assert len(bundles[("gradient_coherence",)]) == 6
    assert bundle_name(("gradient_coherence", "hessian")) == "gradient_coherence__hessian"


def test_a_run_in_two_experiments_is_one_run_with_the_union_of_both() -> None:
    grid = build_grid(load_config("workflow/presets/paper.yaml"))
    shared = grid.runs["omniglot-T5-20way1shot-maml-seed0"]
    assert shared.families == ["omniglot", "regularized"]
    assert len(grid.runs) == 260
    assert sum(len(ids) for ids in grid.bundle_runs().values()) == 260


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["experiments"].append({**c["experiments"][1], "overrides": {"epochs": 3}}),
            "run fontglot-default-5way1shot-maml-seed0 is also in an earlier experiment",
        ),
        (
            lambda c: c["experiments"][0].update(ways=[2]),
            "experiments[0] (sinusoid): sinusoid regression has ways [1], got [2]",
        ),
        (
            lambda c: c["experiments"][1].update(metric_epochs=[50]),
            "experiments[1] (fontglot): metric_epochs [50] selects no epoch of 0..8",
        ),
        (
            lambda c: c["experiments"][1].update(dataset="omniglot"),
            "data.omniglot_path is not set",
        ),
        (
            lambda c: c["experiments"][1].update(algorithms=["protonet"]),
            "experiments[1] (fontglot): unknown algorithm 'protonet' in 'algorithms'; registered:",
        ),
        (
            lambda c: c["experiments"][1].update(metrics=["accuracy", "hesian"]),
            "experiments[1] (fontglot): unknown metric 'hesian' in 'metrics'",
        ),
        (
            lambda c: c.update(separate_metrics=["hesian"]),
            "unknown metric 'hesian' under the top-level 'separate_metrics' key",
        ),
        (lambda c: c.update(figures=["fig13"]), "figures: unknown figure 'fig13'; known: fig2,"),
        (
            lambda c: c.update(figures=[{"figure": "fig2", "family": "omniglot"}]),
            "figures: fig2 asks for family 'omniglot', which no experiment has",
        ),
        (
            lambda c: c.update(figures=[{"figure": "fig8", "family": "fontglot"}]),
            "figures: fig8 cannot be drawn from family 'fontglot': no regression run",
        ),
        (
            lambda c: c["experiments"][0]["overrides"].update(train_amplitude=[5, 1]),
            "train_amplitude",
        ),
    ],
)
def test_an_impossible_grid_is_one_grid_error_line(change: Any, message: str) -> None:
    config = load_config()
    change(config)
    with pytest.raises(GridError) as raised:
        build_grid(config)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


# ---- the figure schedule against the figure code --------------------------------------------


def metric_variables(metric: str, kind: str, splits: list[str]) -> list[str]:
    """Aggregate variables a built-in metric yields (metrics/builtin.py's names)."""
    score = "accuracy" if kind == "classification" else "mse"
    return {
        "accuracy": [f"{split}_target_{score}_mean" for split in splits],
        "support_loss": ["support_loss_mean"],
        "hessian": ["hessian_top_eigenvalue_mean"],
        "trajectory_coherence": ["trajectory_coherence", "trajectory_norm_mean"],
        "gradient_coherence": ["gradient_coherence"],
        "hessian_trace": ["hessian_trace_mean"],
        "function_coherence": ["function_coherence"],
        "spectral_density": ["spectral_density_mean"],
        "layer_curvature": ["layer_top_eigenvalue_mean"],
    }[metric]


def synthetic_aggregate(runs: list[Run], splits: list[str]) -> xr.Dataset:
    """An aggregate of ``runs`` shaped as `metalandscape aggregate` writes it: finite values
    where a run was measured with the metric, NaN elsewhere."""
    coords = {dim: sorted({getattr(run.key, dim) for run in runs}, key=str) for dim in RUN_DIMS}
    coords["epoch"] = list(range(EPOCHS))
    shape = [len(values) for values in coords.values()]
    rng = np.random.default_rng(0)
    data: dict[str, np.ndarray] = {}
    for run in runs:
        index = tuple(coords[dim].index(getattr(run.key, dim)) for dim in RUN_DIMS)
        for metric in run.metrics:
            for name in metric_variables(metric, run.kind, splits):
                array = data.setdefault(name, np.full(shape, np.nan))
                array[index] = rng.uniform(0.1, 0.9, EPOCHS)
    dims = (*RUN_DIMS, "epoch")
    return xr.Dataset({name: (dims, array) for name, array in data.items()}, coords=coords)


def drawable(config: dict[str, Any]) -> set[tuple[str, str]]:
    """(figure, family) pairs whose figure code accepts the family's synthetic aggregate."""
    grid = build_grid({**config, "figures": []})
    splits = list((config["metrics"].get("accuracy") or {}).get("splits", ["test", "train"]))
    found = set()
    for family, run_ids in grid.families.items():
        dataset = synthetic_aggregate([grid.runs[r] for r in run_ids], splits)
        for name, spec in FIGURES.items():
            if spec.missing(dataset) is None:
                found.add((name, family))
    return found


def scheduled(config: dict[str, Any]) -> set[tuple[str, str]]:
    grid = build_grid({**config, "figures": list(FIGURES)})
    return {(figure.figure, figure.family) for figure in grid.figures.values()}


EXTRA_GRIDS = {
    # a family of finetune runs only: no MAML-family figure (5, 8) may be scheduled for it
    "finetune only": lambda c: c.update(
        experiments=[
            {**c["experiments"][3], "family": "baseline"},
            {**c["experiments"][0], "algorithms": ["finetune"], "family": "baselinesine"},
        ]
    ),
    # sinusoid runs with the Hessian: figure 2 is drawn for them
    "sinusoid hessian": lambda c: c.update(
        experiments=[{**c["experiments"][0], "metrics": ["hessian", "accuracy"]}]
    ),
    # regularized MAML beside MAML, a long variant, train accuracy missing
    "regularized long": lambda c: (
        c["metrics"]["accuracy"].update(splits=["test"]),
        c.update(
            experiments=[
                {**c["experiments"][1], "algorithms": ["maml", "regmaml"], "seeds": [0]},
                {**c["experiments"][1], "algorithms": ["fomaml"], "variant": "long"},
            ]
        ),
    ),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_scheduled_figures_are_exactly_the_drawable_ones_for_each_preset(
    preset: str | None,
) -> None:
    config = load_config(preset)
    assert scheduled(config) == drawable(config)


@pytest.mark.parametrize("name", list(EXTRA_GRIDS))
def test_scheduled_figures_are_exactly_the_drawable_ones_for_edge_grids(name: str) -> None:
    config = load_config()
    EXTRA_GRIDS[name](config)
    assert scheduled(config) == drawable(config)


def test_edge_grids_schedule_what_the_issue_names() -> None:
    finetune = load_config()
    EXTRA_GRIDS["finetune only"](finetune)
    assert {figure for figure, _ in scheduled(finetune)} == {"fig4", "fig6"}
    sinusoid = load_config()
    EXTRA_GRIDS["sinusoid hessian"](sinusoid)
    assert scheduled(sinusoid) == {("fig2", "sinusoid"), ("comparison", "sinusoid")}


def test_skipped_figures_get_one_line_each() -> None:
    grid = build_grid(load_config("workflow/presets/tiny.yaml"))
    assert grid.skipped == {
        "fig3": "fig3 skipped: no run of variant 'long'",
        "fig4": "fig4 skipped: no run of baseline",
        "fig7": "fig7 skipped: no such run measured with ['gradient_coherence', 'accuracy']",
        "fig9": "fig9 skipped: no setting with runs of each of ['maml', 'regmaml']",
        "fig10": "fig10 skipped: metrics.accuracy.splits lacks ['train']",
        "fig12": "fig12 skipped: no such run measured with ['gradient_coherence', 'accuracy']",
    }
    assert set(grid.figures) == {
        "fig2",
        "fig5",
        "fig6",
        "fig8",
        "fig11",
        "comparison_fontglot",
        "comparison_sinusoid",
    }


def test_every_figure_declares_needs_title_and_caption_once() -> None:
    titles = [spec.title for spec in FIGURES.values()]
    assert len(set(titles)) == len(titles)
    for spec in FIGURES.values():
        assert spec.needs and spec.caption.strip() and spec.title
        for needs in spec.needs:
            assert needs.describe()


def test_study_preset_schedules_every_claim_figure() -> None:
    """The study preset draws every figure of the paper's claims 1-6, skipping none it lists
    (fig9: the interventions preset's)."""
    grid = build_grid(load_config("workflow/presets/study.yaml"))
    assert grid.skipped == {}
    drawn = {scheduled.figure for scheduled in grid.figures.values()}
    assert {f"fig{n}" for n in range(2, 13) if n != 9} <= drawn
    assert "functioncoherence" in drawn
    assert all(len(runs) >= 3 for runs in _seeds_per_setting(grid).values())


def _seeds_per_setting(grid) -> dict[tuple, set[int]]:
    seeds: dict[tuple, set[int]] = {}
    for run in grid.runs.values():
        key = run.key
        setting = (key.dataset, key.variant, key.way, key.shot, key.algorithm)
        seeds.setdefault(setting, set()).add(key.seed)
    return seeds


def test_runs_that_differ_only_by_seed_train_in_lockstep_groups() -> None:
    grid = build_grid(load_config())
    groups = grid.lockstep_groups()
    assert groups["fontglot-default-5way1shot-maml"] == [
        "fontglot-default-5way1shot-maml-seed0",
        "fontglot-default-5way1shot-maml-seed1",
    ]
    assert groups["sinusoid-default-1way5shot-maml"][1].endswith("-seed1")
    # One seed (5-shot) or an algorithm without a lockstep path (finetune): one job per run.
    solo = set(grid.solo_run_ids())
    assert "fontglot-default-5way5shot-maml-seed0" in solo
    assert "fontglot-default-5way1shot-finetune-seed0" in solo
    assert solo.isdisjoint(run for runs in groups.values() for run in runs)
    assert solo | {run for runs in groups.values() for run in runs} == set(grid.runs)
    assert grid.lockstep_rules() == {(0, 1): list(groups)}
    arguments = grid.group_train_arguments("fontglot-default-5way1shot-maml")
    assert arguments[-3:] == ["--seeds", "0", "1"] and not any(
        text.startswith("seed=") for text in arguments
    )
    config = load_config()
    config["lockstep"] = False
    grid = build_grid(config)
    assert grid.lockstep_groups() == {} and set(grid.solo_run_ids()) == set(grid.runs)


def test_ways_fontglot_cannot_supply_are_refused_at_planning() -> None:
    config = load_config()
    config["data"]["fontglot"]["classes"] = 3  # 1 train, 1 val, 1 test class
    with pytest.raises(GridError, match=r"5-way tasks need 5 classes but fontglot's train split"):
        build_grid(config)
    config = load_config()
    config["experiments"][1]["ways"] = [5000]
    with pytest.raises(
        GridError, match=r"5000-way tasks need 5000 classes .* train split has 1100"
    ):
        build_grid(config)
    config = load_config()
    config["experiments"][1]["overrides"] = {
        **config["experiments"][1]["overrides"],
        "train_classes": 4,
    }
    with pytest.raises(GridError, match="train split has 4"):
        build_grid(config)


def test_listed_metric_epochs_past_a_run_are_named_once_at_planning() -> None:
    config = load_config()
    config["experiments"][1]["metric_epochs"] = [0, 4, 8, 12, 40]
    grid = build_grid(config)
    run = grid.runs["fontglot-default-5way1shot-maml-seed0"]
    assert sorted(run.measured_epochs) == [0, 4, 8]
    assert any(
        "fontglot-default-5way1shot-maml-seed0 has 8 epochs; metric_epochs [12, 40] skipped" in line
        for line in grid.notes
    )
    assert build_grid(load_config()).notes == []
