"""Copy the workflow's files into a temporary folder so tests never write into the repo."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "envs")


def copy_workflow(destination: Path, names: Sequence[str] = WORKFLOW_FILES) -> Path:
    """``destination`` holding copies of ``names`` (files or folders) from the repository."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    return destination
