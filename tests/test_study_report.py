"""benchmarks/study_report.py's cost table on known benchmark files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_study_report():
    spec = importlib.util.spec_from_file_location(
        "study_report", ROOT / "benchmarks/study_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_benchmark(path: Path, cpu: float, wall: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\tcpu_time\n{wall}\t{cpu}\n")


def test_longest_chain_is_one_runs_train_plus_its_metrics(tmp_path: Path) -> None:
    """Two runs whose metric bundles share a file name: the chain is per run, not per name."""
    report = load_study_report()
    benchmarks = tmp_path / "benchmarks"
    for run, train, metrics in (("a", 600.0, 100.0), ("b", 300.0, 200.0)):
        write_benchmark(benchmarks / "train" / f"{run}.tsv", train, 10.0)
        write_benchmark(benchmarks / "metrics" / run / "accuracy__hessian.tsv", metrics, 10.0)
    write_benchmark(benchmarks / "fig2" / "fig2.tsv", 5.0, 5.0)
    table = report.cost_table(tmp_path)
    assert "| all | 5 | 1205–" in table
    assert "the longest run's training + metrics: 12 min" in table  # 700 s, not 600 + 300


def test_exact_cpu_comes_from_the_jobs_logs(tmp_path: Path) -> None:
    """Where every job of a rule logged ``resources: cpu``, the table sums those exact seconds."""
    report = load_study_report()
    for run, cpu in (("a", 41.5), ("b", 20.0)):
        write_benchmark(tmp_path / "benchmarks" / "train" / f"{run}.tsv", 15.0, 44.0)
        log = tmp_path / "logs" / "train" / f"{run}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"epoch 1/1\nINFO resources: cpu {cpu} s (user {cpu} s, sys 0.0 s)\n")
    write_benchmark(tmp_path / "benchmarks" / "metrics" / "a" / "accuracy.tsv", 5.0, 5.0)
    table = report.cost_table(tmp_path)
    assert "| train | 2 | 30–" in table and "| 62 |" in table
    assert "| metrics | 1 | 5–6 | – |" in table
    assert "| all | 3 | 35–" in table and "2 of 3 jobs logged it" in table
