"""The claims rule and the scheduling of every figure: dry runs of the default and paper grids,
config checks of the claims: thresholds, and the report of the tiny grid. Every Snakemake call
runs in a copy of the workflow under a temporary folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TinyRun
from workflow_copy import copy_workflow

REPO = Path(__file__).resolve().parents[1]
ALL_FIGURES = {f"fig{number}" for number in range(2, 13)}
# The default grid: fontglot (MAML, First-Order MAML and finetune; accuracy on test and train
# splits, support loss, Hessian, trajectory and gradient coherence) and sinusoid (gradient
# coherence); no `long` variant (fig 3) and no regularized MAML (fig 9).
DEFAULT_FIGURES = {"fig2", "fig4", "fig5", "fig6", "fig7", "fig8", "fig10", "fig11", "fig12"}


def snakemake(directory: Path, *arguments: str, timeout: float = 600) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


def job_stats(output: str) -> dict[str, int]:
    """The first ``Job stats`` table Snakemake prints, as ``{rule: count}``."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", output, re.DOTALL)
    assert match, f"no job stats table in:\n{output}"
    return {name: int(count) for name, count in (line.split() for line in match[1].splitlines())}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("claims_workflow"))


def test_default_dry_run_schedules_claims_and_only_the_drawable_figures(workdir: Path) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(config["figures"]) >= ALL_FIGURES  # plus the extensions (issues 14, 15)
    assert config["claims"]["overtraining_variants"] == ["long"]
    assert config["claims"]["gradient_coherence_variants"] == []
    code, output = snakemake(workdir, "-n", "--cores", "2", "-p")
    assert code == 0, output
    stats = job_stats(output)
    assert stats["claims"] == stats["claims_html"] == 1
    assert {name for name in stats if name in ALL_FIGURES} == DEFAULT_FIGURES
    assert all(stats[name] == 1 for name in DEFAULT_FIGURES)
    command = next(line for line in output.splitlines() if "metalandscape claims" in line)
    for family in ("fontglot", "sinusoid"):
        assert f"--input results/aggregate/{family}.nc" in command
    assert '"overtraining_variants": ["long"]' in command
    assert '"gradient_coherence_variants": []' in command
    for path in ("results/claims.md", "results/claims.csv", "results/claims.html"):
        assert path in output


def test_one_figure_rebuilds_alone(workdir: Path) -> None:
    code, output = snakemake(workdir, "-n", "--cores", "2", "results/figures/fig10.pdf")
    assert code == 0, output
    stats = job_stats(output)
    assert stats.get("fig10") == 1
    assert not {name for name in stats if name in ALL_FIGURES} - {"fig10"}
    assert "claims" not in stats


def test_paper_preset_schedules_every_figure(workdir: Path) -> None:
    code, output = snakemake(
        workdir, "-n", "--cores", "16", "--configfile", "workflow/presets/paper.yaml"
    )
    assert code == 0, output
    stats = job_stats(output)
    assert {name for name in stats if name in ALL_FIGURES} == ALL_FIGURES
    assert stats["fig3"] == 1 and stats["fig9"] == 1 and stats["claims"] == 1
    assert "results/figures/fig3.pdf" in output and "results/figures/fig9.pdf" in output


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"claims": {"flatness_rize": 0.1}}, "flatness_rize"),
        ({"claims": {"overtraining_variants": "long"}}, "overtraining_variants"),
        ({"figures": [{"figure": "fig9", "family": "fontglot"}]}, "fig9"),
        ({"figures": ["fig13"]}, "fig13"),
    ],
)
def test_bad_claims_or_figures_fail_before_any_job(
    workdir: Path, update: dict[str, object], named: str
) -> None:
    name = f"bad_{named}.yaml"
    (workdir / name).write_text(yaml.safe_dump(update))
    code, output = snakemake(workdir, "-n", "--cores", "1", "--configfile", name)
    assert code != 0, output
    assert named in output and "Job stats" not in output


@pytest.mark.slow
def test_tiny_report_shows_the_claims_table(tiny_run: TinyRun) -> None:
    assert tiny_run.returncode == 0, tiny_run.output
    results = tiny_run.results
    table = (results / "claims.csv").read_text()
    assert table.startswith("claim,") and "verdict" in table
    assert (results / "claims.md").read_text().startswith("# Claims")
    assert "<table" in (results / "claims.html").read_text()
    assert (results / "logs" / "claims.log").is_file()
    preset = ("--configfile", "workflow/presets/tiny.yaml")
    code, output = snakemake(tiny_run.directory, *preset, "--report", "claims_report.html")
    assert code == 0, output
    report = (tiny_run.directory / "claims_report.html").read_text()
    assert "Claims" in report and "claims.html" in report
