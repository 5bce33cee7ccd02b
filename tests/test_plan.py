"""``metalandscape plan`` on the tiny preset: the grid's jobs and a probed estimate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_copy import copy_workflow

from metalandscape.grid import Run, build_grid
from metalandscape.plan import (
    FamilyEstimate,
    PlanError,
    Probe,
    choose_probes,
    cost_key,
    device_clock,
    duration,
    estimate_lines,
    examples_per_task,
    fill_in_probes,
    probe_settings,
    size_class,
    workflow_config,
)

REPO = Path(__file__).resolve().parents[1]

PLAN = [sys.executable, "-m", "metalandscape.cli", "plan"]


def test_plan_lists_the_jobs_and_estimates_each_family(tmp_path: Path) -> None:
    directory = copy_workflow(tmp_path / "wf")
    result = subprocess.run(
        [*PLAN, "--configfile", "workflow/presets/tiny.yaml", "--probe-iterations", "2"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  train          4  one per run" in out
    assert "  metrics        4  one per (run, metric bundle)" in out
    assert "  aggregate      2  sinusoid, fontglot" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha()}
    assert rows["sinusoid"][1:4] == ["2", "2", "20"]  # runs, metric jobs, iterations
    assert rows["fontglot"][1:4] == ["2", "2", "8"]  # MAML and Meta-SGD
    assert rows["total"][1:4] == ["4", "4", "28"]
    # A fresh copy has no fontglot file yet: the probe says it used stand-in images.
    assert "fontglot not found: probed on random images of the same shape" in out
    assert not (directory / "results").exists()


def test_plan_without_probe_and_a_missing_preset(tmp_path: Path) -> None:
    directory = copy_workflow(tmp_path / "wf")
    listed = subprocess.run(
        [*PLAN, "--no-probe", "--configfile", "workflow/presets/paper.yaml"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    assert "estimate" not in listed.stdout and "  claims         1" in listed.stdout
    missing = subprocess.run(
        [*PLAN, "--configfile", "nope.yaml"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "metalandscape plan: error: config file nope.yaml not found "
        "(run plan in the workflow's folder)"
    )


def test_probe_tasks_scale_back_to_the_configured_count() -> None:
    assert probe_settings({"tasks": 60, "split": "test"}, 4) == (
        {"tasks": 4, "split": "test"},
        15.0,
    )
    assert probe_settings({"tasks": 3}, 4) == ({"tasks": 3}, 1.0)
    assert probe_settings({}, 4) == ({}, 1.0)
    assert [duration(s) for s in (4.24, 65, 3 * 3600 + 5, 2 * 86400 + 61)] == [
        "4.2 s",
        "01:05",
        "03:00:05",
        "2 d 00:01:01",
    ]


def test_probe_limit_covers_every_class_and_interpolates_the_rest() -> None:
    """The paper grid under --probe-limit: every class probed at its largest task, the other
    settings' seconds linear in examples per task between probes (exact for a linear cost)."""
    config = workflow_config(REPO / "config.yaml", [REPO / "workflow/presets/paper.yaml"])
    runs = list(build_grid(config).runs.values())
    distinct = {cost_key(run) for run in runs}
    classes = {size_class(run) for run in runs}
    assert len(classes) < len(distinct)
    with pytest.raises(PlanError, match=f"--probe-limit 3 is below the {len(classes)} classes"):
        choose_probes(runs, 3)
    assert len(choose_probes(runs, None)) == len(distinct)

    chosen = choose_probes(runs, 2 * len(classes))
    assert len(chosen) == 2 * len(classes) and len({cost_key(run) for run in chosen}) == len(chosen)
    for name in classes:
        sizes = [examples_per_task(run) for run in runs if size_class(run) == name]
        probed = [examples_per_task(run) for run in chosen if size_class(run) == name]
        assert max(sizes) in probed and min(sizes) in probed

    def cost(run: Run) -> Probe:  # a linear cost: what interpolation must reproduce exactly
        size = examples_per_task(run)
        return Probe(0.5 + 0.01 * size, {("accuracy",): 2.0 + 0.1 * size})

    filled = fill_in_probes(runs, {cost_key(run): cost(run) for run in chosen})
    assert set(filled) == distinct
    for run in runs:
        expected, got = cost(run), filled[cost_key(run)]
        assert got.seconds_per_iteration == pytest.approx(expected.seconds_per_iteration)
        assert got.seconds_per_epoch[("accuracy",)] == pytest.approx(
            expected.seconds_per_epoch[("accuracy",)]
        )


def test_cpu_probes_count_cpu_time_and_gpu_probes_wall_time() -> None:
    """A busy CPU must not inflate the estimate; a GPU's asynchronous kernels need the wall."""
    import torch

    assert device_clock(torch.device("cpu")) is time.process_time
    assert device_clock("cpu") is time.process_time
    assert device_clock(torch.device("cuda")) is not time.process_time


def test_estimate_columns_stay_apart_for_a_paper_sized_grid() -> None:
    """Hundreds of days and millions of iterations widen the columns instead of running on."""
    rows = [
        FamilyEstimate("omniglot", 120, 120, 0, 6_000_000, 272 * 86400 + 13 * 3600, 174 * 86400),
        FamilyEstimate("sinusoid", 70, 70, 0, 3_500_000, 11 * 3600, 5400),
    ]
    table = estimate_lines(rows, "note")[1:-1]
    assert len({len(line) for line in table}) == 1  # aligned
    assert "6,000,000  272 d 13:00:00  174 d 00:00:00  446 d 13:00:00" in table[1]
    assert table[-1].split()[:4] == ["total", "190", "190", "9,500,000"]
