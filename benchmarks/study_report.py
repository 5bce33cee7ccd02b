"""What a finished workflow run measured, as Markdown tables for the README (issue #12).

Reads a run folder's ``results/`` (the study preset's, or any other) and prints:

1. cost: Snakemake's per-job benchmark files (``results/benchmarks/<rule>/**.tsv``) summed per
   rule: jobs, CPU seconds, the longest job, and the wall time that 2 cores need at least
   (CPU / 2, or the longest chain of train → metrics → aggregate jobs if that is longer); next
   to Snakemake's sampled CPU time, the exact one that ``metalandscape data/train/metrics``
   log when they finish (``resources: cpu … s``, in the job's ``results/logs/`` file; it leaves
   out the interpreter's exit and the job's shell, which Snakemake's samples include);
2. the claims at a glance: one row per (phase, claim, statistic, setting) of
   ``results/claims.csv``, one column per algorithm, each cell ``value [95% CI] verdict`` (✓
   holds, ✗ does not hold, ``—`` too few checkpoints in the window, ``n/m`` not measurable;
   ``*`` where the interval clears the threshold too), the window and seeds in the row;
3. per algorithm: meta-test target accuracy at the first and last measured checkpoint, mean
   over seeds with the claims' interval (Student-t 95% over seeds, ≥ 3 seeds).

Usage: ``python benchmarks/study_report.py [--results results] [--family algorithms]
[--claims claims.csv] [--brief]`` (``--brief``: the claims table's primary statistics only,
e.g. Pearson R for claims 4-5 and Spearman ρ for claim 2).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pandas as pd
from snakemake.benchmark import BENCHMARK_INTERVAL, BENCHMARK_INTERVAL_SHORT

from metalandscape.statistics import scalar_interval

SETTING_COLUMNS = ("dataset", "variant", "way", "shot")


def cost_table(results: Path) -> str:
    """Jobs, CPU seconds and the longest job per rule, from Snakemake's benchmark files."""
    rows = []
    for path in sorted((results / "benchmarks").glob("**/*.tsv")):
        # train/<run>.tsv, metrics/<run>/<bundle>.tsv, figures/<name>.tsv, ...
        rule, *rest = path.relative_to(results / "benchmarks").parts
        run = rest[0] if len(rest) > 1 else path.stem
        last = pd.read_csv(path, sep="\t").iloc[-1]
        cpu, wall = float(last["cpu_time"]), float(last["s"])
        exact = _logged_cpu(results / "logs" / path.relative_to(results / "benchmarks"))
        rows.append(
            {"rule": rule, "run": run, "cpu": cpu, "unsampled": _unsampled(wall), "exact": exact}
        )
    if not rows:
        return "no benchmark files under results/benchmarks\n"
    jobs = pd.DataFrame(rows)
    jobs["most"] = jobs["cpu"] + jobs["unsampled"]
    per_rule = jobs.groupby("rule").agg(
        count=("cpu", "count"),
        cpu=("cpu", "sum"),
        most=("most", "sum"),
        longest=("cpu", "max"),
        exact=("exact", _exact_sum),
    )
    run_cpu = _longest_run(jobs)
    total, most = jobs["cpu"].sum(), jobs["most"].sum()
    lines = [
        "| rule | jobs | CPU s (sampled, at most) | CPU s logged by the jobs | longest job, CPU s |",
        "|---|---|---|---|---|",
    ]
    for rule, row in per_rule.iterrows():
        lines.append(
            f"| {rule} | {int(row['count'])} | {row['cpu']:.0f}–{row['most']:.0f} | "
            f"{row['exact']} | {row['longest']:.0f} |"
        )
    lines.append(f"| all | {len(jobs)} | {total:.0f}–{most:.0f} | {_exact_sum(jobs['exact'])} | |")
    lines.append(
        f"\nOn 2 cores: at least {max(total / 2, run_cpu) / 60:.0f}–{max(most / 2, run_cpu) / 60:.0f}"
        f" min (CPU / 2; the longest run's training + metrics: {run_cpu / 60:.0f} min), before "
        "process start-up and scheduling gaps. Snakemake samples a job's CPU time every 0.5 s for "
        "15 s, then every 30 s, so it misses what a job used after its last sample; the upper "
        "figure adds that stretch of wall time (one thread per job)."
    )
    return "\n".join(lines) + "\n"


def _logged_cpu(benchmark_twin: Path) -> float:
    """The CPU seconds a job's log reports (``resources: cpu 12.3 s``), NaN if it reports none."""
    log = benchmark_twin.with_suffix(".log")
    found = re.findall(r"resources: cpu ([0-9.]+) s", log.read_text()) if log.is_file() else []
    return float(found[-1]) if found else math.nan


def _exact_sum(values: pd.Series) -> str:
    """The logged CPU seconds of a set of jobs: their sum where every job logged it."""
    logged = values.notna().sum()
    if logged == 0:
        return "–"
    if logged < len(values):
        return f"{logged} of {len(values)} jobs logged it"
    return f"{values.sum():.0f}"


