"""The SLURM profile (profiles/slurm): what it asks of SLURM for the paper grid (a dry run, no
cluster needed), and the tiny preset's sinusoid family run through a real single-node SLURM
(tests/slurm/cluster.sh) with results equal to a local run's.

The cluster test needs root and apt-get (or an installed Slurm). Where it cannot run it is
skipped with the reason, unless METALANDSCAPE_REQUIRE_SLURM=1 (CI), which turns that into a
failure. Cluster state: $METALANDSCAPE_SLURM_DIR (default /tmp/metalandscape-slurm); a cluster
this test started is stopped at the end, one that was already running is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import TinyRun
from workflow_copy import copy_workflow as copy_to

from metalandscape.figures import FIGURES
from metalandscape.grid import build_grid, bundle_name

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "envs", "profiles")
SNAKEMAKE = (sys.executable, "-m", "snakemake")
TINY = "workflow/presets/tiny.yaml"
PAPER = "workflow/presets/paper.yaml"
REQUIRE = os.environ.get("METALANDSCAPE_REQUIRE_SLURM") == "1"
START_TIMEOUT = 300  # the first start installs Slurm with apt-get (well under a minute)
RUN_TIMEOUT = 900  # a bound against a hung cluster (quiet: ~4 min), not a speed check
JOB_PREFIX = "mlstest"
FAMILY = "sinusoid"  # the tiny preset's family run through SLURM


def copy_workflow(destination: Path) -> Path:
    """The workflow and its SLURM profile, copied into ``destination``."""
    return copy_to(destination, WORKFLOW_FILES)


def profile() -> dict:
    return yaml.safe_load((PROFILE / "profile.yaml").read_text())


def job_stats(output: str) -> dict[str, int]:
    """The first ``Job stats`` table Snakemake prints, as ``{rule: count}``."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", output, re.DOTALL)
    assert match, f"no job stats table in:\n{output[-3000:]}"
    counts = {}
    for line in match.group(1).splitlines():
        name, count = line.split()
        counts[name] = int(count)
    return counts


def expected_submissions(stats: dict[str, int]) -> int:
    """SLURM jobs the workflow's grouping makes of these Snakemake jobs (local rules excluded).

    Ungrouped jobs (training, one metrics job per run and bundle) are one SLURM job each; the
    summary group (the aggregate and figure rules declare it) makes one per family.
    """
    local = {"all", "aggregate_inputs", "claims_html"}
    summary = {"aggregate", *FIGURES}
    single = sum(n for rule, n in stats.items() if rule not in local and rule not in summary)
    return single + stats.get("aggregate", 0)


def train_jobs(stats: dict[str, int]) -> int:
    """Jobs of the training rules: one run each (train) or one seed group in lockstep each."""
    return sum(count for rule, count in stats.items() if rule.startswith("train"))


def metric_jobs(stats: dict[str, int]) -> int:
    """Jobs of the metrics rules (one rule per metric bundle: metrics__<metric>__...)."""
    return sum(count for rule, count in stats.items() if rule.startswith("metrics__"))


# ---- the profile, no cluster needed ------------------------------------------------------


def test_profile_leaves_site_settings_and_gpu_caps_to_the_user() -> None:
    settings = profile()
    assert settings["executor"] == "slurm"
    assert int(settings["jobs"]) > 0  # a remote executor needs it, even for a dry run
    # --resources gpu=N would cap GPU jobs across the whole cluster
    assert "resources" not in settings
    # sacct is the right status command where slurmdbd runs; squeue only for sacct-less sites
    assert "slurm-status-command" not in settings
    text = (PROFILE / "profile.yaml").read_text()
    for key in ("slurm_partition", "slurm_account"):
        assert re.search(rf"^\s*#\s*{key}:", text, re.MULTILINE), f"{key} placeholder missing"
        assert not re.search(rf"^\s*{key}:", text, re.MULTILINE), f"{key} must be left unset"
    assert int(settings["retries"]) >= 1 and settings["slurm-requeue"] is True
    # local runs get the default profile; it makes a rerun after a crash just work
    local = yaml.safe_load((REPO / "profiles" / "default" / "profile.yaml").read_text())
    assert local["rerun-incomplete"] is True and "executor" not in local


