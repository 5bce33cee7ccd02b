"""The Snakemake workflow: lint, planned jobs of the default and paper grids, config checks, and a
tiny end-to-end run. Every Snakemake call runs in a copy of the workflow under a temporary
folder, so nothing is written into the repository's results/."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TinyRun
from workflow_copy import copy_workflow

from metalandscape.grid import build_grid, bundle_name

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = (sys.executable, "-m", "snakemake")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow for dry runs (they write nothing but .snakemake/)."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def snakemake(
    directory: Path, *arguments: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SNAKEMAKE, *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_stats(output: str) -> dict[str, int]:
    """The first ``Job stats`` table Snakemake prints, as ``{rule: count}`` (without total)."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", output, re.DOTALL)
    assert match, f"no job stats table in:\n{output}"
    counts = {}
    for line in match.group(1).splitlines():
        name, count = line.split()
        counts[name] = int(count)
    assert sum(counts.values()) == int(match.group(2))
    return counts


# ---- the jobs the grid (metalandscape.grid) says the workflow must plan --------------------


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """How Snakemake merges --configfile into the configfile: mappings merged, lists replaced."""
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


def expected_jobs(config: dict[str, Any]) -> dict[str, int]:
    """``{rule: jobs}`` of a full run of ``config``, from the grid module."""
    grid = build_grid(config)
    jobs = {
        "train": len(grid.solo_run_ids()),
        "aggregate_inputs": len(grid.families),
        "aggregate": len(grid.families),
        "claims": 1,
        "claims_html": 1,
        "all": 1,
    }
    for seeds, groups in grid.lockstep_rules().items():
        jobs["train_seeds_" + "_".join(map(str, seeds))] = len(groups)
    for bundle, run_ids in grid.bundle_runs().items():
        jobs[f"metrics__{bundle_name(bundle)}"] = len(run_ids)
    datasets = {run.key.dataset for run in grid.runs.values()}
    if "fontglot" in datasets:
        jobs["fontglot"] = 1
    if datasets & {"omniglot", "miniimagenet"}:
        jobs["check_data"] = len(datasets & {"omniglot", "miniimagenet"})
    for scheduled in grid.figures.values():
        jobs[scheduled.figure] = jobs.get(scheduled.figure, 0) + 1
    return jobs


# ---- lint and dry runs ----------------------------------------------------------------------


