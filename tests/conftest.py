"""Shared test settings, and the one tiny-preset workflow run the workflow tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from workflow_copy import WORKFLOW_FILES, copy_workflow

# One intra-op thread per test process: oversubscribed cores slow small kernels by far.
torch.set_num_threads(1)

TINY_PRESET = "workflow/presets/tiny.yaml"


@pytest.fixture(autouse=True)
def restore_environment() -> Iterator[None]:
    """Each test leaves ``os.environ`` as it found it. The CLI's ``main`` sets OMP_NUM_THREADS
    for its own process; called in-process, that leaked into later tests' subprocesses (the
    local SLURM read it through ``nproc`` and offered one CPU, so a 2-CPU job never ran)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@dataclass(frozen=True)
class TinyRun:
    """A finished ``snakemake --cores 2 --configfile workflow/presets/tiny.yaml`` in a copy."""

    directory: Path
    returncode: int
    output: str

    @property
    def results(self) -> Path:
        return self.directory / "results"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The tiny preset run once per session (with the local default profile) for every test
    that only reads its outputs. Tests that change files put them back as they were."""
    directory = copy_workflow(
        tmp_path_factory.mktemp("tiny_run") / "wf", (*WORKFLOW_FILES, "profiles")
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", TINY_PRESET],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return TinyRun(directory, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="session")
def tiny_fontglot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 80-class fontglot file, built once per session."""
    from metalandscape.data.fontglot import build_fontglot

    path = tmp_path_factory.mktemp("tiny_fontglot") / "fontglot.npz"
    return Path(build_fontglot(path, classes=80, workers=1, progress=False))
