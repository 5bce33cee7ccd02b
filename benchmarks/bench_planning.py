"""How long Snakemake takes to plan the grids (``snakemake -n``), measured in one run.

Times the dry run of the default config, of the paper preset, and of the paper preset with the
SLURM profile, each in a fresh copy of the workflow (so no cached ``.snakemake/`` state helps),
``--repeats`` times in turn, and prints the least and the median wall time and the children's CPU
time next to the number of planned jobs::

    python benchmarks/bench_planning.py [--repeats 3]

The tests check what the plans contain; this script is where planning time is measured.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "envs", "profiles")
PAPER = "workflow/presets/paper.yaml"
CASES: dict[str, tuple[str, ...]] = {
    "default config": ("--cores", "2"),
    "paper preset": ("--cores", "16", "--configfile", PAPER),
    "paper preset, SLURM profile": ("--workflow-profile", "profiles/slurm", "--configfile", PAPER),
}


def copy_workflow(destination: Path) -> Path:
    """``destination`` holding a copy of the workflow's files."""
    destination.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    return destination


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plan(directory: Path, arguments: tuple[str, ...]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and planned jobs of one ``snakemake -n``."""
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    wall = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"snakemake -n {' '.join(arguments)} failed:\n{output[-3000:]}")
    match = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return wall, children_cpu_seconds() - cpu, int(match[1]) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="dry runs per case (default 3)")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    jobs: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-planning-") as scratch:
        for repeat in range(args.repeats):
            for index, (name, arguments) in enumerate(CASES.items()):
                directory = copy_workflow(Path(scratch) / f"r{repeat}c{index}")
                wall, cpu, planned = plan(directory, arguments)
                times[name].append((wall, cpu))
                jobs[name] = planned
    print(f"\nsnakemake -n, {args.repeats} fresh copies each, cases interleaved")
    header = f"{'case':<30} {'jobs':>6} {'least wall s':>13} {'median wall s':>14} {'CPU s':>7}"
    print(header)
    print("-" * len(header))
    for name, measured in times.items():
        walls = [wall for wall, _ in measured]
        cpu = statistics.median(cpu for _, cpu in measured)
        print(
            f"{name:<30} {jobs[name]:>6} {min(walls):>13.1f} "
            f"{statistics.median(walls):>14.1f} {cpu:>7.1f}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