def test_lint_is_clean(workdir: Path) -> None:
    result = snakemake(workdir, "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output


def test_default_dry_run_plans_the_default_grid(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "--cores", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    stats = job_stats(output)
    assert stats == expected_jobs(load_config())
    # 14 runs: 10 of them in 5 lockstep pairs (seeds 0 and 1), 4 alone; one metrics job each
    assert stats["train"] == 4 and stats["train_seeds_0_1"] == 5
    assert sum(n for r, n in stats.items() if r.startswith("metrics")) == 14
    assert sum(stats.values()) == 43
    for path in (
        "results/data/fontglot.npz",
        "results/runs/fontglot-default-5way1shot-maml-seed0.h5",
        "results/metrics/fontglot-default-5way1shot-maml-seed0/hessian.nc",
        "results/metrics/sinusoid-default-1way10shot-maml-seed1/gradient_coherence.nc",
        "results/aggregate/fontglot.nc",
        "results/figures/fig2.pdf",
        "results/figures/fig8.png",
        "results/figures/functioncoherence.pdf",
    ):
        assert path in output
    # the default runs on whatever device there is and asks for no GPU
    assert "gpu=" not in output


def test_paper_preset_dry_run(workdir: Path) -> None:
    config = load_config("workflow/presets/paper.yaml")
    result = snakemake(
        workdir, "-n", "--cores", "16", "--configfile", "workflow/presets/paper.yaml"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    stats = job_stats(output)
    assert stats == expected_jobs(config)
    assert sum(stats.values()) == 412
    # 120 Omniglot + 60 MiniImagenet + 5 long + 5 regularized + 70 sinusoid runs: the MAML and
    # First-Order MAML ones in 39 lockstep groups of 5 seeds, the other 65 alone
    assert stats["train"] == 65 and stats["train_seeds_0_1_2_3_4"] == 39
    assert stats["fig2"] == 4 and stats["fig8"] == 1
    # the preset replaced config.yaml's experiments: no fontglot, and its own runs are planned
    assert "fontglot" not in stats
    assert "results/runs/miniimagenet-long-5way1shot-fomaml-seed4.h5" in output
    assert "results/runs/omniglot-T5-20way1shot-regmaml-seed0.h5" in output
    assert "results/figures/fig2_overtraining.pdf" in output
    # device: cuda -> train and metrics jobs each ask for one GPU
    assert re.search(r"rule train:.*?resources: [^\n]*gpu=1", output, re.DOTALL)
    assert re.search(r"rule train_seeds_0_1_2_3_4:.*?resources: [^\n]*gpu=1", output, re.DOTALL)
    assert re.search(r"rule metrics__[a-z_]+:.*?resources: [^\n]*gpu=1", output, re.DOTALL)


def write_config(directory: Path, name: str, config: dict[str, Any]) -> str:
    path = directory / name
    path.write_text(yaml.safe_dump(config))
    return name


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c.update(treads=2), "treads"),
        (lambda c: c["experiments"][1]["overrides"].update(inner_stepz=3), "inner_stepz"),
        (lambda c: c["metrics"]["hessian"].update(tasks_count=3), "tasks_count"),
        (lambda c: c["experiments"][0].update(metrics=["accuracy", "hesian"]), "hesian"),
        (lambda c: c["experiments"][1]["overrides"].update(rotation="sideways"), "sideways"),
        # past the schema: metalandscape.config checks the run configs when the DAG is planned
        (
            lambda c: c["experiments"][0]["overrides"].update(train_amplitude=[5, 1]),
            "train_amplitude",
        ),
    ],
)
def test_invalid_config_fails_before_any_job_naming_the_key(
    tmp_path: Path, change: Any, named: str
) -> None:
    directory = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    change(config)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(directory, "-n", "--cores", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert named in output
    assert "Job stats" not in output
    assert not (directory / "results").exists()


def test_figure_without_its_data_is_not_scheduled(workdir: Path) -> None:
    config = load_config()
    config["experiments"] = [g for g in config["experiments"] if g["dataset"] != "sinusoid"]
    name = write_config(workdir, "no_sinusoid.yaml", {"experiments": config["experiments"]})
    result = snakemake(workdir, "-n", "--cores", "2", "--configfile", name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    stats = job_stats(output)
    assert "fig8" not in stats
    assert stats["fig2"] == stats["fig5"] == 1


def test_a_skipped_figure_is_one_line_at_planning_and_as_a_target(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "--cores", "1", "results/figures/fig3.pdf")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "KeyError" not in output
    # once when the workflow is parsed, once as the reason the target cannot be made
    assert output.count("fig3 skipped: no run of variant 'long'\n") == 2, output


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            lambda c: c.update(figures=["fig2", "fig13"]),
            "invalid workflow config: figures: unknown figure 'fig13'; known: fig2, fig3,",
        ),
        (
            lambda c: c["experiments"][0].update(algorithms=["protonet"]),
            "invalid workflow config: experiments[0] (sinusoid): unknown algorithm 'protonet'",
        ),
        (
            lambda c: c.update(figures=[{"figure": "fig9", "family": "fontglot"}]),
            "figures: fig9 cannot be drawn from family 'fontglot': no setting with runs of each",
        ),
    ],
)
def test_names_are_checked_against_the_registries(workdir: Path, change: Any, line: str) -> None:
    config = load_config()
    change(config)
    name = write_config(workdir, "bad_names.yaml", config)
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", name)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert line in output
    assert "Traceback" not in output


