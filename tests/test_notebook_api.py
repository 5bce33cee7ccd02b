"""The notebook API: ``metalandscape.load`` / ``draw``, and README's example on the tiny run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import metalandscape

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_notebook_example() -> str:
    """The Python block under README's "From a notebook" heading."""
    text = README.read_text()
    section = text[text.index("### From a notebook") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's notebook section has no python block"
    return match[1]


def test_public_names_and_a_cheap_import() -> None:
    assert set(metalandscape.__all__) == {"__version__", "draw", "figure_names", "load"}
    assert all(hasattr(metalandscape, name) for name in metalandscape.__all__)
    probe = "import sys, metalandscape; print(sorted({'torch', 'xarray', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_readme_example_runs_on_the_tiny_preset(tiny_run) -> None:
    assert tiny_run.returncode == 0, tiny_run.output[-3000:]
    example = readme_notebook_example()
    before = {p.name for p in tiny_run.directory.iterdir()}
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tiny_run.directory,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    saved = tiny_run.directory / "fig2-notebook.png"
    try:
        assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        lines = result.stdout.strip().splitlines()
        assert lines[-1].startswith("('fig2', 'fig3'")
        assert len(lines[0].strip("[]").split()) == 3  # fontglot's epochs 0, 1, 2
    finally:
        saved.unlink(missing_ok=True)
    assert {p.name for p in tiny_run.directory.iterdir()} == before


def test_load_and_draw_name_what_is_missing(tmp_path) -> None:
    from metalandscape.aggregate import AggregateError
    from metalandscape.figures import FigureError

    with pytest.raises(AggregateError, match=r"aggregate file .*nope\.nc not found"):
        metalandscape.load("nope", results=tmp_path)
    with pytest.raises(FigureError, match="unknown figure 'fig99'"):
        metalandscape.draw("fig99", None)  # type: ignore[arg-type]