def test_paper_dry_run_with_the_profile(tmp_path: Path) -> None:
    """The paper grid's jobs ask for GPUs, runtimes and memory; few submissions.

    How long planning takes is measured by benchmarks/bench_planning.py, not asserted here.
    """
    directory = copy_workflow(tmp_path / "paper")
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--workflow-profile", "profiles/slurm", "--configfile", PAPER],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Using workflow specific profile profiles/slurm" in output

    stats = job_stats(output)
    # 260 runs: the MAML and First-Order MAML ones train 5 seeds per job in lockstep
    assert stats["train"] > 50 and stats["train_seeds_0_1_2_3_4"] > 30
    assert metric_jobs(stats) == stats["train"] + 5 * stats["train_seeds_0_1_2_3_4"]

    def resources(rule: str) -> str:
        match = re.search(rf"^\s*rule {rule}:\n(?:.*\n)*?\s*resources: (.*)$", output, re.M)
        assert match, f"no {rule} job in the dry run"
        return match.group(1)

    for rule in ("train", "train_seeds_0_1_2_3_4"):
        train = resources(rule)
        for expected in ("gpu=1", "device=cuda", "runtime=1440", "mem_mb=16000", "cpus_per_task=2"):
            assert expected in train, (rule, train)
    metrics = resources("metrics__[a-z_]+")
    for expected in ("gpu=1", "runtime=240", "cpus_per_task=2"):
        assert expected in metrics, metrics
    assert "gpu" not in resources("fig2") and "gpu" not in resources("aggregate")

    assert len(re.findall(r"Group job summary ", output)) == stats["aggregate"]
    submissions = expected_submissions(stats)
    snakemake_jobs = sum(stats.values()) - stats.get("all", 0) - stats.get("aggregate_inputs", 0)
    # one SLURM job per training run, per run's metric bundle, per family's summary, and the rest
    others = stats["check_data"] + stats["claims"]
    assert submissions == train_jobs(stats) + metric_jobs(stats) + stats["aggregate"] + others
    print(
        f"paper grid: {sum(stats.values())} Snakemake jobs, {snakemake_jobs} run on SLURM "
        f"as {submissions} SLURM jobs"
    )