def test_shell_values_are_quoted(workdir: Path) -> None:
    crafted = "device='cpu $(touch pwned)'"
    result = snakemake(
        workdir,
        "results/metrics/sinusoid-default-1way2shot-maml-seed0/accuracy.nc",
        "-n",
        "-p",
        "--cores",
        "1",
        "--set-resources",
        f"train_seeds_0_1:{crafted}",  # the run trains in lockstep with seed 1
        f"metrics__accuracy__gradient_coherence:{crafted}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("--device 'cpu $(touch pwned)'") == 2, output


def test_a_separate_metric_gets_its_own_bundle_and_settings(workdir: Path) -> None:
    config = load_config("workflow/presets/tiny.yaml")
    name = write_config(workdir, "separate.yaml", {**config, "separate_metrics": ["hessian"]})
    result = snakemake(workdir, "-n", "-p", "--cores", "1", "--configfile", name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    stats = job_stats(output)
    # one job per fontglot run of the tiny grid (MAML and Meta-SGD) for each bundle
    assert stats["metrics__hessian"] == stats["metrics__accuracy__trajectory_coherence"] == 2
    # the Hessian job carries only the Hessian's settings, the other only its own metrics'
    hessian = re.search(r"--metric hessian --epoch.*?--settings-json '([^']*)'", output)
    assert hessian and list(json.loads(hessian.group(1))) == ["hessian"]
    shared = re.search(
        r"--metric accuracy --metric trajectory_coherence --epoch.*?--settings-json '([^']*)'",
        output,
    )
    assert shared and list(json.loads(shared.group(1))) == ["accuracy", "trajectory_coherence"]


# ---- the tiny grid end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_end_to_end(tiny_run: TinyRun) -> None:
    directory = tiny_run.directory
    preset = ("--configfile", "workflow/presets/tiny.yaml")
    config = load_config("workflow/presets/tiny.yaml")

    assert tiny_run.returncode == 0, tiny_run.output
    assert job_stats(tiny_run.output) == expected_jobs(config)
    results = tiny_run.results
    for name in ("fig2", "fig5", "fig8"):
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 0
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    for family in ("sinusoid", "fontglot"):
        assert (results / "aggregate" / f"{family}.nc").is_file()
        assert (results / "aggregate" / f"{family}.csv").is_file()
    run = "fontglot-default-3way1shot-maml-seed0"
    measured = sorted(p.name for p in (results / "metrics" / run).iterdir())
    assert measured == ["accuracy.nc", "hessian.nc", "trajectory_coherence.nc"]
    assert (results / "benchmarks" / "train" / f"{run}.tsv").is_file()
    bundle = "accuracy__hessian__trajectory_coherence"
    assert (results / "logs" / "metrics" / run / f"{bundle}.log").is_file()

    again = snakemake(directory, "-n", "--cores", "2", *preset)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr

    (results / "figures" / "fig5.pdf").unlink()  # redrawn below: the shared run stays whole
    redraw = snakemake(directory, "--cores", "2", *preset)
    output = redraw.stdout + redraw.stderr
    assert redraw.returncode == 0, output
    assert job_stats(output) == {"fig5": 1, "all": 1}
    assert (results / "figures" / "fig5.pdf").is_file()

    report = snakemake(directory, *preset, "--report", "report.html")
    assert report.returncode == 0, report.stdout + report.stderr
    assert (directory / "report.html").stat().st_size > 0


@pytest.mark.slow
def test_seeds_of_one_setting_train_in_one_lockstep_job(tmp_path: Path) -> None:
    """Two sinusoid MAML seeds: one train_seeds_0_1 job writes both run files, each measured
    and aggregated as if trained alone; the files equal `metalandscape train --seeds`' own."""
    directory = copy_workflow(tmp_path / "lockstep")
    config = load_config()
    config["experiments"] = [
        {
            "dataset": "sinusoid",
            "shots": [5],
            "algorithms": ["maml"],
            "seeds": [0, 1],
            "metrics": ["accuracy"],
            "overrides": {"epochs": 2, "iterations_per_epoch": 5},
        }
    ]
    config["metrics"] = {"accuracy": {"tasks": 5, "splits": ["test"]}}
    config["figures"] = []
    name = write_config(directory, "lockstep.yaml", config)
    result = snakemake(
        directory, "--cores", "1", "--configfile", name, "--workflow-profile", "none"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    stats = job_stats(output)
    assert stats["train_seeds_0_1"] == 1 and "train" not in stats
    runs = [directory / f"results/runs/sinusoid-default-1way5shot-maml-seed{s}.h5" for s in (0, 1)]
    log = directory / "results/logs/train/sinusoid-default-1way5shot-maml-seeds0+1.log"
    assert all(run.is_file() for run in runs) and log.is_file()
    from metalandscape.checkpoints import load_epoch_params, read_run_info

    assert [read_run_info(run).config["seed"] for run in runs] == [0, 1]
    reference = [tmp_path / f"cli{s}.h5" for s in (0, 1)]
    arguments = ["--set", "dataset=sinusoid", "--set", "algorithm=maml", "--set", "k_shot=5"]
    arguments += ["--set", "epochs=2", "--set", "iterations_per_epoch=5", "--set", "n_way=1"]
    arguments += ["--set", "task_chunk_size=25", "--set", "variant=default"]
    command = [sys.executable, "-m", "metalandscape.cli", "train", *arguments, "--quiet"]
    command += ["--seeds", "0", "1", "--out", str(reference[0]), "--out", str(reference[1])]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    for run, cli in zip(runs, reference, strict=True):
        a, b = load_epoch_params(run, 2), load_epoch_params(cli, 2)
        assert all(a[k].equal(b[k]) for k in a)
    aggregate = directory / "results/aggregate/sinusoid.nc"
    assert aggregate.is_file()