def _unsampled(wall: float) -> float:
    """Seconds of a job after Snakemake's last CPU sample: its benchmark thread samples every
    ``BENCHMARK_INTERVAL_SHORT`` s for ``BENCHMARK_INTERVAL`` samples (15 s), then every
    ``BENCHMARK_INTERVAL`` s (snakemake.benchmark)."""
    short, long = BENCHMARK_INTERVAL_SHORT, BENCHMARK_INTERVAL
    first_phase = short * long
    if wall <= first_phase:
        return min(wall, short)
    return wall - (first_phase + long * ((wall - first_phase) // long))


def _longest_run(jobs: pd.DataFrame) -> float:
    """CPU seconds of the most expensive run's train + metrics jobs (a chain on one core)."""
    chains = jobs[jobs["rule"].isin(["train", "metrics"])].groupby("run")["cpu"].sum()
    return float(chains.max()) if len(chains) else 0.0


def _setting(row: pd.Series) -> str:
    if row["dataset"] == "sinusoid":
        return f"sinusoid {row['variant']}" + (f" k={row['shot']}" if row["shot"] > 0 else "")
    return f"{row['dataset']} {row['variant']} {row['way']}-way {row['shot']}-shot"


def _cell(row: pd.Series) -> str:
    if row["verdict"] == "too few checkpoints in the window":
        return "—"
    if row["verdict"] == "not measurable":
        return "n/m"
    value = f"{row['value']:.3g}"
    if not math.isnan(row["ci_low"]):
        value += f" [{row['ci_low']:.2g}, {row['ci_high']:.2g}]"
    mark = "✓" if row["verdict"] == "holds" else "✗"
    return f"{value} {mark}{'*' if row['ci_excludes_threshold'] else ''}"


def claims_overview(results: Path, claims: str = "claims.csv", brief: bool = False) -> str:
    """One row per phase, claim, statistic and setting; one column per algorithm."""
    table = pd.read_csv(results / claims)
    if brief:
        table = table[table["primary"].astype(bool)]
    table["setting"] = table.apply(_setting, axis=1)
    table["cell"] = table.apply(_cell, axis=1)
    algorithms = list(dict.fromkeys(table["algorithm"]))
    lines = [
        "| phase | claim | statistic (threshold) | setting | window | seeds | "
        + " | ".join(algorithms)
        + " |",
        "|---" * (6 + len(algorithms)) + "|",
    ]
    keys = ["phase", "claim", "statistic", "direction", "setting"]
    for (phase, claim, statistic, _, setting), group in table.groupby(keys, sort=False):
        cells = dict(zip(group["algorithm"], group["cell"], strict=True))
        seeds = "/".join(str(n) for n in sorted(set(group["seeds"])))
        windows = "; ".join(dict.fromkeys(group["window"]))
        threshold = f"{group['direction'].iloc[0]} {group['threshold'].iloc[0]:g}"
        row = [phase, str(claim), f"{statistic} ({threshold})", setting, windows, seeds]
        lines.append("| " + " | ".join(row + [cells.get(a, "") for a in algorithms]) + " |")
    return "\n".join(lines) + "\n"


def accuracy_table(results: Path, family: str) -> str:
    """Meta-test target accuracy per algorithm and setting, first and last checkpoint."""
    import xarray as xr

    dataset = xr.open_dataset(results / "aggregate" / f"{family}.nc")
    accuracy = dataset["test_target_accuracy_mean"]
    lines = [
        "| setting | algorithm | seeds | first checkpoint | last checkpoint |",
        "|---|---|---|---|---|",
    ]
    stacked = accuracy.stack(setting=[*SETTING_COLUMNS, "algorithm"])
    for index in range(stacked.sizes["setting"]):
        series = stacked.isel(setting=index).dropna("seed", how="all").dropna("epoch", how="all")
        if series.sizes["seed"] == 0:
            continue
        key = dict(zip([*SETTING_COLUMNS, "algorithm"], series["setting"].item(), strict=True))
        cells = []
        for position in (0, -1):
            values = series.isel(epoch=position).values
            mean, low, high, _ = scalar_interval(list(values), bounds=(0.0, 1.0))
            interval = "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"
            cells.append(f"{mean:.3f}{interval}")
        lines.append(
            f"| {_setting(pd.Series(key))} | {key['algorithm']} | {series.sizes['seed']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--family", action="append", default=None, help="aggregate families")
    parser.add_argument("--claims", default="claims.csv", help="claims table under --results")
    parser.add_argument("--brief", action="store_true", help="one statistic per claim")
    args = parser.parse_args()
    print("## Cost\n")
    print(cost_table(args.results))
    print("## Claims\n")
    print(claims_overview(args.results, args.claims, args.brief))
    for family in args.family or []:
        print(f"## Accuracy, family {family}\n")
        print(accuracy_table(args.results, family))


if __name__ == "__main__":
    main()