# ---- the tiny preset on a single-node SLURM ----------------------------------------------


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"METALANDSCAPE_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def cluster_command(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER), *arguments], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment of a Snakemake that submits to the local cluster (started if need be)."""
    installed = all(shutil.which(name) for name in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not installed:
        if os.geteuid() != 0:
            unavailable("Slurm is not installed and installing it needs root")
        if not shutil.which("apt-get"):
            unavailable("Slurm is not installed and there is no apt-get")
    running = cluster_command("status").returncode == 0
    if not running:
        try:
            started = cluster_command("start", timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            cluster_command("stop")
            unavailable(f"the single-node SLURM did not start within {START_TIMEOUT}s")
        if started.returncode != 0:
            cluster_command("stop")
            unavailable(f"the single-node SLURM did not start:\n{started.stderr[-3000:]}")
    exports = cluster_command("env").stdout
    env = dict(os.environ)
    env.update(re.findall(r"^export (\w+)=(.*)$", exports, re.MULTILINE))
    # Jobs run `metalandscape` and `snakemake` from this interpreter's environment (sbatch
    # passes the submitting environment on); GPUs come from SLURM, not from this shell.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield env
    finally:
        if not running:
            cluster_command("stop")


def cancel_test_jobs(env: dict[str, str]) -> None:
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, env=env, check=False
    ).stdout
    ids = [line.split()[0] for line in listing.splitlines() if JOB_PREFIX in line]
    if ids:
        subprocess.run(["scancel", *ids], env=env, check=False)


def hang_report(env: dict[str, str], remote: Path, timeout: subprocess.TimeoutExpired) -> str:
    """What a hung SLURM run left: the queue, Snakemake's last output, the daemons' logs."""

    def text(value: bytes | str | None) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

    queue = subprocess.run(
        ["squeue", "--states=all", "-o", "%i %j %T %M %R %b"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    state = Path(os.environ.get("METALANDSCAPE_SLURM_DIR", "/tmp/metalandscape-slurm"))
    logs = []
    for log in sorted((state / "log").glob("*.log")):
        logs.append(f"--- {log} (last 30 lines)\n" + "\n".join(log.read_text().splitlines()[-30:]))
    job_logs = sorted((remote / "results" / "logs" / "slurm").glob("**/*.log"))
    return "\n".join(
        [
            f"squeue:\n{queue.stdout}{queue.stderr}",
            f"Snakemake's last output:\n{(text(timeout.stdout) + text(timeout.stderr))[-6000:]}",
            f"SLURM job logs: {[str(path.relative_to(remote)) for path in job_logs]}",
            *logs,
        ]
    )


def run_files(directory: Path, pattern: str) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.glob(pattern))


def assert_same_parameters(local: Path, remote: Path) -> int:
    """Every epoch's parameters of two run files are bit-identical; returns how many arrays."""
    compared = 0
    with h5py.File(local, "r") as a, h5py.File(remote, "r") as b:

        def visit(name: str, item: object) -> None:
            nonlocal compared
            if isinstance(item, h5py.Dataset) and "/params/" in name:
                assert name in b, f"{remote}: {name} missing"
                other = b[name]
                assert item.dtype == other.dtype and item.shape == other.shape, name
                assert np.array_equal(item[()], other[()]), f"{remote}: {name} differs"
                compared += 1

        a.visititems(visit)
    return compared


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_family_on_slurm_matches_a_local_run(
    slurm_env: dict[str, str], tiny_run: TinyRun, tmp_path: Path
) -> None:
    settings = profile()
    # The profile's per-rule resources, plus one (fake) GPU for every train and metrics job:
    # the tiny preset runs on the CPU, but this exercises what device: cuda asks of SLURM.
    set_resources = [
        f"{rule}:{name}={value}"
        for rule, values in settings["set-resources"].items()
        for name, value in values.items()
    ] + ["train:gpu=1"]
    tiny = yaml.safe_load((REPO / TINY).read_text())
    tiny_config = {**yaml.safe_load((REPO / "config.yaml").read_text()), **tiny}
    set_resources += [
        f"metrics__{bundle_name(bundle)}:gpu=1" for bundle in build_grid(tiny_config).bundle_runs()
    ]

    # the local run every workflow test shares (tests/conftest.py)
    assert tiny_run.returncode == 0, tiny_run.output[-5000:]
    local = tiny_run.directory

    # A job asking more CPUs than the node has pends forever (reason PartitionConfig).
    node_cpus = subprocess.run(
        ["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, env=slurm_env, check=False
    ).stdout.split()
    assert node_cpus and int(node_cpus[0]) >= int(settings["cores"]), (
        f"the local SLURM node offers {node_cpus} CPU(s), fewer than the profile's cores "
        f"({settings['cores']}): its group jobs could never start"
    )

    # One family through SLURM (the sinusoid's: train -> metrics -> its summary group) proves
    # the submission, grouping, GPU and resume paths; the fontglot family adds only more of the
    # same jobs, and each SLURM job costs a Snakemake start on the node plus status polls.
    grid = build_grid(tiny_config)
    targets = [
        f"results/figures/{scheduled.name}.pdf"
        for scheduled in grid.figures.values()
        if scheduled.family == FAMILY
    ]
    assert targets, f"the tiny preset schedules no figure of the {FAMILY} family"

    remote = copy_workflow(tmp_path / "slurm")
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                *SNAKEMAKE,
                "--workflow-profile",
                "profiles/slurm",
                "--configfile",
                TINY,
                # no slurmdbd here: sacct fails, squeue sees jobs for MinJobAge (300 s)
                "--slurm-status-command",
                "squeue",
                # the first poll, and the next one after a job finishes (tiny jobs: seconds)
                "--slurm-init-seconds-before-status-checks",
                "2",
                "--slurm-jobname-prefix",
                JOB_PREFIX,
                "--slurm-keep-successful-logs",
                "--set-resources",
                *set_resources,
                "--verbose",
                *targets,
            ],
            cwd=remote,
            env=slurm_env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as timeout:
        report = hang_report(slurm_env, remote, timeout)
        cancel_test_jobs(slurm_env)
        pytest.fail(f"the tiny preset on SLURM did not finish within {RUN_TIMEOUT}s\n{report}")
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    print(f"tiny preset through SLURM: {seconds:.0f}s")

    # It went through SLURM, grouped as the profile says.
    stats = job_stats(output)
    submissions = output.count("sbatch call:")
    assert submissions == expected_submissions(stats), submissions
    logs = remote / "results" / "logs" / "slurm"
    assert list(logs.glob("group_summary_*/*.log"))
    # SLURM, not the shell, chose the GPU: the jobstep logs its environment with --verbose.
    # (Without cgroup device confinement SLURM passes the node's own index, 0 or 1 here.)
    train_logs = list(logs.glob("rule_train/*/*.log"))
    assert train_logs
    for log in train_logs:
        assert re.search(r"'CUDA_VISIBLE_DEVICES': '[01]'", log.read_text()), log

    # The same results as the local run: parameters bit for bit, the same aggregate, figures.
    runs = run_files(local, f"results/runs/{FAMILY}-*.h5")
    assert runs and runs == run_files(remote, "results/runs/*.h5")
    for name in runs:
        assert assert_same_parameters(local / name, remote / name) > 0
    aggregate = f"results/aggregate/{FAMILY}.csv"
    assert run_files(remote, "results/aggregate/*.csv") == [aggregate]
    assert (local / aggregate).read_bytes() == (remote / aggregate).read_bytes()
    figures = run_files(remote, "results/figures/*")
    assert figures == sorted(
        f"{target[:-4]}{suffix}" for target in targets for suffix in (".pdf", ".png")
    )
    for name in figures:
        assert (local / name).is_file() and (remote / name).stat().st_size > 0
