"""Snakemake's report: figures in the paper's order, one PNG each, captions naming their runs;
and, where Chromium is installed, the report looked at in a real headless browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_screenshots import chromium, screenshots

from metalandscape.figures import figure_spec_list
from metalandscape.grid import build_grid
from metalandscape.plan import workflow_config
from metalandscape.report import figure_caption, figure_category
from metalandscape.statistics import INTERVAL_DESCRIPTION

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def test_categories_sort_in_the_papers_order() -> None:
    specs = figure_spec_list()
    categories = [figure_category(spec) for spec in specs]
    paper = [category for category in categories if not category.startswith("Fig. ext ")]
    extensions = [category for category in categories if category.startswith("Fig. ext ")]
    assert paper == sorted(paper) and len(paper) == 11 and extensions
    assert paper[0] == "Fig. 02 Flatness" and paper[-1].startswith("Fig. 12 ")
    assert all(extension > paper[-1] for extension in extensions)
    assert not any("(fig." in category for category in categories)


def test_a_caption_names_the_runs_their_seed_count_and_the_bands() -> None:
    config = workflow_config(REPO / "config.yaml", [REPO / "workflow/presets/tiny.yaml"])
    grid = build_grid(config)
    spec = next(spec for spec in figure_spec_list() if spec.name == "fig2")
    caption = figure_caption(spec, grid, "fig2", config)
    assert caption.startswith(spec.caption.strip())
    assert "family *fontglot*: 2 runs of data set fontglot, ways 3, shots 1" in caption
    assert "1 seed(s) per setting; 2 epochs × 2 iterations" in caption
    assert "hessian (backend=lanczos_batched" in caption and "evaluation seed 0" in caption
    assert f"**Bands:** {INTERVAL_DESCRIPTION}; none here, with fewer than 3 seeds" in caption


def _not_blank(png: Path) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    return png.stat().st_size > 10_000 and float(np.std(pixels)) > 0.05


def test_the_report_in_a_headless_browser(tiny_run, tmp_path) -> None:
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is required in CI: .ci/run installs it (apt-get install chromium)"
            )
        pytest.skip("needs chromium (apt-get install chromium)")
    assert tiny_run.returncode == 0, tiny_run.output[-3000:]
    report = tmp_path / "report.html"
    result = subprocess.run(
        [*SNAKEMAKE, "--configfile", "workflow/presets/tiny.yaml", "--report", str(report)],
        cwd=tiny_run.directory,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = report.read_text()
    for category in ("Fig. 02 Flatness", "Fig. 05 Trajectory coherence", "Claims"):
        assert category in page
    assert "results/figures/fig2.png" in page
    shots = screenshots(report, tmp_path / "shots")
    assert all(_not_blank(path) for path in shots.values())
    # The views differ: the clicks reached the figure, its caption and the claims table.
    sizes = {path.stat().st_size for path in shots.values()}
    assert len(sizes) == len(shots)
